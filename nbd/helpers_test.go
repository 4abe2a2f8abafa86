package nbd_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/require"
)

// coreServe serves srv on a loopback port until the test ends and returns the address.
func coreServe(t testing.TB, srv *nbd.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-done:
			require.ErrorIs(t, err, nbd.ErrServerClosed)
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return l.Addr().String()
}

// coreExports builds an export set or fails the test.
func coreExports(t testing.TB, exports ...*nbd.Export) *nbd.ExportSet {
	t.Helper()
	set, err := nbd.NewExportSet(exports...)
	require.NoError(t, err)
	return set
}

// patterned returns a memory device of size bytes holding a recognisable pattern.
func patterned(size int) *backend.Memory {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return backend.NewMemoryFrom(b, false)
}

// coreDial dials addr and enters transmission on export.
func coreDial(t testing.TB, addr, export string, opts *nbd.DialOptions) *nbd.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", addr, opts)
	require.NoError(t, err)
	_, err = c.Go(ctx, export)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn speaks the protocol byte by byte, for tests of what a Client would never send.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// dialRaw connects, checks the greeting and sends client flags.
func dialRaw(t testing.TB, addr string, flags nbd.ClientFlags) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	r := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	var b [nbd.HandshakeSize]byte
	_, err = io.ReadFull(r.br, b[:])
	require.NoError(t, err)
	var g nbd.Greeting
	require.NoError(t, g.UnmarshalBinary(b[:]))
	require.Equal(t, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes, g.Flags)
	r.write(must(t, flags))
	return r
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	_, err := r.c.Write(b)
	require.NoError(r.t, err)
}

func (r *rawConn) option(opt nbd.Option, data []byte) {
	r.t.Helper()
	r.write(append(must(r.t, nbd.OptionHeader{Option: opt, Length: uint32(len(data))}), data...))
}

type optReply struct {
	typ  nbd.ReplyType
	data []byte
}

// reply reads one option reply to opt.
func (r *rawConn) reply(opt nbd.Option) optReply {
	r.t.Helper()
	var h [nbd.OptionReplyHeaderSize]byte
	_, err := io.ReadFull(r.br, h[:])
	require.NoError(r.t, err)
	var rh nbd.OptionReplyHeader
	require.NoError(r.t, rh.UnmarshalBinary(h[:]))
	require.Equal(r.t, opt, rh.Option)
	data := make([]byte, rh.Length)
	_, err = io.ReadFull(r.br, data)
	require.NoError(r.t, err)
	return optReply{rh.Type, data}
}

// replies reads option replies up to the final one (ACK or an error).
func (r *rawConn) replies(opt nbd.Option) []optReply {
	r.t.Helper()
	var all []optReply
	for {
		rep := r.reply(opt)
		all = append(all, rep)
		if rep.typ == nbd.RepAck || rep.typ.IsError() {
			return all
		}
	}
}

// closed asserts that the server closes the connection without sending more.
func (r *rawConn) closed() {
	r.t.Helper()
	b, err := io.ReadAll(r.br)
	require.Empty(r.t, b)
	if err != nil {
		require.NotErrorIs(r.t, err, context.DeadlineExceeded)
		var ne net.Error
		if ok := asNetError(err, &ne); ok {
			require.False(r.t, ne.Timeout(), "server did not close the connection")
		}
	}
}

func asNetError(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

// must returns the wire form of v; these tests only encode what encodes.
func must(t testing.TB, v interface{ AppendBinary([]byte) ([]byte, error) }) []byte {
	t.Helper()
	b, err := v.AppendBinary(nil)
	require.NoError(t, err)
	return b
}

func infoData(name string, infos ...nbd.InfoType) []byte {
	b, _ := nbd.InfoRequest{Name: name, Infos: infos}.AppendBinary(nil)
	return b
}

func metaData(name string, queries ...string) []byte {
	b, _ := nbd.MetaContextRequest{Name: name, Queries: queries}.AppendBinary(nil)
	return b
}

// request sends a transmission request with an optional payload.
func (r *rawConn) request(req nbd.Request, payload []byte) {
	r.t.Helper()
	b, err := req.MarshalBinary()
	require.NoError(r.t, err)
	r.write(append(b, payload...))
}

// simpleReply reads a simple reply header and returns its error and cookie.
func (r *rawConn) simpleReply() (nbd.Errno, uint64) {
	r.t.Helper()
	var h [nbd.SimpleReplyHeaderSize]byte
	_, err := io.ReadFull(r.br, h[:])
	require.NoError(r.t, err)
	var sr nbd.SimpleReply
	require.NoError(r.t, sr.UnmarshalBinary(h[:]))
	return sr.Errno, sr.Cookie
}

type chunk struct {
	flags   nbd.ReplyFlags
	typ     nbd.ChunkType
	cookie  uint64
	payload []byte
}

// chunk reads one structured reply chunk.
func (r *rawConn) chunk() chunk {
	r.t.Helper()
	var h [nbd.StructuredReplyHeaderSize]byte
	_, err := io.ReadFull(r.br, h[:])
	require.NoError(r.t, err)
	var ch nbd.ChunkHeader
	require.NoError(r.t, ch.UnmarshalBinary(h[:]), "structured reply chunk header")
	p := make([]byte, ch.Length)
	_, err = io.ReadFull(r.br, p)
	require.NoError(r.t, err)
	return chunk{ch.Flags, ch.Type, ch.Cookie, p}
}

// goRaw negotiates structured replies (when structured) and base:allocation, then NBD_OPT_GO.
func (r *rawConn) goRaw(export string, structured bool) (size uint64, flags nbd.TransmissionFlags) {
	r.t.Helper()
	if structured {
		r.option(nbd.OptStructuredReply, nil)
		require.Equal(r.t, nbd.RepAck, r.reply(nbd.OptStructuredReply).typ)
		r.option(nbd.OptSetMetaContext, metaData(export, nbd.MetaContextBaseAllocation))
		reps := r.replies(nbd.OptSetMetaContext)
		require.Len(r.t, reps, 2)
		require.Equal(r.t, nbd.RepMetaContext, reps[0].typ)
	}
	r.option(nbd.OptGo, infoData(export))
	reps := r.replies(nbd.OptGo)
	require.Equal(r.t, nbd.RepAck, reps[len(reps)-1].typ, "NBD_OPT_GO: %q", reps[len(reps)-1].data)
	for _, rep := range reps {
		var ie nbd.InfoExportReply
		if rep.typ == nbd.RepInfo && ie.UnmarshalBinary(rep.data) == nil {
			return ie.Size, ie.Flags
		}
	}
	r.t.Fatal("no NBD_INFO_EXPORT")
	return 0, 0
}
