package nbdtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/netroot/netroot/nbd"
)

// fuzzTB is a testing.TB whose failures end the decoding being fuzzed instead of the fuzz run:
// the suite's decoder must reject any server stream with a test failure, never a panic.
type fuzzTB struct {
	testing.TB
	failed bool
}

type fuzzStop struct{}

// Only the methods the decoders call are implemented; the embedded nil TB panics on others.
func (f *fuzzTB) Helper()                        {}
func (f *fuzzTB) Errorf(string, ...any)          { f.failed = true }
func (f *fuzzTB) Fatalf(format string, a ...any) { f.failed = true; panic(fuzzStop{}) }
func (f *fuzzTB) Logf(string, ...any)            {}

// decode runs fn over a wire reading data, returning whether it failed the test.
func decode(data []byte, structured bool, fn func(w *wire)) (failed bool) {
	tb := &fuzzTB{}
	c1, c2 := net.Pipe()
	defer c1.Close()
	go io.Copy(io.Discard, c2) // what the suite sends; ends when c1 closes
	w := &wire{t: tb, c: c1, r: bufio.NewReader(bytes.NewReader(data)), structured: structured}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fuzzStop); !ok {
				panic(r)
			}
		}
		failed = tb.failed
	}()
	fn(w)
	return tb.failed
}

func chunkSeed(flags nbd.ReplyFlags, typ nbd.ChunkType, handle uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, nbd.StructuredReplyMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(flags))
	b = binary.BigEndian.AppendUint16(b, uint16(typ))
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// FuzzReadReply feeds arbitrary server streams to the suite's reply decoder.
func FuzzReadReply(f *testing.F) {
	simple := binary.BigEndian.AppendUint32(nil, nbd.SimpleReplyMagic)
	simple = binary.BigEndian.AppendUint32(simple, 0)
	simple = binary.BigEndian.AppendUint64(simple, 1)
	f.Add(append(simple, make([]byte, 16)...), false)
	data := binary.BigEndian.AppendUint64(nil, 0)
	f.Add(chunkSeed(nbd.ReplyFlagDone, nbd.ChunkTypeOffsetData, 1, append(data, make([]byte, 16)...)), true)
	hole := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, 8), 8)
	f.Add(append(chunkSeed(0, nbd.ChunkTypeOffsetData, 1, append(data, make([]byte, 8)...)),
		chunkSeed(nbd.ReplyFlagDone, nbd.ChunkTypeOffsetHole, 1, hole)...), true)
	errPayload := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(nil, 22), 3)
	f.Add(chunkSeed(nbd.ReplyFlagDone, nbd.ChunkTypeError, 1, append(errPayload, "bad"...)), true)
	bs := binary.BigEndian.AppendUint32(nil, 1)
	bs = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(bs, 16), 3)
	f.Add(chunkSeed(nbd.ReplyFlagDone, nbd.ChunkTypeBlockStatus, 2, bs), true)
	f.Fuzz(func(t *testing.T, stream []byte, structured bool) {
		decode(stream, structured, func(w *wire) {
			in := map[uint64]pending{1: {nbd.CmdRead, 0, 16}, 2: {nbd.CmdBlockStatus, 0, 16}, 3: {nbd.CmdWrite, 0, 16}}
			for range 4 {
				r := w.readReply(in)
				if r.data != nil && len(r.data) != 16 {
					t.Fatalf("READ data of %d bytes for a 16-byte request", len(r.data))
				}
			}
		})
	})
}

// FuzzOptionReplies feeds arbitrary handshake streams to the suite's option decoders.
func FuzzOptionReplies(f *testing.F) {
	greet := binary.BigEndian.AppendUint64(nil, nbd.Magic)
	greet = binary.BigEndian.AppendUint64(greet, nbd.OptionMagic)
	greet = binary.BigEndian.AppendUint16(greet, uint16(nbd.FlagFixedNewstyle|nbd.FlagNoZeroes))
	rep := func(typ nbd.ReplyType, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, nbd.OptionReplyMagic)
		b = binary.BigEndian.AppendUint32(b, uint32(nbd.OptGo))
		b = binary.BigEndian.AppendUint32(b, uint32(typ))
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	info := binary.BigEndian.AppendUint16(nil, uint16(nbd.InfoExport))
	info = binary.BigEndian.AppendUint64(info, 1<<20)
	info = binary.BigEndian.AppendUint16(info, 1)
	bsz := binary.BigEndian.AppendUint16(nil, uint16(nbd.InfoBlockSize))
	bsz = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(bsz, 1), 4096), 1<<25)
	f.Add(bytes.Join([][]byte{greet, rep(nbd.RepInfo, info), rep(nbd.RepInfo, bsz), rep(nbd.RepAck, nil)}, nil))
	f.Add(bytes.Join([][]byte{greet, rep(nbd.RepErrUnknown, []byte("no such export"))}, nil))
	f.Fuzz(func(t *testing.T, stream []byte) {
		decode(stream, false, func(w *wire) {
			w.greet()
			ei := w.goExport("x")
			if !ei.hasExport {
				t.Fatalf("goExport returned without NBD_INFO_EXPORT")
			}
		})
	})
}
