package kis_test

import (
	"context"
	"crypto/md5"
	"os"
	"path/filepath"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kiwiDir copies testdata/kiwi, a build directory written by KIWI's own code, to a temporary
// directory.
func kiwiDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.CopyFS(dir, os.DirFS("testdata/kiwi")))
	require.NoError(t, os.Remove(filepath.Join(dir, "README")))
	return dir
}

func TestKIWIWrittenBuild(t *testing.T) {
	dir := kiwiDir(t)
	const id = "LimeJeOS.x86_64-1.15.3"
	p := func(s string) string { return filepath.Join(dir, s) }
	builds, err := kis.Find(dir)
	require.NoError(t, err)
	assert.Equal(t, []kis.Build{{
		Dir: dir, Name: "LimeJeOS", Arch: "x86_64", Version: "1.15.3", KernelVersion: "6.1.0-13-amd64",
		Kernel: p(id + "-6.1.0-13-amd64.kernel"), Initrd: p(id + ".initrd"), CompressedImage: p(id + ".xz"),
		MD5: p(id + ".md5"), Append: p(id + ".append"), Bundle: p(id + ".tar"), Packages: p(id + ".packages"),
		Result: p(kis.ResultFile),
	}}, builds)
	b := builds[0]

	c, err := kis.ReadChecksum(b.MD5)
	require.NoError(t, err)
	assert.Equal(t, int64(24576), c.Size())
	assert.Equal(t, int64(8436), c.CompressedSize())
	require.NoError(t, kis.Verify(context.Background(), b, nil))

	u, err := kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: t.TempDir()})
	require.NoError(t, err)
	raw, err := os.ReadFile(u.Image)
	require.NoError(t, err)
	assert.Equal(t, c.MD5, md5.Sum(raw))

	root, opts, err := kis.ReadAppend(b)
	require.NoError(t, err)
	assert.Equal(t, "UUID=4e7c0c47-8f2a-4ad5-b54f-3bd9c7e1b2a1", root)
	assert.Equal(t, []string{"rd.kiwi.debug", "console=ttyS0"}, opts)
}

func TestKIWIWrittenBundleOnly(t *testing.T) {
	dir := kiwiDir(t)
	const id = "LimeJeOS.x86_64-1.15.3"
	for _, f := range []string{id + "-6.1.0-13-amd64.kernel", id + ".initrd", id + ".xz", id + ".md5", id + ".append"} {
		require.NoError(t, os.Remove(filepath.Join(dir, f)))
	}
	builds, err := kis.Find(dir)
	require.NoError(t, err)
	require.Len(t, builds, 1)
	b := builds[0]
	assert.False(t, b.Loose())
	require.NoError(t, kis.Verify(context.Background(), b, nil))

	u, err := kis.Unpack(context.Background(), b, nil)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, id), u.Image)
	assert.Equal(t, filepath.Join(dir, id+".xz"), u.CompressedImage)
	require.NoError(t, kis.Verify(context.Background(), u, nil))

	// Find now sees the extracted files next to the bundle.
	builds, err = kis.Find(dir)
	require.NoError(t, err)
	require.Len(t, builds, 1)
	assert.True(t, builds[0].Loose())
	again, err := kis.Unpack(context.Background(), builds[0], nil)
	require.NoError(t, err)
	assert.Equal(t, u.Image, again.Image)
}
