package backend

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
)

// DefaultCopyOnWriteBlockSize is the overlay granularity when CopyOnWriteOptions.BlockSize is 0.
const DefaultCopyOnWriteBlockSize = 4096

// CopyOnWriteOptions configures NewCopyOnWrite. A nil *CopyOnWriteOptions means the defaults.
type CopyOnWriteOptions struct {
	// BlockSize is the overlay granularity in bytes: a power of two of at least 512. Zero means
	// DefaultCopyOnWriteBlockSize. A write smaller than a block first copies the rest of that
	// block from the base.
	BlockSize int64
	// TempDir, when overlay is nil and TempDir is not empty, makes NewCopyOnWrite create the
	// overlay as a file in TempDir ("." for the current directory) that has no name, so that it
	// cannot outlive the process however it ends (SIGKILL, the OOM killer): on Linux an
	// O_TMPFILE file, elsewhere, or where TempDir's file system has no O_TMPFILE, a temporary
	// file removed right after it is created (only a crash in between those two calls leaves
	// a "netroot-cow-*" file behind; on systems that cannot remove an open file it is removed by
	// Close). When both are empty the overlay is kept in memory.
	TempDir string
}

// CopyOnWrite is a writable device made of a read-only base and a sparse overlay, like
// nbd-server's copyonwrite: many diskless clients can share one base image, each with its own
// CopyOnWrite. Reads merge the two at block granularity; writes, trims and zeroing go only to
// the overlay, and the base is only ever read. It is safe for concurrent use.
//
// The overlay is a sparse file of the base's size holding changed blocks at their own offsets,
// or a map of blocks in memory. Which blocks are changed, and which were trimmed or zeroed, is
// kept in memory (2 bits per block), so the overlay is scratch space: it does not survive the
// CopyOnWrite.
type CopyOnWrite struct {
	base    Device
	size    int64
	bs      int64
	shift   uint
	present []atomic.Uint64 // bit set: the block's data is in the overlay
	zero    []atomic.Uint64 // bit set (and present clear): the block reads as zeroes
	locks   [lockStripes]sync.Mutex
	ov      overlay
	closed  atomic.Bool
}

// maxExtents bounds the number of extents one Extents call returns.
const maxExtents = 1024

// lockStripes is the number of mutexes that serialize writers of the same blocks; block b is
// guarded by locks[b%lockStripes].
const lockStripes = 64

var (
	_ WriterDevice = (*CopyOnWrite)(nil)
	_ Syncer       = (*CopyOnWrite)(nil)
	_ Trimmer      = (*CopyOnWrite)(nil)
	_ Zeroer       = (*CopyOnWrite)(nil)
	_ Extenter     = (*CopyOnWrite)(nil)
	_ io.Closer    = (*CopyOnWrite)(nil)
	_ FastZeroer   = (*CopyOnWrite)(nil)
)

// overlay stores changed blocks at their device offsets.
type overlay interface {
	io.ReaderAt
	io.WriterAt
	// discard frees whole blocks; their content no longer matters.
	discard(off, n int64)
	sync() error
	close() error
}

// NewCopyOnWrite returns a copy-on-write device over base. overlay, when not nil, is truncated
// to base's size and used as the overlay's storage; it stays open after Close, which is the
// caller's to do. When overlay is nil the overlay is a temporary file in opts.TempDir, or memory.
func NewCopyOnWrite(base Device, overlay *os.File, opts *CopyOnWriteOptions) (*CopyOnWrite, error) {
	var o CopyOnWriteOptions
	if opts != nil {
		o = *opts
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultCopyOnWriteBlockSize
	}
	if o.BlockSize < 512 || o.BlockSize&(o.BlockSize-1) != 0 {
		return nil, fmt.Errorf("backend: copy-on-write block size %d is not a power of two >= 512", o.BlockSize)
	}
	size := base.Size()
	nblocks := (size + o.BlockSize - 1) / o.BlockSize
	c := &CopyOnWrite{
		base:    base,
		size:    size,
		bs:      o.BlockSize,
		shift:   uint(bits.TrailingZeros64(uint64(o.BlockSize))),
		present: make([]atomic.Uint64, (nblocks+63)/64),
		zero:    make([]atomic.Uint64, (nblocks+63)/64),
	}
	switch {
	case overlay != nil:
		if err := resetOverlay(overlay, size); err != nil {
			return nil, err
		}
		c.ov = &fileOverlay{f: overlay}
	case o.TempDir != "":
		f, path, err := createAnonymous(o.TempDir)
		if err != nil {
			return nil, fmt.Errorf("backend: copy-on-write overlay in %q: %w", o.TempDir, err)
		}
		ov := &fileOverlay{f: f, temp: true, path: path}
		if err := resetOverlay(f, size); err != nil {
			_ = ov.close()
			return nil, err
		}
		c.ov = ov
	default:
		c.ov = &memOverlay{bs: o.BlockSize, size: size, blocks: make(map[int64][]byte)}
	}
	return c, nil
}

func resetOverlay(f *os.File, size int64) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("backend: copy-on-write overlay %q: %w", f.Name(), err)
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("backend: copy-on-write overlay %q: %w", f.Name(), err)
	}
	return nil
}

// Size implements Device.
func (c *CopyOnWrite) Size() int64 { return c.size }

// FastZero implements FastZeroer: zeroing marks blocks, it writes nothing.
func (c *CopyOnWrite) FastZero() bool { return true }

// BlockSize returns the overlay granularity in bytes.
func (c *CopyOnWrite) BlockSize() int64 { return c.bs }

type blockState uint8

const (
	stBase blockState = iota
	stOverlay
	stZero
)

func (c *CopyOnWrite) state(b int64) blockState {
	bit := uint64(1) << (b & 63)
	if c.present[b>>6].Load()&bit != 0 {
		return stOverlay
	}
	if c.zero[b>>6].Load()&bit != 0 {
		return stZero
	}
	return stBase
}

// setOverlay marks blocks [first, last] as held by the overlay; their data must be written.
func (c *CopyOnWrite) setOverlay(first, last int64) {
	for b := first; b <= last; b++ {
		bit := uint64(1) << (b & 63)
		c.present[b>>6].Or(bit)
		c.zero[b>>6].And(^bit)
	}
}

// setZero marks blocks [first, last] as reading zeroes.
func (c *CopyOnWrite) setZero(first, last int64) {
	for b := first; b <= last; b++ {
		bit := uint64(1) << (b & 63)
		c.zero[b>>6].Or(bit)
		c.present[b>>6].And(^bit)
	}
}

// lockBlocks locks the stripes of blocks [first, last] in ascending stripe order, so that two
// writers never wait on each other in a cycle, and returns the unlock function.
func (c *CopyOnWrite) lockBlocks(first, last int64) func() {
	var mask uint64
	if last-first+1 >= lockStripes {
		mask = ^uint64(0)
	} else {
		for b := first; b <= last; b++ {
			mask |= 1 << (b % lockStripes)
		}
	}
	for m := mask; m != 0; m &= m - 1 {
		c.locks[bits.TrailingZeros64(m)].Lock()
	}
	return func() {
		for m := mask; m != 0; m &= m - 1 {
			c.locks[bits.TrailingZeros64(m)].Unlock()
		}
	}
}

// run returns the end of the run of blocks with the same state as the block at pos, bounded
// by end.
func (c *CopyOnWrite) run(pos, end int64) (blockState, int64) {
	st := c.state(pos >> c.shift)
	e := min((pos>>c.shift+1)<<c.shift, end)
	for e < end && c.state(e>>c.shift) == st {
		e = min(e+c.bs, end)
	}
	return st, e
}

// ReadAt implements io.ReaderAt, merging the base and the overlay.
func (c *CopyOnWrite) ReadAt(p []byte, off int64) (int, error) {
	if c.closed.Load() {
		return 0, fmt.Errorf("backend: read %d+%d: %w", off, len(p), os.ErrClosed)
	}
	n, err := clampRead(p, off, c.size)
	end := off + int64(n)
	for pos := off; pos < end; {
		st, e := c.run(pos, end)
		q := p[pos-off : e-off]
		var rerr error
		switch st {
		case stBase:
			rerr = readAll(c.base, q, pos)
		case stOverlay:
			rerr = readAll(c.ov, q, pos)
		case stZero:
			clear(q)
		}
		if rerr != nil {
			return 0, fmt.Errorf("backend: read %d+%d: %w", off, n, rerr)
		}
		pos = e
	}
	return n, err
}

// readAll reads len(p) bytes at off from r, accepting io.EOF only with a full count: a short
// read (a file that shrank underneath the device) is io.ErrUnexpectedEOF.
func readAll(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// WriteAt implements io.WriterAt; only the overlay is written. A write that does not fit in
// the device fails whole, with a *RangeError.
func (c *CopyOnWrite) WriteAt(p []byte, off int64) (int, error) {
	if err := c.modify("write", off, int64(len(p)), p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Trim implements Trimmer: the overlay forgets the range (freeing whole blocks of a file
// overlay) and it reads as zeroes afterwards.
func (c *CopyOnWrite) Trim(off, n int64) error { return c.modify("trim", off, n, nil) }

// ZeroAt implements Zeroer, like Trim.
func (c *CopyOnWrite) ZeroAt(off, n int64) error { return c.modify("zero", off, n, nil) }

// modify writes p (or zeroes, when p is nil) to [off, off+n) of the overlay.
func (c *CopyOnWrite) modify(op string, off, n int64, p []byte) error {
	if err := CheckRange(op, off, n, c.size); err != nil {
		return err
	}
	if c.closed.Load() {
		return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, os.ErrClosed)
	}
	if n == 0 {
		return nil
	}
	end := off + n
	unlock := c.lockBlocks(off>>c.shift, (end-1)>>c.shift)
	defer unlock()
	for pos := off; pos < end; {
		bStart := pos >> c.shift << c.shift
		bEnd := min(bStart+c.bs, c.size) // the device's last block may be short
		if pos == bStart && bEnd <= end {
			// A run of whole blocks, written in one go.
			runEnd := end >> c.shift << c.shift
			if end == c.size {
				runEnd = end
			}
			first, last := pos>>c.shift, (runEnd-1)>>c.shift
			if p == nil {
				c.setZero(first, last)
				c.ov.discard(pos, runEnd-pos)
			} else {
				if _, err := c.ov.WriteAt(p[pos-off:runEnd-off], pos); err != nil {
					return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, err)
				}
				c.setOverlay(first, last)
			}
			pos = runEnd
			continue
		}
		e := min(bEnd, end)
		if err := c.partial(p, off, pos, e); err != nil {
			return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, err)
		}
		pos = e
	}
	return nil
}

// partial writes p[pos-off:e-off] (or zeroes) into a part [pos, e) of one block, copying the
// rest of the block up from the base first if the overlay does not hold it yet. The caller
// holds the block's lock.
func (c *CopyOnWrite) partial(p []byte, off, pos, e int64) error {
	b := pos >> c.shift
	st := c.state(b)
	if st == stZero && p == nil {
		return nil
	}
	var src []byte
	if p != nil {
		src = p[pos-off : e-off]
	}
	if st == stOverlay {
		if src == nil {
			src = make([]byte, e-pos)
		}
		_, err := c.ov.WriteAt(src, pos)
		return err
	}
	bStart := b << c.shift
	buf := make([]byte, min(bStart+c.bs, c.size)-bStart)
	if st == stBase {
		if err := readAll(c.base, buf, bStart); err != nil {
			return fmt.Errorf("copy block %d up from base: %w", b, err)
		}
	}
	if src != nil {
		copy(buf[pos-bStart:], src)
	} else {
		clear(buf[pos-bStart : e-bStart])
	}
	if _, err := c.ov.WriteAt(buf, bStart); err != nil {
		return err
	}
	c.setOverlay(b, b)
	return nil
}

// Sync implements Syncer: it makes the overlay durable (the base is never written).
func (c *CopyOnWrite) Sync() error {
	if c.closed.Load() {
		return fmt.Errorf("backend: sync: %w", os.ErrClosed)
	}
	if err := c.ov.sync(); err != nil {
		return fmt.Errorf("backend: sync: %w", err)
	}
	return nil
}

// Extents implements Extenter: blocks changed in the overlay are data, trimmed or zeroed blocks
// are holes that read as zeroes, and unchanged blocks report what the base reports when it is
// an Extenter (else data).
func (c *CopyOnWrite) Extents(off, n int64) ([]Extent, error) {
	if err := CheckRange("extents", off, n, c.size); err != nil {
		return nil, err
	}
	if c.closed.Load() {
		return nil, fmt.Errorf("backend: extents %d+%d: %w", off, n, os.ErrClosed)
	}
	var out []Extent
	add := func(e Extent) {
		if k := len(out) - 1; k >= 0 && out[k].Hole == e.Hole && out[k].Zero == e.Zero &&
			out[k].Offset+out[k].Length == e.Offset {
			out[k].Length += e.Length
			return
		}
		out = append(out, e)
	}
	bx, _ := c.base.(Extenter)
	end := off + n
	for pos := off; pos < end && len(out) < maxExtents; {
		st, e := c.run(pos, end)
		switch {
		case st == stZero:
			add(Extent{Offset: pos, Length: e - pos, Hole: true, Zero: true})
		case st == stBase && bx != nil:
			for q := pos; q < e; {
				exts, err := bx.Extents(q, e-q)
				if err != nil {
					return nil, fmt.Errorf("backend: extents %d+%d: base: %w", off, n, err)
				}
				if len(exts) == 0 {
					return nil, fmt.Errorf("backend: extents %d+%d: base reported none at %d", off, n, q)
				}
				for _, x := range exts {
					x.Offset = max(x.Offset, q)
					x.Length = min(x.Offset+x.Length, e) - x.Offset
					if x.Length <= 0 || x.Offset != q {
						return nil, fmt.Errorf("backend: extents %d+%d: base reported %d+%d at %d",
							off, n, x.Offset, x.Length, q)
					}
					add(x)
					q += x.Length
				}
			}
		default:
			add(Extent{Offset: pos, Length: e - pos})
		}
		pos = e
	}
	return out, nil
}

// Close releases the overlay: a temporary overlay file is closed and removed, a memory overlay
// freed; an overlay file the caller passed stays open. The base is not closed.
func (c *CopyOnWrite) Close() error {
	if c.closed.Swap(true) {
		return fmt.Errorf("backend: close: %w", os.ErrClosed)
	}
	if err := c.ov.close(); err != nil {
		return fmt.Errorf("backend: close: %w", err)
	}
	return nil
}

// fileOverlay keeps changed blocks in a sparse file.
type fileOverlay struct {
	f *os.File
	// temp is set when f is a temporary file created by NewCopyOnWrite, closed by close;
	// otherwise f is the caller's.
	temp bool
	// path is the temporary file's name where it could not be removed while open (see
	// createAnonymous); close removes it.
	path string
}

func (o *fileOverlay) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o *fileOverlay) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o *fileOverlay) sync() error                              { return o.f.Sync() }

// discard punches a hole to give the space back; where that is impossible the stale data stays,
// unread, since the blocks are marked zero.
func (o *fileOverlay) discard(off, n int64) { _ = punchHole(o.f, off, n) }

func (o *fileOverlay) close() error {
	if !o.temp {
		return nil
	}
	err := o.f.Close()
	if o.path != "" {
		err = errors.Join(err, os.Remove(o.path))
	}
	return err
}

// createAnonymous creates a read-write file in dir that has no name, where the system allows:
// openAnonymous (O_TMPFILE on Linux), or else a temporary file removed at once. path is the
// name of a file that could not be removed while open ("" otherwise).
func createAnonymous(dir string) (f *os.File, path string, err error) {
	if f, err := openAnonymous(dir); err == nil {
		return f, "", nil
	} else if !errors.Is(err, errors.ErrUnsupported) {
		return nil, "", err
	}
	return createRemoved(dir)
}

// createRemoved creates a temporary file in dir and removes its name at once.
func createRemoved(dir string) (*os.File, string, error) {
	f, err := os.CreateTemp(dir, "netroot-cow-*")
	if err != nil {
		return nil, "", err
	}
	if err := os.Remove(f.Name()); err != nil {
		return f, f.Name(), nil
	}
	return f, "", nil
}

// memOverlay keeps changed blocks in a map.
type memOverlay struct {
	bs, size int64
	mu       sync.RWMutex
	blocks   map[int64][]byte
}

func (o *memOverlay) ReadAt(p []byte, off int64) (int, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	for done := 0; done < len(p); {
		pos := off + int64(done)
		b, in := pos/o.bs, pos%o.bs
		blk := o.blocks[b]
		if blk == nil {
			// Not reached through CopyOnWrite, which reads only blocks it wrote.
			k := int(min(o.bs-in, int64(len(p)-done)))
			clear(p[done : done+k])
			done += k
			continue
		}
		done += copy(p[done:], blk[in:])
	}
	return len(p), nil
}

func (o *memOverlay) WriteAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.blocks == nil {
		return 0, os.ErrClosed
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		b, in := pos/o.bs, pos%o.bs
		blk := o.blocks[b]
		if blk == nil {
			blk = make([]byte, min(o.bs, o.size-b*o.bs))
			o.blocks[b] = blk
		}
		done += copy(blk[in:], p[done:])
	}
	return len(p), nil
}

func (o *memOverlay) discard(off, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for b := off / o.bs; b*o.bs < off+n; b++ {
		delete(o.blocks, b)
	}
}

func (o *memOverlay) sync() error { return nil }

func (o *memOverlay) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.blocks = nil
	return nil
}
