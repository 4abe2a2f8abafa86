package store

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for CacheConfig's zero fields.
const (
	DefaultMemoryBytes  = 256 << 20
	DefaultDiskBytes    = 8 << 30
	DefaultReadahead    = 4
	DefaultFetchTimeout = 10 * time.Second
	DefaultMaxFetches   = 16
)

// CacheConfig bounds a Cache. The zero value means DefaultMemoryBytes of memory, no disk cache,
// DefaultReadahead chunks of readahead and DefaultFetchTimeout per read.
type CacheConfig struct {
	// MemoryBytes bounds the chunks held in memory (least recently used go first); 0 means
	// DefaultMemoryBytes.
	MemoryBytes int64
	// DiskDir, when set, keeps fetched chunks as files in this directory too, bounded by
	// DiskBytes (0 means DefaultDiskBytes); chunks found there at start are used.
	DiskDir   string
	DiskBytes int64
	// Readahead is how many chunks past the current one a sequential reader has fetched in the
	// background; 0 means DefaultReadahead, negative means none.
	Readahead int
	// FetchTimeout bounds each read that has to wait for the store, and each fetch from it; 0
	// means DefaultFetchTimeout. A read that runs out of time fails alone.
	FetchTimeout time.Duration
	// MaxFetches bounds the fetches from the store in flight at once; readahead gives way first.
	// 0 means DefaultMaxFetches.
	MaxFetches int
	// BreakAfter consecutive failed fetches (store unreachable, timing out or failing; not a
	// missing or corrupt chunk) open the circuit breaker: for BreakFor, reads that miss the
	// cache fail at once with ErrUnavailable instead of waiting FetchTimeout each, while cached
	// chunks are served as always; then one fetch tries the store, and closes the breaker if it
	// succeeds. 0 means DefaultBreakAfter and DefaultBreakFor; a negative BreakAfter, no breaker.
	BreakAfter int
	BreakFor   time.Duration
	// Logger receives failed fetches (warn) and cache evictions (debug); nil means silent.
	Logger *slog.Logger
}

// Stats counts a Cache's work since it was made. Chunk lookups are Hits + DiskHits + Misses +
// CoalescedWaits.
type Stats struct {
	Hits           int64 // chunks found in memory
	DiskHits       int64 // chunks found in the disk cache
	Misses         int64 // chunks fetched from the store for a read
	CoalescedWaits int64 // reads that waited for a fetch of the same chunk already in flight
	Readaheads     int64 // chunks fetched ahead of a sequential reader
	OriginRequests int64 // GET requests to the store
	OriginBytes    int64 // chunk bytes received from the store
	OriginErrors   int64 // fetches that failed (store unreachable, timeout, missing chunk)
	CorruptChunks  int64 // chunks whose content did not match their hash
	ReadErrors     int64 // reads that returned an error
	// Breaker is the circuit breaker's state now; BreakerTrips counts the times it opened and
	// FastFailures the fetches it refused (reads failed at once, readahead skipped).
	Breaker      BreakerState
	BreakerTrips int64
	FastFailures int64
	MemoryBytes  int64 // bytes held in memory now
	DiskBytes    int64 // bytes held in the disk cache now
	// ManifestBytes counts the bytes read through devices, per manifest.
	ManifestBytes map[Hash]int64
}

// Cache reads chunks from a store through a memory cache and an optional disk cache, shared by
// all the devices it opens. It is safe for concurrent use.
type Cache struct {
	st           *Store
	log          *slog.Logger
	readahead    int
	fetchTimeout time.Duration
	fetchSlots   chan struct{}
	brk          breaker

	mu       sync.Mutex
	mem      *lru
	disk     *lru // nil without a disk cache
	diskDir  string
	inflight map[Hash]*fetch
	perMan   map[Hash]*atomic.Int64

	hits, diskHits, misses, coalesced, readaheads      atomic.Int64
	originReqs, originBytes, originErrs, corrupt, errs atomic.Int64
}

// fetch is one chunk on its way from the disk cache or the store; waiters block on done.
type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// NewCache returns a cache over st. With a DiskDir it creates the directory and adopts the
// chunk files already in it (each is checked against its hash when read).
func NewCache(st *Store, cfg *CacheConfig) (*Cache, error) {
	var c CacheConfig
	if cfg != nil {
		c = *cfg
	}
	if c.MemoryBytes <= 0 {
		c.MemoryBytes = DefaultMemoryBytes
	}
	if c.Readahead == 0 {
		c.Readahead = DefaultReadahead
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = DefaultFetchTimeout
	}
	if c.MaxFetches <= 0 {
		c.MaxFetches = DefaultMaxFetches
	}
	if c.BreakAfter == 0 {
		c.BreakAfter = DefaultBreakAfter
	}
	if c.BreakFor <= 0 {
		c.BreakFor = DefaultBreakFor
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cc := &Cache{
		st: st, log: log, readahead: max(c.Readahead, 0), fetchTimeout: c.FetchTimeout,
		fetchSlots: make(chan struct{}, c.MaxFetches),
		brk:        breaker{limit: max(c.BreakAfter, 0), coolDown: c.BreakFor, now: time.Now},
		mem:        newLRU(c.MemoryBytes), inflight: make(map[Hash]*fetch), perMan: make(map[Hash]*atomic.Int64),
	}
	if c.DiskDir != "" {
		if c.DiskBytes <= 0 {
			c.DiskBytes = DefaultDiskBytes
		}
		if err := cc.openDisk(c.DiskDir, c.DiskBytes); err != nil {
			return nil, err
		}
	}
	return cc, nil
}

// openDisk adopts the chunk files in dir, oldest first, so the newest survive trimming.
func (c *Cache) openDisk(dir string, limit int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store: disk cache: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store: disk cache: %w", err)
	}
	type file struct {
		h    Hash
		size int64
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		h, err := ParseHash(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // temporary files of an earlier run, or not ours
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		files = append(files, file{h, fi.Size(), fi.ModTime()})
	}
	slices.SortFunc(files, func(a, b file) int { return a.mod.Compare(b.mod) })
	c.diskDir = dir
	c.disk = newLRU(limit)
	for _, f := range files {
		for _, ev := range c.disk.add(f.h, f.size, nil) {
			os.Remove(filepath.Join(dir, ev.String()))
		}
	}
	return nil
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Hits: c.hits.Load(), DiskHits: c.diskHits.Load(), Misses: c.misses.Load(), CoalescedWaits: c.coalesced.Load(),
		Readaheads: c.readaheads.Load(), OriginRequests: c.originReqs.Load(), OriginBytes: c.originBytes.Load(),
		OriginErrors: c.originErrs.Load(), CorruptChunks: c.corrupt.Load(), ReadErrors: c.errs.Load(),
		ManifestBytes: make(map[Hash]int64),
	}
	s.Breaker, s.BreakerTrips, s.FastFailures = c.brk.stats()
	c.mu.Lock()
	defer c.mu.Unlock()
	s.MemoryBytes = c.mem.used
	if c.disk != nil {
		s.DiskBytes = c.disk.used
	}
	for id, n := range c.perMan {
		s.ManifestBytes[id] = n.Load()
	}
	return s
}

// Store returns the store the cache reads from.
func (c *Cache) Store() *Store { return c.st }

// OpenTag reads the tag, its manifest, and opens the manifest's image.
func (c *Cache) OpenTag(ctx context.Context, tag string) (*Device, error) {
	t, err := c.st.Tag(ctx, tag)
	if err != nil {
		return nil, err
	}
	m, err := c.st.Manifest(ctx, t.Manifest)
	if err != nil {
		return nil, err
	}
	return c.Open(t.Manifest, m, "image")
}

// Open returns a read-only device over one blob of manifest id: "image", "kernel" or
// "initrd". m must be the manifest id names (from Store.Manifest).
func (c *Cache) Open(id Hash, m *Manifest, blob string) (*Device, error) {
	for _, b := range m.Blobs() {
		if b.Name == blob {
			c.mu.Lock()
			n := c.perMan[id]
			if n == nil {
				n = new(atomic.Int64)
				c.perMan[id] = n
			}
			c.mu.Unlock()
			return &Device{c: c, id: id, build: m.Build, blob: *b.Blob, cs: m.ChunkSize, served: n}, nil
		}
	}
	return nil, fmt.Errorf("store: manifest %s has no blob %q (image, kernel, initrd)", id, blob)
}

// chunk returns chunk h (size bytes), from memory, disk or the store, waiting at most until ctx
// ends.
func (c *Cache) chunk(ctx context.Context, h Hash, size int64) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if data, ok := c.mem.get(h); ok {
			c.mu.Unlock()
			c.hits.Add(1)
			return data, nil
		}
		f, joined := c.inflight[h]
		if joined {
			c.coalesced.Add(1)
		} else {
			f = c.startLocked(h, size, false)
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("store: chunk %s: %w", h, ctx.Err())
		}
		// A fetch joined late may fail on its own deadline while this read still has time:
		// then this read tries once more with a fetch of its own.
		if f.err != nil && joined && attempt == 0 && ctx.Err() == nil && !errors.Is(f.err, ErrCorrupt) && !errors.Is(f.err, ErrUnavailable) {
			continue
		}
		return f.data, f.err
	}
}

// startLocked starts fetching h; c.mu is held.
func (c *Cache) startLocked(h Hash, size int64, ahead bool) *fetch {
	f := &fetch{done: make(chan struct{})}
	c.inflight[h] = f
	go c.fill(f, h, size, ahead)
	return f
}

// prefetch starts fetching h in the background unless it is cached, on its way, or the store
// is busy with other fetches.
func (c *Cache) prefetch(h Hash, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mem.has(h) || c.inflight[h] != nil {
		return
	}
	if len(c.fetchSlots) >= cap(c.fetchSlots)/2 {
		return // readahead gives way to reads
	}
	if st, _, _ := c.brk.stats(); st != BreakerClosed {
		return // the store is not answering; the probe is for a read
	}
	c.startLocked(h, size, true)
}

// fill completes f from the disk cache or the store. It runs detached from any one read, with
// its own timeout, so that a read that gives up does not fail the others waiting for the chunk.
func (c *Cache) fill(f *fetch, h Hash, size int64, ahead bool) {
	data, fromDisk := c.readDisk(h, size)
	var err error
	switch {
	case fromDisk:
		c.diskHits.Add(1)
	default:
		if ahead {
			c.readaheads.Add(1)
		} else {
			c.misses.Add(1)
		}
		data, err = c.fetchOrigin(h, size)
	}
	c.mu.Lock()
	delete(c.inflight, h)
	if err == nil {
		c.mem.add(h, size, data)
	}
	c.mu.Unlock()
	f.data, f.err = data, err
	close(f.done)
	if err == nil && !fromDisk {
		c.writeDisk(h, data)
	}
}

func (c *Cache) fetchOrigin(h Hash, size int64) ([]byte, error) {
	ok, probe := c.brk.allow()
	if !ok {
		return nil, fmt.Errorf("store: chunk %s: %w", h, ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.fetchTimeout)
	defer cancel()
	select {
	case c.fetchSlots <- struct{}{}:
	case <-ctx.Done():
		c.originErrs.Add(1)
		c.breakerDone(probe, true, nil)
		return nil, fmt.Errorf("store: chunk %s: waiting for a fetch slot: %w", h, ctx.Err())
	}
	defer func() { <-c.fetchSlots }()
	c.originReqs.Add(1)
	data, err := c.st.Chunk(ctx, h, size)
	if err != nil {
		c.originErrs.Add(1)
		if errors.Is(err, ErrCorrupt) {
			c.corrupt.Add(1)
		}
		c.log.Warn("chunk fetch failed", "chunk", h.String(), "err", err)
		// A missing or corrupt chunk is the store answering: it does not count against it.
		c.breakerDone(probe, !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound), err)
		return nil, err
	}
	c.breakerDone(probe, false, nil)
	c.originBytes.Add(int64(len(data)))
	return data, nil
}

// breakerDone records a fetch's outcome with the breaker and logs its state changes.
func (c *Cache) breakerDone(probe, failed bool, err error) {
	from, to := c.brk.done(probe, failed)
	switch {
	case from == to:
	case to == BreakerOpen && from == BreakerClosed:
		c.log.Warn("store unreachable: circuit breaker open; reads of chunks not cached fail at once",
			"failed_fetches", c.brk.limit, "cool_down", c.brk.coolDown, "err", err)
	case to == BreakerOpen:
		c.log.Debug("store still unreachable: circuit breaker stays open", "cool_down", c.brk.coolDown, "err", err)
	case to == BreakerClosed:
		c.log.Info("store reachable again: circuit breaker closed")
	}
}

func (c *Cache) readDisk(h Hash, size int64) ([]byte, bool) {
	if c.disk == nil {
		return nil, false
	}
	c.mu.Lock()
	_, ok := c.disk.get(h)
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	p := filepath.Join(c.diskDir, h.String())
	data, err := os.ReadFile(p)
	if err == nil && int64(len(data)) == size && Sum(data) == h {
		return data, true
	}
	// Damaged or gone: forget it and fetch again.
	if err == nil {
		c.corrupt.Add(1)
		c.log.Warn("disk cache: corrupt chunk dropped", "chunk", h.String())
	}
	os.Remove(p)
	c.mu.Lock()
	c.disk.remove(h)
	c.mu.Unlock()
	return nil, false
}

func (c *Cache) writeDisk(h Hash, data []byte) {
	if c.disk == nil || int64(len(data)) > c.disk.max {
		return
	}
	p := filepath.Join(c.diskDir, h.String())
	tmp, err := os.CreateTemp(c.diskDir, ".chunk-*")
	if err != nil {
		c.log.Warn("disk cache", "err", err)
		return
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
		c.log.Warn("disk cache", "err", err)
		return
	}
	c.mu.Lock()
	evicted := c.disk.add(h, int64(len(data)), nil)
	c.mu.Unlock()
	for _, ev := range evicted {
		os.Remove(filepath.Join(c.diskDir, ev.String()))
	}
}

// Device is a read-only block device over one blob of a manifest, read through a Cache. It
// implements backend.Device. Reads of cached chunks never touch the network; a read that needs
// a chunk the store cannot deliver within the cache's FetchTimeout fails with an error (EIO
// for NBD and AoE clients) and leaves other reads alone.
type Device struct {
	c      *Cache
	id     Hash
	build  string
	blob   Blob
	cs     int64
	served *atomic.Int64
	next   atomic.Int64 // chunk after the last one read, for readahead
}

// Size returns the blob's size.
func (d *Device) Size() int64 { return d.blob.Size }

// Manifest returns the ID of the manifest the device reads; it never changes.
func (d *Device) Manifest() Hash { return d.id }

// Build returns the build ID of the device's manifest.
func (d *Device) Build() string { return d.build }

// ReadAt reads len(p) bytes at off, waiting at most the cache's FetchTimeout for the store.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.c.fetchTimeout)
	defer cancel()
	return d.ReadAtContext(ctx, p, off)
}

// ReadAtContext is ReadAt bounded by ctx instead of the cache's FetchTimeout.
func (d *Device) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("store: read at negative offset %d", off)
	}
	if off >= d.blob.Size {
		if len(p) == 0 && off == d.blob.Size {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if rest := d.blob.Size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	n := 0
	first := off / d.cs
	for n < len(want) {
		pos := off + int64(n)
		i := pos / d.cs
		data, err := d.c.chunk(ctx, d.blob.Chunks[i], d.chunkSize(i))
		if err != nil {
			d.c.errs.Add(1)
			return n, fmt.Errorf("store: %s %s at %d: %w", d.build, d.id.String()[:12], pos, err)
		}
		n += copy(want[n:], data[pos-i*d.cs:])
	}
	d.served.Add(int64(n))
	last := (off + int64(n) - 1) / d.cs
	if prev := d.next.Swap(last + 1); d.c.readahead > 0 && (first == prev || first == prev-1) {
		for j := last + 1; j <= last+int64(d.c.readahead) && j < int64(len(d.blob.Chunks)); j++ {
			d.c.prefetch(d.blob.Chunks[j], d.chunkSize(j))
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *Device) chunkSize(i int64) int64 { return min(d.cs, d.blob.Size-i*d.cs) }

// lru holds chunks (or, for the disk cache, only their sizes), bounded by bytes.
type lru struct {
	max, used int64
	ll        *list.List
	items     map[Hash]*list.Element
}

type lruEntry struct {
	h    Hash
	size int64
	data []byte
}

func newLRU(max int64) *lru {
	return &lru{max: max, ll: list.New(), items: make(map[Hash]*list.Element)}
}

func (l *lru) get(h Hash) ([]byte, bool) {
	e, ok := l.items[h]
	if !ok {
		return nil, false
	}
	l.ll.MoveToFront(e)
	return e.Value.(*lruEntry).data, true
}

func (l *lru) has(h Hash) bool { _, ok := l.items[h]; return ok }

// add inserts h and returns the entries evicted to make room. An entry larger than the whole
// cache is not kept.
func (l *lru) add(h Hash, size int64, data []byte) []Hash {
	if size > l.max {
		return nil
	}
	if e, ok := l.items[h]; ok {
		l.ll.MoveToFront(e)
		return nil
	}
	l.items[h] = l.ll.PushFront(&lruEntry{h, size, data})
	l.used += size
	var evicted []Hash
	for l.used > l.max {
		e := l.ll.Back()
		ent := e.Value.(*lruEntry)
		l.ll.Remove(e)
		delete(l.items, ent.h)
		l.used -= ent.size
		evicted = append(evicted, ent.h)
	}
	return evicted
}

func (l *lru) remove(h Hash) {
	if e, ok := l.items[h]; ok {
		l.ll.Remove(e)
		delete(l.items, h)
		l.used -= e.Value.(*lruEntry).size
	}
}
