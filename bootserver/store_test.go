package bootserver_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

// pushBuild pushes a KIS build of name at version to st and returns its image.
func pushBuild(t *testing.T, st *store.Store, name, version string, seed uint64, opts *store.PushOptions) []byte {
	t.Helper()
	dir := t.TempDir()
	img := kistest.Image(512<<10, seed)
	_, err := kistest.Write(dir, kistest.Spec{Name: name, Version: version, Image: img, Compressed: true,
		Append: "root=UUID=0000 rd.kiwi.custom=1 quiet"})
	require.NoError(t, err)
	o := store.PushOptions{ChunkSize: 64 << 10}
	if opts != nil {
		o = *opts
		o.ChunkSize = 64 << 10
	}
	_, err = st.Push(context.Background(), dir, &o)
	require.NoError(t, err)
	return img
}

func TestStoreSourceServesFromObjectStorage(t *testing.T) {
	s3 := storetest.NewServer(t)
	st := s3.Store(t, "images", "site")
	img1 := pushBuild(t, st, "leap", "1.0.0", 1, nil)
	cache, err := store.NewCache(st, &store.CacheConfig{FetchTimeout: 5 * time.Second})
	require.NoError(t, err)

	ev := &events{}
	reg := prometheus.NewRegistry()
	srv := &bootserver.Server{
		Registerer: reg,
		Source:     &bootserver.StoreSource{Cache: cache},
		Arch:       "x86_64",
		TFTPRoot:   t.TempDir(),
		ServerIP:   netip.MustParseAddr("127.0.0.1"),
		TFTPAddr:   "127.0.0.1:0",
		NBDAddr:    "127.0.0.1:0",
		Grace:      300 * time.Millisecond,
		OnEvent:    ev.add,
	}
	run(t, srv)
	const v1, v2 = "leap.x86_64-1.0.0", "leap.x86_64-1.1.0"
	assert.Equal(t, v1, srv.State().Default.String())
	assert.True(t, bytes.Equal(img1, readExport(t, srv, v1)), "root image read through the chunk cache")
	cfg, err := tftpGet(t, srv, "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Contains(t, string(cfg), "root=overlay:nbd=127.0.0.1:"+v1)
	assert.Contains(t, string(cfg), "rd.kiwi.custom=1")
	kernel, err := tftpGet(t, srv, "boot/"+v1+"/linux")
	require.NoError(t, err)
	assert.Equal(t, "kernel 6.1.0-13-amd64\n", string(kernel))
	initrd, err := tftpGet(t, srv, "boot/"+v1+"/initrd")
	require.NoError(t, err)
	assert.Equal(t, "initrd of leap 1.0.0\n", string(initrd))
	assert.Positive(t, cache.Stats().OriginBytes)
	metrics := gather(t, reg)
	assert.Equal(t, float64(cache.Stats().OriginBytes), metrics["netroot_store_origin_bytes_total"])
	assert.Equal(t, float64(len(img1)+len(kernel)+len(initrd)), metrics["netroot_store_read_bytes_total{build=leap.x86_64-1.0.0}"],
		"image once over NBD, kernel and initrd once when staged")
	assert.Positive(t, metrics["netroot_store_cache_memory_bytes"])

	// A machine attached to v1 keeps it when the tag moves to v2.
	c, info := attach(t, srv, v1)
	defer c.Close()
	half := int(info.Size / 2)
	got := make([]byte, info.Size)
	_, err = c.ReadAt(got[:half], 0)
	require.NoError(t, err)

	img2 := pushBuild(t, st, "leap", "1.1.0", 2, &store.PushOptions{NoTag: true})
	_, err = st.Promote(context.Background(), "leap.x86_64", v2)
	require.NoError(t, err)
	require.NoError(t, srv.Reload(context.Background()))
	assert.Equal(t, v2, srv.State().Default.String())
	assert.True(t, bytes.Equal(img2, readExport(t, srv, "")), "new boots get the promoted build")
	cfg, err = tftpGet(t, srv, "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Contains(t, string(cfg), "root=overlay:nbd=127.0.0.1:"+v2)

	_, err = c.ReadAt(got[half:], int64(half))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(img1, got), "the attached machine kept v1")
	c.Close()
	require.Eventually(t, func() bool { return ev.has(bootserver.BuildRetired, v1) }, 10*time.Second, 20*time.Millisecond)

	// With the store down, the cached build still serves.
	s3.SetDown(true)
	assert.True(t, bytes.Equal(img2, readExport(t, srv, v2)))
}

func TestStoreSourceBuilds(t *testing.T) {
	s3 := storetest.NewServer(t)
	st := s3.Store(t, "images", "")
	pushBuild(t, st, "leap", "1.0.0", 1, nil)
	pushBuild(t, st, "tumbleweed", "2.0", 2, nil)
	_, err := st.Promote(context.Background(), "canary", "leap.x86_64-1.0.0") // same build twice
	require.NoError(t, err)
	cache, err := store.NewCache(st, nil)
	require.NoError(t, err)

	src := &bootserver.StoreSource{Cache: cache}
	builds, err := src.Builds(context.Background())
	require.NoError(t, err)
	var ids []string
	for _, b := range builds {
		ids = append(ids, b.ID.String())
		_, err := store.ParseHash(b.Stamp)
		assert.NoError(t, err, "stamp is the manifest ID")
	}
	assert.ElementsMatch(t, []string{"leap.x86_64-1.0.0", "tumbleweed.x86_64-2.0"}, ids)

	only := &bootserver.StoreSource{Cache: cache, Tags: []string{"tumbleweed.x86_64", "absent"}}
	builds, err = only.Builds(context.Background())
	assert.ErrorIs(t, err, store.ErrNotFound)
	require.Len(t, builds, 1)
	img, err := only.Open(context.Background(), builds[0])
	require.NoError(t, err)
	assert.Equal(t, []string{"rd.kiwi.custom=1", "quiet"}, img.Options)
	assert.Equal(t, int64(512<<10), img.Root.Size())

	_, err = only.Open(context.Background(), bootserver.BuildInfo{ID: builds[0].ID, Stamp: "nope"})
	assert.Error(t, err)
	s3.SetDown(true)
	_, err = (&bootserver.StoreSource{Cache: cache}).Builds(context.Background())
	assert.Error(t, err)
}

// gather returns the registry's metrics by name{label=value} (only the build label is kept).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "build" || l.GetName() == "replica" {
					name += "{" + l.GetName() + "=" + l.GetValue() + "}"
				}
			}
			switch {
			case m.GetCounter() != nil:
				out[name] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] += m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestStoreSourceBreakerMetrics: the chunk cache's circuit breaker shows in the metrics.
func TestStoreSourceBreakerMetrics(t *testing.T) {
	s3 := storetest.NewServer(t)
	st := s3.Store(t, "images", "site")
	pushBuild(t, st, "leap", "1.0.0", 1, nil)
	cache, err := store.NewCache(st, &store.CacheConfig{BreakAfter: 1, BreakFor: time.Hour, Readahead: -1})
	require.NoError(t, err)
	src := &bootserver.StoreSource{Cache: cache}
	reg := prometheus.NewRegistry()
	reg.MustRegister(src)
	tag, err := st.Tag(context.Background(), "leap.x86_64")
	require.NoError(t, err)
	m, err := st.Manifest(context.Background(), tag.Manifest)
	require.NoError(t, err)
	dev, err := cache.Open(tag.Manifest, m, "image")
	require.NoError(t, err)
	assert.Equal(t, 0.0, gather(t, reg)["netroot_store_breaker_open"])

	s3.SetDown(true)
	_, err = dev.ReadAt(make([]byte, 512), 0)
	require.Error(t, err)
	require.Eventually(t, func() bool { return gather(t, reg)["netroot_store_breaker_open"] == 1 }, 5*time.Second, time.Millisecond)
	_, err = dev.ReadAt(make([]byte, 512), 0)
	require.ErrorIs(t, err, store.ErrUnavailable)
	metrics := gather(t, reg)
	assert.Equal(t, 1.0, metrics["netroot_store_breaker_trips_total"])
	assert.Equal(t, 1.0, metrics["netroot_store_fast_failures_total"])
	assert.Equal(t, 2.0, metrics["netroot_store_read_errors_total"])
}
