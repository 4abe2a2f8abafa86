package kis_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realTarget rebuilds in a temporary directory the target directory a real `kiwi-ng system
// build` left (testdata/kiwi924-*/listing.txt: mode, size and name of every entry, as `stat -c
// '%a %s %n'` printed them): the small files KIWI wrote (.append, .md5, .packages, .verified,
// kiwi.result.json) with their real content from the testdata folder, the others as sparse
// stand-ins of the real size, every file with its real mode.
func realTarget(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", name)
	f, err := os.Open(filepath.Join(src, "listing.txt"))
	require.NoError(t, err)
	defer f.Close()
	dir := t.TempDir()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		require.Len(t, fields, 3, line)
		mode, err := strconv.ParseUint(fields[0], 8, 32)
		require.NoError(t, err, line)
		size, err := strconv.ParseInt(fields[1], 10, 64)
		require.NoError(t, err, line)
		p := filepath.Join(dir, fields[2])
		if strings.HasSuffix(fields[2], "/") {
			require.NoError(t, os.MkdirAll(p, os.FileMode(mode)))
			continue
		}
		if real, err := os.ReadFile(filepath.Join(src, fields[2])); err == nil {
			require.Len(t, real, int(size), "testdata %s is the file of the listing", fields[2])
			require.NoError(t, os.WriteFile(p, real, 0o644))
		} else {
			require.NoError(t, os.WriteFile(p, nil, 0o644))
			require.NoError(t, os.Truncate(p, size))
		}
		require.NoError(t, os.Chmod(p, os.FileMode(mode)))
	}
	require.NoError(t, sc.Err())
	return dir
}

// TestKIWI924Real checks what kis makes of the files Debian's kiwi 9.24.56 wrote for the ext4 and
// squashfs profiles of e2e/kiwi/ (see testdata/kiwi924-*/README).
func TestKIWI924Real(t *testing.T) {
	for _, tc := range []struct {
		fs         string
		blockSize  int64
		initrdSize int64
		root       string // from the .append; "" when KIWI wrote none
	}{
		{"ext4", 8192, 58904378, "UUID=9d9e45f4-b802-46d2-92bc-6581d1e1b15a"},
	} {
		t.Run(tc.fs, func(t *testing.T) {
			dir := realTarget(t, "kiwi924-"+tc.fs)
			const id = "netroot-e2e.x86_64-1.0.0"
			p := func(s string) string { return filepath.Join(dir, s) }
			builds, err := kis.Find(dir)
			require.NoError(t, err)
			want := kis.Build{
				Dir: dir, Name: "netroot-e2e", Arch: "x86_64", Version: "1.0.0", KernelVersion: "6.1.0-50-amd64",
				Kernel: p(id + "-6.1.0-50-amd64.kernel"), Initrd: p(id + ".initrd"), Image: p(id),
				MD5: p(id + ".md5"), Packages: p(id + ".packages"), Changes: p(id + ".changes"),
				Verified: p(id + ".verified"), Bundle: p(id + ".tar.xz"), Result: p(kis.ResultFile),
			}
			if tc.root != "" {
				want.Append = p(id + ".append")
			}
			require.Equal(t, []kis.Build{want}, builds)
			b := builds[0]

			// kiwi.result.json names the bundle and the package lists by the absolute paths of
			// the directory KIWI built in.
			data, err := os.ReadFile(b.Result)
			require.NoError(t, err)
			named, err := kis.ParseResult(data)
			require.NoError(t, err)
			var names []string
			for _, f := range named {
				names = append(names, f.String())
			}
			assert.ElementsMatch(t, []string{id + ".tar.xz", id + ".packages", id + ".changes", id + ".verified"}, names)

			// "MD5 BLOCKS BLOCKSIZE\n", the blocks making up the image's size.
			c, err := kis.ReadChecksum(b.MD5)
			require.NoError(t, err)
			st, err := os.Stat(b.Image)
			require.NoError(t, err)
			assert.Equal(t, st.Size(), c.Size())
			assert.Equal(t, tc.blockSize, c.BlockSize)
			assert.Zero(t, c.CompressedBlockSize, "not compressed")

			// root=UUID=... then the description's kernelcmdline, no newline; no .append and
			// so no kernelcmdline for squashfs.
			root, options, err := kis.ReadAppend(b)
			require.NoError(t, err)
			assert.Equal(t, tc.root, root)
			if tc.root != "" {
				assert.Equal(t, []string{"console=ttyS0,115200", "rd.shell=0"}, options)
			} else {
				assert.Empty(t, options)
			}

			// The 0600 initrd is staged as a readable copy.
			st, err = os.Stat(b.Initrd)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			tftp := t.TempDir()
			s, err := kis.Stage(context.Background(), b, tftp, nil)
			require.NoError(t, err)
			assert.Equal(t, kis.Linked, s.Kernel.Method)
			assert.NotEqual(t, kis.Linked, s.Initrd.Method)
			st, err = os.Stat(s.Initrd.File)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
			assert.Equal(t, tc.initrdSize, st.Size())
			fh, err := os.Open(s.Initrd.File)
			require.NoError(t, err)
			defer fh.Close()
			n, err := io.Copy(io.Discard, fh)
			require.NoError(t, err)
			assert.Equal(t, st.Size(), n)
		})
	}
}
