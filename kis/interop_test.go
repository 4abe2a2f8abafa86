package kis_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
}

// kiwiBuild writes the loose files of a build the way KIWI's KisBuilder leaves them before
// bundling: kernel, initrd, raw image, append and, computed by the test, the .md5 (over the
// raw image; with the compressed sizes once compressed).
func kiwiBuild(t *testing.T, dir, id string, image []byte) (kernel, initrd, raw, md5File, appendFile string) {
	t.Helper()
	kernel, initrd, raw = id+"-6.1.0-13-amd64.kernel", id+".initrd", id
	md5File, appendFile = id+".md5", id+".append"
	for name, data := range map[string][]byte{
		kernel: []byte("kernel"), initrd: []byte("initrd"), raw: image,
		appendFile: []byte("root=UUID=0b6a5d0f-7e0e-4b1e-a2f4-0c1c2d3e4f50 console=ttyS0"),
		md5File:    []byte(kistest.Checksum(image, -1)),
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	return
}

// TestInteropXZ unpacks root images compressed by the real xz with the options KIWI uses
// (xz -f --threads=0) and with other options a build may set through xz_options.
func TestInteropXZ(t *testing.T) {
	t.Parallel()
	xz := peertest.Program(t, "xz", "xz-utils")
	image := kistest.Image(1<<20, 11)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"kiwi default", []string{"-f", "--threads=0"}},
		{"crc32 small blocks", []string{"-f", "--check=crc32", "--block-size=64KiB", "--threads=2"}},
		{"sha256 level 0", []string{"-f", "--check=sha256", "-0"}},
		{"no check", []string{"-f", "--check=none", "-1"}},
		{"two streams", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const id = "LimeJeOS.x86_64-1.15.3"
			kiwiBuild(t, dir, id, image)
			if tc.args != nil {
				run(t, dir, xz, append(tc.args, id)...)
			} else {
				// xz decompresses concatenated streams as one; so must we.
				half := len(image) / 2
				require.NoError(t, os.WriteFile(filepath.Join(dir, "a"), image[:half], 0o644))
				require.NoError(t, os.WriteFile(filepath.Join(dir, "b"), image[half:], 0o644))
				run(t, dir, xz, "-f", "a", "b")
				var cat []byte
				for _, n := range []string{"a.xz", "b.xz"} {
					data, err := os.ReadFile(filepath.Join(dir, n))
					require.NoError(t, err)
					cat = append(cat, data...)
					require.NoError(t, os.Remove(filepath.Join(dir, n)))
				}
				require.NoError(t, os.WriteFile(filepath.Join(dir, id+".xz"), cat, 0o644))
				require.NoError(t, os.Remove(filepath.Join(dir, id)))
			}
			st, err := os.Stat(filepath.Join(dir, id+".xz"))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, id+".md5"), []byte(kistest.Checksum(image, st.Size())), 0o644))

			builds, err := kis.Find(dir)
			require.NoError(t, err)
			require.Len(t, builds, 1)
			b := builds[0]
			assert.Empty(t, b.Image, "xz removed the raw image")
			var reports int
			require.NoError(t, kis.Verify(context.Background(), b, func(done, total int64) { reports++ }))
			assert.Positive(t, reports)

			raw, err := kis.UnpackImage(context.Background(), b, nil)
			require.NoError(t, err)
			got, err := os.ReadFile(raw)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(image, got), "unpacked image differs from what xz compressed")
		})
	}
}

// TestInteropBundle extracts bundles made by GNU tar and xz with KIWI's own command lines:
// `tar -C DIR --xattrs --xattrs-include=* -c --to-stdout FILES | xz -f --threads=0 > X.tar.xz`
// for an uncompressed image, and `tar -C DIR --xattrs --xattrs-include=* -c -f X.tar FILES`
// (image already .xz) for a compressed one.
func TestInteropBundle(t *testing.T) {
	t.Parallel()
	xz := peertest.Program(t, "xz", "xz-utils")
	tarProg := peertest.Program(t, "tar", "tar")
	image := kistest.Image(1<<20, 12)
	for _, compressed := range []bool{false, true} {
		name := "tar.xz"
		if compressed {
			name = "tar with image.xz"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			const id = "LimeJeOS.x86_64-1.15.3"
			kernel, initrd, raw, md5File, appendFile := kiwiBuild(t, dir, id, image)
			files := []string{kernel, md5File, initrd, raw, appendFile}
			if compressed {
				run(t, dir, xz, "-f", "--threads=0", raw)
				st, err := os.Stat(filepath.Join(dir, raw+".xz"))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, md5File), []byte(kistest.Checksum(image, st.Size())), 0o644))
				files[3] = raw + ".xz"
				run(t, dir, tarProg, append([]string{"-C", dir, "--xattrs", "--xattrs-include=*", "-c", "-f", id + ".tar"}, files...)...)
			} else {
				run(t, dir, "/bin/sh", "-c", tarProg+" -C "+dir+" --xattrs --xattrs-include=* -c --to-stdout "+
					strings.Join(files, " ")+" | "+xz+" -f --threads=0 > "+id+".tar.xz")
			}
			for _, f := range files {
				require.NoError(t, os.Remove(filepath.Join(dir, f)))
			}

			builds, err := kis.Find(dir)
			require.NoError(t, err)
			require.Len(t, builds, 1)
			b := builds[0]
			assert.False(t, b.Loose())
			require.NoError(t, kis.Verify(context.Background(), b, nil))

			cache := t.TempDir()
			u, err := kis.Unpack(context.Background(), b, &kis.UnpackOptions{Dir: cache})
			require.NoError(t, err)
			got, err := os.ReadFile(u.Image)
			require.NoError(t, err)
			assert.Equal(t, md5.Sum(image), md5.Sum(got))
			assert.Equal(t, "6.1.0-13-amd64", u.KernelVersion)
			root, opts, err := kis.ReadAppend(u)
			require.NoError(t, err)
			assert.Equal(t, "UUID=0b6a5d0f-7e0e-4b1e-a2f4-0c1c2d3e4f50", root)
			assert.Equal(t, []string{"console=ttyS0"}, opts)

			s, err := kis.Stage(context.Background(), u, t.TempDir(), nil)
			require.NoError(t, err)
			assert.Equal(t, int64(len("kernel")), s.Kernel.Size)
		})
	}
}

// Our unpacked image must be what the real xz gives back for the same file.
func TestInteropXZDecompressesOurFixtures(t *testing.T) {
	t.Parallel()
	xz := peertest.Program(t, "xz", "xz-utils")
	image := kistest.Image(256<<10, 13)
	b := write(t, t.TempDir(), kistest.Spec{Compressed: true, Image: image})
	out, err := exec.Command(xz, "-dc", b.CompressedImage).Output()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(image, out))
}
