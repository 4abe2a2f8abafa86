package store_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/store"
)

// changes collects a watcher's reports.
type changes struct {
	mu   sync.Mutex
	list []store.TagChange
	errs int
}

func (c *changes) add(ch store.TagChange) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, ch)
	return nil
}
func (c *changes) get() []store.TagChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]store.TagChange(nil), c.list...)
}

func TestWatcherReportsTagMoves(t *testing.T) {
	p := pushNoise(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	var got changes
	w := &store.Watcher{Store: p.st, Interval: 20 * time.Millisecond, OnChange: got.add,
		OnError: func(error) { got.mu.Lock(); got.errs++; got.mu.Unlock() }}
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	// The first poll reports the existing tag.
	require.Eventually(t, func() bool { return len(got.get()) == 1 }, 5*time.Second, 5*time.Millisecond)
	first := got.get()[0]
	assert.Equal(t, "netroot-test.x86_64", first.Tag.Name)
	assert.Equal(t, p.res.ID, first.Tag.Manifest)
	assert.Zero(t, first.Previous)

	// A device opened on the old version keeps reading it after the tag moves.
	c, err := store.NewCache(p.st, nil)
	require.NoError(t, err)
	old, err := c.OpenTag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)

	r2, err := p.st.Push(ctx, writeBuild(t, "1.0.1", noise(2*testChunk, 99), kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(got.get()) == 2 }, 5*time.Second, 5*time.Millisecond)
	moved := got.get()[1]
	assert.Equal(t, r2.ID, moved.Tag.Manifest)
	assert.Equal(t, p.res.ID, moved.Previous)
	assert.False(t, moved.Removed)

	buf := make([]byte, 100)
	_, err = old.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, p.image[:100], buf)
	assert.Equal(t, p.res.ID, old.Manifest())
	cur, err := c.OpenTag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)
	assert.Equal(t, r2.ID, cur.Manifest())

	// An outage is reported as an error, not as removed tags.
	p.srv.SetDown(true)
	require.Eventually(t, func() bool { got.mu.Lock(); defer got.mu.Unlock(); return got.errs > 0 }, 5*time.Second, 5*time.Millisecond)
	p.srv.SetDown(false)
	time.Sleep(60 * time.Millisecond)
	assert.Len(t, got.get(), 2)

	// A deleted tag is reported as removed.
	p.srv.Backend.DeleteObject("images", "c/tags/netroot-test.x86_64")
	require.Eventually(t, func() bool { return len(got.get()) == 3 }, 5*time.Second, 5*time.Millisecond)
	assert.True(t, got.get()[2].Removed)

	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

func TestWatcherNamedTags(t *testing.T) {
	p := pushNoise(t, 2)
	_, err := p.st.Promote(context.Background(), "canary", p.res.ID.String())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got changes
	w := &store.Watcher{Store: p.st, Interval: 10 * time.Millisecond, Tags: []string{"canary", "absent"}, OnChange: got.add}
	go w.Run(ctx)
	require.Eventually(t, func() bool { return len(got.get()) == 1 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(40 * time.Millisecond)
	require.Len(t, got.get(), 1, "only the named tag that exists")
	assert.Equal(t, "canary", got.get()[0].Tag.Name)
}

func TestImagesFollowTags(t *testing.T) {
	p := pushNoise(t, 3)
	c, err := store.NewCache(p.st, &store.CacheConfig{FetchTimeout: time.Second})
	require.NoError(t, err)
	im := store.NewImages(c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var applyErrs int
	// The manifest cannot be read at first: the change is tried again at the next poll.
	key := "c/manifests/" + p.res.ID.String()
	obj, err := p.srv.Backend.GetObject("images", key, nil)
	require.NoError(t, err)
	manifest := make([]byte, obj.Size)
	_, err = io.ReadFull(obj.Contents, manifest)
	require.NoError(t, err)
	p.srv.Backend.DeleteObject("images", key)
	go im.Watch(ctx, store.Watcher{Interval: 10 * time.Millisecond}, func(ch store.TagChange, err error) {
		if err != nil {
			mu.Lock()
			applyErrs++
			mu.Unlock()
		}
	})
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return applyErrs > 0 }, 5*time.Second, 5*time.Millisecond)
	_, ok := im.Get("netroot-test.x86_64")
	assert.False(t, ok)
	p.srv.Put(t, "images", key, manifest)
	require.Eventually(t, func() bool { _, ok := im.Get("netroot-test.x86_64"); return ok }, 5*time.Second, 5*time.Millisecond)

	v1, _ := im.Get("netroot-test.x86_64")
	assert.Equal(t, p.res.ID, v1.Image.Manifest())
	kb := make([]byte, v1.Kernel.Size())
	_, err = v1.Kernel.ReadAt(kb, 0)
	require.NoError(t, err)
	assert.Equal(t, "kernel 6.1.0-13-amd64\n", string(kb))

	r2, err := p.st.Push(ctx, writeBuild(t, "1.0.1", noise(2*testChunk, 5), kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, _ := im.Get("netroot-test.x86_64")
		return v.Image.Manifest() == r2.ID
	}, 5*time.Second, 5*time.Millisecond)
	// The old version still reads.
	buf := make([]byte, 64)
	_, err = v1.Image.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, p.image[:64], buf)
	assert.Len(t, im.All(), 1)
}
