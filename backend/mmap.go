//go:build linux

package backend

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrFault is wrapped by errors from a Mmap access that faulted: the file was truncated
// underneath the mapping, or a write into a hole found the disk full.
var ErrFault = errors.New("backend: fault on mapped file")

// MmapOptions configures OpenMmap. A nil *MmapOptions maps the whole file read-write.
type MmapOptions struct {
	// ReadOnly maps the file PROT_READ; writes, trims and zeroing return ErrReadOnly.
	ReadOnly bool
	// Offset is where the device starts in the file, in bytes; it need not be page aligned.
	Offset int64
	// Length is the device size; zero means up to the end of the file.
	Length int64
}

// Mmap is a device backed by a file mapped into memory (MAP_SHARED), so that reads and writes
// are memory copies and the page cache is shared with every other user of the file. It is safe
// for concurrent use.
//
// A fault while touching the mapping (the file was truncated underneath it, or a write into a
// sparse file found the disk full) is returned as an error wrapping ErrFault instead of
// crashing the process: every access runs with debug.SetPanicOnFault and recovers the fault.
type Mmap struct {
	f        *os.File
	base     int64  // file offset of device offset 0
	mapOff   int64  // file offset of mapping[0] (page aligned)
	mapping  []byte // the whole mapping, nil when the device is empty or closed
	data     []byte // the device window within mapping
	size     int64
	readOnly bool

	// mu guards mapping and data against Close: accesses share it, Close holds it exclusively.
	mu     sync.RWMutex
	closed bool

	noPunch, noZeroRange atomic.Bool
}

var (
	_ WriterDevice = (*Mmap)(nil)
	_ Syncer       = (*Mmap)(nil)
	_ Trimmer      = (*Mmap)(nil)
	_ Zeroer       = (*Mmap)(nil)
	_ Extenter     = (*Mmap)(nil)
	_ io.Closer    = (*Mmap)(nil)
)

// OpenMmap opens path and maps it (or the window opts selects) into memory.
func OpenMmap(path string, opts *MmapOptions) (*Mmap, error) {
	var o MmapOptions
	if opts != nil {
		o = *opts
	}
	flag, prot := os.O_RDWR, unix.PROT_READ|unix.PROT_WRITE
	if o.ReadOnly {
		flag, prot = os.O_RDONLY, unix.PROT_READ
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	base, size, err := window(f, path, o.Offset, o.Length)
	if err != nil {
		f.Close()
		return nil, err
	}
	m := &Mmap{f: f, base: base, size: size, readOnly: o.ReadOnly}
	if size == 0 {
		return m, nil
	}
	page := int64(os.Getpagesize())
	m.mapOff = base / page * page
	maplen := base + size - m.mapOff
	if int64(int(maplen)) != maplen {
		f.Close()
		return nil, fmt.Errorf("backend: %q: mapping of %d bytes too large", path, maplen)
	}
	var mapErr error
	err = fdControl(f, func(fd int) error {
		m.mapping, mapErr = unix.Mmap(fd, m.mapOff, int(maplen), prot, unix.MAP_SHARED)
		return nil
	})
	if err == nil {
		err = mapErr
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("backend: mmap %q: %w", path, err)
	}
	m.data = m.mapping[base-m.mapOff:]
	return m, nil
}

// Size implements Device.
func (m *Mmap) Size() int64 { return m.size }

// ReadOnly reports whether the device refuses writes.
func (m *Mmap) ReadOnly() bool { return m.readOnly }

// guard runs fn, which touches the mapping, and turns a memory fault into an error. A fault is
// attributed to its file offset when it lies within the mapping.
func (m *Mmap) guard(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		r := recover()
		if r == nil {
			return
		}
		fault, ok := r.(interface{ Addr() uintptr })
		if !ok {
			panic(r)
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(m.mapping)))
		if a := fault.Addr(); a >= start && a < start+uintptr(len(m.mapping)) {
			page := int64(os.Getpagesize())
			err = fmt.Errorf("%w: page at file offset %d is gone (file truncated underneath the mapping?)",
				ErrFault, (m.mapOff+int64(a-start))/page*page)
		} else {
			err = fmt.Errorf("%w at address %#x", ErrFault, a)
		}
	}()
	fn()
	return nil
}

// ReadAt implements io.ReaderAt: a read that ends past the device returns the bytes before its
// end and io.EOF.
func (m *Mmap) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, fmt.Errorf("backend: read %d+%d: %w", off, len(p), os.ErrClosed)
	}
	n, err := clampRead(p, off, m.size)
	if n == 0 {
		return 0, err
	}
	if ferr := m.guard(func() { copy(p[:n], m.data[off:]) }); ferr != nil {
		return 0, fmt.Errorf("backend: read %d+%d: %w", off, n, ferr)
	}
	return n, err
}

// WriteAt implements io.WriterAt. A write that does not fit in the device fails whole, with a
// *RangeError.
func (m *Mmap) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, ErrReadOnly
	}
	if err := CheckRange("write", off, int64(len(p)), m.size); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, fmt.Errorf("backend: write %d+%d: %w", off, len(p), os.ErrClosed)
	}
	if err := m.guard(func() { copy(m.data[off:], p) }); err != nil {
		return 0, fmt.Errorf("backend: write %d+%d: %w", off, len(p), err)
	}
	return len(p), nil
}

// Slice returns the n mapped bytes at off without copying, for servers that send them with
// writev (net.Buffers) or hand them to another zero-copy path. The slice stays valid until
// Close; the caller must not modify it unless the device is writable, and must not keep it
// past Close (touching it then crashes the process).
//
// Touching the slice directly is not protected against faults: if the file may be truncated
// underneath the mapping, copy with ReadAt instead, or pass the slice only to system calls,
// where a fault becomes an EFAULT error rather than a signal.
func (m *Mmap) Slice(off, n int64) ([]byte, error) {
	if err := CheckRange("slice", off, n, m.size); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("backend: slice %d+%d: %w", off, n, os.ErrClosed)
	}
	if n == 0 {
		return []byte{}, nil
	}
	return m.data[off : off+n : off+n], nil
}

// Sync implements Syncer with msync(MS_SYNC).
func (m *Mmap) Sync() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return fmt.Errorf("backend: sync: %w", os.ErrClosed)
	}
	if m.readOnly || len(m.mapping) == 0 {
		return nil
	}
	if err := unix.Msync(m.mapping, unix.MS_SYNC); err != nil {
		return fmt.Errorf("backend: sync: %w", err)
	}
	return nil
}

// Trim implements Trimmer by punching a hole in the file, or by clearing the mapped bytes where
// the file system cannot; the range reads as zeroes afterwards.
func (m *Mmap) Trim(off, n int64) error {
	return m.zero("trim", off, n, &m.noPunch, punchHole)
}

// ZeroAt implements Zeroer with fallocate ZERO_RANGE, falling back to clearing the mapped bytes.
func (m *Mmap) ZeroAt(off, n int64) error {
	return m.zero("zero", off, n, &m.noZeroRange, zeroRange)
}

func (m *Mmap) zero(op string, off, n int64, no *atomic.Bool, falloc func(*os.File, int64, int64) error) error {
	if m.readOnly {
		return ErrReadOnly
	}
	if err := CheckRange(op, off, n, m.size); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, os.ErrClosed)
	}
	if n == 0 {
		return nil
	}
	if done, err := tryFalloc(m.f, m.base+off, n, no, falloc); err != nil {
		return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, err)
	} else if done {
		return nil
	}
	if err := m.guard(func() { clear(m.data[off : off+n]) }); err != nil {
		return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, err)
	}
	return nil
}

// Extents implements Extenter with SEEK_DATA and SEEK_HOLE on the mapped file.
func (m *Mmap) Extents(off, n int64) ([]Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("backend: extents %d+%d: %w", off, n, os.ErrClosed)
	}
	// A File view of the same descriptor answers with the same code.
	v := &File{f: m.f, base: m.base, size: m.size, readOnly: true}
	return v.Extents(off, n)
}

// Close unmaps and closes the file. Accesses after Close return errors wrapping os.ErrClosed.
func (m *Mmap) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("backend: close: %w", os.ErrClosed)
	}
	m.closed = true
	var err error
	if m.mapping != nil {
		err = unix.Munmap(m.mapping)
		m.mapping, m.data = nil, nil
	}
	err = errors.Join(err, m.f.Close())
	if err != nil {
		return fmt.Errorf("backend: close: %w", err)
	}
	return nil
}
