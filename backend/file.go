//go:build linux

package backend

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// FileOptions configures OpenFile. A nil *FileOptions opens the whole file read-write through
// the page cache.
type FileOptions struct {
	// ReadOnly opens the file read-only; writes, trims and zeroing return ErrReadOnly.
	ReadOnly bool
	// Direct opens the file with O_DIRECT (vblade -d), bypassing the page cache. Requests of any
	// offset and length work: the parts aligned to the file system's direct-I/O alignment go
	// through aligned bounce buffers with O_DIRECT, the unaligned head and tail of a request
	// through a second, buffered descriptor of the same file.
	Direct bool
	// Sync opens the file with O_SYNC (vblade -s): every write is durable when it returns.
	Sync bool
	// Offset is where the device starts in the file, in bytes (vblade -o, which counts
	// 512-byte sectors). It need not be aligned, even with Direct.
	Offset int64
	// Length is the device size in bytes (vblade -l, in sectors); zero means up to the end of
	// the file.
	Length int64
}

// File is a device backed by a regular file or a block device, read with pread and written with
// pwrite, optionally restricted to a window of it. It is safe for concurrent use.
//
// Trim punches holes (fallocate PUNCH_HOLE), ZeroAt uses fallocate ZERO_RANGE, both falling back
// to writing zeroes where the file system or device cannot; Extents reports holes found with
// SEEK_DATA and SEEK_HOLE.
type File struct {
	f        *os.File // all I/O, or only the aligned O_DIRECT part when bf is set
	bf       *os.File // Direct only: buffered descriptor for unaligned heads and tails
	base     int64    // file offset of device offset 0
	size     int64
	readOnly bool
	align    int64 // Direct only: O_DIRECT offset and length alignment

	// mu is used only with Direct: writes with a buffered part hold it exclusively, fully
	// aligned writes share it, so a buffered read-modify-write of a page never interleaves
	// with a direct write of the same page.
	mu sync.RWMutex

	noPunch, noZeroRange, noSeekData atomic.Bool
}

var (
	_ WriterDevice = (*File)(nil)
	_ Syncer       = (*File)(nil)
	_ Trimmer      = (*File)(nil)
	_ Zeroer       = (*File)(nil)
	_ Extenter     = (*File)(nil)
	_ io.Closer    = (*File)(nil)
)

// OpenFile opens path (a regular file or a block device) as a device.
func OpenFile(path string, opts *FileOptions) (*File, error) {
	var o FileOptions
	if opts != nil {
		o = *opts
	}
	flag := os.O_RDWR
	if o.ReadOnly {
		flag = os.O_RDONLY
	}
	if o.Sync {
		flag |= os.O_SYNC
	}
	dflag := flag
	if o.Direct {
		dflag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, dflag, 0)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	base, size, err := window(f, path, o.Offset, o.Length)
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &File{f: f, base: base, size: size, readOnly: o.ReadOnly}
	if o.Direct {
		d.align = directAlignment(f)
		if d.bf, err = os.OpenFile(path, flag, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("backend: %w", err)
		}
	}
	return d, nil
}

// window validates an offset and length window on f and returns the device's start and size.
func window(f *os.File, path string, off, length int64) (int64, int64, error) {
	// Seeking to the end also sizes block devices, where Stat reports 0.
	fsize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, fmt.Errorf("backend: size of %q: %w", path, err)
	}
	if off < 0 || length < 0 || off > fsize || length > fsize-off {
		return 0, 0, fmt.Errorf("backend: %q: window offset %d length %d outside file size %d",
			path, off, length, fsize)
	}
	if length == 0 {
		length = fsize - off
	}
	return off, length, nil
}

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// ReadOnly reports whether the device refuses writes.
func (d *File) ReadOnly() bool { return d.readOnly }

// Direct reports whether the device was opened with O_DIRECT.
func (d *File) Direct() bool { return d.bf != nil }

// ReadAt implements io.ReaderAt: a read that ends past the device returns the bytes before its
// end and io.EOF.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	n, err := clampRead(p, off, d.size)
	if n == 0 {
		return 0, err
	}
	if rerr := d.pread(p[:n], d.base+off); rerr != nil {
		return 0, fmt.Errorf("backend: read %d+%d: %w", off, n, rerr)
	}
	return n, err
}

// WriteAt implements io.WriterAt. A write that does not fit in the device fails whole, with a
// *RangeError.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, ErrReadOnly
	}
	if err := CheckRange("write", off, int64(len(p)), d.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := d.pwrite(p, d.base+off); err != nil {
		return 0, fmt.Errorf("backend: write %d+%d: %w", off, len(p), err)
	}
	return len(p), nil
}

// split divides [fo, fo+n) into an unaligned head, an aligned middle and an unaligned tail for
// O_DIRECT and returns the lengths of head and middle.
func (d *File) split(fo, n int64) (head, mid int64) {
	start := (fo + d.align - 1) / d.align * d.align
	end := (fo + n) / d.align * d.align
	if end <= start {
		return n, 0
	}
	return start - fo, end - start
}

func (d *File) pread(p []byte, fo int64) error {
	if d.bf == nil {
		return readAll(d.f, p, fo)
	}
	head, mid := d.split(fo, int64(len(p)))
	if head > 0 {
		if err := readAll(d.bf, p[:head], fo); err != nil {
			return err
		}
	}
	if mid > 0 {
		if err := d.directIO(p[head:head+mid], fo+head, false); err != nil {
			return err
		}
	}
	if tail := int64(len(p)) - head - mid; tail > 0 {
		return readAll(d.bf, p[head+mid:], fo+head+mid)
	}
	return nil
}

func (d *File) pwrite(p []byte, fo int64) error {
	if d.bf == nil {
		_, err := d.f.WriteAt(p, fo)
		return err
	}
	head, mid := d.split(fo, int64(len(p)))
	tail := int64(len(p)) - head - mid
	if head > 0 || tail > 0 {
		d.mu.Lock()
		defer d.mu.Unlock()
	} else {
		d.mu.RLock()
		defer d.mu.RUnlock()
	}
	if head > 0 {
		if _, err := d.bf.WriteAt(p[:head], fo); err != nil {
			return err
		}
	}
	if mid > 0 {
		if err := d.directIO(p[head:head+mid], fo+head, true); err != nil {
			return err
		}
	}
	if tail > 0 {
		_, err := d.bf.WriteAt(p[head+mid:], fo+head+mid)
		return err
	}
	return nil
}

// directIO transfers the aligned range p at fo with O_DIRECT, through bounce buffers unless p
// itself is page aligned.
func (d *File) directIO(p []byte, fo int64, write bool) error {
	if aligned(p) {
		if write {
			_, err := d.f.WriteAt(p, fo)
			return err
		}
		return readAll(d.f, p, fo)
	}
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	for len(p) > 0 {
		c := min(len(p), len(*bp))
		b := (*bp)[:c]
		if write {
			copy(b, p)
			if _, err := d.f.WriteAt(b, fo); err != nil {
				return err
			}
		} else {
			if err := readAll(d.f, b, fo); err != nil {
				return err
			}
			copy(p, b)
		}
		p, fo = p[c:], fo+int64(c)
	}
	return nil
}

// Sync implements Syncer with fdatasync.
func (d *File) Sync() error {
	if err := fdatasync(d.f); err != nil {
		return fmt.Errorf("backend: sync: %w", err)
	}
	return nil
}

// Trim implements Trimmer by punching a hole; where the file system or device cannot, it writes
// zeroes instead, so the range always reads as zeroes afterwards.
func (d *File) Trim(off, n int64) error {
	return d.zero("trim", off, n, &d.noPunch, punchHole)
}

// ZeroAt implements Zeroer with fallocate ZERO_RANGE, falling back to writing zeroes.
func (d *File) ZeroAt(off, n int64) error {
	return d.zero("zero", off, n, &d.noZeroRange, zeroRange)
}

// zero makes [off, off+n) read as zeroes with falloc, falling back to writing zeroes; no
// remembers that falloc is unsupported, so that later calls go straight to the fallback.
func (d *File) zero(op string, off, n int64, no *atomic.Bool, falloc func(*os.File, int64, int64) error) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if err := CheckRange(op, off, n, d.size); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if done, err := tryFalloc(d.f, d.base+off, n, no, falloc); err != nil {
		return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, err)
	} else if done {
		return nil
	}
	return d.writeZeroes(op, off, n)
}

// zeroes is a read-only source of zero bytes for writeZeroes.
var zeroes = make([]byte, 256<<10)

func (d *File) writeZeroes(op string, off, n int64) error {
	for done := int64(0); done < n; {
		c := min(n-done, int64(len(zeroes)))
		if err := d.pwrite(zeroes[:c], d.base+off+done); err != nil {
			return fmt.Errorf("backend: %s %d+%d: %w", op, off, n, err)
		}
		done += c
	}
	return nil
}

// Extents implements Extenter with SEEK_DATA and SEEK_HOLE. Holes are reported with Hole and
// Zero set. Where the file system cannot answer, the whole range is reported as data.
func (d *File) Extents(off, n int64) ([]Extent, error) {
	if err := CheckRange("extents", off, n, d.size); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	end := off + n
	if d.noSeekData.Load() {
		return []Extent{{Offset: off, Length: n}}, nil
	}
	var out []Extent
	for pos := off; pos < end && len(out) < maxExtents; {
		data, err := seekDataHole(d.f, d.base+pos, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			// No data from pos to the end of the file.
			data = d.base + end
		case err != nil && (errors.Is(err, unix.EINVAL) || unsupported(err)):
			d.noSeekData.Store(true)
			return append(out, Extent{Offset: pos, Length: end - pos}), nil
		case err != nil:
			return nil, fmt.Errorf("backend: extents %d+%d: %w", off, n, err)
		}
		if data -= d.base; data > pos {
			e := min(data, end)
			out = append(out, Extent{Offset: pos, Length: e - pos, Hole: true, Zero: true})
			pos = e
			continue
		}
		hole, err := seekDataHole(d.f, d.base+pos, unix.SEEK_HOLE)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				// The file shrank underneath us; report the rest as data and let reads fail.
				return append(out, Extent{Offset: pos, Length: end - pos}), nil
			}
			return nil, fmt.Errorf("backend: extents %d+%d: %w", off, n, err)
		}
		e := min(max(hole-d.base, pos+1), end)
		out = append(out, Extent{Offset: pos, Length: e - pos})
		pos = e
	}
	return out, nil
}

// FileRange returns the open file holding the device's n bytes at off and their offset in that
// file, for servers that send them to a socket with sendfile(2) or splice(2) instead of reading
// them into memory. The file belongs to d: the caller must not close it, change its position
// or use it after Close. A device opened with Direct returns errors.ErrUnsupported, since
// sending from the file would go through the page cache that Direct avoids.
func (d *File) FileRange(off, n int64) (*os.File, int64, error) {
	if err := CheckRange("filerange", off, n, d.size); err != nil {
		return nil, 0, err
	}
	if d.bf != nil {
		return nil, 0, fmt.Errorf("backend: file range %d+%d of a Direct device: %w", off, n, errors.ErrUnsupported)
	}
	return d.f, d.base + off, nil
}

// Close closes the file.
func (d *File) Close() error {
	err := d.f.Close()
	if d.bf != nil {
		err = errors.Join(err, d.bf.Close())
	}
	if err != nil {
		return fmt.Errorf("backend: close: %w", err)
	}
	return nil
}
