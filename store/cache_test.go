package store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

var _ backend.Device = (*store.Device)(nil)

// pushed is a store holding one pushed build.
type pushed struct {
	srv   *storetest.Server
	st    *store.Store
	res   *store.PushResult
	image []byte
}

func pushNoise(t *testing.T, chunks int) *pushed {
	t.Helper()
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "c")
	image := noise(chunks*testChunk-100, 42)
	res, err := st.Push(context.Background(), writeBuild(t, "1.0.0", image, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	return &pushed{srv, st, res, image}
}

func (p *pushed) open(t *testing.T, cfg *store.CacheConfig) (*store.Cache, *store.Device) {
	t.Helper()
	c, err := store.NewCache(p.st, cfg)
	require.NoError(t, err)
	d, err := c.Open(p.res.ID, p.res.Manifest, "image")
	require.NoError(t, err)
	return c, d
}

func (p *pushed) chunkKey(i int) string { return "c/chunks/" + p.res.Manifest.Image.Chunks[i].String() }

func readAll(t *testing.T, d *store.Device, step int) []byte {
	t.Helper()
	out := make([]byte, d.Size())
	for off := 0; off < len(out); off += step {
		n, err := d.ReadAt(out[off:min(off+step, len(out))], int64(off))
		require.NoError(t, err)
		require.Equal(t, min(step, len(out)-off), n)
	}
	return out
}

func TestDeviceReadsImage(t *testing.T) {
	p := pushNoise(t, 12)
	c, d := p.open(t, &store.CacheConfig{Readahead: -1})
	assert.Equal(t, int64(len(p.image)), d.Size())
	assert.Equal(t, p.res.ID, d.Manifest())

	// Reads that straddle chunks, in odd sizes.
	for _, step := range []int{testChunk, 1000, 3*testChunk + 7} {
		assert.True(t, bytes.Equal(p.image, readAll(t, d, step)), "step %d", step)
	}
	s := c.Stats()
	assert.Equal(t, int64(12), s.Misses)
	assert.Equal(t, int64(12), s.OriginRequests)
	assert.Equal(t, int64(len(p.image)), s.OriginBytes)
	assert.Zero(t, s.Readaheads)
	assert.Positive(t, s.Hits)
	assert.Equal(t, int64(3*len(p.image)), s.ManifestBytes[p.res.ID])
	assert.Equal(t, int64(len(p.image)), s.MemoryBytes)

	// io.ReaderAt at the end.
	buf := make([]byte, 200)
	n, err := d.ReadAt(buf, d.Size()-50)
	assert.Equal(t, 50, n)
	assert.Equal(t, io.EOF, err)
	assert.Equal(t, p.image[len(p.image)-50:], buf[:50])
	_, err = d.ReadAt(buf, d.Size()+1)
	assert.Equal(t, io.EOF, err)
	_, err = d.ReadAt(buf, -1)
	assert.Error(t, err)

	// Kernel and initrd are devices too.
	k, err := c.Open(p.res.ID, p.res.Manifest, "kernel")
	require.NoError(t, err)
	kb := make([]byte, k.Size())
	_, err = k.ReadAt(kb, 0)
	require.NoError(t, err)
	assert.Equal(t, "kernel 6.1.0-13-amd64\n", string(kb))
	_, err = c.Open(p.res.ID, p.res.Manifest, "xen")
	assert.Error(t, err)
}

func TestDeviceConcurrentMissesFetchOnce(t *testing.T) {
	p := pushNoise(t, 4)
	c, d := p.open(t, &store.CacheConfig{Readahead: -1})
	p.srv.SetDelay(150 * time.Millisecond) // all readers arrive while the fetch is in flight
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			buf := make([]byte, 512)
			off := int64(testChunk + i*64)
			_, err := d.ReadAt(buf, off)
			assert.NoError(t, err)
			assert.Equal(t, p.image[off:off+512], buf)
		})
	}
	wg.Wait()
	s := c.Stats()
	assert.Equal(t, int64(1), s.OriginRequests)
	assert.Equal(t, int64(1), s.Misses)
	assert.Equal(t, int64(49), s.CoalescedWaits+s.Hits)
	assert.Positive(t, s.CoalescedWaits)
	assert.Equal(t, 1, p.srv.Gets(p.chunkKey(1)), "GETs of chunk 1 at the store")
}

func TestDeviceMemoryBound(t *testing.T) {
	p := pushNoise(t, 10)
	c, d := p.open(t, &store.CacheConfig{MemoryBytes: 3 * testChunk, Readahead: -1})
	readAll(t, d, testChunk)
	s := c.Stats()
	assert.LessOrEqual(t, s.MemoryBytes, int64(3*testChunk))
	assert.Equal(t, int64(10), s.OriginRequests)
	// The last chunks are cached, the first was evicted.
	buf := make([]byte, 10)
	_, err := d.ReadAt(buf, int64(9*testChunk))
	require.NoError(t, err)
	assert.Equal(t, int64(10), c.Stats().OriginRequests)
	_, err = d.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(11), c.Stats().OriginRequests)
}

func TestDeviceReadahead(t *testing.T) {
	p := pushNoise(t, 10)
	c, d := p.open(t, &store.CacheConfig{Readahead: 3})
	buf := make([]byte, 100)
	_, err := d.ReadAt(buf, 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Stats().Readaheads == 3 }, 5*time.Second, 10*time.Millisecond)
	// A sequential reader finds the next chunks fetched already, and keeps 3 ahead.
	for i := 1; i <= 3; i++ {
		_, err := d.ReadAt(buf, int64(i*testChunk))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return c.Stats().Readaheads == 6 }, 5*time.Second, 10*time.Millisecond)
	s := c.Stats()
	assert.Equal(t, int64(1), s.Misses, "only the first chunk was fetched for a waiting read")
	assert.Equal(t, int64(7), s.OriginRequests)

	// A random reader gets no readahead.
	c2, d2 := p.open(t, &store.CacheConfig{Readahead: 3})
	for _, i := range []int{8, 2, 5} {
		_, err := d2.ReadAt(buf, int64(i*testChunk))
		require.NoError(t, err)
	}
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, c2.Stats().Readaheads)
}

func TestDeviceDiskCache(t *testing.T) {
	p := pushNoise(t, 6)
	dir := t.TempDir()
	c, d := p.open(t, &store.CacheConfig{DiskDir: dir, Readahead: -1})
	readAll(t, d, testChunk)
	require.Eventually(t, func() bool { return c.Stats().DiskBytes == int64(len(p.image)) }, 5*time.Second, 10*time.Millisecond)

	// A new cache (a restarted replica) reads everything from disk, with the store down.
	p.srv.SetDown(true)
	c2, d2 := p.open(t, &store.CacheConfig{DiskDir: dir, Readahead: -1})
	assert.True(t, bytes.Equal(p.image, readAll(t, d2, testChunk)))
	s := c2.Stats()
	assert.Equal(t, int64(6), s.DiskHits)
	assert.Zero(t, s.OriginRequests)

	// A damaged file is detected and the chunk fetched again.
	p.srv.SetDown(false)
	h := p.res.Manifest.Image.Chunks[2]
	require.NoError(t, os.WriteFile(filepath.Join(dir, h.String()), bytes.Repeat([]byte{0}, testChunk), 0o600))
	c3, d3 := p.open(t, &store.CacheConfig{DiskDir: dir, Readahead: -1})
	assert.True(t, bytes.Equal(p.image, readAll(t, d3, testChunk)))
	s = c3.Stats()
	assert.Equal(t, int64(1), s.CorruptChunks)
	assert.Equal(t, int64(1), s.OriginRequests)
	assert.Equal(t, int64(5), s.DiskHits)

	// The disk cache is bounded.
	small := t.TempDir()
	c4, d4 := p.open(t, &store.CacheConfig{DiskDir: small, DiskBytes: 2 * testChunk, Readahead: -1})
	readAll(t, d4, testChunk)
	require.Eventually(t, func() bool {
		files, _ := os.ReadDir(small)
		return len(files) == 2 && c4.Stats().DiskBytes <= 2*testChunk
	}, 5*time.Second, 10*time.Millisecond)
}

func TestDeviceStoreGoesAway(t *testing.T) {
	p := pushNoise(t, 8)
	// No breaker: every cold read goes to the store and must give up on its own (breaker_test.go has the breaker).
	c, d := p.open(t, &store.CacheConfig{Readahead: -1, FetchTimeout: 300 * time.Millisecond, BreakAfter: -1})
	half := make([]byte, 4*testChunk)
	_, err := d.ReadAt(half, 0)
	require.NoError(t, err)

	for _, mode := range []string{"refuses", "hangs"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "refuses" {
				p.srv.SetDown(true)
				defer p.srv.SetDown(false)
			} else {
				p.srv.SetDelay(time.Minute)
				defer p.srv.SetDelay(0)
			}
			before := c.Stats()
			var wg sync.WaitGroup
			// Cached chunks are served while cold reads fail, each on its own.
			for i := range 8 {
				wg.Go(func() {
					buf := make([]byte, 1000)
					off := int64(i*testChunk + 5)
					start := time.Now()
					_, err := d.ReadAt(buf, off)
					if i < 4 {
						assert.NoError(t, err, "cached chunk %d", i)
						assert.Equal(t, p.image[off:off+1000], buf)
						return
					}
					assert.Error(t, err, "cold chunk %d", i)
					assert.Less(t, time.Since(start), 5*time.Second, "a cold read gives up in bounded time")
				})
			}
			wg.Wait()
			s := c.Stats()
			assert.Equal(t, before.ReadErrors+4, s.ReadErrors)
			assert.GreaterOrEqual(t, s.Hits-before.Hits, int64(4))
		})
	}
	// The store is back: the cold chunks read.
	assert.True(t, bytes.Equal(p.image, readAll(t, d, testChunk)))
}

func TestDeviceCorruptChunkDetected(t *testing.T) {
	p := pushNoise(t, 4)
	bad := bytes.Clone(p.image[2*testChunk : 3*testChunk])
	bad[7] ^= 0x80
	p.srv.Put(t, "images", p.chunkKey(2), bad)
	c, d := p.open(t, &store.CacheConfig{Readahead: -1})
	buf := make([]byte, testChunk)
	_, err := d.ReadAt(buf, 2*testChunk)
	require.ErrorIs(t, err, store.ErrCorrupt)
	_, err = d.ReadAt(buf, 1*testChunk)
	require.NoError(t, err, "other chunks read")
	s := c.Stats()
	assert.Equal(t, int64(1), s.CorruptChunks)
	assert.Equal(t, int64(1), s.ReadErrors)

	// A truncated chunk and one too long too.
	p.srv.Put(t, "images", p.chunkKey(3), p.image[3*testChunk:3*testChunk+10])
	_, err = d.ReadAt(buf[:10], 3*testChunk)
	require.ErrorIs(t, err, store.ErrCorrupt)
	p.srv.Put(t, "images", p.chunkKey(0), append(bytes.Clone(p.image[:testChunk]), 0))
	_, err = d.ReadAt(buf[:10], 0)
	require.ErrorIs(t, err, store.ErrCorrupt)
}

// TestDeviceOverNBD serves a device with netroot's NBD server and reads it with its client: the
// path a replica serves.
func TestDeviceOverNBD(t *testing.T) {
	p := pushNoise(t, 9)
	_, d := p.open(t, nil)
	exports, err := nbd.NewExportSet(&nbd.Export{Name: "root", Device: d})
	require.NoError(t, err)
	srv := &nbd.Server{Exports: exports}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ctx := context.Background()
	cl, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.Go(ctx, "root")
	require.NoError(t, err)
	assert.Equal(t, int64(len(p.image)), cl.Size())
	got := make([]byte, len(p.image))
	_, err = cl.ReadAt(got, 0)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(p.image, got))

	// A chunk that cannot be fetched is an NBD error for that request; the connection lives.
	p.srv.Put(t, "images", p.chunkKey(0), []byte("garbage"))
	_, d2 := p.open(t, nil)
	require.NoError(t, exports.Add(&nbd.Export{Name: "fresh", Device: d2}))
	cl2, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	defer cl2.Close()
	_, err = cl2.Go(ctx, "fresh")
	require.NoError(t, err)
	_, err = cl2.ReadAt(got[:100], 0)
	var nerr *nbd.Error
	require.True(t, errors.As(err, &nerr), "want an NBD error reply, got %v", err)
	_, err = cl2.ReadAt(got[:100], testChunk)
	require.NoError(t, err)
	assert.Equal(t, p.image[testChunk:testChunk+100], got[:100])
}
