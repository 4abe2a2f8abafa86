package backend

import (
	"errors"
	"fmt"
	"io"
)

// Device is a read-only block device: the minimum an export needs.
type Device interface {
	io.ReaderAt
	// Size is the device size in bytes. It does not change while the device is served.
	Size() int64
}

// WriterDevice is a Device that accepts writes.
type WriterDevice interface {
	Device
	io.WriterAt
}

// Syncer is a device that can make completed writes durable.
type Syncer interface {
	Sync() error
}

// Trimmer is a device that can discard a range; later reads of it return zeroes.
type Trimmer interface {
	Trim(off, n int64) error
}

// Zeroer is a device that can write zeroes to a range without a data buffer.
type Zeroer interface {
	ZeroAt(off, n int64) error
}

// FastZeroer is a device that knows whether its ZeroAt is much faster than writing zeroes
// (it deallocates or marks blocks instead of writing them). NBD's FAST_ZERO flag is honoured
// only for devices that say so.
type FastZeroer interface {
	FastZero() bool
}

// Extent is a run of a device with uniform allocation status.
type Extent struct {
	Offset, Length int64
	// Hole means the run is not allocated in the underlying storage.
	Hole bool
	// Zero means the run reads as zeroes.
	Zero bool
}

// Extenter is a device that can report which ranges hold data and which are holes, so that
// clients such as qemu-img and nbdcopy can skip them.
type Extenter interface {
	// Extents describes [off, off+n) as consecutive extents starting at off. The total length may
	// be shorter than n (the caller asks again) but never zero for n > 0.
	Extents(off, n int64) ([]Extent, error)
}

// ErrReadOnly is returned by writes, trims and zeroing on a read-only device.
var ErrReadOnly = errors.New("backend: device is read-only")

// RangeError reports an access outside a device.
type RangeError struct {
	Op       string // "read", "write", "trim", "zero", "extents", "slice", "filerange"
	Off, Len int64
	Size     int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("backend: %s %d+%d beyond size %d", e.Op, e.Off, e.Len, e.Size)
}

// CheckRange returns a *RangeError when [off, off+n) does not lie within a device of size bytes.
func CheckRange(op string, off, n, size int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return &RangeError{Op: op, Off: off, Len: n, Size: size}
	}
	return nil
}

// IsWritable reports whether d accepts writes: it implements io.WriterAt and is not marked
// read-only with ReadOnly.
func IsWritable(d Device) bool {
	if r, ok := d.(interface{ ReadOnly() bool }); ok && r.ReadOnly() {
		return false
	}
	_, ok := d.(io.WriterAt)
	return ok
}

// ReadOnly returns d restricted to reading: the result implements Device and, where d does,
// Extenter; it has no write methods.
func ReadOnly(d Device) Device {
	if e, ok := d.(Extenter); ok {
		return readOnlyExtents{readOnly{d}, e}
	}
	return readOnly{d}
}

type readOnly struct{ d Device }

func (r readOnly) ReadAt(p []byte, off int64) (int, error) { return r.d.ReadAt(p, off) }
func (r readOnly) Size() int64                             { return r.d.Size() }

type readOnlyExtents struct {
	readOnly
	e Extenter
}

func (r readOnlyExtents) Extents(off, n int64) ([]Extent, error) { return r.e.Extents(off, n) }

// clampRead implements io.ReaderAt's contract on a device of the given size: reads that start
// inside the device and end past it return the bytes available and io.EOF.
func clampRead(p []byte, off, size int64) (n int, err error) {
	if off < 0 {
		return 0, &RangeError{Op: "read", Off: off, Len: int64(len(p)), Size: size}
	}
	if off >= size {
		if len(p) == 0 && off == size {
			return 0, nil
		}
		return 0, io.EOF
	}
	if int64(len(p)) > size-off {
		return int(size - off), io.EOF
	}
	return len(p), nil
}
