package store_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/store"
)

// hangingFront is an S3 endpoint in front of the in-process store: it passes requests on, or,
// while hang is set, holds each one without answering until the client gives up.
type hangingFront struct {
	*httptest.Server
	hang     atomic.Bool
	requests atomic.Int64
}

func newHangingFront(t *testing.T, backend string) *hangingFront {
	u, err := url.Parse(backend)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(u)
	f := &hangingFront{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if f.hang.Load() {
			<-r.Context().Done() // a store that accepted the request and never answers
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// TestBreakerHangingStore: with a store that hangs, a cold read fails within the fetch timeout
// and cached reads go on; BreakAfter failures open the breaker (misses fail at once, no request
// reaches the store), the half-open probe after the cool-down reopens it while the store still
// hangs and closes it when the store answers again.
func TestBreakerHangingStore(t *testing.T) {
	p := pushNoise(t, 8)
	front := newHangingFront(t, p.srv.URL)
	cfg := *p.srv.Config()
	cfg.Endpoint = front.URL
	st, err := store.New("images", "c", &cfg)
	require.NoError(t, err)
	const timeout, coolDown = 300 * time.Millisecond, 400 * time.Millisecond
	c, err := store.NewCache(st, &store.CacheConfig{FetchTimeout: timeout, BreakAfter: 3, BreakFor: coolDown, Readahead: -1})
	require.NoError(t, err)
	d, err := c.Open(p.res.ID, p.res.Manifest, "image")
	require.NoError(t, err)
	read := func(chunk int) ([]byte, time.Duration, error) {
		buf := make([]byte, 4096)
		start := time.Now()
		_, err := d.ReadAt(buf, int64(chunk*testChunk))
		return buf, time.Since(start), err
	}
	want := func(chunk int) []byte { return p.image[chunk*testChunk : chunk*testChunk+4096] }

	got, _, err := read(0) // through the front, store answering: cached
	require.NoError(t, err)
	require.True(t, bytes.Equal(want(0), got))

	front.hang.Store(true)
	for i, chunk := range []int{1, 2, 3} {
		_, took, err := read(chunk)
		require.Error(t, err, "cold read %d while the store hangs", i)
		assert.Less(t, took, 10*timeout, "a cold read fails within its bound, not when the store answers")
		t.Logf("cold read %d failed after %v: %v", i, took.Round(time.Millisecond), err)
		got, _, err := read(0)
		require.NoError(t, err, "cached chunks are served while the store hangs")
		assert.True(t, bytes.Equal(want(0), got))
	}
	// (A fetch ends just after the read that gave up on it: both have the same timeout.)
	require.Eventually(t, func() bool { return c.Stats().Breaker == store.BreakerOpen }, 5*time.Second, time.Millisecond,
		"three failed fetches in a row open the breaker")
	assert.Equal(t, int64(1), c.Stats().BreakerTrips)

	// Open: misses fail at once with ErrUnavailable and nothing is asked of the store.
	before := front.requests.Load()
	_, took, err := read(4)
	require.ErrorIs(t, err, store.ErrUnavailable)
	t.Logf("a miss with the breaker open failed after %v", took)
	assert.Equal(t, before, front.requests.Load(), "no request to the store while open")
	assert.Equal(t, int64(1), c.Stats().FastFailures)

	// After the cool-down one probe goes to the store; it hangs too: open again.
	time.Sleep(coolDown + 50*time.Millisecond)
	_, _, err = read(4)
	require.Error(t, err)
	assert.NotErrorIs(t, err, store.ErrUnavailable, "the probe went to the store")
	require.Eventually(t, func() bool { return c.Stats().BreakerTrips == 2 }, 5*time.Second, time.Millisecond, "the failed probe opens it again")
	assert.Equal(t, store.BreakerOpen, c.Stats().Breaker)

	// The store answers again: after the cool-down the probe succeeds and closes the breaker.
	front.hang.Store(false)
	_, _, err = read(5)
	require.ErrorIs(t, err, store.ErrUnavailable, "still cooling down")
	time.Sleep(coolDown + 50*time.Millisecond)
	got, _, err = read(5)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want(5), got))
	assert.Equal(t, store.BreakerClosed, c.Stats().Breaker)
	for _, chunk := range []int{1, 2, 3, 4} {
		got, _, err := read(chunk)
		require.NoError(t, err, "chunk %d", chunk)
		assert.True(t, bytes.Equal(want(chunk), got))
	}
	s := c.Stats()
	assert.Equal(t, int64(2), s.FastFailures)
	assert.Positive(t, s.ReadErrors)
}

// TestBreakerIgnoresMissingChunks: a chunk the store does not have, or has damaged, is the
// store answering; it fails its read but never opens the breaker.
func TestBreakerIgnoresMissingChunks(t *testing.T) {
	p := pushNoise(t, 4)
	c, err := store.NewCache(p.st, &store.CacheConfig{BreakAfter: 1, Readahead: -1})
	require.NoError(t, err)
	m := *p.res.Manifest
	m.Image.Chunks = append([]store.Hash(nil), m.Image.Chunks...)
	m.Image.Chunks[0] = store.Sum([]byte("a chunk nobody pushed"))
	d, err := c.Open(p.res.ID, &m, "image")
	require.NoError(t, err)
	p.srv.Put(t, "images", p.chunkKey(1), []byte("damaged"))
	_, err = d.ReadAt(make([]byte, 10), 0)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = d.ReadAt(make([]byte, 10), testChunk)
	require.ErrorIs(t, err, store.ErrCorrupt)
	_, err = d.ReadAt(make([]byte, 10), 2*testChunk)
	require.NoError(t, err)
	assert.Equal(t, store.BreakerClosed, c.Stats().Breaker)

	// And with BreakAfter < 0 there is no breaker: a store that is down is asked every time.
	c, d = p.open(t, &store.CacheConfig{BreakAfter: -1, Readahead: -1})
	p.srv.SetDown(true)
	defer p.srv.SetDown(false)
	for range 4 {
		_, err := d.ReadAt(make([]byte, 10), 3*testChunk)
		require.Error(t, err)
		assert.NotErrorIs(t, err, store.ErrUnavailable)
	}
	assert.Equal(t, store.BreakerClosed, c.Stats().Breaker)
	assert.Equal(t, int64(4), c.Stats().OriginRequests)
}
