//go:build linux

package backend_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/backend"
)

// writeImage creates a file in dir holding data and returns its path.
func writeImage(t testing.TB, dir string, data []byte) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "image-*")
	require.NoError(t, err)
	_, err = f.Write(data)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	t.Cleanup(func() { os.Remove(f.Name()) })
	return f.Name()
}

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(data)
}

func TestModelFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts backend.FileOptions
	}{
		{"plain", backend.FileOptions{}},
		{"sync", backend.FileOptions{Sync: true}},
		{"window", backend.FileOptions{Offset: 4096 + 333, Length: modelSize}},
		{"direct", backend.FileOptions{Direct: true}},
		{"direct window", backend.FileOptions{Direct: true, Offset: 1000, Length: modelSize}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			init := randomBytes(uint64(30+i), modelSize)
			// Guard bytes around the window must survive.
			const guard = 8192 + 5
			file := append(append(randomBytes(3, tt.opts.Offset), init...), randomBytes(4, guard)...)
			if tt.opts.Length == 0 {
				file = file[:len(init)]
			}
			path := writeImage(t, t.TempDir(), file)
			d, err := backend.OpenFile(path, &tt.opts)
			if tt.opts.Direct && errors.Is(err, unix.EINVAL) {
				t.Skipf("file system of %s refuses O_DIRECT: %v", path, err)
			}
			require.NoError(t, err)
			defer d.Close()
			assert.Equal(t, tt.opts.Direct, d.Direct())
			model := bytes.Clone(init)
			runModel(t, d, model, uint64(40+i))
			runConcurrent(t, d, model, uint64(50+i))
			require.NoError(t, d.Sync())
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Len(t, got, len(file), "file size changed")
			assert.True(t, bytes.Equal(file[:tt.opts.Offset], got[:tt.opts.Offset]), "bytes before window changed")
			end := tt.opts.Offset + modelSize
			assert.True(t, bytes.Equal(file[end:], got[end:]), "bytes after window changed")
			assert.True(t, bytes.Equal(model, got[tt.opts.Offset:end]), "file differs from model")
		})
	}
}

// TestModelFileTmpfs runs the model on tmpfs, where fallocate ZERO_RANGE is missing and ZeroAt
// falls back to writing zeroes.
func TestModelFileTmpfs(t *testing.T) {
	t.Parallel()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	init := randomBytes(60, modelSize)
	path := writeImage(t, "/dev/shm", init)
	d, err := backend.OpenFile(path, nil)
	require.NoError(t, err)
	defer d.Close()
	model := bytes.Clone(init)
	runModel(t, d, model, 61)
	runConcurrent(t, d, model, 62)
}

func TestModelMmap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts backend.MmapOptions
	}{
		{"whole", backend.MmapOptions{}},
		{"window", backend.MmapOptions{Offset: 3*4096 + 123, Length: modelSize}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			init := randomBytes(uint64(70+i), modelSize)
			file := append(append(randomBytes(5, tt.opts.Offset), init...), randomBytes(6, 100)...)
			if tt.opts.Length == 0 {
				file = file[:len(init)]
			}
			path := writeImage(t, t.TempDir(), file)
			d, err := backend.OpenMmap(path, &tt.opts)
			require.NoError(t, err)
			defer d.Close()
			model := bytes.Clone(init)
			runModel(t, d, model, uint64(80+i))
			runConcurrent(t, d, model, uint64(90+i))
			require.NoError(t, d.Sync())
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Len(t, got, len(file), "file size changed")
			end := tt.opts.Offset + modelSize
			assert.True(t, bytes.Equal(file[:tt.opts.Offset], got[:tt.opts.Offset]), "bytes before window changed")
			assert.True(t, bytes.Equal(file[end:], got[end:]), "bytes after window changed")
			assert.True(t, bytes.Equal(model, got[tt.opts.Offset:end]), "file differs from model")
		})
	}
}

func TestModelCopyOnWriteFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		overlay string // "memory", "temp" or "caller"
		bs      int64
	}{
		{"memory overlay", "memory", 0},
		{"temp overlay", "temp", 0},
		{"caller overlay 512", "caller", 512},
		{"temp overlay 64k", "temp", 65536},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			init := randomBytes(uint64(100+i), modelSize)
			path := writeImage(t, dir, init)
			before := hashFile(t, path)
			base, err := backend.OpenFile(path, &backend.FileOptions{ReadOnly: true})
			require.NoError(t, err)
			defer base.Close()
			opts := &backend.CopyOnWriteOptions{BlockSize: tt.bs}
			var overlay *os.File
			switch tt.overlay {
			case "temp":
				opts.TempDir = dir
			case "caller":
				overlay, err = os.CreateTemp(dir, "overlay-*")
				require.NoError(t, err)
				defer overlay.Close()
			}
			d, err := backend.NewCopyOnWrite(base, overlay, opts)
			require.NoError(t, err)
			model := bytes.Clone(init)
			runModel(t, d, model, uint64(110+i))
			runConcurrent(t, d, model, uint64(120+i))
			require.NoError(t, d.Close())
			assert.Equal(t, before, hashFile(t, path), "base file modified")

			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			want := []string{filepath.Base(path)}
			if overlay != nil {
				want = append(want, filepath.Base(overlay.Name()))
				// The caller's overlay stays open and usable.
				_, err := overlay.Stat()
				assert.NoError(t, err)
			}
			assert.ElementsMatch(t, want, names, "Close must remove only the temporary overlay")
		})
	}
}
