package kis_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKIWI924Target runs Find, Verify, ReadAppend, Stage and Unpack on target directories laid out
// as Debian's kiwi 9.24.56 with dracut leaves them (kistest.KIWI924): a 0600 gzip initrd named
// .initrd, an .append without newline for ext4 and none for squashfs, KIWI's work folder build/
// and kiwi.result next to the build.
func TestKIWI924Target(t *testing.T) {
	for _, tc := range []struct {
		fs        string
		blockSize int64
		options   []string
	}{
		{"ext4", 8192, []string{"console=ttyS0,115200", "rd.shell=0"}},
		{"squashfs", 4096, nil},
	} {
		t.Run(tc.fs, func(t *testing.T) {
			dir := t.TempDir()
			want := write(t, dir, kistest.KIWI924(tc.fs))
			const id = "netroot-e2e.x86_64-1.0.0"
			for _, f := range []string{"build/image-root/etc/os-release", "kiwi.result", kis.ResultFile,
				id + ".packages", id + ".changes", id + ".verified", id + ".tar.xz", id + ".initrd"} {
				require.FileExists(t, filepath.Join(dir, f))
			}

			builds, err := kis.Find(dir)
			require.NoError(t, err, "build/ and kiwi.result are not part of the build")
			require.Equal(t, []kis.Build{want}, builds)
			b := builds[0]
			assert.Equal(t, filepath.Join(dir, id+".initrd"), b.Initrd)
			assert.Equal(t, "6.1.0-50-amd64", b.KernelVersion)
			assert.True(t, b.Loose())

			st, err := os.Stat(b.Initrd)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

			md5, err := os.ReadFile(b.MD5)
			require.NoError(t, err)
			assert.Regexp(t, `^[0-9a-f]{32} [0-9]+ [0-9]+\n$`, string(md5))
			c, err := kis.ReadChecksum(b.MD5)
			require.NoError(t, err)
			assert.Equal(t, tc.blockSize, c.BlockSize)
			assert.Zero(t, c.CompressedBlockSize)
			require.NoError(t, kis.Verify(context.Background(), b, nil))

			root, options, err := kis.ReadAppend(b)
			require.NoError(t, err)
			if tc.fs == "ext4" {
				raw, err := os.ReadFile(b.Append)
				require.NoError(t, err)
				assert.NotContains(t, string(raw), "\n")
				assert.Equal(t, "UUID="+kistest.KIWI924UUID, root)
			} else {
				assert.Empty(t, b.Append, "KIWI writes no .append for squashfs")
				assert.Empty(t, root)
			}
			assert.Equal(t, tc.options, options)

			// The staged initrd is a world-readable copy of the 0600 one, still gzip.
			tftp := t.TempDir()
			s, err := kis.Stage(context.Background(), b, tftp, nil)
			require.NoError(t, err)
			assert.Equal(t, kis.Linked, s.Kernel.Method)
			assert.Contains(t, []kis.Method{kis.Reflinked, kis.Copied}, s.Initrd.Method)
			assertStaged(t, s.Initrd, tftp, "boot/initrd", b.Initrd)
			staged, err := os.ReadFile(s.Initrd.File)
			require.NoError(t, err)
			assert.True(t, bytes.HasPrefix(staged, []byte{0x1f, 0x8b}), "gzip magic")

			// Only the bundle copied over (the 0600 initrd inside): Unpack and Stage still give
			// a readable initrd.
			only := t.TempDir()
			require.NoError(t, os.Link(b.Bundle, filepath.Join(only, id+".tar.xz")))
			builds, err = kis.Find(only)
			require.NoError(t, err)
			require.Len(t, builds, 1)
			u, err := kis.Unpack(context.Background(), builds[0], nil)
			require.NoError(t, err)
			require.NoError(t, kis.Verify(context.Background(), u, nil))
			s, err = kis.Stage(context.Background(), u, t.TempDir(), nil)
			require.NoError(t, err)
			st, err = os.Stat(s.Initrd.File)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
			root2, options2, err := kis.ReadAppend(u)
			require.NoError(t, err)
			assert.Equal(t, root, root2)
			assert.Equal(t, options, options2)
		})
	}
}
