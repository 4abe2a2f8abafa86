package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// expectError reads the reply to cookie and checks it carries errno, as a simple reply or as
// a structured error chunk with a message.
func (r *rawConn) expectError(structured bool, cookie uint64, errno nbd.Errno) {
	r.t.Helper()
	if !structured {
		got, c := r.simpleReply()
		require.Equal(r.t, cookie, c)
		require.Equal(r.t, errno, got)
		return
	}
	c := r.chunk()
	require.Equal(r.t, cookie, c.cookie)
	require.Equal(r.t, nbd.ChunkTypeError, c.typ)
	require.Equal(r.t, nbd.ReplyFlagDone, c.flags)
	var ec nbd.ErrorChunk
	require.NoError(r.t, ec.UnmarshalBinary(c.payload))
	require.Equal(r.t, errno, ec.Errno)
	require.NotEmpty(r.t, ec.Message, "error chunks carry a message")
}

// expectOK reads a successful reply without data to cookie.
func (r *rawConn) expectOK(cookie uint64) {
	r.t.Helper()
	errno, c := r.simpleReply()
	require.Equal(r.t, cookie, c)
	require.Zero(r.t, errno)
}

func TestRequestErrors(t *testing.T) {
	const size = 1 << 16
	srv := &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "rw", Device: patterned(size), Writable: true},
		&nbd.Export{Name: "ro", Device: patterned(size)},
		// Writable is ignored for a device that cannot write.
		&nbd.Export{Name: "ro-device", Device: backend.NewMemoryFrom(patterned(size).Bytes(), true), Writable: true},
	)}
	addr := coreServe(t, srv)
	tests := []struct {
		name    string
		export  string
		req     nbd.Request
		payload int
		errno   nbd.Errno
		simple  bool // only without structured replies
		strOnly bool // only with structured replies
	}{
		{"write read-only", "ro", nbd.Request{Type: nbd.CmdWrite, Length: 512}, 512, nbd.EPERM, false, false},
		{"write read-only device", "ro-device", nbd.Request{Type: nbd.CmdWrite, Length: 512}, 512, nbd.EPERM, false, false},
		{"trim read-only", "ro", nbd.Request{Type: nbd.CmdTrim, Length: 512}, 0, nbd.EPERM, false, false},
		{"zero read-only", "ro", nbd.Request{Type: nbd.CmdWriteZeroes, Length: 512}, 0, nbd.EPERM, false, false},
		{"write past end", "rw", nbd.Request{Type: nbd.CmdWrite, Offset: size - 256, Length: 512}, 512, nbd.ENOSPC, false, false},
		{"write beyond end", "rw", nbd.Request{Type: nbd.CmdWrite, Offset: size + 4096, Length: 512}, 512, nbd.ENOSPC, false, false},
		{"zero past end", "rw", nbd.Request{Type: nbd.CmdWriteZeroes, Offset: size, Length: 1}, 0, nbd.ENOSPC, false, false},
		{"read past end", "rw", nbd.Request{Type: nbd.CmdRead, Offset: size - 1, Length: 2}, 0, nbd.EINVAL, false, false},
		{"read offset overflow", "rw", nbd.Request{Type: nbd.CmdRead, Offset: 1<<64 - 1, Length: 2}, 0, nbd.EINVAL, false, false},
		{"trim past end", "rw", nbd.Request{Type: nbd.CmdTrim, Offset: size, Length: 512}, 0, nbd.EINVAL, false, false},
		{"cache past end", "rw", nbd.Request{Type: nbd.CmdCache, Offset: size, Length: 512}, 0, nbd.EINVAL, false, false},
		{"block status past end", "rw", nbd.Request{Type: nbd.CmdBlockStatus, Offset: size - 1, Length: 512}, 0, nbd.EINVAL, false, true},
		{"block status of nothing", "rw", nbd.Request{Type: nbd.CmdBlockStatus, Length: 0}, 0, nbd.EINVAL, false, true},
		{"block status without context", "rw", nbd.Request{Type: nbd.CmdBlockStatus, Length: 512}, 0, nbd.EINVAL, true, false},
		{"unknown command", "rw", nbd.Request{Type: 99, Length: 512}, 0, nbd.EINVAL, false, false},
		{"resize unsupported", "rw", nbd.Request{Type: nbd.CmdResize}, 0, nbd.EINVAL, false, false},
		{"read with REQ_ONE", "rw", nbd.Request{Type: nbd.CmdRead, Flags: nbd.CmdFlagReqOne, Length: 512}, 0, nbd.EINVAL, false, false},
		{"read with DF unnegotiated", "rw", nbd.Request{Type: nbd.CmdRead, Flags: nbd.CmdFlagDF, Length: 512}, 0, nbd.EINVAL, true, false},
		{"write with NO_HOLE", "rw", nbd.Request{Type: nbd.CmdWrite, Flags: nbd.CmdFlagNoHole, Length: 512}, 512, nbd.EINVAL, false, false},
		{"flush with unknown flag", "rw", nbd.Request{Type: nbd.CmdFlush, Flags: 1 << 15}, 0, nbd.EINVAL, false, false},
		{"trim with FAST_ZERO", "rw", nbd.Request{Type: nbd.CmdTrim, Flags: nbd.CmdFlagFastZero, Length: 512}, 0, nbd.EINVAL, false, false},
		{"read above 32 MiB", "rw", nbd.Request{Type: nbd.CmdRead, Length: 32<<20 + 1}, 0, nbd.EINVAL, false, false},
		{"write above 32 MiB", "rw", nbd.Request{Type: nbd.CmdWrite, Length: 32<<20 + 1}, 32<<20 + 1, nbd.EINVAL, false, false},
	}
	for _, structured := range []bool{false, true} {
		for _, tt := range tests {
			if (tt.simple && structured) || (tt.strOnly && !structured) {
				continue
			}
			t.Run(fmt.Sprintf("%s/structured=%v", tt.name, structured), func(t *testing.T) {
				r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
				if structured || tt.simple {
					r.goRaw(tt.export, structured)
				} else {
					r.goRaw(tt.export, false)
				}
				req := tt.req
				req.Cookie = 0x1234
				r.request(req, make([]byte, tt.payload))
				r.expectError(structured, 0x1234, tt.errno)
				// The stream is still in sync: a good read follows.
				r.request(nbd.Request{Type: nbd.CmdRead, Cookie: 5, Offset: 100, Length: 8}, nil)
				var got []byte
				if structured {
					c := r.chunk()
					require.Equal(t, nbd.ChunkTypeOffsetData, c.typ)
					var od nbd.OffsetDataChunk
					require.NoError(t, od.UnmarshalBinary(c.payload))
					require.Equal(t, uint64(100), od.Offset)
					got = c.payload[nbd.OffsetDataChunkSize:]
				} else {
					r.expectOK(5)
					got = make([]byte, 8)
					_, err := io.ReadFull(r.br, got)
					require.NoError(t, err)
				}
				assert.Equal(t, patterned(size).Bytes()[100:108], got)
			})
		}
	}
	st := srv.Stats()
	assert.NotZero(t, st.Errors)
	assert.Equal(t, int64(2), st.Requests[nbd.UnknownCommands], "command 99, with and without structured replies")
	assert.Equal(t, int64(2), st.Requests[nbd.CmdResize])
}

func TestStructuredRead(t *testing.T) {
	dev := patterned(1 << 20)
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev})})
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	_, flags := r.goRaw("x", true)
	require.NotZero(t, flags&nbd.FlagSendDF)
	for _, tc := range []struct {
		name  string
		flags nbd.CommandFlags
		off   uint64
		n     uint32
	}{
		{"aligned", 0, 4096, 65536},
		{"unaligned", 0, 3, 1000},
		{"don't fragment", nbd.CmdFlagDF, 0, 65536},
		{"FUA is accepted", nbd.CmdFlagFUA, 512, 512},
		{"whole 32 MiB", 0, 0, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.request(nbd.Request{Type: nbd.CmdRead, Flags: tc.flags, Cookie: 9, Offset: tc.off, Length: tc.n}, nil)
			c := r.chunk()
			assert.Equal(t, uint64(9), c.cookie)
			assert.Equal(t, nbd.ChunkTypeOffsetData, c.typ)
			assert.Equal(t, nbd.ReplyFlagDone, c.flags)
			require.Len(t, c.payload, 8+int(tc.n))
			var od nbd.OffsetDataChunk
			require.NoError(t, od.UnmarshalBinary(c.payload))
			assert.Equal(t, tc.off, od.Offset)
			assert.Equal(t, dev.Bytes()[tc.off:tc.off+uint64(tc.n)], c.payload[nbd.OffsetDataChunkSize:])
		})
	}
	t.Run("empty read", func(t *testing.T) {
		r.request(nbd.Request{Type: nbd.CmdRead, Cookie: 10, Offset: 5}, nil)
		c := r.chunk()
		assert.Equal(t, nbd.ChunkTypeNone, c.typ)
		assert.Equal(t, nbd.ReplyFlagDone, c.flags)
		assert.Empty(t, c.payload)
	})
	t.Run("disconnect", func(t *testing.T) {
		r.request(nbd.Request{Type: nbd.CmdDisc}, nil)
		r.closed()
	})
}

// extentDevice reports a fixed extent list: data in the first half, a zeroed hole after.
type extentDevice struct {
	*backend.Memory
	calls atomic.Int32
}

func (d *extentDevice) Extents(off, n int64) ([]backend.Extent, error) {
	d.calls.Add(1)
	half := d.Size() / 2
	var out []backend.Extent
	// Report in 4 KiB pieces so the server has to merge them.
	for pos := off; pos < off+n; {
		end := min(pos+4096-pos%4096, off+n)
		out = append(out, backend.Extent{Offset: pos, Length: end - pos, Hole: pos >= half, Zero: pos >= half})
		pos = end
	}
	return out, nil
}

func TestBlockStatus(t *testing.T) {
	dev := &extentDevice{Memory: backend.NewMemory(1 << 20)}
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "sparse", Device: dev},
		&nbd.Export{Name: "plain", Device: struct{ backend.Device }{backend.NewMemory(1 << 20)}})})
	c := coreDial(t, addr, "sparse", nil)
	ctx := context.Background()
	const half = 1 << 19
	data := func(off, n int64) nbd.Extent { return nbd.Extent{Offset: off, Length: n} }
	hole := func(off, n int64) nbd.Extent { return nbd.Extent{Offset: off, Length: n, Hole: true, Zero: true} }
	tests := []struct {
		name  string
		off   int64
		n     uint32
		flags nbd.CommandFlags
		want  []nbd.Extent
	}{
		{"whole", 0, 1 << 20, 0, []nbd.Extent{data(0, half), hole(half, half)}},
		{"data only", 1000, 5000, 0, []nbd.Extent{data(1000, 5000)}},
		{"across", half - 512, 1024, 0, []nbd.Extent{data(half-512, 512), hole(half, 512)}},
		{"req one", 0, 1 << 20, nbd.CmdFlagReqOne, []nbd.Extent{data(0, half)}},
		{"req one in hole", half + 1, 100, nbd.CmdFlagReqOne, []nbd.Extent{hole(half+1, 100)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.BlockStatus(ctx, tt.off, tt.n, tt.flags)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	t.Run("device without extents reports data", func(t *testing.T) {
		c := coreDial(t, addr, "plain", nil)
		got, err := c.BlockStatus(ctx, 4096, 8192, 0)
		require.NoError(t, err)
		assert.Equal(t, []nbd.Extent{{Offset: 4096, Length: 8192}}, got)
	})
	t.Run("past end", func(t *testing.T) {
		_, err := c.BlockStatus(ctx, 1<<20-1, 2, 0)
		var ne *nbd.Error
		require.ErrorAs(t, err, &ne)
		assert.Equal(t, nbd.EINVAL, ne.Errno)
		assert.Contains(t, ne.Message, "beyond size")
	})
}

// countingDevice counts Sync calls and can fail or block reads.
type countingDevice struct {
	*backend.Memory
	syncs   atomic.Int32
	failAt  int64         // ReadAt at this offset fails with EIO-like error when nonzero
	blockAt int64         // ReadAt at this offset waits for release when nonzero
	release chan struct{} // closed to let blocked reads go
}

func (d *countingDevice) Sync() error { d.syncs.Add(1); return nil }

func (d *countingDevice) ReadAt(p []byte, off int64) (int, error) {
	if d.failAt != 0 && off == d.failAt {
		return 0, errors.New("medium error")
	}
	if d.blockAt != 0 && off == d.blockAt {
		<-d.release
	}
	return d.Memory.ReadAt(p, off)
}

func TestCommands(t *testing.T) {
	for _, structured := range []bool{true, false} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			dev := &countingDevice{Memory: backend.NewMemory(4 << 20), failAt: 3 << 20}
			srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "disk", Device: dev, Writable: true})}
			addr := coreServe(t, srv)
			c := coreDial(t, addr, "disk", &nbd.DialOptions{NoStructuredReplies: !structured})
			ctx := context.Background()
			info := c.Export()
			assert.Equal(t, int64(4<<20), info.Size)
			want := nbd.FlagHasFlags | nbd.FlagSendFlush | nbd.FlagSendFUA | nbd.FlagSendTrim |
				nbd.FlagSendWriteZeroes | nbd.FlagSendFastZero | nbd.FlagSendCache | nbd.FlagCanMultiConn
			if structured {
				want |= nbd.FlagSendDF
			}
			assert.Equal(t, want, info.Flags)

			data := make([]byte, 1<<20)
			for i := range data {
				data[i] = byte(i % 251)
			}
			n, err := c.WriteAt(data, 4096)
			require.NoError(t, err)
			assert.Equal(t, len(data), n)
			assert.Equal(t, data, dev.Bytes()[4096:4096+len(data)])

			got := make([]byte, len(data))
			_, err = c.ReadAt(got, 4096)
			require.NoError(t, err)
			assert.Equal(t, data, got)

			require.NoError(t, c.Zero(ctx, 8192, 4096, 0))
			require.NoError(t, c.Zero(ctx, 16384, 100, nbd.CmdFlagNoHole))
			// Memory cannot promise fast zeroing: the request fails at once and changes nothing.
			err = c.Zero(ctx, 20000, 10, nbd.CmdFlagFastZero)
			assert.ErrorIs(t, err, nbd.ENOTSUP)
			assert.Equal(t, data[20000-4096:20010-4096], dev.Bytes()[20000:20010])
			assert.Equal(t, make([]byte, 4096), dev.Bytes()[8192:12288])
			assert.Equal(t, make([]byte, 100), dev.Bytes()[16384:16484])
			assert.Equal(t, data[12288-4096], dev.Bytes()[12288], "zeroing stays in its range")

			require.NoError(t, c.Trim(ctx, 65536, 65536))
			assert.Equal(t, make([]byte, 65536), dev.Bytes()[65536:131072])
			require.NoError(t, c.Cache(ctx, 0, 1<<20))

			syncs := dev.syncs.Load()
			require.NoError(t, c.Flush(ctx))
			assert.Equal(t, syncs+1, dev.syncs.Load())
			_, err = c.Write(ctx, []byte("durable"), 0, nbd.CmdFlagFUA)
			require.NoError(t, err)
			assert.Equal(t, syncs+2, dev.syncs.Load(), "FUA syncs before the reply")
			require.NoError(t, c.Zero(ctx, 0, 1, nbd.CmdFlagFUA))
			assert.Equal(t, syncs+3, dev.syncs.Load())

			_, err = c.ReadAt(make([]byte, 512), 3<<20)
			var ne *nbd.Error
			require.ErrorAs(t, err, &ne)
			assert.Equal(t, nbd.EIO, ne.Errno)
			assert.ErrorIs(t, err, nbd.EIO)
			if structured {
				assert.Contains(t, ne.Message, "medium error")
			}

			// io.ReaderAt at the end of the export.
			tail := make([]byte, 100)
			n, err = c.ReadAt(tail, 4<<20-50)
			assert.Equal(t, 50, n)
			assert.ErrorIs(t, err, io.EOF)
			n, err = c.ReadAt(tail, 4<<20)
			assert.Zero(t, n)
			assert.ErrorIs(t, err, io.EOF)

			st := srv.Stats()
			assert.NotZero(t, st.Requests[nbd.CmdRead])
			assert.NotZero(t, st.Requests[nbd.CmdWrite])
			assert.Equal(t, int64(1), st.Requests[nbd.CmdFlush])
			assert.Equal(t, int64(1), st.Attached)
			assert.GreaterOrEqual(t, st.BytesRead, int64(len(data)))
			assert.GreaterOrEqual(t, st.BytesWritten, int64(len(data)))
			require.NoError(t, c.Close())
		})
	}
}

func TestLargeRequests(t *testing.T) {
	dev := backend.NewMemory(48 << 20)
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "big", Device: dev, Writable: true})})
	c := coreDial(t, addr, "big", nil)
	data := make([]byte, 40<<20) // two requests: 32 + 8 MiB
	for i := 0; i < len(data); i += 4096 {
		binary.BigEndian.PutUint64(data[i:], uint64(i))
	}
	_, err := c.WriteAt(data, 1<<20)
	require.NoError(t, err)
	got := make([]byte, len(data))
	_, err = c.ReadAt(got, 1<<20)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
}

func TestOutOfOrderReplies(t *testing.T) {
	dev := &countingDevice{Memory: patterned(1 << 20), blockAt: 8192, release: make(chan struct{})}
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev})})
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	r.goRaw("x", false)
	// Both requests in one segment: the server sees the second while the first is in flight.
	b1, err := nbd.Request{Type: nbd.CmdRead, Cookie: 1, Offset: 8192, Length: 512}.MarshalBinary()
	require.NoError(t, err)
	b2, err := nbd.Request{Type: nbd.CmdRead, Cookie: 2, Offset: 0, Length: 512}.MarshalBinary()
	require.NoError(t, err)
	r.write(append(b1, b2...))
	// The second read is answered while the first is still blocked.
	r.expectOK(2)
	_, err = io.ReadFull(r.br, make([]byte, 512))
	require.NoError(t, err)
	// DISC while the first is in flight: its reply still comes, then the server closes.
	r.request(nbd.Request{Type: nbd.CmdDisc}, nil)
	time.Sleep(20 * time.Millisecond)
	close(dev.release)
	r.expectOK(1)
	got := make([]byte, 512)
	_, err = io.ReadFull(r.br, got)
	require.NoError(t, err)
	assert.Equal(t, dev.Bytes()[8192:8704], got)
	r.closed()
}

func TestConcurrentClientRequests(t *testing.T) {
	const size = 8 << 20
	dev := backend.NewMemory(size)
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev, Writable: true}), MaxInflight: 8})
	c := coreDial(t, addr, "x", nil)
	// Each goroutine owns a stripe, writes random blocks and reads them back.
	const workers, rounds, stripe = 16, 20, size / 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			model := make([]byte, stripe)
			base := int64(w * stripe)
			for range rounds {
				off := rng.IntN(stripe - 65536)
				n := 1 + rng.IntN(65536)
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				if _, err := c.WriteAt(p, base+int64(off)); !assert.NoError(t, err) {
					return
				}
				copy(model[off:], p)
				got := make([]byte, n)
				if _, err := c.ReadAt(got, base+int64(off)); !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, model[off:off+n], got)
			}
			got := make([]byte, stripe)
			_, err := c.ReadAt(got, base)
			assert.NoError(t, err)
			assert.True(t, bytes.Equal(model, got), "stripe %d", w)
		})
	}
	wg.Wait()
}

// panicDevice panics on reads at offset 0 and fails extents.
type panicDevice struct{ *backend.Memory }

func (d panicDevice) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		panic("device bug")
	}
	return d.Memory.ReadAt(p, off)
}

func (d panicDevice) Extents(off, n int64) ([]backend.Extent, error) {
	return nil, errors.New("no extent map")
}

func TestDeviceFailures(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: panicDevice{patterned(1 << 16)}})}
	addr := coreServe(t, srv)
	c := coreDial(t, addr, "x", nil)
	ctx := context.Background()
	ext, err := c.BlockStatus(ctx, 512, 4096, 0)
	require.NoError(t, err, "a failing extent map is reported as unknown status")
	assert.Equal(t, []nbd.Extent{{Offset: 512, Length: 4096}}, ext)
	_, err = c.ReadAt(make([]byte, 16), 0)
	assert.ErrorIs(t, err, nbd.EIO)
	// The connection is closed after the panic; the server keeps serving others.
	_, err = c.ReadAt(make([]byte, 16), 16)
	assert.Error(t, err)
	c2 := coreDial(t, addr, "x", nil)
	_, err = c2.ReadAt(make([]byte, 16), 16)
	assert.NoError(t, err)
}

// stripedDevice alternates data and holes every 512 bytes, so a block status reply carries
// one descriptor per 512 bytes.
type stripedDevice struct{ *backend.Memory }

func (d stripedDevice) Extents(off, n int64) ([]backend.Extent, error) {
	var out []backend.Extent
	for pos := off; pos < off+n; {
		end := min(pos+512-pos%512, off+n)
		h := pos/512%2 == 1
		out = append(out, backend.Extent{Offset: pos, Length: end - pos, Hole: h, Zero: h})
		pos = end
	}
	return out, nil
}

// TestBlockStatusManyExtents goes from the device's extents to the client's through a chunk
// of more descriptors than the client reads at a time.
func TestBlockStatusManyExtents(t *testing.T) {
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "striped", Device: stripedDevice{backend.NewMemory(4 << 20)}})})
	c := coreDial(t, addr, "striped", nil)
	const off, n = 512 * 3, 512 * 3000
	got, err := c.BlockStatus(context.Background(), off, n, 0)
	require.NoError(t, err)
	require.Len(t, got, 3000)
	for i, e := range got {
		pos := int64(off + 512*i)
		h := pos/512%2 == 1
		require.Equal(t, nbd.Extent{Offset: pos, Length: 512, Hole: h, Zero: h}, e, "extent %d", i)
	}
}

// After a streak of fast requests a burst of small reads is served in turn on the
// request-reading goroutine; a slow one among them ends that: its successor waits for it, and
// the requests after it are served concurrently again (out of order, as before the streak).
func TestInlineBurstAfterFastStreak(t *testing.T) {
	// Under the race detector on a loaded machine a request may take longer than slowInline.
	t.Cleanup(nbd.SetSlowInline(100 * time.Millisecond)) // runs after the server has stopped
	first, second := make(chan struct{}), make(chan struct{})
	dev := &gatedDevice{Memory: patterned(1 << 20), at: 8192, gates: make(chan chan struct{}, 2)}
	dev.gates <- first
	dev.gates <- second
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev})})
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	r.goRaw("x", false)
	read := func(cookie, off uint64) []byte {
		b, err := nbd.Request{Type: nbd.CmdRead, Cookie: cookie, Offset: off, Length: 512}.MarshalBinary()
		require.NoError(t, err)
		return b
	}
	expect := func(cookie, off uint64) {
		t.Helper()
		r.expectOK(cookie)
		got := make([]byte, 512)
		_, err := io.ReadFull(r.br, got)
		require.NoError(t, err)
		require.Equal(t, dev.Bytes()[off:off+512], got)
	}
	// A streak: 128 reads, in bursts of 16.
	for burst := range 8 {
		var b []byte
		for i := range 16 {
			b = append(b, read(uint64(100+16*burst+i), 0)...)
		}
		r.write(b)
		got := map[uint64]bool{}
		for range 16 {
			errno, cookie := r.simpleReply()
			require.Zero(t, errno)
			_, err := io.ReadFull(r.br, make([]byte, 512))
			require.NoError(t, err)
			got[cookie] = true
		}
		require.Len(t, got, 16)
	}
	// The blocked read is served inline: the next one is answered only after it.
	r.write(append(read(1, 8192), read(2, 0)...))
	time.Sleep(250 * time.Millisecond) // past slowInline (100 ms here)
	close(first)
	expect(1, 8192)
	expect(2, 0)
	// Served concurrently again: a blocked read no longer holds up the next.
	r.write(append(read(3, 8192), read(4, 4096)...))
	expect(4, 4096)
	close(second)
	expect(3, 8192)
}

// gatedDevice makes each read at offset at wait for the next gate to close.
type gatedDevice struct {
	*backend.Memory
	at    int64
	gates chan chan struct{}
}

func (d *gatedDevice) ReadAt(p []byte, off int64) (int, error) {
	if off == d.at {
		<-<-d.gates
	}
	return d.Memory.ReadAt(p, off)
}
