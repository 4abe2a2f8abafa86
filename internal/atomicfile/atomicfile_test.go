package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/atomicfile"
)

// leftovers lists the hidden temporary files in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	require.NoError(t, err)
	return m
}

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "default")
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o600))
	old, err := os.Open(p)
	require.NoError(t, err)
	defer old.Close()

	require.NoError(t, atomicfile.WriteFile(p, []byte("new content"), 0))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "new content", string(got))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "0 means 0644")
	// A reader that opened the old file keeps reading the old content: the name was replaced,
	// not the file rewritten.
	b := make([]byte, 8)
	n, _ := old.Read(b)
	assert.Equal(t, "old", string(b[:n]))
	assert.Empty(t, leftovers(t, dir))
}

func TestAbortLeavesDestination(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "grub.cfg")
	require.NoError(t, os.WriteFile(p, []byte("keep"), 0o644))
	f, err := atomicfile.Create(p, 0o640)
	require.NoError(t, err)
	_, err = f.WriteString("half")
	require.NoError(t, err)
	f.Abort()
	f.Abort() // twice is fine
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(got))
	assert.Empty(t, leftovers(t, dir))
	assert.Error(t, f.Commit(), "no commit after abort")
}

func TestCommitModeAndTime(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "linux")
	f, err := atomicfile.Create(p, 0o640)
	require.NoError(t, err)
	defer f.Abort()
	_, err = f.WriteString("kernel")
	require.NoError(t, err)
	mt := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.SetModTime(mt)
	require.NoError(t, f.Commit())
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	assert.True(t, fi.ModTime().Equal(mt), "mtime %v", fi.ModTime())
	assert.Empty(t, leftovers(t, dir))
}

func TestCreateInMissingFolder(t *testing.T) {
	_, err := atomicfile.Create(filepath.Join(t.TempDir(), "nope", "x"), 0)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestLink(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	require.NoError(t, os.WriteFile(src, []byte("initrd"), 0o644))
	require.NoError(t, os.WriteFile(dst, []byte("stale"), 0o644))
	require.NoError(t, atomicfile.Link(src, dst))
	a, err := os.Stat(src)
	require.NoError(t, err)
	b, err := os.Stat(dst)
	require.NoError(t, err)
	assert.True(t, os.SameFile(a, b))
	assert.Empty(t, leftovers(t, dir))
	assert.Error(t, atomicfile.Link(filepath.Join(dir, "missing"), dst))
	assert.Empty(t, leftovers(t, dir))
}
