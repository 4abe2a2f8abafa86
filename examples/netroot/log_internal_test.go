package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

func TestLogLinesAreReadable(t *testing.T) {
	var buf bytes.Buffer
	l, err := newLogger(&buf, "json", "info", false)
	require.NoError(t, err)
	e := &env{log: l}
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.7]:2000")
	logTFTPTransfer(e)(tftp.TransferInfo{Op: tftp.OpRRQ, Remote: mapped, Filename: "boot/linux", Bytes: 10, Duration: 1500 * time.Millisecond})
	logTFTPTransfer(e)(tftp.TransferInfo{Op: tftp.OpWRQ, Remote: mapped, Filename: "up/log", Bytes: 5, Duration: time.Second})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	var fetched, uploaded map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &fetched))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &uploaded))
	assert.Equal(t, "client fetched", fetched["msg"])
	assert.Equal(t, "1.5s", fetched["took"], "durations as text in JSON")
	assert.Equal(t, "192.0.2.7", fetched["client"], "IPv4-mapped addresses as IPv4")
	assert.Equal(t, "client uploaded", uploaded["msg"], "uploads are not logged as fetches")
}
