package backend_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
)

// hammerSharedBlocks has workers write interleaved quarters of the same blocks at the same time,
// in different orders, then checks that no write was lost: the case where two copy-ups of one
// block race.
func hammerSharedBlocks(t *testing.T, d backend.WriterDevice, blockSize int64) {
	t.Helper()
	const workers = 4
	nblocks := d.Size() / blockSize
	part := blockSize / workers
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			p := bytes.Repeat([]byte{byte(0xa0 + w)}, int(part))
			for _, b := range r.Perm(int(nblocks)) {
				if _, err := d.WriteAt(p, int64(b)*blockSize+int64(w)*part); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := make([]byte, blockSize)
	for b := range nblocks {
		_, err := d.ReadAt(got, b*blockSize)
		require.NoError(t, err)
		for w := range int64(workers) {
			q := got[w*part : (w+1)*part]
			require.True(t, allBytes(q, byte(0xa0+w)), "block %d: write of worker %d lost", b, w)
		}
	}
}

func TestCopyOnWriteConcurrentCopyUp(t *testing.T) {
	for _, overlay := range []string{"memory", "temp"} {
		t.Run(overlay, func(t *testing.T) {
			base := backend.NewMemoryFrom(randomBytes(8, 1024*4096), true)
			opts := &backend.CopyOnWriteOptions{}
			if overlay == "temp" {
				opts.TempDir = t.TempDir()
			}
			d, err := backend.NewCopyOnWrite(base, nil, opts)
			require.NoError(t, err)
			defer d.Close()
			hammerSharedBlocks(t, d, d.BlockSize())
		})
	}
}

func TestCopyOnWriteOptions(t *testing.T) {
	base := backend.NewMemory(8192)
	for _, bs := range []int64{-4096, 1, 256, 1000, 4097} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			_, err := backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{BlockSize: bs})
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("block size %d", bs))
		})
	}
	d, err := backend.NewCopyOnWrite(base, nil, nil)
	require.NoError(t, err)
	assert.Equal(t, int64(backend.DefaultCopyOnWriteBlockSize), d.BlockSize())
	assert.Equal(t, int64(8192), d.Size())
	assert.True(t, backend.IsWritable(d))

	_, err = backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: "/nonexistent/dir"})
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestCopyOnWriteBaseUntouched(t *testing.T) {
	init := randomBytes(9, 64<<10)
	// A writable base: CopyOnWrite must still never write to it.
	base := backend.NewMemoryFrom(bytes.Clone(init), false)
	d, err := backend.NewCopyOnWrite(base, nil, nil)
	require.NoError(t, err)
	_, err = d.WriteAt([]byte("hello"), 4090)
	require.NoError(t, err)
	require.NoError(t, d.Trim(8192, 8192))
	require.NoError(t, d.ZeroAt(100, 10))
	assert.Equal(t, init, base.Bytes())

	got := make([]byte, 5)
	_, err = d.ReadAt(got, 4090)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))
	_, err = base.ReadAt(got, 4090)
	require.NoError(t, err)
	assert.Equal(t, init[4090:4095], got)
}

func TestCopyOnWriteExtents(t *testing.T) {
	// The base is data in [0, 16K) and a hole in [16K, 32K) as far as its extents tell.
	base := extentsDevice{Memory: backend.NewMemory(32 << 10), holeFrom: 16 << 10}
	d, err := backend.NewCopyOnWrite(base, nil, nil)
	require.NoError(t, err)
	_, err = d.WriteAt([]byte{1}, 20<<10) // copies block 5 up into the overlay
	require.NoError(t, err)
	require.NoError(t, d.Trim(4<<10, 8<<10)) // blocks 1 and 2
	require.NoError(t, d.ZeroAt(100, 10))    // partial: block 0 becomes overlay data

	exts, err := d.Extents(0, 32<<10)
	require.NoError(t, err)
	assert.Equal(t, []backend.Extent{
		{Offset: 0, Length: 4 << 10},
		{Offset: 4 << 10, Length: 8 << 10, Hole: true, Zero: true},
		{Offset: 12 << 10, Length: 4 << 10},
		{Offset: 16 << 10, Length: 4 << 10, Hole: true, Zero: true},
		{Offset: 20 << 10, Length: 4 << 10},
		{Offset: 24 << 10, Length: 8 << 10, Hole: true, Zero: true},
	}, exts)

	exts, err = d.Extents(5000, 100)
	require.NoError(t, err)
	assert.Equal(t, []backend.Extent{{Offset: 5000, Length: 100, Hole: true, Zero: true}}, exts)

	_, err = d.Extents(30<<10, 4<<10)
	checkRangeError(t, err, "extents", 30<<10, 4<<10, 32<<10)
}

// extentsDevice is a Memory that reports everything from holeFrom on as a hole.
type extentsDevice struct {
	*backend.Memory
	holeFrom int64
}

func (e extentsDevice) Extents(off, n int64) ([]backend.Extent, error) {
	if off >= e.holeFrom {
		return []backend.Extent{{Offset: off, Length: n, Hole: true, Zero: true}}, nil
	}
	return []backend.Extent{{Offset: off, Length: min(n, e.holeFrom-off)}}, nil
}

func TestCopyOnWriteClose(t *testing.T) {
	d, err := backend.NewCopyOnWrite(backend.NewMemory(4096), nil, nil)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	_, err = d.ReadAt(make([]byte, 1), 0)
	assert.ErrorIs(t, err, os.ErrClosed)
	_, err = d.WriteAt(make([]byte, 1), 0)
	assert.ErrorIs(t, err, os.ErrClosed)
	assert.ErrorIs(t, d.Sync(), os.ErrClosed)
	assert.ErrorIs(t, d.Close(), os.ErrClosed)
}

// failingDevice fails every read, standing in for a broken base image.
type failingDevice struct{ size int64 }

var errBroken = errors.New("broken disk")

func (f failingDevice) ReadAt([]byte, int64) (int, error) { return 0, errBroken }
func (f failingDevice) Size() int64                       { return f.size }

func TestCopyOnWriteBaseErrors(t *testing.T) {
	d, err := backend.NewCopyOnWrite(failingDevice{size: 8192}, nil, nil)
	require.NoError(t, err)
	_, err = d.ReadAt(make([]byte, 10), 5)
	require.ErrorIs(t, err, errBroken)
	assert.Contains(t, err.Error(), "read 5+10")

	// A partial write must copy the block up from the base, and fails with it.
	_, err = d.WriteAt(make([]byte, 10), 4096+5)
	require.ErrorIs(t, err, errBroken)
	assert.Contains(t, err.Error(), "write 4101+10")

	// A whole-block write needs no base data.
	_, err = d.WriteAt(bytes.Repeat([]byte{7}, 4096), 4096)
	require.NoError(t, err)
	got := make([]byte, 4096)
	_, err = d.ReadAt(got, 4096)
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte{7}, 4096), got)
}

func TestCopyOnWriteEmptyBase(t *testing.T) {
	d, err := backend.NewCopyOnWrite(backend.NewMemory(0), nil, nil)
	require.NoError(t, err)
	defer d.Close()
	n, err := d.ReadAt(nil, 0)
	assert.NoError(t, err)
	assert.Zero(t, n)
	_, err = d.ReadAt(make([]byte, 1), 0)
	assert.ErrorIs(t, err, io.EOF)
	_, err = d.WriteAt([]byte{1}, 0)
	checkRangeError(t, err, "write", 0, 1, 0)
	exts, err := d.Extents(0, 0)
	assert.NoError(t, err)
	assert.Empty(t, exts)
}
