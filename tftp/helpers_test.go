package tftp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

// serve runs srv on a loopback port until the test ends and returns its address.
func serve(t testing.TB, srv *tftp.Server) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pc) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-done, tftp.ErrServerClosed)
	})
	return pc.LocalAddr().String()
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeFile creates dir/name with content.
func writeFile(t testing.TB, dir, name string, content []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, content, 0o644))
}

func get(t testing.TB, c *tftp.Client, addr, name string) ([]byte, tftp.TransferInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var buf bytes.Buffer
	info, err := c.Get(ctx, addr, name, &buf)
	return append([]byte{}, buf.Bytes()...), info, err
}

// patternReaderAt is a large file that is never held in memory: byte i is a function of i.
type patternReaderAt struct{ size int64 }

func patternByte(i int64) byte { return byte(i*7 + i>>9 + i>>17) }

func (p patternReaderAt) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := len(b)
	if int64(n) > p.size-off {
		n = int(p.size - off)
	}
	for i := range n {
		b[i] = patternByte(off + int64(i))
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func patternSum(size int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, io.NewSectionReader(patternReaderAt{size}, 0, size))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// rawClient speaks TFTP packet by packet, to test the server's reactions.
type rawClient struct {
	t      testing.TB
	c      *net.UDPConn
	server netip.AddrPort
	peer   netip.AddrPort // the server's transfer ID, once it answered
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	return dialRawFrom(t, addr, "127.0.0.1")
}

// dialRawFrom is dialRaw from the loopback address from (any of 127.0.0.0/8).
func dialRawFrom(t testing.TB, addr, from string) *rawClient {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	ap, err := netip.ParseAddrPort(addr)
	require.NoError(t, err)
	return &rawClient{t: t, c: c, server: ap}
}

func (r *rawClient) send(p tftp.Packet) {
	r.t.Helper()
	b, err := tftp.MarshalPacket(p)
	require.NoError(r.t, err)
	r.sendBytes(b)
}

func (r *rawClient) sendBytes(b []byte) {
	r.t.Helper()
	to := r.peer
	if !to.IsValid() {
		to = r.server
	}
	_, err := r.c.WriteToUDPAddrPort(b, to)
	require.NoError(r.t, err)
}

// recv returns the next packet within d, or nil after d.
func (r *rawClient) recv(d time.Duration) tftp.Packet {
	r.t.Helper()
	buf := make([]byte, 70000)
	require.NoError(r.t, r.c.SetReadDeadline(time.Now().Add(d)))
	n, from, err := r.c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	require.NoError(r.t, err)
	if !r.peer.IsValid() {
		require.NotEqual(r.t, r.server.Port(), from.Port(), "transfers run on their own port")
		r.peer = from
	}
	require.Equal(r.t, r.peer, from)
	p, err := tftp.ParsePacket(buf[:n])
	require.NoError(r.t, err)
	return p
}

// recvRaw returns the next datagram within d, from any port, or nil after d.
func (r *rawClient) recvRaw(d time.Duration) []byte {
	r.t.Helper()
	b, _ := r.recvRawFrom(d)
	return b
}

// recvRawFrom returns the next datagram within d and its sender, or nil after d.
func (r *rawClient) recvRawFrom(d time.Duration) ([]byte, netip.AddrPort) {
	r.t.Helper()
	buf := make([]byte, 70000)
	require.NoError(r.t, r.c.SetReadDeadline(time.Now().Add(d)))
	n, from, err := r.c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, netip.AddrPort{}
	}
	require.NoError(r.t, err)
	return buf[:n], from
}

// must returns the next packet, failing if none arrives within d.
func (r *rawClient) must(d time.Duration) tftp.Packet {
	r.t.Helper()
	p := r.recv(d)
	require.NotNil(r.t, p, "no packet within %v", d)
	return p
}

func readFileOK(dir, name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
