package nbdtest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/netroot/netroot/nbd"
)

// wire is one raw NBD connection. It encodes and decodes the protocol itself, byte by byte as
// proto.md lays it out, so that the suite checks a server without trusting netroot's client.
// Every method fails the test on a transport or framing error.
type wire struct {
	t      testing.TB
	c      net.Conn
	r      *bufio.Reader
	hflags nbd.HandshakeFlags

	noZeroes   bool
	structured bool
	size       int64
	tflags     nbd.TransmissionFlags
}

// maxReplyData bounds the data of one option reply or reply chunk the suite accepts, so a broken
// server cannot make it allocate without limit.
const maxReplyData = 64 << 20

func (w *wire) readFull(n int) []byte {
	w.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(w.r, b); err != nil {
		w.t.Fatalf("nbdtest: reading %d bytes from the server: %v", n, err)
	}
	return b
}

func (w *wire) write(b []byte) {
	w.t.Helper()
	if _, err := w.c.Write(b); err != nil {
		w.t.Fatalf("nbdtest: writing %d bytes to the server: %v", len(b), err)
	}
}

// greet reads the server's greeting.
func (w *wire) greet() {
	w.t.Helper()
	b := w.readFull(nbd.HandshakeSize)
	if m := binary.BigEndian.Uint64(b); m != nbd.Magic {
		w.t.Fatalf("nbdtest: greeting magic %#x, want NBDMAGIC %#x", m, nbd.Magic)
	}
	if m := binary.BigEndian.Uint64(b[8:]); m != nbd.OptionMagic {
		if m == nbd.OldstyleMagic {
			w.t.Fatalf("nbdtest: server speaks oldstyle negotiation")
		}
		w.t.Fatalf("nbdtest: greeting second magic %#x, want IHAVEOPT %#x", m, nbd.OptionMagic)
	}
	w.hflags = nbd.HandshakeFlags(binary.BigEndian.Uint16(b[16:]))
}

// clientFlags sends the client flags.
func (w *wire) clientFlags(f nbd.ClientFlags) {
	w.t.Helper()
	w.write(binary.BigEndian.AppendUint32(nil, uint32(f)))
	w.noZeroes = f&nbd.FlagCNoZeroes != 0
}

// start greets and answers with fixed newstyle and, when offered, no zeroes.
func (w *wire) start() {
	w.t.Helper()
	w.greet()
	f := nbd.FlagCFixedNewstyle
	if w.hflags&nbd.FlagNoZeroes != 0 {
		f |= nbd.FlagCNoZeroes
	}
	w.clientFlags(f)
}

func (w *wire) sendOption(opt nbd.Option, data []byte) {
	w.t.Helper()
	b := make([]byte, 0, nbd.OptionHeaderSize+len(data))
	b = binary.BigEndian.AppendUint64(b, nbd.OptionMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	w.write(append(b, data...))
}

type optReply struct {
	typ  nbd.ReplyType
	data []byte
}

func (w *wire) readOptionReply(opt nbd.Option) optReply {
	w.t.Helper()
	h := w.readFull(nbd.OptionReplyHeaderSize)
	if m := binary.BigEndian.Uint64(h); m != nbd.OptionReplyMagic {
		w.t.Fatalf("nbdtest: option reply magic %#x, want %#x", m, nbd.OptionReplyMagic)
	}
	if o := nbd.Option(binary.BigEndian.Uint32(h[8:])); o != opt {
		w.t.Fatalf("nbdtest: option reply for %v, want %v", o, opt)
	}
	typ := nbd.ReplyType(binary.BigEndian.Uint32(h[12:]))
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxReplyData {
		w.t.Fatalf("nbdtest: %v reply %v of %d bytes", opt, typ, n)
	}
	return optReply{typ: typ, data: w.readFull(int(n))}
}

// option sends opt and collects its replies up to the final one (NBD_REP_ACK or an error).
func (w *wire) option(opt nbd.Option, data []byte) (replies []optReply, final nbd.ReplyType) {
	w.t.Helper()
	w.sendOption(opt, data)
	return w.replies(opt)
}

// replies reads the replies to opt up to the final one.
func (w *wire) replies(opt nbd.Option) (replies []optReply, final nbd.ReplyType) {
	w.t.Helper()
	for i := 0; ; i++ {
		r := w.readOptionReply(opt)
		if r.typ == nbd.RepAck || r.typ.IsError() {
			if r.typ.IsError() && len(r.data) > nbd.MaxStringLength {
				w.t.Errorf("nbdtest: %v error message of %d bytes exceeds %d", r.typ, len(r.data), nbd.MaxStringLength)
			}
			if r.typ == nbd.RepAck && len(r.data) != 0 {
				w.t.Errorf("nbdtest: %v ACK carries %d bytes", opt, len(r.data))
			}
			return replies, r.typ
		}
		if i > 100000 {
			w.t.Fatalf("nbdtest: %v: no final reply after %d replies", opt, i)
		}
		replies = append(replies, r)
	}
}

// appendString appends a 32-bit length and s.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
func infoRequest(name string, infos ...nbd.InfoType) []byte {
	b := appendString(nil, name)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return b
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
func metaRequest(name string, queries ...string) []byte {
	b := appendString(nil, name)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = appendString(b, q)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO and NBD_OPT_GO report.
type exportInfo struct {
	size        int64
	flags       nbd.TransmissionFlags
	hasExport   bool
	name        *string
	description *string
	blockSize   *[3]uint32
}

// parseInfo decodes the NBD_REP_INFO replies of INFO or GO.
func (w *wire) parseInfo(replies []optReply) exportInfo {
	w.t.Helper()
	var ei exportInfo
	for _, r := range replies {
		if r.typ != nbd.RepInfo {
			w.t.Errorf("nbdtest: unexpected reply %v among INFO replies", r.typ)
			continue
		}
		if len(r.data) < 2 {
			w.t.Errorf("nbdtest: NBD_REP_INFO of %d bytes", len(r.data))
			continue
		}
		d := r.data[2:]
		switch nbd.InfoType(binary.BigEndian.Uint16(r.data)) {
		case nbd.InfoExport:
			if len(d) != 10 {
				w.t.Errorf("nbdtest: NBD_INFO_EXPORT of %d bytes, want 12", len(r.data))
				continue
			}
			ei.hasExport = true
			ei.size = int64(binary.BigEndian.Uint64(d))
			ei.flags = nbd.TransmissionFlags(binary.BigEndian.Uint16(d[8:]))
		case nbd.InfoName:
			s := string(d)
			ei.name = &s
		case nbd.InfoDescription:
			s := string(d)
			ei.description = &s
		case nbd.InfoBlockSize:
			if len(d) != 12 {
				w.t.Errorf("nbdtest: NBD_INFO_BLOCK_SIZE of %d bytes, want 14", len(r.data))
				continue
			}
			ei.blockSize = &[3]uint32{binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:]), binary.BigEndian.Uint32(d[8:])}
		default:
			// Unknown information types are allowed; clients ignore them.
		}
	}
	return ei
}

// goExport sends NBD_OPT_GO for name and enters transmission.
func (w *wire) goExport(name string) exportInfo {
	w.t.Helper()
	replies, final := w.option(nbd.OptGo, infoRequest(name))
	if final != nbd.RepAck {
		w.t.Fatalf("nbdtest: NBD_OPT_GO %q: %v", name, final)
	}
	ei := w.parseInfo(replies)
	if !ei.hasExport {
		w.t.Fatalf("nbdtest: NBD_OPT_GO %q: no NBD_INFO_EXPORT before the ACK", name)
	}
	w.size, w.tflags = ei.size, ei.flags
	return ei
}

// exportName sends NBD_OPT_EXPORT_NAME and reads the old-fashioned reply.
func (w *wire) exportName(name string) {
	w.t.Helper()
	w.sendOption(nbd.OptExportName, []byte(name))
	b := w.readFull(nbd.ExportNameReplySize)
	w.size = int64(binary.BigEndian.Uint64(b))
	w.tflags = nbd.TransmissionFlags(binary.BigEndian.Uint16(b[8:]))
	if !w.noZeroes {
		z := w.readFull(nbd.ExportNameZeroes)
		for i, c := range z {
			if c != 0 {
				w.t.Fatalf("nbdtest: NBD_OPT_EXPORT_NAME reserved byte %d is %#x, want 0", i, c)
			}
		}
	}
}

// request sends one transmission request.
func (w *wire) request(flags nbd.CommandFlags, cmd nbd.Command, handle uint64, off uint64, length uint32, payload []byte) {
	w.t.Helper()
	b := make([]byte, 0, nbd.RequestHeaderSize+len(payload))
	b = binary.BigEndian.AppendUint32(b, nbd.RequestMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(flags))
	b = binary.BigEndian.AppendUint16(b, uint16(cmd))
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	w.write(append(b, payload...))
}

// extent is one base:allocation descriptor.
type extent struct {
	length uint32
	flags  uint32
}

// reply is a whole transmission reply: a simple reply, or all chunks of a structured one.
type reply struct {
	handle     uint64
	err        nbd.Errno
	structured bool
	data       []byte // READ: the data, holes filled with zeroes
	chunks     int
	dataChunks int
	contexts   map[uint32][]extent
}

// pending describes a request whose reply has not been read yet: what the reader needs to
// frame and check the reply.
type pending struct {
	cmd    nbd.Command
	off    uint64
	length uint32
}

// readReply reads one whole reply. in maps handles to the requests in flight; the reply's
// handle must be one of them, and is removed.
func (w *wire) readReply(in map[uint64]pending) reply {
	w.t.Helper()
	var r reply
	var covered []bool // READ bytes already delivered, to catch overlapping chunks
	for {
		magic := binary.BigEndian.Uint32(w.readFull(4))
		switch magic {
		case nbd.SimpleReplyMagic:
			b := w.readFull(nbd.SimpleReplyHeaderSize - 4)
			r.err = nbd.Errno(binary.BigEndian.Uint32(b))
			r.handle = binary.BigEndian.Uint64(b[4:])
			p, ok := in[r.handle]
			if !ok {
				w.t.Fatalf("nbdtest: simple reply for unknown handle %#x", r.handle)
			}
			if r.chunks > 0 {
				w.t.Fatalf("nbdtest: simple reply for handle %#x in the middle of its structured reply", r.handle)
			}
			delete(in, r.handle)
			if p.cmd == nbd.CmdRead {
				if w.structured {
					w.t.Errorf("nbdtest: simple reply to NBD_CMD_READ after structured replies were negotiated")
				}
				if r.err == 0 {
					r.data = w.readFull(int(p.length))
				}
			}
			return r
		case nbd.StructuredReplyMagic:
			if !w.structured {
				w.t.Fatalf("nbdtest: structured reply chunk without NBD_OPT_STRUCTURED_REPLY")
			}
			b := w.readFull(nbd.StructuredReplyHeaderSize - 4)
			flags := nbd.ReplyFlags(binary.BigEndian.Uint16(b))
			typ := nbd.ChunkType(binary.BigEndian.Uint16(b[2:]))
			handle := binary.BigEndian.Uint64(b[4:])
			n := binary.BigEndian.Uint32(b[12:])
			if r.chunks > 0 && handle != r.handle {
				// Chunks of different replies may interleave; this suite keeps one reply in
				// flight whenever it reads structured replies, so interleaving is a server bug
				// only in the sense of a stray handle.
				w.t.Fatalf("nbdtest: chunk for handle %#x inside the reply to %#x", handle, r.handle)
			}
			p, ok := in[handle]
			if !ok {
				w.t.Fatalf("nbdtest: structured chunk %v for unknown handle %#x", typ, handle)
			}
			r.handle, r.structured = handle, true
			r.chunks++
			if n > maxReplyData {
				w.t.Fatalf("nbdtest: %v chunk of %d bytes", typ, n)
			}
			d := w.readFull(int(n))
			if p.cmd == nbd.CmdRead && r.data == nil {
				r.data = make([]byte, p.length)
				covered = make([]bool, p.length)
			}
			w.chunk(&r, p, typ, d, covered)
			if flags&nbd.ReplyFlagDone != 0 {
				delete(in, handle)
				if p.cmd == nbd.CmdRead && r.err == 0 {
					for i, c := range covered {
						if !c {
							w.t.Errorf("nbdtest: READ %d+%d: byte %d not covered by any chunk", p.off, p.length, i)
							break
						}
					}
				}
				return r
			}
			if typ == nbd.ChunkTypeNone {
				w.t.Errorf("nbdtest: NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
			}
		default:
			w.t.Fatalf("nbdtest: reply magic %#x is neither simple nor structured", magic)
		}
	}
}

// chunk checks one structured reply chunk and adds it to r.
func (w *wire) chunk(r *reply, p pending, typ nbd.ChunkType, d []byte, covered []bool) {
	w.t.Helper()
	place := func(off uint64, n uint64, data []byte) {
		if off < p.off || off-p.off > uint64(p.length) || n > uint64(p.length)-(off-p.off) {
			w.t.Errorf("nbdtest: %v chunk %d+%d outside the READ %d+%d", typ, off, n, p.off, p.length)
			return
		}
		start := off - p.off
		for i := start; i < start+n; i++ {
			if covered[i] {
				w.t.Errorf("nbdtest: %v chunk %d+%d overlaps an earlier chunk", typ, off, n)
				return
			}
			covered[i] = true
		}
		if data != nil {
			copy(r.data[start:], data)
		}
	}
	switch typ {
	case nbd.ChunkTypeNone:
		if len(d) != 0 {
			w.t.Errorf("nbdtest: NBD_REPLY_TYPE_NONE with %d bytes", len(d))
		}
	case nbd.ChunkTypeOffsetData:
		if p.cmd != nbd.CmdRead || len(d) < 9 {
			w.t.Errorf("nbdtest: NBD_REPLY_TYPE_OFFSET_DATA of %d bytes to %v", len(d), p.cmd)
			return
		}
		r.dataChunks++
		place(binary.BigEndian.Uint64(d), uint64(len(d)-8), d[8:])
	case nbd.ChunkTypeOffsetHole:
		if p.cmd != nbd.CmdRead || len(d) != 12 {
			w.t.Errorf("nbdtest: NBD_REPLY_TYPE_OFFSET_HOLE of %d bytes to %v", len(d), p.cmd)
			return
		}
		r.dataChunks++
		n := binary.BigEndian.Uint32(d[8:])
		if n == 0 {
			w.t.Errorf("nbdtest: NBD_REPLY_TYPE_OFFSET_HOLE of length 0")
		}
		place(binary.BigEndian.Uint64(d), uint64(n), nil)
	case nbd.ChunkTypeBlockStatus:
		if p.cmd != nbd.CmdBlockStatus || len(d) < 12 || (len(d)-4)%8 != 0 {
			w.t.Errorf("nbdtest: NBD_REPLY_TYPE_BLOCK_STATUS of %d bytes to %v", len(d), p.cmd)
			return
		}
		id := binary.BigEndian.Uint32(d)
		if r.contexts == nil {
			r.contexts = map[uint32][]extent{}
		}
		if _, dup := r.contexts[id]; dup {
			w.t.Errorf("nbdtest: two NBD_REPLY_TYPE_BLOCK_STATUS chunks for context %d", id)
		}
		var ext []extent
		for i := 4; i < len(d); i += 8 {
			ext = append(ext, extent{binary.BigEndian.Uint32(d[i:]), binary.BigEndian.Uint32(d[i+4:])})
		}
		r.contexts[id] = ext
	case nbd.ChunkTypeError, nbd.ChunkTypeErrorOffset:
		if len(d) < 6 {
			w.t.Errorf("nbdtest: %v of %d bytes", typ, len(d))
			return
		}
		e := nbd.Errno(binary.BigEndian.Uint32(d))
		msgLen := int(binary.BigEndian.Uint16(d[4:]))
		want := 6 + msgLen
		if typ == nbd.ChunkTypeErrorOffset {
			want += 8
		}
		if len(d) != want {
			w.t.Errorf("nbdtest: %v of %d bytes with a %d-byte message", typ, len(d), msgLen)
		}
		if e == 0 {
			w.t.Errorf("nbdtest: %v with error 0", typ)
		}
		if r.err == 0 {
			r.err = e
		}
	default:
		if !typ.IsError() {
			w.t.Errorf("nbdtest: unknown non-error chunk type %v", typ)
		} else if r.err == 0 && len(d) >= 4 {
			r.err = nbd.Errno(binary.BigEndian.Uint32(d))
		}
	}
}

// do sends one request and reads its reply.
func (w *wire) do(flags nbd.CommandFlags, cmd nbd.Command, off uint64, length uint32, payload []byte) reply {
	w.t.Helper()
	const handle = 0x6e62647465737431 // "nbdtest1"
	w.request(flags, cmd, handle, off, length, payload)
	return w.readReply(map[uint64]pending{handle: {cmd, off, length}})
}

// expectClosed reports whether the server closes the connection within d without sending
// anything more.
func (w *wire) expectClosed(d time.Duration) error {
	if err := w.c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	var b [1]byte
	n, err := w.r.Read(b[:])
	switch {
	case n > 0:
		return fmt.Errorf("server sent %#x instead of closing", b[0])
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return nil
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("server kept the connection open for %v", d)
		}
		// A reset counts as closed.
		return nil
	}
	return fmt.Errorf("server neither closed nor sent data")
}

// expectSilence reports whether the server sends nothing for d, open or closed.
func (w *wire) expectSilence(d time.Duration) error {
	if err := w.c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	var b [1]byte
	if n, _ := w.r.Read(b[:]); n > 0 {
		return fmt.Errorf("server sent %#x", b[0])
	}
	return nil
}
