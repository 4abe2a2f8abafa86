package kis_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Sys().(*syscall.Stat_t).Ino
}

// noTemps asserts that no temporary file was left behind in dir.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tmp-", "temporary file left in %s", dir)
	}
}

func TestUnpack(t *testing.T) {
	image := kistest.Image(128<<10, 5)
	for _, tc := range []struct {
		name     string
		spec     kistest.Spec
		cacheDir bool
	}{
		{"compressed", kistest.Spec{Compressed: true, Append: "root=UUID=1 quiet"}, false},
		{"compressed into cache", kistest.Spec{Compressed: true}, true},
		{"bundle", kistest.Spec{BundleOnly: true, Append: "root=UUID=1 quiet"}, false},
		{"bundle into cache", kistest.Spec{BundleOnly: true}, true},
		{"compressed bundle", kistest.Spec{BundleOnly: true, Compressed: true}, false},
		{"compressed bundle into cache", kistest.Spec{BundleOnly: true, Compressed: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.spec.Image = image
			b := write(t, dir, tc.spec)
			want := dir
			var opts *kis.UnpackOptions
			if tc.cacheDir {
				want = filepath.Join(t.TempDir(), "cache", "sub")
				opts = &kis.UnpackOptions{Dir: want}
			}
			u, err := kis.Unpack(context.Background(), b, opts)
			require.NoError(t, err)
			assert.Equal(t, filepath.Join(want, b.ID()), u.Image)
			got, err := os.ReadFile(u.Image)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(image, got), "unpacked image differs")
			assert.True(t, u.Loose())
			assert.Equal(t, "6.1.0-13-amd64", u.KernelVersion)
			if tc.spec.Append != "" {
				_, opts, err := kis.ReadAppend(u)
				require.NoError(t, err)
				assert.Equal(t, []string{"quiet"}, opts)
			}
			require.NoError(t, kis.Verify(context.Background(), u, nil))
			noTemps(t, want)

			// A second Unpack reuses everything it wrote.
			ino := map[string]uint64{}
			for _, p := range []string{u.Image, u.Kernel, u.Initrd, u.MD5} {
				ino[p] = inode(t, p)
			}
			again, err := kis.UnpackImage(context.Background(), b, opts)
			require.NoError(t, err)
			assert.Equal(t, u.Image, again)
			u2, err := kis.Unpack(context.Background(), b, opts)
			require.NoError(t, err)
			assert.Equal(t, u, u2)
			for p, i := range ino {
				assert.Equal(t, i, inode(t, p), "%s was rewritten", p)
			}

			// A damaged raw image is replaced by a good one.
			require.NoError(t, os.WriteFile(u.Image, make([]byte, len(image)), 0o644))
			u3, err := kis.Unpack(context.Background(), b, opts)
			require.NoError(t, err)
			got, err = os.ReadFile(u3.Image)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(image, got), "damaged image was not replaced")
		})
	}
}

func TestUnpackRawIsReturnedAsIs(t *testing.T) {
	b := write(t, t.TempDir(), kistest.Spec{})
	u, err := kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: t.TempDir()})
	require.NoError(t, err)
	assert.Equal(t, b, u)
}

// A raw image left by an earlier Unpack next to a newer .xz of the same name is not trusted.
func TestUnpackReplacesStaleRaw(t *testing.T) {
	dir := t.TempDir()
	b := write(t, dir, kistest.Spec{Compressed: true, Image: kistest.Image(64<<10, 1)})
	_, err := kis.Unpack(context.Background(), b, nil)
	require.NoError(t, err)

	newImage := kistest.Image(64<<10, 2)
	write(t, dir, kistest.Spec{Compressed: true, Image: newImage})
	builds, err := kis.Find(dir)
	require.NoError(t, err)
	require.Len(t, builds, 1)
	assert.NotEmpty(t, builds[0].Image)
	u, err := kis.Unpack(context.Background(), builds[0], nil)
	require.NoError(t, err)
	got, err := os.ReadFile(u.Image)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(newImage, got))
}

func TestUnpackSparse(t *testing.T) {
	image := make([]byte, 2<<20)
	copy(image, "superblock")
	copy(image[len(image)-4096:], "tail")
	b := write(t, t.TempDir(), kistest.Spec{Compressed: true, Image: image})
	u, err := kis.Unpack(context.Background(), b, nil)
	require.NoError(t, err)
	st, err := os.Stat(u.Image)
	require.NoError(t, err)
	assert.Equal(t, int64(len(image)), st.Size())
	allocated := st.Sys().(*syscall.Stat_t).Blocks * 512
	assert.Less(t, allocated, int64(256<<10), "zero blocks should be holes")
	got, err := os.ReadFile(u.Image)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(image, got))
}

func TestUnpackErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     kistest.Spec
		break_   func(t *testing.T, b *kis.Build)
		checksum bool
		want     string
	}{
		{"md5 mismatch", kistest.Spec{Compressed: true}, func(t *testing.T, b *kis.Build) {
			st, err := os.Stat(b.CompressedImage)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(b.MD5, []byte(kistest.Checksum(make([]byte, 65536), st.Size())), 0o644))
		}, true, "netroot-test.x86_64-1.0.0.xz has md5 "},
		{"nothing to unpack", kistest.Spec{}, func(t *testing.T, b *kis.Build) { b.Initrd = "" }, false,
			"has neither all of kernel, initrd and image (kernel netroot-test.x86_64-1.0.0-6.1.0-13-amd64.kernel, " +
				"image netroot-test.x86_64-1.0.0, md5 netroot-test.x86_64-1.0.0.md5) nor a bundle"},
		{"escaping entry", kistest.Spec{BundleOnly: true}, func(t *testing.T, b *kis.Build) {
			writeBundle(t, b.Bundle, []tarEntry{{"../netroot-test.x86_64-1.0.0.md5", []byte("x")}})
		}, false, `entry "../netroot-test.x86_64-1.0.0.md5" (type '0') is not a plain file of the build`},
		{"foreign entry", kistest.Spec{BundleOnly: true}, func(t *testing.T, b *kis.Build) {
			writeBundle(t, b.Bundle, []tarEntry{{"etc-passwd", []byte("x")}})
		}, false, `entry "etc-passwd" is not a file of build netroot-test.x86_64-1.0.0`},
		{"bundle without initrd", kistest.Spec{BundleOnly: true}, func(t *testing.T, b *kis.Build) {
			id := b.ID()
			img := []byte("root")
			writeBundle(t, b.Bundle, []tarEntry{{id + "-6.1.kernel", []byte("k")},
				{id + ".md5", []byte(kistest.Checksum(img, -1))}, {id, img}})
		}, false, "is not usable: found kernel netroot-test.x86_64-1.0.0-6.1.kernel, md5 netroot-test.x86_64-1.0.0.md5, " +
			"image netroot-test.x86_64-1.0.0; missing initrd"},
		{"bundle image before its md5, mismatching", kistest.Spec{BundleOnly: true}, func(t *testing.T, b *kis.Build) {
			id := b.ID()
			writeBundle(t, b.Bundle, []tarEntry{{id + "-6.1.kernel", []byte("k")}, {id, []byte("root")},
				{id + ".md5", []byte(kistest.Checksum([]byte("toor"), -1))}, {id + ".initrd", []byte("i")}})
		}, true, "netroot-test.x86_64-1.0.0 has md5 "},
		{"corrupt compressed image", kistest.Spec{Compressed: true, Image: kistest.Image(256<<10, 5)},
			func(t *testing.T, b *kis.Build) { flip(t, b.CompressedImage, 1000) }, false,
			"kis: unpacking "},
		// The xz index and footer come after the tar's last block: damage there must be found too.
		{"bundle with a damaged xz footer", kistest.Spec{BundleOnly: true, Image: kistest.Image(64<<10, 3)},
			func(t *testing.T, b *kis.Build) { flip(t, b.Bundle, -5) }, false,
			"kis: bundle "},
		{"truncated bundle", kistest.Spec{BundleOnly: true, Compressed: true, Image: kistest.Image(64<<10, 3)},
			func(t *testing.T, b *kis.Build) { require.NoError(t, os.Truncate(b.Bundle, 30000)) }, false,
			"kis: bundle "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := write(t, dir, tc.spec)
			tc.break_(t, &b)
			_, err := kis.Unpack(context.Background(), b, nil)
			require.Error(t, err)
			assert.Equal(t, tc.checksum, assertIsChecksum(err), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "kis: "), err.Error())
			noTemps(t, dir)
			if tc.checksum {
				_, err := os.Stat(filepath.Join(dir, b.ID()+".kis-unpacked"))
				assert.ErrorIs(t, err, os.ErrNotExist, "no stamp for a bad image")
			}
		})
	}
}

func TestUnpackCanceled(t *testing.T) {
	dir := t.TempDir()
	b := write(t, dir, kistest.Spec{Compressed: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := kis.Unpack(ctx, b, nil)
	assert.ErrorIs(t, err, context.Canceled)
	noTemps(t, dir)
	_, err = os.Stat(filepath.Join(dir, b.ID()))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
