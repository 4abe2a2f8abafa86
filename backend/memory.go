package backend

import (
	"fmt"
	"sync"
)

// Memory is a device held in memory, for tests and demos. It is safe for concurrent use.
type Memory struct {
	mu       sync.RWMutex
	buf      []byte
	readOnly bool
}

var (
	_ WriterDevice = (*Memory)(nil)
	_ Syncer       = (*Memory)(nil)
	_ Trimmer      = (*Memory)(nil)
	_ Zeroer       = (*Memory)(nil)
	_ Extenter     = (*Memory)(nil)
)

// NewMemory returns a zeroed writable device of size bytes.
func NewMemory(size int64) *Memory {
	if size < 0 {
		panic(fmt.Sprintf("backend: negative memory size %d", size))
	}
	return &Memory{buf: make([]byte, size)}
}

// NewMemoryFrom returns a device holding data (not copied). readOnly makes it refuse writes.
func NewMemoryFrom(data []byte, readOnly bool) *Memory {
	return &Memory{buf: data, readOnly: readOnly}
}

// Size implements Device.
func (m *Memory) Size() int64 { return int64(len(m.buf)) }

// ReadOnly reports whether the device refuses writes.
func (m *Memory) ReadOnly() bool { return m.readOnly }

// Bytes returns the device contents. The caller must not use it concurrently with writes.
func (m *Memory) Bytes() []byte { return m.buf }

// ReadAt implements io.ReaderAt.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := clampRead(p, off, int64(len(m.buf)))
	if n > 0 {
		copy(p[:n], m.buf[off:])
	}
	return n, err
}

// WriteAt implements io.WriterAt. Writes past the end fail whole, with a *RangeError.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, ErrReadOnly
	}
	if err := CheckRange("write", off, int64(len(p)), m.Size()); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.buf[off:], p), nil
}

// Sync implements Syncer; memory needs no syncing.
func (m *Memory) Sync() error { return nil }

// Trim implements Trimmer: the range reads as zeroes afterwards.
func (m *Memory) Trim(off, n int64) error { return m.zero("trim", off, n) }

// ZeroAt implements Zeroer.
func (m *Memory) ZeroAt(off, n int64) error { return m.zero("zero", off, n) }

func (m *Memory) zero(op string, off, n int64) error {
	if m.readOnly {
		return ErrReadOnly
	}
	if err := CheckRange(op, off, n, m.Size()); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.buf[off : off+n])
	return nil
}

// Extents implements Extenter: memory is all data.
func (m *Memory) Extents(off, n int64) ([]Extent, error) {
	if err := CheckRange("extents", off, n, m.Size()); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	return []Extent{{Offset: off, Length: n}}, nil
}
