package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
)

// fuzzConn is a net.Conn whose peer's bytes are fixed in advance; what is written is
// discarded.
type fuzzConn struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func newFuzzConn(data []byte) *fuzzConn { return &fuzzConn{r: bytes.NewReader(data)} }

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (*fuzzConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: DefaultPort}
}
func (*fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (*fuzzConn) SetDeadline(time.Time) error      { return nil }
func (*fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (*fuzzConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*fuzzConn)(nil)

// Builders of client byte streams for seeds.

func seedOption(opt Option, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, OptionMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func seedInfo(name string, infos ...InfoType) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return b
}

func seedMeta(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

func seedRequest(typ Command, flags CommandFlags, off uint64, n uint32, payload []byte) []byte {
	b, _ := Request{Type: typ, Flags: flags, Cookie: uint64(typ) + 1, Offset: off, Length: n}.MarshalBinary()
	return append(b, payload...)
}

// structuredGo is a client's negotiation up to transmission on export "x" with structured
// replies and base:allocation.
func structuredGo() []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(FlagCFixedNewstyle|FlagCNoZeroes))
	b = append(b, seedOption(OptStructuredReply, nil)...)
	b = append(b, seedOption(OptSetMetaContext, seedMeta("x", MetaContextBaseAllocation))...)
	return append(b, seedOption(OptGo, seedInfo("x", InfoBlockSize))...)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func fuzzServer() *Server {
	set, _ := NewExportSet(
		&Export{Name: "x", Device: backend.NewMemory(64 << 10), Writable: true},
		&Export{Name: "ro", Device: backend.NewMemory(4096)},
		&Export{Name: "cow", Device: backend.NewMemory(8192), CopyOnWrite: CopyOnWritePerConnection},
	)
	return &Server{Exports: set}
}

// serveFuzz serves one connection fed with data and fails if it does not end.
func serveFuzz(t *testing.T, srv *Server, data []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(context.Background(), newFuzzConn(data))
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("server did not finish on input %x", data)
	}
}

func FuzzServerHandshake(f *testing.F) {
	flags := binary.BigEndian.AppendUint32(nil, uint32(FlagCFixedNewstyle|FlagCNoZeroes))
	f.Add(concat(flags, seedOption(OptExportName, []byte("x")), seedRequest(CmdRead, 0, 0, 512, nil), seedRequest(CmdDisc, 0, 0, 0, nil)))
	f.Add(concat(flags, seedOption(OptList, nil), seedOption(OptAbort, nil)))
	f.Add(concat(flags, seedOption(OptInfo, seedInfo("x", InfoName, InfoDescription, InfoBlockSize)), seedOption(OptGo, seedInfo("ro"))))
	f.Add(concat(flags, seedOption(OptListMetaContext, seedMeta("x")), seedOption(OptStartTLS, nil), seedOption(99, []byte("junk"))))
	f.Add(concat(binary.BigEndian.AppendUint32(nil, 0), seedOption(OptExportName, nil)))
	f.Add(structuredGo())
	f.Add(concat(flags, seedOption(OptGo, seedInfo("cow")), seedRequest(CmdWrite, 0, 0, 4, []byte("abcd"))))
	f.Fuzz(func(t *testing.T, data []byte) {
		serveFuzz(t, fuzzServer(), data)
	})
}

func FuzzServerRequests(f *testing.F) {
	f.Add(seedRequest(CmdRead, 0, 0, 4096, nil))
	f.Add(seedRequest(CmdRead, CmdFlagDF, 100, 0, nil))
	f.Add(concat(seedRequest(CmdWrite, CmdFlagFUA, 512, 8, []byte("12345678")), seedRequest(CmdFlush, 0, 0, 0, nil)))
	f.Add(seedRequest(CmdWrite, 0, 64<<10-4, 8, []byte("past end")))
	f.Add(concat(seedRequest(CmdTrim, 0, 0, 4096, nil), seedRequest(CmdWriteZeroes, CmdFlagNoHole|CmdFlagFastZero, 0, 8192, nil)))
	f.Add(concat(seedRequest(CmdBlockStatus, CmdFlagReqOne, 0, 1<<16, nil), seedRequest(CmdCache, 0, 0, 1, nil)))
	f.Add(concat(seedRequest(77, 0xffff, 1<<63, 1<<31, nil), seedRequest(CmdDisc, 0, 0, 0, nil)))
	prefix := structuredGo()
	f.Fuzz(func(t *testing.T, data []byte) {
		serveFuzz(t, fuzzServer(), concat(prefix, data))
	})
}

func FuzzRequest(f *testing.F) {
	f.Add(seedRequest(CmdRead, 0, 0, 4096, nil))
	f.Add(make([]byte, RequestHeaderSize))
	f.Add([]byte{0x25, 0x60})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Request
		if err := r.UnmarshalBinary(data); err != nil {
			if len(data) < RequestHeaderSize && err != io.ErrUnexpectedEOF {
				t.Fatalf("short input gave %v", err)
			}
			return
		}
		b, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(b, data[:RequestHeaderSize]) {
			t.Fatalf("round trip: %x != %x (%v)", b, data[:RequestHeaderSize], err)
		}
	})
}

func FuzzOptionData(f *testing.F) {
	f.Add(seedInfo("root", InfoName, InfoBlockSize))
	f.Add(seedMeta("root", MetaContextBaseAllocation, "base:"))
	f.Add([]byte{0, 0, 0, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Payloads: whole-input round trips, checked against the tests' own builders too.
		var ir InfoRequest
		if roundTrip(t, &ir, data, len(data)) {
			if got := seedInfo(ir.Name, ir.Infos...); !bytes.Equal(got, data) {
				t.Fatalf("info: %x != %x", got, data)
			}
		}
		var mr MetaContextRequest
		if roundTrip(t, &mr, data, len(data)) {
			if got := seedMeta(mr.Name, mr.Queries...); !bytes.Equal(got, data) {
				t.Fatalf("meta context: %x != %x", got, data)
			}
		}
	})
}

// wireValue is a message value of wire.go.
type wireValue interface {
	UnmarshalBinary([]byte) error
	AppendBinary([]byte) ([]byte, error)
}

// roundTrip parses data into v and, if that works, checks that v encodes back to the first n
// bytes of data (n < 0: v's fixed size, -n). Short input must give io.ErrUnexpectedEOF.
func roundTrip(t *testing.T, v wireValue, data []byte, n int) bool {
	t.Helper()
	err := v.UnmarshalBinary(data)
	if n < 0 {
		n = -n
		if len(data) < n {
			if err != io.ErrUnexpectedEOF {
				t.Fatalf("%T: %d bytes gave %v", v, len(data), err)
			}
			return false
		}
	}
	if err != nil {
		return false
	}
	b, err := v.AppendBinary([]byte("prefix"))
	if err != nil || !bytes.Equal(b[6:], data[:n]) || string(b[:6]) != "prefix" {
		t.Fatalf("%T round trip: %x != %x (%v)", v, b, data[:n], err)
	}
	return true
}

func FuzzWire(f *testing.F) {
	add := func(v interface{ AppendBinary([]byte) ([]byte, error) }) {
		b, err := v.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	add(OptionHeader{Option: OptGo, Length: 10})
	add(OptionReplyHeader{Option: OptGo, Type: RepErrUnknown, Length: 3})
	add(MetaContextReply{ID: 1, Name: MetaContextBaseAllocation})
	add(InfoExportReply{Size: 1 << 30, Flags: FlagHasFlags | FlagReadOnly})
	add(InfoBlockSizeReply{Min: 1, Preferred: 4096, MaxPayload: 32 << 20})
	add(SimpleReply{Errno: EIO, Cookie: 7})
	add(ChunkHeader{Flags: ReplyFlagDone, Type: ChunkTypeError, Cookie: 9, Length: 6})
	add(ErrorChunk{Errno: EINVAL, Message: "no"})
	add(OffsetHoleChunk{Offset: 4096, Length: 512})
	add(OffsetDataChunk{Offset: 1 << 20})
	add(ErrorOffsetChunk{ErrorChunk{Errno: EIO, Message: "bad sector"}, 4096})
	add(BlockStatusChunk{ContextID: 1, Extents: []Extent{{Length: 4096}, {Length: 1 << 20, Hole: true, Zero: true}}})
	add(Greeting{Flags: FlagFixedNewstyle | FlagNoZeroes})
	add(FlagCFixedNewstyle | FlagCNoZeroes)
	add(ExportNameReply{Size: 1 << 30, Flags: FlagHasFlags | FlagReadOnly})
	add(ServerReply{Name: "root", Description: "the root image"})
	add(InfoTextReply{Type: InfoName, Text: "root"})
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, new(OptionHeader), data, -OptionHeaderSize)
		roundTrip(t, new(OptionReplyHeader), data, -OptionReplyHeaderSize)
		roundTrip(t, new(SimpleReply), data, -SimpleReplyHeaderSize)
		roundTrip(t, new(ChunkHeader), data, -StructuredReplyHeaderSize)
		roundTrip(t, new(MetaContextReply), data, len(data))
		roundTrip(t, new(InfoExportReply), data, len(data))
		roundTrip(t, new(InfoBlockSizeReply), data, len(data))
		roundTrip(t, new(ErrorChunk), data, len(data))
		roundTrip(t, new(OffsetHoleChunk), data, len(data))
		roundTrip(t, new(OffsetDataChunk), data, -OffsetDataChunkSize)
		roundTrip(t, new(ErrorOffsetChunk), data, len(data))
		roundTrip(t, new(Greeting), data, -HandshakeSize)
		roundTrip(t, new(ClientFlags), data, -ClientFlagsSize)
		roundTrip(t, new(ExportNameReply), data, -ExportNameReplySize)
		roundTrip(t, new(ServerReply), data, len(data))
		roundTrip(t, new(InfoTextReply), data, len(data))
		blockStatusRoundTrip(t, data)
	})
}

// blockStatusRoundTrip checks BlockStatusChunk: a parsed value encodes back to the same
// value, and to the same bytes when the status flags are only those of base:allocation (the
// others are not kept).
func blockStatusRoundTrip(t *testing.T, data []byte) {
	t.Helper()
	bs := BlockStatusChunk{Offset: 512}
	err := bs.UnmarshalBinary(data)
	if len(data) < 12 || (len(data)-4)%BlockStatusDescriptorSize != 0 {
		if err == nil {
			t.Fatalf("block status of %d bytes parsed", len(data))
		}
		return
	}
	if err != nil {
		return
	}
	b, err := bs.AppendBinary(nil)
	if err != nil {
		t.Fatalf("block status round trip: %v", err)
	}
	back := BlockStatusChunk{Offset: 512}
	if err := back.UnmarshalBinary(b); err != nil || !reflect.DeepEqual(back, bs) {
		t.Fatalf("block status round trip: %+v != %+v (%v)", back, bs, err)
	}
	pos := int64(512)
	onlyKnown := true
	for i, e := range bs.Extents {
		if e.Offset != pos {
			t.Fatalf("extent %d at %d, want %d", i, e.Offset, pos)
		}
		pos += e.Length
		if binary.BigEndian.Uint32(data[4+8*i+4:])&^(StateHole|StateZero) != 0 {
			onlyKnown = false
		}
	}
	if onlyKnown && !bytes.Equal(b, data) {
		t.Fatalf("block status round trip: %x != %x", b, data)
	}
}

// Builders of server byte streams for the client seeds.

func seedChunk(flags ReplyFlags, typ ChunkType, cookie uint64, payload []byte) []byte {
	b, _ := ChunkHeader{Flags: flags, Type: typ, Cookie: cookie, Length: uint32(len(payload))}.AppendBinary(nil)
	return append(b, payload...)
}

func seedSimple(errno Errno, cookie uint64, data []byte) []byte {
	b, _ := SimpleReply{Errno: errno, Cookie: cookie}.AppendBinary(nil)
	return append(b, data...)
}

func FuzzClientReplies(f *testing.F) {
	data := binary.BigEndian.AppendUint64(nil, 0)
	data = append(data, make([]byte, 64)...)
	f.Add(concat(seedChunk(ReplyFlagDone, ChunkTypeOffsetData, 1, data), seedSimple(0, 3, nil)))
	hole := binary.BigEndian.AppendUint64(nil, 0)
	hole = binary.BigEndian.AppendUint32(hole, 64)
	f.Add(concat(seedChunk(0, ChunkTypeOffsetHole, 1, hole), seedChunk(ReplyFlagDone, ChunkTypeNone, 1, nil)))
	bs := []byte{0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 3}
	f.Add(seedChunk(ReplyFlagDone, ChunkTypeBlockStatus, 2, bs))
	f.Add(seedChunk(ReplyFlagDone, ChunkTypeError, 3, []byte{0, 0, 0, 5, 0, 2, 'n', 'o'}))
	f.Add(seedChunk(ReplyFlagDone, ChunkTypeErrorOffset, 1, []byte{0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(concat(seedSimple(22, 4, nil), seedSimple(0, 1, make([]byte, 64))))
	f.Add(seedChunk(ReplyFlagDone, 0x7777, 1, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, structured := range []bool{true, false} {
			c := &Client{nc: newFuzzConn(nil), br: bufio.NewReader(bytes.NewReader(data)), structured: structured,
				pending: make(map[uint64]*call), metaID: 1, metaOK: true}
			reqs := []Request{
				{Type: CmdRead, Cookie: 1, Offset: 0, Length: 64},
				{Type: CmdBlockStatus, Cookie: 2, Offset: 0, Length: 1 << 20},
				{Type: CmdWrite, Cookie: 3, Offset: 512, Length: 512},
				{Type: CmdRead, Cookie: 4, Offset: 100, Length: 0},
			}
			for _, r := range reqs {
				cl := &call{req: r, done: make(chan struct{})}
				if r.Type == CmdRead {
					cl.buf = make([]byte, r.Length)
				}
				c.pending[r.Cookie] = cl
			}
			if err := c.readReplies(); err == nil {
				t.Fatal("readReplies returned without error")
			}
		}
	})
}

func FuzzClientHandshake(f *testing.F) {
	greet := binary.BigEndian.AppendUint64(nil, Magic)
	greet = binary.BigEndian.AppendUint64(greet, OptionMagic)
	greet = binary.BigEndian.AppendUint16(greet, uint16(FlagFixedNewstyle|FlagNoZeroes))
	rep := func(opt Option, typ ReplyType, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, OptionReplyMagic)
		b = binary.BigEndian.AppendUint32(b, uint32(opt))
		b = binary.BigEndian.AppendUint32(b, uint32(typ))
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	export := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1}
	f.Add(concat(greet, rep(OptStructuredReply, RepAck, nil),
		rep(OptList, RepServer, []byte{0, 0, 0, 1, 'x', 'd'}), rep(OptList, RepAck, nil),
		rep(OptInfo, RepInfo, export), rep(OptInfo, RepAck, nil),
		rep(OptSetMetaContext, RepMetaContext, append([]byte{0, 0, 0, 1}, MetaContextBaseAllocation...)), rep(OptSetMetaContext, RepAck, nil),
		rep(OptGo, RepInfo, export), rep(OptGo, RepAck, nil)))
	f.Add(concat(greet, rep(OptStructuredReply, RepErrUnsup, nil), rep(OptList, RepAck, nil),
		rep(OptInfo, RepErrUnknown, []byte("no")), rep(OptGo, RepErrUnsup, nil), export[:10]))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		c, err := NewClient(ctx, newFuzzConn(data), nil)
		if err != nil {
			return
		}
		c.List(ctx)
		c.Info(ctx, "x")
		if _, err := c.Go(ctx, "x"); err == nil {
			c.ReadAt(make([]byte, 16), 0)
		}
		c.Close()
	})
}

func FuzzConnState(f *testing.F) {
	for _, st := range []ConnState{
		{},
		{Export: "root", Size: 1 << 30, Flags: FlagHasFlags | FlagReadOnly, Remote: "192.0.2.1:1234"},
		{Export: "x", Structured: true, MetaContexts: []MetaContext{{metaContextID, MetaContextBaseAllocation}},
			Pending: seedRequest(CmdRead, 0, 0, 4096, nil)},
	} {
		b, err := st.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(connStateMagic + "\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st ConnState
		if err := st.UnmarshalBinary(data); err != nil {
			return
		}
		b, err := st.MarshalBinary()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("round trip: %x != %x (%v)", b, data, err)
		}
	})
}

// FuzzResume feeds Resume a state decoded from fuzz input (as another process would send it)
// and a request stream: it serves or refuses, and always ends.
func FuzzResume(f *testing.F) {
	for _, st := range []ConnState{
		{Export: "x", Size: 64 << 10, Flags: FlagHasFlags | FlagSendFlush, Structured: true,
			MetaContexts: []MetaContext{{metaContextID, MetaContextBaseAllocation}},
			Pending:      seedRequest(CmdRead, 0, 0, 512, nil)[:10]},
		{Export: "ro", Size: 4096, Flags: FlagHasFlags | FlagReadOnly},
		{Export: "cow", Size: 8192, Flags: FlagHasFlags},
	} {
		b, err := st.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, concat(seedRequest(CmdRead, 0, 0, 512, nil)[10:], seedRequest(CmdBlockStatus, 0, 0, 4096, nil),
			seedRequest(CmdWrite, 0, 0, 4, []byte("abcd")), seedRequest(CmdDisc, 0, 0, 0, nil)))
	}
	f.Fuzz(func(t *testing.T, state, data []byte) {
		var st ConnState
		if st.UnmarshalBinary(state) != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			fuzzServer().Resume(context.Background(), newFuzzConn(data), st)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Resume did not finish on state %x input %x", state, data)
		}
	})
}
