package bootserver

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecorderIsBounded(t *testing.T) {
	r := newRecorder()
	r.mac = nil
	t0 := time.Unix(1e9, 0)
	for m := range 3 * statusMachines {
		for i := range 2 * statusTimeline {
			r.record(Event{Time: t0.Add(time.Duration(m*1000+i) * time.Millisecond), Kind: TFTPTransfer,
				Client: fmt.Sprintf("192.0.2.%d:%d", m%250, 1000+m/250), File: "boot/linux", Bytes: 1})
		}
	}
	var st Status
	r.snapshot(&st)
	assert.LessOrEqual(t, len(st.Machines), statusMachines)
	for _, m := range st.Machines {
		assert.LessOrEqual(t, len(m.Timeline), statusTimeline)
	}
	assert.Len(t, st.Transfers, statusTransfers)
	assert.True(t, st.Transfers[0].Time.After(st.Transfers[1].Time), "newest first")
}

func TestRecorderJoinsAMachinesProtocols(t *testing.T) {
	r := newRecorder()
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xe2, 0xe0, 1}
	r.mac = func(ip netip.Addr) net.HardwareAddr {
		if ip == netip.MustParseAddr("192.0.2.100") {
			return mac
		}
		return nil
	}
	id := BuildID{Name: "leap", Arch: "x86_64", Version: "1"}
	r.record(Event{Time: time.Unix(1, 0), Kind: TFTPTransfer, Client: "192.0.2.100:2000", File: "pxelinux.0", Bytes: 42})
	r.record(Event{Time: time.Unix(2, 0), Kind: NBDAttach, Client: "[::ffff:192.0.2.100]:3000", Build: id})
	r.record(Event{Time: time.Unix(3, 0), Kind: AoEDiscover, Client: mac.String(), Build: id})
	r.record(Event{Time: time.Unix(4, 0), Kind: TFTPTransfer, Client: "192.0.2.7:2000", File: "x", Err: fmt.Errorf("tftp: file not found")})
	var st Status
	r.snapshot(&st)
	require.Len(t, st.Machines, 2)
	m := st.Machines[1]
	assert.Equal(t, mac.String(), m.Key)
	assert.Equal(t, []string{"192.0.2.100"}, m.Addresses, "IPv4-mapped addresses are shown as IPv4")
	require.Len(t, m.Timeline, 3)
	assert.Equal(t, "aoe-discover", m.Timeline[2].Kind)
	assert.Equal(t, "192.0.2.7", st.Machines[0].Key)
	assert.Equal(t, 1, st.Machines[0].Errors)
	assert.Equal(t, mac.String(), r.macOfClient("192.0.2.100:4000"), "a client address finds its machine's MAC")
	assert.Equal(t, "", r.macOfClient("192.0.2.7:4000"))
}

func TestARPLookup(t *testing.T) {
	table := `IP address       HW type     Flags       HW address            Mask     Device
192.0.2.100      0x1         0x2         52:54:00:e2:e0:01     *        tap0
192.0.2.101      0x1         0x0         00:00:00:00:00:00     *        tap0
`
	look := func(ip string) string {
		hw := arpLookup(bufio.NewScanner(strings.NewReader(table)), netip.MustParseAddr(ip))
		if hw == nil {
			return ""
		}
		return hw.String()
	}
	assert.Equal(t, "52:54:00:e2:e0:01", look("192.0.2.100"))
	assert.Equal(t, "", look("192.0.2.101"), "incomplete entry")
	assert.Equal(t, "", look("192.0.2.102"))
}

// TestHTTPRequestJoinsItsMachine checks that an HTTP fetch is filed under the MAC address of
// the machine at its client address, beside the machine's TFTP transfers.
func TestHTTPRequestJoinsItsMachine(t *testing.T) {
	r := newRecorder()
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xe2, 0xe0, 2}
	r.mac = func(ip netip.Addr) net.HardwareAddr {
		if ip == netip.MustParseAddr("192.0.2.101") {
			return mac
		}
		return nil
	}
	r.record(Event{Time: time.Unix(1, 0), Kind: TFTPTransfer, Client: "192.0.2.101", File: "snponly.efi", Bytes: 9})
	e := HTTPRequestInfo{Remote: "[::ffff:192.0.2.101]:41000", Method: "GET", Path: "boot.ipxe", Status: 200, Bytes: 300}.event()
	e.Time = time.Unix(2, 0)
	assert.Equal(t, "192.0.2.101", e.Client, "the port is dropped and the address unmapped")
	assert.NoError(t, e.Err)
	r.record(e)
	var st Status
	r.snapshot(&st)
	require.Len(t, st.Machines, 1)
	assert.Equal(t, mac.String(), st.Machines[0].Key)
	require.Len(t, st.Machines[0].Timeline, 2)
	assert.Equal(t, "http-request", st.Machines[0].Timeline[1].Kind)
	assert.Equal(t, "boot.ipxe", st.Machines[0].Timeline[1].File)
	assert.Equal(t, int64(300), st.Machines[0].Timeline[1].Bytes)
}
