package nbd_test

import (
	"bufio"
	"context"
	"encoding/binary"
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
	var g [nbd.HandshakeSize]byte
	_, err = io.ReadFull(r.br, g[:])
	require.NoError(t, err)
	require.Equal(t, nbd.Magic, binary.BigEndian.Uint64(g[0:]))
	require.Equal(t, nbd.OptionMagic, binary.BigEndian.Uint64(g[8:]))
	require.Equal(t, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes, nbd.HandshakeFlags(binary.BigEndian.Uint16(g[16:])))
	r.write(binary.BigEndian.AppendUint32(nil, uint32(flags)))
	return r
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	_, err := r.c.Write(b)
	require.NoError(r.t, err)
}

func (r *rawConn) option(opt nbd.Option, data []byte) {
	r.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, nbd.OptionMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	r.write(append(b, data...))
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
	require.Equal(r.t, nbd.OptionReplyMagic, binary.BigEndian.Uint64(h[0:]))
	require.Equal(r.t, opt, nbd.Option(binary.BigEndian.Uint32(h[8:])))
	data := make([]byte, binary.BigEndian.Uint32(h[16:]))
	_, err = io.ReadFull(r.br, data)
	require.NoError(r.t, err)
	return optReply{nbd.ReplyType(binary.BigEndian.Uint32(h[12:])), data}
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

func infoData(name string, infos ...nbd.InfoType) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
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
	require.Equal(r.t, nbd.SimpleReplyMagic, binary.BigEndian.Uint32(h[0:]))
	return nbd.Errno(binary.BigEndian.Uint32(h[4:])), binary.BigEndian.Uint64(h[8:])
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
	require.Equal(r.t, nbd.StructuredReplyMagic, binary.BigEndian.Uint32(h[0:]), "structured reply magic")
	p := make([]byte, binary.BigEndian.Uint32(h[16:]))
	_, err = io.ReadFull(r.br, p)
	require.NoError(r.t, err)
	return chunk{nbd.ReplyFlags(binary.BigEndian.Uint16(h[4:])), nbd.ChunkType(binary.BigEndian.Uint16(h[6:])),
		binary.BigEndian.Uint64(h[8:]), p}
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
		if rep.typ == nbd.RepInfo && binary.BigEndian.Uint16(rep.data) == uint16(nbd.InfoExport) {
			return binary.BigEndian.Uint64(rep.data[2:]), nbd.TransmissionFlags(binary.BigEndian.Uint16(rep.data[10:]))
		}
	}
	r.t.Fatal("no NBD_INFO_EXPORT")
	return 0, 0
}
