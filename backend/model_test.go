package backend_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
)

// fullDevice is what every writable backend implements.
type fullDevice interface {
	backend.WriterDevice
	backend.Syncer
	backend.Trimmer
	backend.Zeroer
	backend.Extenter
}

// modelSteps is the length of each random operation sequence.
const modelSteps = 3000

// picker draws offsets and lengths that favour the places where bugs live: zero, the end of
// the device, block and page boundaries and just beside them.
type picker struct {
	r    *rand.Rand
	size int64
}

func (pk picker) offset(lo, hi int64) int64 {
	r := pk.r
	switch r.IntN(6) {
	case 0:
		return lo
	case 1:
		return max(lo, hi-r.Int64N(8))
	case 2:
		// Near a 512 or 4096 boundary.
		unit := []int64{512, 4096}[r.IntN(2)]
		b := lo + r.Int64N(hi-lo+1)
		return min(hi, max(lo, b/unit*unit+r.Int64N(3)-1))
	default:
		return lo + r.Int64N(hi-lo+1)
	}
}

func (pk picker) length(maxLen int64) int64 {
	r := pk.r
	if maxLen <= 0 {
		return 0
	}
	var n int64
	switch r.IntN(6) {
	case 0:
		n = 0
	case 1:
		n = 1 + r.Int64N(16)
	case 2:
		n = []int64{512, 4096, 8192, 65536}[r.IntN(4)] + r.Int64N(3) - 1
	case 3:
		n = r.Int64N(pk.size/2 + 1)
	default:
		n = r.Int64N(3 * 4096)
	}
	return min(n, maxLen)
}

// checkRangeError asserts err is a *backend.RangeError naming op, off, n and size.
func checkRangeError(t *testing.T, err error, op string, off, n, size int64) {
	t.Helper()
	var re *backend.RangeError
	require.ErrorAs(t, err, &re, "%s %d+%d on size %d", op, off, n, size)
	assert.Equal(t, backend.RangeError{Op: op, Off: off, Len: n, Size: size}, *re)
	assert.Contains(t, err.Error(), fmt.Sprintf("%d+%d beyond size %d", off, n, size))
}

// expectRead computes what io.ReaderAt must return for a read of n bytes at off.
func expectRead(model []byte, off int64, n int) (data []byte, err error) {
	size := int64(len(model))
	switch {
	case off < 0:
		return nil, errors.New("range")
	case off >= size:
		if n == 0 && off == size {
			return nil, nil
		}
		return nil, io.EOF
	case int64(n) > size-off:
		return model[off:], io.EOF
	}
	return model[off : off+int64(n)], nil
}

// checkExtents asserts that exts tile [off, off+n) from off, cover some of it, and that every
// extent marked Zero reads as zeroes in model.
func checkExtents(t *testing.T, exts []backend.Extent, off, n int64, model []byte) {
	t.Helper()
	if n == 0 {
		assert.Empty(t, exts)
		return
	}
	require.NotEmpty(t, exts, "extents %d+%d", off, n)
	pos := off
	for _, e := range exts {
		require.Equal(t, pos, e.Offset, "extents %d+%d not contiguous: %v", off, n, exts)
		require.Positive(t, e.Length, "extents %d+%d: %v", off, n, exts)
		pos += e.Length
		require.LessOrEqual(t, pos, off+n, "extents %d+%d overrun: %v", off, n, exts)
		if e.Zero {
			require.True(t, allBytes(model[e.Offset:pos], 0), "extent %+v marked zero holds data", e)
		}
	}
}

// compareAll asserts the whole device reads as model.
func compareAll(t *testing.T, d backend.Device, model []byte) {
	t.Helper()
	require.Equal(t, int64(len(model)), d.Size())
	got := make([]byte, len(model))
	n, err := d.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, len(model), n)
	if !bytes.Equal(model, got) {
		i := 0
		for i < len(model) && model[i] == got[i] {
			i++
		}
		t.Fatalf("device differs from model first at byte %d of %d", i, len(model))
	}
}

// runModel applies a seeded random sequence of operations to d, including out-of-range ones,
// checking each result against model, which holds d's initial contents and is updated.
func runModel(t *testing.T, d fullDevice, model []byte, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 0x6e6574726f6f74))
	size := int64(len(model))
	pk := picker{r: r, size: size}
	for step := range modelSteps {
		var off, n int64
		inRange := r.IntN(10) != 0
		if inRange {
			off = pk.offset(0, size)
			n = pk.length(size - off)
		} else {
			switch r.IntN(3) {
			case 0:
				off = -1 - r.Int64N(4096)
				n = pk.length(size)
			case 1:
				off = size + 1 + r.Int64N(4096)
				n = pk.length(size)
			default:
				off = pk.offset(0, size)
				n = size - off + 1 + r.Int64N(4096)
			}
		}
		switch op := r.IntN(20); {
		case op < 7:
			// Reads may run past the end: io.ReaderAt's contract applies.
			if r.IntN(3) == 0 && off >= 0 {
				n += r.Int64N(8192)
			}
			p := make([]byte, n)
			got, err := d.ReadAt(p, off)
			want, wantErr := expectRead(model, off, int(n))
			switch {
			case off < 0:
				checkRangeError(t, err, "read", off, n, size)
			case wantErr == io.EOF:
				require.ErrorIs(t, err, io.EOF, "step %d: read %d+%d", step, off, n)
			default:
				require.NoError(t, err, "step %d: read %d+%d", step, off, n)
			}
			require.Equal(t, len(want), got, "step %d: read %d+%d count", step, off, n)
			if !bytes.Equal(want, p[:got]) {
				t.Fatalf("step %d: read %d+%d returned wrong data", step, off, n)
			}
		case op < 13:
			p := make([]byte, n)
			fillRandom(r, p)
			got, err := d.WriteAt(p, off)
			if !inRange {
				checkRangeError(t, err, "write", off, n, size)
				require.Zero(t, got)
				break
			}
			require.NoError(t, err, "step %d: write %d+%d", step, off, n)
			require.Equal(t, int(n), got)
			copy(model[off:], p)
		case op < 17:
			name, fn := "trim", d.Trim
			if op >= 15 {
				name, fn = "zero", d.ZeroAt
			}
			err := fn(off, n)
			if !inRange {
				checkRangeError(t, err, name, off, n, size)
				break
			}
			require.NoError(t, err, "step %d: %s %d+%d", step, name, off, n)
			clear(model[off : off+n])
		case op < 18:
			require.NoError(t, d.Sync())
		default:
			exts, err := d.Extents(off, n)
			if !inRange {
				checkRangeError(t, err, "extents", off, n, size)
				break
			}
			require.NoError(t, err, "step %d: extents %d+%d", step, off, n)
			checkExtents(t, exts, off, n, model)
		}
		if step%500 == 0 {
			compareAll(t, d, model)
		}
	}
	compareAll(t, d, model)
}

// runConcurrent runs one random sequence per goroutine, each confined to its own region of the
// device with boundaries inside blocks and pages, so that neighbours share blocks.
func runConcurrent(t *testing.T, d fullDevice, model []byte, seed uint64) {
	t.Helper()
	const workers = 4
	size := int64(len(model))
	bounds := []int64{0}
	for i := int64(1); i < workers; i++ {
		bounds = append(bounds, size*i/workers+777*i)
	}
	bounds = append(bounds, size)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		lo, hi := bounds[w], bounds[w+1]
		wg.Go(func() {
			if err := regionWorker(d, model, lo, hi, seed+uint64(w)); err != nil {
				errs <- fmt.Errorf("worker %d [%d,%d): %w", w, lo, hi, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !t.Failed() {
		compareAll(t, d, model)
	}
}

func regionWorker(d fullDevice, model []byte, lo, hi int64, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 0x636f6e63))
	pk := picker{r: r, size: hi - lo}
	for step := range modelSteps / 4 {
		off := pk.offset(lo, hi)
		n := pk.length(hi - off)
		switch op := r.IntN(10); {
		case op < 4:
			p := make([]byte, n)
			if _, err := d.ReadAt(p, off); err != nil && !(err == io.EOF && off+n == int64(len(model))) {
				return fmt.Errorf("step %d: read %d+%d: %w", step, off, n, err)
			}
			if !bytes.Equal(p, model[off:off+n]) {
				return fmt.Errorf("step %d: read %d+%d returned wrong data", step, off, n)
			}
		case op < 7:
			p := make([]byte, n)
			fillRandom(r, p)
			if _, err := d.WriteAt(p, off); err != nil {
				return fmt.Errorf("step %d: write %d+%d: %w", step, off, n, err)
			}
			copy(model[off:], p)
		case op < 8:
			if err := d.Trim(off, n); err != nil {
				return fmt.Errorf("step %d: trim %d+%d: %w", step, off, n, err)
			}
			clear(model[off : off+n])
		case op < 9:
			if err := d.ZeroAt(off, n); err != nil {
				return fmt.Errorf("step %d: zero %d+%d: %w", step, off, n, err)
			}
			clear(model[off : off+n])
		default:
			if err := d.Sync(); err != nil {
				return fmt.Errorf("step %d: sync: %w", step, err)
			}
		}
	}
	return nil
}

// allBytes reports whether every byte of p is v.
func allBytes(p []byte, v byte) bool {
	return bytes.Count(p, []byte{v}) == len(p)
}

// noise is random bytes, none of them zero (so zeroed ranges stand out), that fillRandom copies
// from at random places: far cheaper under the race detector than drawing every byte.
var noise = func() []byte {
	p := make([]byte, 64<<10+13)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range p {
		p[i] = byte(r.UintN(255)) + 1
	}
	return p
}()

func fillRandom(r *rand.Rand, p []byte) {
	for len(p) > 0 {
		p = p[copy(p, noise[r.IntN(len(noise)):]):]
	}
}

func randomBytes(seed uint64, n int64) []byte {
	p := make([]byte, n)
	fillRandom(rand.New(rand.NewPCG(seed, 1)), p)
	return p
}

// modelSize is not a multiple of any block size, so the last block is short.
const modelSize = 1<<20 + 3*512 + 77

func TestModelMemory(t *testing.T) {
	t.Parallel()
	init := randomBytes(1, modelSize)
	d := backend.NewMemoryFrom(bytes.Clone(init), false)
	runModel(t, d, bytes.Clone(init), 11)
	t.Run("concurrent", func(t *testing.T) {
		runConcurrent(t, d, bytes.Clone(d.Bytes()), 12)
	})
}

func TestModelCopyOnWriteMemory(t *testing.T) {
	t.Parallel()
	for _, bs := range []int64{0, 512, 65536} {
		t.Run(fmt.Sprintf("block%d", bs), func(t *testing.T) {
			t.Parallel()
			init := randomBytes(2, modelSize)
			base := backend.NewMemoryFrom(bytes.Clone(init), true)
			d, err := backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{BlockSize: bs})
			require.NoError(t, err)
			defer d.Close()
			model := bytes.Clone(init)
			runModel(t, d, model, 21+uint64(bs))
			runConcurrent(t, d, model, 22+uint64(bs))
			assert.Equal(t, init, base.Bytes(), "base modified")
		})
	}
}
