package bootserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/store"
)

// StoreSource serves the builds that the tags of an S3-compatible object store name (see
// package store): a replica with no local copy of any root image. Each tag contributes the
// build of the manifest it names; when a tag moves (netroot image push or promote), the next
// Reload or watch tick finds the new build, and the old one stays exported for the connections
// attached to it until the server retires it. Root images are read through Cache's chunk
// devices; kernel and initrd are read through it once when the build is staged.
type StoreSource struct {
	// Cache reads the chunks of Cache.Store(). Required.
	Cache *store.Cache
	// Tags limits the source to these tags; nil means every tag in the store.
	Tags []string
	// Logger receives the builds found; nil means silent.
	Logger *slog.Logger

	mu        sync.Mutex
	manifests map[store.Hash]*store.Manifest
}

var _ Source = (*StoreSource)(nil)

func (s *StoreSource) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Builds implements Source: the builds the tags name now. Its Stamp is the manifest's ID, so a
// build pushed again under the same version counts as changed.
func (s *StoreSource) Builds(ctx context.Context) ([]BuildInfo, error) {
	if s.Cache == nil {
		return nil, errors.New("bootserver: StoreSource has no Cache")
	}
	st := s.Cache.Store()
	var tags []store.Tag
	var errs []error
	if s.Tags == nil {
		var err error
		if tags, err = st.Tags(ctx); err != nil {
			errs = append(errs, err)
		}
	} else {
		for _, name := range s.Tags {
			t, err := st.Tag(ctx, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 && len(errs) > 0 {
		return nil, sourceError("store", errors.Join(errs...))
	}
	var infos []BuildInfo
	seen := map[BuildID]store.Hash{}
	for _, t := range tags {
		m, err := s.manifest(ctx, t.Manifest)
		if err != nil {
			errs = append(errs, fmt.Errorf("tag %s: %w", t.Name, err))
			continue
		}
		id := BuildID{Name: m.Name, Arch: m.Arch, Version: m.Version}
		if prev, ok := seen[id]; ok {
			if prev != t.Manifest {
				errs = append(errs, fmt.Errorf("bootserver: tags name two manifests of build %s (%s, %s); using the first",
					id, prev.String()[:12], t.Manifest.String()[:12]))
			}
			continue
		}
		seen[id] = t.Manifest
		infos = append(infos, BuildInfo{ID: id, Stamp: t.Manifest.String()})
	}
	return infos, sourceError("store", errors.Join(errs...))
}

// manifest returns manifest id, read once.
func (s *StoreSource) manifest(ctx context.Context, id store.Hash) (*store.Manifest, error) {
	s.mu.Lock()
	m := s.manifests[id]
	s.mu.Unlock()
	if m != nil {
		return m, nil
	}
	m, err := s.Cache.Store().Manifest(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.manifests == nil {
		s.manifests = make(map[store.Hash]*store.Manifest)
	}
	s.manifests[id] = m
	s.mu.Unlock()
	return m, nil
}

// Open implements Source: the manifest's image, kernel and initrd as chunk devices. The
// manifest was checked against its ID when read, and every chunk is checked against its hash
// when read, so there is nothing to verify up front.
func (s *StoreSource) Open(ctx context.Context, b BuildInfo) (*Image, error) {
	if s.Cache == nil {
		return nil, errors.New("bootserver: StoreSource has no Cache")
	}
	h, err := store.ParseHash(b.Stamp)
	if err != nil {
		return nil, fmt.Errorf("bootserver: build %s: stamp is not a manifest ID: %w", b.ID, err)
	}
	m, err := s.manifest(ctx, h)
	if err != nil {
		return nil, sourceError("store", err)
	}
	if got := (BuildID{Name: m.Name, Arch: m.Arch, Version: m.Version}); got != b.ID {
		return nil, fmt.Errorf("bootserver: manifest %s is build %s, not %s", h, got, b.ID)
	}
	var devs [3]*store.Device
	for i, blob := range []string{"image", "kernel", "initrd"} {
		if devs[i], err = s.Cache.Open(h, m, blob); err != nil {
			return nil, sourceError("store", err)
		}
	}
	var opts []string
	if m.Append != "" {
		if _, opts, err = kis.ParseAppend(m.Append); err != nil {
			return nil, fmt.Errorf("bootserver: build %s: %w", b.ID, err)
		}
	}
	s.logger().Info("build from store", "build", b.ID.String(), "manifest", h.String(), "image_bytes", m.Image.Size)
	return &Image{
		ID:            b.ID,
		KernelVersion: m.KernelVersion,
		Kernel:        Content{R: devs[1], Size: devs[1].Size()},
		Initrd:        Content{R: devs[2], Size: devs[2].Size()},
		Options:       opts,
		Root:          devs[0],
	}, nil
}

var storeMetrics = struct {
	counters                  []*prometheus.Desc
	memory, disk, manifestBts *prometheus.Desc
	breaker                   *prometheus.Desc
}{
	breaker: prometheus.NewDesc("netroot_store_breaker_open",
		"store: the circuit breaker's state: 0 closed (fetches go to the store), 1 open (reads of chunks not cached fail at once), 2 half-open (one fetch tries the store)", nil, nil),
	memory:      prometheus.NewDesc("netroot_store_cache_memory_bytes", "store: chunk bytes held in memory", nil, nil),
	disk:        prometheus.NewDesc("netroot_store_cache_disk_bytes", "store: chunk bytes held in the disk cache", nil, nil),
	manifestBts: prometheus.NewDesc("netroot_store_read_bytes_total", "store: bytes read through devices, per manifest", []string{"manifest", "build"}, nil),
}

// storeCounters are the counters of store.Stats, in the order Collect sends them.
var storeCounters = []struct {
	name, help string
	get        func(store.Stats) int64
}{
	{"hits", "chunks found in memory", func(s store.Stats) int64 { return s.Hits }},
	{"disk_hits", "chunks found in the disk cache", func(s store.Stats) int64 { return s.DiskHits }},
	{"misses", "chunks fetched from the store for a read", func(s store.Stats) int64 { return s.Misses }},
	{"coalesced_waits", "reads that waited for a fetch of the same chunk in flight", func(s store.Stats) int64 { return s.CoalescedWaits }},
	{"readaheads", "chunks fetched ahead of sequential readers", func(s store.Stats) int64 { return s.Readaheads }},
	{"origin_requests", "GET requests to the store", func(s store.Stats) int64 { return s.OriginRequests }},
	{"origin_bytes", "chunk bytes received from the store", func(s store.Stats) int64 { return s.OriginBytes }},
	{"origin_errors", "failed fetches from the store", func(s store.Stats) int64 { return s.OriginErrors }},
	{"corrupt_chunks", "chunks whose content did not match their hash", func(s store.Stats) int64 { return s.CorruptChunks }},
	{"read_errors", "reads that returned an error", func(s store.Stats) int64 { return s.ReadErrors }},
	{"breaker_trips", "times the circuit breaker opened after failed fetches in a row", func(s store.Stats) int64 { return s.BreakerTrips }},
	{"fast_failures", "fetches the open circuit breaker refused (reads failed at once)", func(s store.Stats) int64 { return s.FastFailures }},
}

func init() {
	for _, c := range storeCounters {
		storeMetrics.counters = append(storeMetrics.counters,
			prometheus.NewDesc("netroot_store_"+c.name+"_total", "store: "+c.help, nil, nil))
	}
}

// Describe implements prometheus.Collector: a Server whose Source is a StoreSource exports
// the chunk cache's counters as netroot_store_*.
func (s *StoreSource) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range storeMetrics.counters {
		ch <- d
	}
	ch <- storeMetrics.memory
	ch <- storeMetrics.disk
	ch <- storeMetrics.manifestBts
	ch <- storeMetrics.breaker
}

// Collect implements prometheus.Collector.
func (s *StoreSource) Collect(ch chan<- prometheus.Metric) {
	if s.Cache == nil {
		return
	}
	st := s.Cache.Stats()
	for i, c := range storeCounters {
		ch <- prometheus.MustNewConstMetric(storeMetrics.counters[i], prometheus.CounterValue, float64(c.get(st)))
	}
	ch <- prometheus.MustNewConstMetric(storeMetrics.memory, prometheus.GaugeValue, float64(st.MemoryBytes))
	ch <- prometheus.MustNewConstMetric(storeMetrics.disk, prometheus.GaugeValue, float64(st.DiskBytes))
	ch <- prometheus.MustNewConstMetric(storeMetrics.breaker, prometheus.GaugeValue, float64(st.Breaker))
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range st.ManifestBytes {
		build := ""
		if m := s.manifests[id]; m != nil {
			build = m.Build
		}
		ch <- prometheus.MustNewConstMetric(storeMetrics.manifestBts, prometheus.CounterValue, float64(n), id.String(), build)
	}
}
