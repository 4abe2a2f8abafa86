//go:build linux

package backend_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/backend"
)

func TestConcurrentSharedBlocks(t *testing.T) {
	open := map[string]func(path string) (backend.WriterDevice, error){
		"file": func(p string) (backend.WriterDevice, error) { return backend.OpenFile(p, nil) },
		"direct": func(p string) (backend.WriterDevice, error) {
			return backend.OpenFile(p, &backend.FileOptions{Direct: true})
		},
		"mmap": func(p string) (backend.WriterDevice, error) { return backend.OpenMmap(p, nil) },
	}
	for name, fn := range open {
		t.Run(name, func(t *testing.T) {
			path := writeImage(t, t.TempDir(), randomBytes(10, 256*4096))
			d, err := fn(path)
			if name == "direct" && errors.Is(err, unix.EINVAL) {
				t.Skipf("file system refuses O_DIRECT: %v", err)
			}
			require.NoError(t, err)
			defer d.(io.Closer).Close()
			hammerSharedBlocks(t, d, 4096)
		})
	}
}

// readOnlyDevices opens the same image read-only in every way the package offers.
func readOnlyDevices(t *testing.T, data []byte) map[string]backend.Device {
	t.Helper()
	path := writeImage(t, t.TempDir(), data)
	f, err := backend.OpenFile(path, &backend.FileOptions{ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := backend.OpenMmap(path, &backend.MmapOptions{ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return map[string]backend.Device{
		"file":     f,
		"mmap":     m,
		"memory":   backend.NewMemoryFrom(bytes.Clone(data), true),
		"ReadOnly": backend.ReadOnly(backend.NewMemoryFrom(bytes.Clone(data), false)),
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	data := randomBytes(11, 8192)
	for name, d := range readOnlyDevices(t, data) {
		t.Run(name, func(t *testing.T) {
			assert.False(t, backend.IsWritable(d))
			if w, ok := d.(io.WriterAt); ok {
				n, err := w.WriteAt([]byte("x"), 0)
				assert.ErrorIs(t, err, backend.ErrReadOnly)
				assert.Zero(t, n)
			}
			if tr, ok := d.(backend.Trimmer); ok {
				assert.ErrorIs(t, tr.Trim(0, 4096), backend.ErrReadOnly)
			}
			if z, ok := d.(backend.Zeroer); ok {
				assert.ErrorIs(t, z.ZeroAt(0, 4096), backend.ErrReadOnly)
			}
			got := make([]byte, len(data))
			_, err := d.ReadAt(got, 0)
			require.NoError(t, err)
			assert.Equal(t, data, got, "contents changed")
		})
	}
}

func TestRangeErrors(t *testing.T) {
	path := writeImage(t, t.TempDir(), make([]byte, 10000))
	f, err := backend.OpenFile(path, &backend.FileOptions{Offset: 100, Length: 1000})
	require.NoError(t, err)
	defer f.Close()
	m, err := backend.OpenMmap(path, &backend.MmapOptions{Offset: 100, Length: 1000})
	require.NoError(t, err)
	defer m.Close()
	c, err := backend.NewCopyOnWrite(backend.NewMemory(1000), nil, nil)
	require.NoError(t, err)
	devices := map[string]fullDevice{"file": f, "mmap": m, "cow": c, "memory": backend.NewMemory(1000)}
	tests := []struct {
		name    string
		off, n  int64
		readErr error // for ReadAt, which follows io.ReaderAt
	}{
		{"past end", 990, 20, io.EOF},
		{"at end", 1000, 1, io.EOF},
		{"far", 1 << 40, 4096, io.EOF},
		{"negative offset", -1, 10, nil},
	}
	for dname, d := range devices {
		for _, tt := range tests {
			t.Run(dname+"/"+tt.name, func(t *testing.T) {
				_, err := d.WriteAt(make([]byte, tt.n), tt.off)
				checkRangeError(t, err, "write", tt.off, tt.n, 1000)
				checkRangeError(t, d.Trim(tt.off, tt.n), "trim", tt.off, tt.n, 1000)
				checkRangeError(t, d.ZeroAt(tt.off, tt.n), "zero", tt.off, tt.n, 1000)
				_, err = d.Extents(tt.off, tt.n)
				checkRangeError(t, err, "extents", tt.off, tt.n, 1000)
				_, err = d.ReadAt(make([]byte, tt.n), tt.off)
				if tt.readErr != nil {
					assert.ErrorIs(t, err, tt.readErr)
				} else {
					checkRangeError(t, err, "read", tt.off, tt.n, 1000)
				}
			})
		}
	}
	_, err = m.Slice(999, 2)
	checkRangeError(t, err, "slice", 999, 2, 1000)
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	path := writeImage(t, dir, make([]byte, 4096))
	tests := []struct {
		name         string
		path         string
		offset, size int64
		want         string
		is           error
	}{
		{"missing", filepath.Join(dir, "nope"), 0, 0, "nope", os.ErrNotExist},
		{"offset beyond", path, 5000, 0, "window offset 5000 length 0 outside file size 4096", nil},
		{"length beyond", path, 4000, 97, "window offset 4000 length 97 outside file size 4096", nil},
		{"negative offset", path, -1, 0, "window offset -1", nil},
		{"negative length", path, 0, -5, "length -5", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ferr := backend.OpenFile(tt.path, &backend.FileOptions{Offset: tt.offset, Length: tt.size})
			_, merr := backend.OpenMmap(tt.path, &backend.MmapOptions{Offset: tt.offset, Length: tt.size})
			for _, err := range []error{ferr, merr} {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.want)
				assert.Contains(t, err.Error(), "backend: ")
				if tt.is != nil {
					assert.ErrorIs(t, err, tt.is)
				}
			}
		})
	}
}

func TestEmptyFile(t *testing.T) {
	path := writeImage(t, t.TempDir(), nil)
	f, err := backend.OpenFile(path, nil)
	require.NoError(t, err)
	defer f.Close()
	m, err := backend.OpenMmap(path, nil)
	require.NoError(t, err)
	defer m.Close()
	for _, d := range []fullDevice{f, m} {
		assert.Zero(t, d.Size())
		n, err := d.ReadAt(nil, 0)
		assert.NoError(t, err)
		assert.Zero(t, n)
		_, err = d.ReadAt(make([]byte, 1), 0)
		assert.ErrorIs(t, err, io.EOF)
		exts, err := d.Extents(0, 0)
		assert.NoError(t, err)
		assert.Empty(t, exts)
		assert.NoError(t, d.Sync())
	}
}

// sparseImage creates a 1 MiB file that is a hole except for data in [256K, 260K).
func sparseImage(t *testing.T) (string, []byte) {
	t.Helper()
	path := writeImage(t, t.TempDir(), nil)
	require.NoError(t, os.Truncate(path, 1<<20))
	data := randomBytes(12, 4096)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data, 256<<10)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path, data
}

func TestFileExtents(t *testing.T) {
	path, _ := sparseImage(t)
	f, err := backend.OpenFile(path, nil)
	require.NoError(t, err)
	defer f.Close()
	m, err := backend.OpenMmap(path, &backend.MmapOptions{ReadOnly: true})
	require.NoError(t, err)
	defer m.Close()
	w, err := backend.OpenFile(path, &backend.FileOptions{Offset: 200 << 10, Length: 100 << 10})
	require.NoError(t, err)
	defer w.Close()

	want := []backend.Extent{
		{Offset: 0, Length: 256 << 10, Hole: true, Zero: true},
		{Offset: 256 << 10, Length: 4 << 10},
		{Offset: 260 << 10, Length: 764 << 10, Hole: true, Zero: true},
	}
	for name, d := range map[string]backend.Extenter{"file": f, "mmap": m} {
		exts, err := d.Extents(0, 1<<20)
		require.NoError(t, err, name)
		assert.Equal(t, want, exts, name)
		exts, err = d.Extents(257<<10, 10<<10)
		require.NoError(t, err, name)
		assert.Equal(t, []backend.Extent{
			{Offset: 257 << 10, Length: 3 << 10},
			{Offset: 260 << 10, Length: 7 << 10, Hole: true, Zero: true},
		}, exts, name)
	}

	// Through a window, offsets are the device's.
	exts, err := w.Extents(0, 100<<10)
	require.NoError(t, err)
	assert.Equal(t, []backend.Extent{
		{Offset: 0, Length: 56 << 10, Hole: true, Zero: true},
		{Offset: 56 << 10, Length: 4 << 10},
		{Offset: 60 << 10, Length: 40 << 10, Hole: true, Zero: true},
	}, exts)

	// Trim punches a hole that Extents then reports.
	require.NoError(t, f.Trim(256<<10, 4<<10))
	exts, err = f.Extents(0, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, []backend.Extent{{Offset: 0, Length: 1 << 20, Hole: true, Zero: true}}, exts)
	got := make([]byte, 4096)
	_, err = f.ReadAt(got, 256<<10)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 4096), got)

	// ZeroAt keeps the range readable as zeroes and the file size unchanged.
	_, err = f.WriteAt(bytes.Repeat([]byte{9}, 8192), 0)
	require.NoError(t, err)
	require.NoError(t, f.ZeroAt(100, 8000))
	got = make([]byte, 8192)
	_, err = f.ReadAt(got, 0)
	require.NoError(t, err)
	want8k := bytes.Repeat([]byte{9}, 8192)
	clear(want8k[100:8100])
	assert.Equal(t, want8k, got)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), fi.Size())
}

func TestMmapFaultAfterTruncate(t *testing.T) {
	data := randomBytes(13, 64<<10)
	path := writeImage(t, t.TempDir(), data)
	m, err := backend.OpenMmap(path, nil)
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, os.Truncate(path, 4096))

	got := make([]byte, 4096)
	_, err = m.ReadAt(got, 0)
	require.NoError(t, err, "the page still backed by the file reads fine")
	assert.Equal(t, data[:4096], got)

	_, err = m.ReadAt(got, 32<<10)
	require.ErrorIs(t, err, backend.ErrFault)
	assert.Contains(t, err.Error(), "read 32768+4096")
	assert.Contains(t, err.Error(), "page at file offset 32768")

	_, err = m.WriteAt(got, 16<<10)
	require.ErrorIs(t, err, backend.ErrFault)
	assert.Contains(t, err.Error(), "write 16384+4096")

	// A read that starts in the file and runs into the truncated part faults too.
	_, err = m.ReadAt(make([]byte, 8192), 0)
	require.ErrorIs(t, err, backend.ErrFault)
	assert.Contains(t, err.Error(), "page at file offset 4096")

	// The process is fine and so is the device where the file still is.
	_, err = m.WriteAt([]byte("still alive"), 10)
	require.NoError(t, err)
}

func TestMmapSlice(t *testing.T) {
	data := randomBytes(14, 3*4096)
	path := writeImage(t, t.TempDir(), data)
	m, err := backend.OpenMmap(path, &backend.MmapOptions{Offset: 1000})
	require.NoError(t, err)
	defer m.Close()
	s, err := m.Slice(100, 5000)
	require.NoError(t, err)
	require.Len(t, s, 5000)
	assert.Equal(t, 5000, cap(s), "appending must not run into the mapping")
	assert.Equal(t, data[1100:6100], s)

	// The slice is the mapping: writes show through without copying.
	_, err = m.WriteAt([]byte("zero-copy"), 100)
	require.NoError(t, err)
	assert.Equal(t, "zero-copy", string(s[:9]))

	// What a server does with it: writev to a socket.
	c1, c2 := net.Pipe()
	go func() {
		bufs := net.Buffers{[]byte("hdr"), s}
		_, _ = bufs.WriteTo(c1)
		c1.Close()
	}()
	got, err := io.ReadAll(c2)
	require.NoError(t, err)
	assert.Equal(t, append([]byte("hdr"), s...), got)

	empty, err := m.Slice(0, 0)
	require.NoError(t, err)
	assert.Empty(t, empty)
}

func TestFileRange(t *testing.T) {
	data := randomBytes(15, 3*4096)
	path := writeImage(t, t.TempDir(), data)
	d, err := backend.OpenFile(path, &backend.FileOptions{Offset: 1000, Length: 8192})
	require.NoError(t, err)
	defer d.Close()

	f, fo, err := d.FileRange(100, 5000)
	require.NoError(t, err)
	assert.Equal(t, int64(1100), fo, "offset in the file, window included")
	// What a server does with it: sendfile to a socket, from the file offset, leaving the
	// file's own position alone.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	sent, err := unix.Sendfile(fdOf(t, c.(*net.TCPConn)), int(f.Fd()), &fo, 5000)
	require.NoError(t, err)
	require.Equal(t, 5000, sent)
	require.NoError(t, c.Close())
	assert.Equal(t, data[1100:6100], <-got)

	_, _, err = d.FileRange(8000, 193)
	var re *backend.RangeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "filerange", re.Op)

	direct, err := backend.OpenFile(path, &backend.FileOptions{Direct: true})
	require.NoError(t, err)
	defer direct.Close()
	_, _, err = direct.FileRange(0, 4096)
	assert.ErrorIs(t, err, errors.ErrUnsupported)
}

func fdOf(t *testing.T, c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var fd int
	require.NoError(t, rc.Control(func(u uintptr) { fd = int(u) }))
	return fd
}

func TestClosed(t *testing.T) {
	path := writeImage(t, t.TempDir(), make([]byte, 8192))
	f, err := backend.OpenFile(path, nil)
	require.NoError(t, err)
	m, err := backend.OpenMmap(path, nil)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, m.Close())
	for name, d := range map[string]fullDevice{"file": f, "mmap": m} {
		_, err = d.ReadAt(make([]byte, 10), 0)
		assert.ErrorIs(t, err, os.ErrClosed, name)
		_, err = d.WriteAt(make([]byte, 10), 0)
		assert.ErrorIs(t, err, os.ErrClosed, name)
		assert.ErrorIs(t, d.Sync(), os.ErrClosed, name)
		assert.ErrorIs(t, d.Trim(0, 4096), os.ErrClosed, name)
	}
	_, err = m.Slice(0, 10)
	assert.ErrorIs(t, err, os.ErrClosed)
}
