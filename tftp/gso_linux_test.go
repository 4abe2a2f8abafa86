package tftp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSendSegments checks that a run of blocks arrives as separate datagrams, byte-exact, with
// segmentation offload and without it.
func TestSendSegments(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seg   int
		total int
		noGSO bool
	}{
		{"gso", 516, 516*20 + 100, false},
		{"gso more than one sendmsg", 1472, 1472*100 + 1, false},
		{"gso exact multiple", 1472, 1472 * 16, false},
		{"one by one", 516, 516*20 + 100, true},
		{"single short", 516, 10, false},
		{"segments too large to batch", 40000, 70000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer rx.Close()
			require.NoError(t, rx.SetReadBuffer(4<<20))
			tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
			require.NoError(t, err)
			defer tx.Close()
			l := &link{c: tx, peer: rx.LocalAddr().(*net.UDPAddr).AddrPort(), connected: true, noGSO: tc.noGSO}
			b := make([]byte, tc.total)
			for i := range b {
				b[i] = byte(i * 13)
			}
			require.NoError(t, l.sendSegments(b, tc.seg))
			var got []byte
			buf := make([]byte, 70000)
			for len(got) < tc.total {
				require.NoError(t, rx.SetReadDeadline(time.Now().Add(2*time.Second)))
				n, err := rx.Read(buf)
				require.NoError(t, err, "after %d of %d bytes", len(got), tc.total)
				want := min(tc.seg, tc.total-len(got))
				require.Equal(t, want, n, "datagram boundaries are the segment boundaries")
				got = append(got, buf[:n]...)
			}
			assert.True(t, bytes.Equal(b, got))
			if !tc.noGSO && tc.total > tc.seg && tc.seg < gsoMaxBytes/2 {
				assert.False(t, l.noGSO, "UDP GSO works on loopback (Linux 4.18+)")
			}
		})
	}
}
