//go:build linux

package backend

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fdControl runs fn with f's descriptor, guarded against a concurrent Close.
func fdControl(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		// Control fails only on a closed file; say so in the way os does.
		return fmt.Errorf("%w (%v)", os.ErrClosed, err)
	}
	return ferr
}

// fallocate calls fallocate(2) with FALLOC_FL_KEEP_SIZE added to mode, so that the file (or
// block device, which requires the flag) never grows.
func fallocate(f *os.File, mode uint32, off, n int64) error {
	return fdControl(f, func(fd int) error {
		for {
			err := unix.Fallocate(fd, mode|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if err != unix.EINTR {
				return err
			}
		}
	})
}

// punchHole deallocates [off, off+n) of f; the range reads as zeroes afterwards.
func punchHole(f *os.File, off, n int64) error {
	return fallocate(f, unix.FALLOC_FL_PUNCH_HOLE, off, n)
}

// zeroRange makes [off, off+n) of f read as zeroes, keeping it allocated.
func zeroRange(f *os.File, off, n int64) error {
	return fallocate(f, unix.FALLOC_FL_ZERO_RANGE, off, n)
}

// unsupported reports whether err means the file system or device lacks an fallocate mode (as
// opposed to a bad argument for this one call, or an I/O error).
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

// fallbackOK reports whether a failed fallocate may be replaced by writing zeroes: the mode is
// unsupported, or the range does not suit the device (block devices want sector alignment).
func fallbackOK(err error) bool {
	return unsupported(err) || errors.Is(err, unix.EINVAL)
}

// tryFalloc zeroes [off, off+n) of f (offsets in the file) with falloc unless *no says the
// mode is unsupported. It reports whether the range is done; false with a nil error means the
// caller must zero it by writing. An unsupported mode is remembered in *no, so that later calls
// go straight to the caller's fallback.
func tryFalloc(f *os.File, off, n int64, no *atomic.Bool, falloc func(*os.File, int64, int64) error) (bool, error) {
	if no.Load() {
		return false, nil
	}
	err := falloc(f, off, n)
	switch {
	case err == nil:
		return true, nil
	case !fallbackOK(err):
		return false, err
	case unsupported(err):
		no.Store(true)
	}
	return false, nil
}

func fdatasync(f *os.File) error {
	return fdControl(f, func(fd int) error {
		for {
			err := unix.Fdatasync(fd)
			if err != unix.EINTR {
				return err
			}
		}
	})
}

// seekDataHole calls lseek(2) with SEEK_DATA or SEEK_HOLE. The descriptor's own offset is
// irrelevant: all I/O uses pread and pwrite.
func seekDataHole(f *os.File, off int64, whence int) (int64, error) {
	var pos int64
	err := fdControl(f, func(fd int) error {
		var err error
		pos, err = unix.Seek(fd, off, whence)
		return err
	})
	return pos, err
}

// directAlignment returns the file offset alignment O_DIRECT needs on f: the kernel's answer
// from statx(STATX_DIOALIGN) where it has one, else a conservative 4096.
func directAlignment(f *os.File) int64 {
	var st unix.Statx_t
	err := fdControl(f, func(fd int) error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st)
	})
	if err != nil || st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_offset_align == 0 ||
		st.Dio_mem_align > pageAlign || st.Dio_offset_align > 1<<20 {
		return pageAlign
	}
	return int64(st.Dio_offset_align)
}

// pageAlign is the memory alignment of every bounce buffer, enough for any O_DIRECT device.
const pageAlign = 4096

// bounceSize is the size of the aligned buffers that O_DIRECT transfers go through.
const bounceSize = 1 << 20

var bouncePool = sync.Pool{New: func() any {
	raw := make([]byte, bounceSize+pageAlign)
	skip := (pageAlign - int(uintptr(unsafe.Pointer(&raw[0]))%pageAlign)) % pageAlign
	b := raw[skip : skip+bounceSize : skip+bounceSize]
	return &b
}}

func aligned(p []byte) bool {
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%pageAlign == 0
}

// openAnonymous opens an unnamed regular file in dir (O_TMPFILE): it is freed when the last
// descriptor goes, so nothing of it outlives the process. A file system without O_TMPFILE
// gives an error wrapping errors.ErrUnsupported.
func openAnonymous(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		// EOPNOTSUPP: the file system has no O_TMPFILE; EISDIR: the kernel predates it.
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) {
			return nil, fmt.Errorf("%w: %w", errors.ErrUnsupported, err)
		}
		return nil, err
	}
	return f, nil
}
