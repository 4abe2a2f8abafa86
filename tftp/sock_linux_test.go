package tftp

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sockPair returns a blocking transfer socket connected to a loopback peer, and the peer.
func sockPair(t *testing.T) (*sock, *net.UDPConn) {
	t.Helper()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { peer.Close() })
	s, err := openSock(netip.MustParseAddr("127.0.0.1"), peer.LocalAddr().(*net.UDPAddr).AddrPort(), 0)
	require.NoError(t, err)
	t.Cleanup(s.close)
	return s, peer
}

// TestSock checks the blocking transfer socket: datagrams both ways byte-exact, with and
// without busy-polling, only from the connected peer, a deadline that passes, and a shutdown
// from another goroutine that ends a wait with net.ErrClosed, as closing a netpoller socket
// would.
func TestSock(t *testing.T) {
	for _, spinning := range []bool{false, true} {
		name := "blocking"
		if spinning {
			name = "busy-polling"
		}
		t.Run(name, func(t *testing.T) {
			s, peer := sockPair(t)
			s.spinning = spinning
			if spinning {
				spinners.Add(1)
			}
			require.NoError(t, s.send([]byte("DATA 1")))
			buf := make([]byte, 100)
			require.NoError(t, peer.SetReadDeadline(time.Now().Add(10*time.Second)))
			n, from, err := peer.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			assert.Equal(t, "DATA 1", string(buf[:n]))

			// A stranger's datagram is filtered by the kernel; the peer's arrives.
			stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer stranger.Close()
			_, err = stranger.WriteToUDPAddrPort([]byte("stranger"), from)
			require.NoError(t, err)
			_, err = peer.WriteToUDPAddrPort([]byte("ACK 1"), from)
			require.NoError(t, err)
			n, err = s.recv(buf, time.Now().Add(10*time.Second))
			require.NoError(t, err)
			assert.Equal(t, "ACK 1", string(buf[:n]))

			_, err = s.recv(buf, time.Now().Add(20*time.Millisecond))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)

			errc := make(chan error, 1)
			go func() {
				_, err := s.recv(buf, time.Now().Add(time.Minute))
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond) // let it wait
			s.shutdown()
			require.ErrorIs(t, <-errc, net.ErrClosed, "shutdown ends the wait, long before its deadline")
			require.ErrorIs(t, s.send([]byte("DATA 2")), net.ErrClosed)
			s.close()
			assert.False(t, s.spinning)
			assert.Zero(t, spinners.Load(), "close gives back its busy-polling slot")
		})
	}
}

// TestSockScoped checks that a scoped IPv6 address is left to package net.
func TestSockScoped(t *testing.T) {
	_, err := openSock(netip.Addr{}, netip.MustParseAddrPort("[fe80::1%lo]:69"), 0)
	require.Error(t, err)
}
