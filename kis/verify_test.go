package kis_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec kistest.Spec
	}{
		{"raw", kistest.Spec{}},
		{"compressed", kistest.Spec{Compressed: true}},
		{"bundle", kistest.Spec{BundleOnly: true}},
		{"compressed bundle", kistest.Spec{BundleOnly: true, Compressed: true}},
		{"empty image", kistest.Spec{Image: []byte{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := write(t, t.TempDir(), tc.spec)
			var calls int
			var last, total int64
			err := kis.Verify(context.Background(), b, func(done, tot int64) {
				calls++
				assert.GreaterOrEqual(t, done, last, "progress goes forward")
				last, total = done, tot
			})
			require.NoError(t, err)
			if calls > 0 {
				assert.Equal(t, total, last, "the last report is the whole file")
			}
			// Progress counts the file read, except for an .xz image: its uncompressed bytes.
			file := b.Image + b.CompressedImage + b.Bundle
			st, err := os.Stat(file)
			require.NoError(t, err)
			size := st.Size()
			if b.CompressedImage != "" && b.Image == "" {
				c, err := kis.ReadChecksum(b.MD5)
				require.NoError(t, err)
				size = c.Size()
			}
			if size > 0 {
				assert.Positive(t, calls)
				assert.Equal(t, size, total)
			}
			require.NoError(t, kis.Verify(context.Background(), b, nil))
		})
	}
}

func TestVerifyMismatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     kistest.Spec
		break_   func(t *testing.T, b kis.Build)
		checksum bool
		want     string
	}{
		{"raw content", kistest.Spec{}, func(t *testing.T, b kis.Build) { flip(t, b.Image, 1000) }, true,
			"netroot-test.x86_64-1.0.0 has md5 "},
		{"raw size", kistest.Spec{}, func(t *testing.T, b kis.Build) { require.NoError(t, os.Truncate(b.Image, 4096)) }, true,
			"netroot-test.x86_64-1.0.0 is 4096 bytes, its md5 file says 8*8192 = 65536"},
		{"compressed size", kistest.Spec{Compressed: true}, func(t *testing.T, b kis.Build) {
			f, err := os.OpenFile(b.CompressedImage, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.Write([]byte{0, 0, 0, 0})
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}, true, "netroot-test.x86_64-1.0.0.xz is "},
		{"md5 says other content", kistest.Spec{Compressed: true}, func(t *testing.T, b kis.Build) {
			st, err := os.Stat(b.CompressedImage)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(b.MD5, []byte(kistest.Checksum(make([]byte, 65536), st.Size())), 0o644))
		}, true, ".xz has md5 "},
		{"corrupt xz", kistest.Spec{Compressed: true}, func(t *testing.T, b kis.Build) { flip(t, b.CompressedImage, 100) }, false,
			"netroot-test.x86_64-1.0.0.xz"},
		{"bundle image", kistest.Spec{BundleOnly: true, Image: make([]byte, 8192)}, func(t *testing.T, b kis.Build) {
			// rewrite the bundle with an .md5 of other content
			id := b.ID()
			writeBundle(t, b.Bundle, []tarEntry{
				{id + "-6.1.kernel", []byte("k")},
				{id + ".md5", []byte(kistest.Checksum(bytes.Repeat([]byte("x"), 8192), -1))},
				{id + ".initrd", []byte("i")},
				{id, make([]byte, 8192)},
			})
		}, true, "netroot-test.x86_64-1.0.0.tar.xz:netroot-test.x86_64-1.0.0 has md5"},
		// The xz index and footer come after the tar's last block: damage there must be found too.
		{"bundle xz footer", kistest.Spec{BundleOnly: true}, func(t *testing.T, b kis.Build) { flip(t, b.Bundle, -5) }, false,
			"kis: bundle "},
		{"no md5", kistest.Spec{}, func(t *testing.T, b kis.Build) {}, false, "has no md5 file netroot-test.x86_64-1.0.0.md5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := write(t, t.TempDir(), tc.spec)
			tc.break_(t, b)
			if tc.name == "no md5" {
				b.MD5 = ""
			}
			err := kis.Verify(context.Background(), b, nil)
			require.Error(t, err)
			assert.Equal(t, tc.checksum, assertIsChecksum(err))
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "kis: ")
		})
	}
}

func assertIsChecksum(err error) bool { return errors.Is(err, kis.ErrChecksum) }

// flip inverts the byte at off in the file at path; a negative off counts from the end.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	if off < 0 {
		st, err := f.Stat()
		require.NoError(t, err)
		off += st.Size()
	}
	var b [1]byte
	_, err = f.ReadAt(b[:], off)
	require.NoError(t, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b[:], off)
	require.NoError(t, err)
}

type tarEntry struct {
	name string
	data []byte
}

// writeBundle writes a bundle with the given entries, xz-compressed when path ends in .xz.
func writeBundle(t *testing.T, path string, entries []tarEntry) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	data := buf.Bytes()
	if strings.HasSuffix(path, ".xz") {
		var err error
		data, err = kistest.XZ(data)
		require.NoError(t, err)
	}
	require.NoError(t, os.WriteFile(path, data, 0o644))
}

func TestVerifyCanceled(t *testing.T) {
	b := write(t, t.TempDir(), kistest.Spec{Compressed: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, kis.Verify(ctx, b, nil), context.Canceled)
}
