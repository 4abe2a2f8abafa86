package tftptest_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
	"github.com/netroot/netroot/tftp/tftptest"
)

func hello() tftp.Handler {
	return tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		msg := strings.Repeat("hello "+r.Filename+"\n", 5000)
		_ = w.ServeContent(strings.NewReader(msg), int64(len(msg)))
	})
}

func TestServer(t *testing.T) {
	s := tftptest.NewServer(hello())
	defer s.Close()
	var buf bytes.Buffer
	_, err := (&tftp.Client{}).Get(context.Background(), s.Addr, "x", &buf)
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("hello x\n", 5000), buf.String())
}

func TestRelay(t *testing.T) {
	s := tftptest.Start(&tftp.Server{Handler: hello(), Timeout: 20 * time.Millisecond, Retries: 10})
	defer s.Close()
	for _, cfg := range []tftptest.RelayConfig{{}, {Seed: 1, Drop: 0.2, Duplicate: 0.2}} {
		r, err := tftptest.NewRelay(s.Addr, cfg)
		require.NoError(t, err)
		var buf bytes.Buffer
		c := &tftp.Client{Timeout: 20 * time.Millisecond, Retries: 10}
		_, err = c.Get(context.Background(), r.Addr(), "x", &buf)
		require.NoError(t, err)
		assert.Equal(t, strings.Repeat("hello x\n", 5000), buf.String())
		if cfg.Drop > 0 {
			assert.Positive(t, r.Dropped())
			assert.Positive(t, r.Duplicated())
		} else {
			assert.Zero(t, r.Dropped()+r.Duplicated())
		}
		require.NoError(t, r.Close())
		require.Error(t, r.Close())
	}
	_, err := tftptest.NewRelay("nonsense", tftptest.RelayConfig{})
	require.Error(t, err)
}
