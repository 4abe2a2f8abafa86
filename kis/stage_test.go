package kis_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func assertStaged(t *testing.T, f kis.StagedFile, root, rel, src string) {
	t.Helper()
	assert.Equal(t, rel, f.Path)
	assert.Equal(t, filepath.Join(root, filepath.FromSlash(rel)), f.File)
	assert.Equal(t, src, f.Source)
	want, err := os.ReadFile(src)
	require.NoError(t, err)
	got, err := os.ReadFile(f.File)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, int64(len(want)), f.Size)
	st, err := os.Stat(f.File)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}

func TestStage(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opts         *kis.StageOptions
		kernel, init string
		methods      []kis.Method
	}{
		{"defaults", nil, "boot/linux", "boot/initrd", []kis.Method{kis.Linked}},
		{"per build", &kis.StageOptions{PerBuild: true},
			"boot/netroot-test.x86_64-1.0.0/linux", "boot/netroot-test.x86_64-1.0.0/initrd", []kis.Method{kis.Linked}},
		{"custom paths", &kis.StageOptions{Kernel: "k/vmlinuz", Initrd: "initrd.img"}, "k/vmlinuz", "initrd.img",
			[]kis.Method{kis.Linked}},
		{"custom paths per build", &kis.StageOptions{Kernel: "vmlinuz", Initrd: "x/initrd.img", PerBuild: true},
			"netroot-test.x86_64-1.0.0/vmlinuz", "x/netroot-test.x86_64-1.0.0/initrd.img", []kis.Method{kis.Linked}},
		{"no link", &kis.StageOptions{NoLink: true}, "boot/linux", "boot/initrd", []kis.Method{kis.Reflinked, kis.Copied}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dir, root := filepath.Join(base, "build"), filepath.Join(base, "tftp")
			require.NoError(t, os.Mkdir(dir, 0o755))
			b := write(t, dir, kistest.Spec{Kernel: []byte("kernel one"), Initrd: []byte("initrd one")})

			s, err := kis.Stage(context.Background(), b, root, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, b.ID(), s.Build)
			assertStaged(t, s.Kernel, root, tc.kernel, b.Kernel)
			assertStaged(t, s.Initrd, root, tc.init, b.Initrd)
			assert.Contains(t, tc.methods, s.Kernel.Method)
			assert.Contains(t, tc.methods, s.Initrd.Method)

			// Staging again changes nothing.
			ino := inode(t, s.Kernel.File)
			s2, err := kis.Stage(context.Background(), b, root, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, kis.Unchanged, s2.Kernel.Method)
			assert.Equal(t, kis.Unchanged, s2.Initrd.Method)
			assert.Equal(t, ino, inode(t, s2.Kernel.File))

			// A new build with the same initrd replaces only the kernel.
			b2 := write(t, dir, kistest.Spec{Version: "1.0.1", Kernel: []byte("kernel two"), Initrd: []byte("initrd one")})
			opts := tc.opts
			if opts != nil && opts.PerBuild {
				// per-build folders do not replace each other
				s3, err := kis.Stage(context.Background(), b2, root, opts)
				require.NoError(t, err)
				assert.NotEqual(t, s.Kernel.File, s3.Kernel.File)
				assertStaged(t, s.Kernel, root, tc.kernel, b.Kernel)
				return
			}
			s3, err := kis.Stage(context.Background(), b2, root, opts)
			require.NoError(t, err)
			assertStaged(t, s3.Kernel, root, tc.kernel, b2.Kernel)
			assert.Contains(t, tc.methods, s3.Kernel.Method)
			assert.Equal(t, kis.Unchanged, s3.Initrd.Method, "same content is not rewritten")
			noTemps(t, filepath.Dir(s3.Kernel.File))
		})
	}
}

func TestStageAcrossFileSystems(t *testing.T) {
	shm := "/dev/shm"
	base := t.TempDir()
	a, errA := os.Stat(base)
	bst, errB := os.Stat(shm)
	if errA != nil || errB != nil || a.Sys().(*syscall.Stat_t).Dev == bst.Sys().(*syscall.Stat_t).Dev {
		t.Skip("needs /dev/shm on another file system than the test's temporary directory")
	}
	root, err := os.MkdirTemp(shm, "kis-stage-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	b := write(t, base, kistest.Spec{})
	s, err := kis.Stage(context.Background(), b, root, nil)
	require.NoError(t, err)
	assert.Contains(t, []kis.Method{kis.Reflinked, kis.Copied}, s.Kernel.Method)
	assertStaged(t, s.Kernel, root, "boot/linux", b.Kernel)
	assertStaged(t, s.Initrd, root, "boot/initrd", b.Initrd)
	src, err := os.Stat(b.Kernel)
	require.NoError(t, err)
	dst, err := os.Stat(s.Kernel.File)
	require.NoError(t, err)
	assert.Equal(t, src.ModTime(), dst.ModTime(), "a copy keeps the modification time")
}

func TestStageErrors(t *testing.T) {
	dir := t.TempDir()
	b := write(t, dir, kistest.Spec{})
	bundle := write(t, t.TempDir(), kistest.Spec{BundleOnly: true})
	for _, tc := range []struct {
		name string
		b    kis.Build
		opts *kis.StageOptions
		want string
	}{
		{"bundle only", bundle, nil, "kis: cannot stage build netroot-test.x86_64-1.0.0: no loose kernel and initrd " +
			"(found bundle netroot-test.x86_64-1.0.0.tar.xz (Unpack extracts it))"},
		{"escaping path", b, &kis.StageOptions{Kernel: "../linux"}, `kis: staging path "../linux" is not a relative path inside the TFTP root`},
		{"absolute path", b, &kis.StageOptions{Initrd: "/boot/initrd"}, `kis: staging path "/boot/initrd" is not`},
		{"same paths", b, &kis.StageOptions{Kernel: "boot/x", Initrd: "boot/./x"}, `kis: kernel and initrd staging paths are both "boot/x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kis.Stage(context.Background(), tc.b, t.TempDir(), tc.opts)
			assert.ErrorContains(t, err, tc.want)
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := kis.Stage(ctx, b, t.TempDir(), nil)
	assert.ErrorIs(t, err, context.Canceled)
}

// KIWI writes the initrd with mode 0600. Stage must not hard link it (a link shares the mode,
// and a server that dropped its privileges could not read it): it stages a 0644 copy, and
// replaces a 0600 link staged earlier.
func TestStageUnreadableSource(t *testing.T) {
	base := t.TempDir()
	dir, root := filepath.Join(base, "build"), filepath.Join(base, "tftp")
	require.NoError(t, os.Mkdir(dir, 0o755))
	b := write(t, dir, kistest.Spec{Kernel: []byte("kernel"), Initrd: []byte("initrd, root only")})
	require.NoError(t, os.Chmod(b.Initrd, 0o600))

	s, err := kis.Stage(context.Background(), b, root, nil)
	require.NoError(t, err)
	assert.Equal(t, kis.Linked, s.Kernel.Method, "a world-readable source is still linked")
	assert.Contains(t, []kis.Method{kis.Reflinked, kis.Copied}, s.Initrd.Method)
	assertStaged(t, s.Initrd, root, "boot/initrd", b.Initrd)
	assert.NotEqual(t, inode(t, b.Initrd), inode(t, s.Initrd.File))
	st, err := os.Stat(b.Initrd)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the build's file keeps its mode")

	s2, err := kis.Stage(context.Background(), b, root, nil)
	require.NoError(t, err)
	assert.Equal(t, kis.Unchanged, s2.Initrd.Method)

	// A link to the 0600 file, as an earlier version staged it, is replaced by a readable copy.
	require.NoError(t, os.Remove(s.Initrd.File))
	require.NoError(t, os.Link(b.Initrd, s.Initrd.File))
	s3, err := kis.Stage(context.Background(), b, root, nil)
	require.NoError(t, err)
	assert.Contains(t, []kis.Method{kis.Reflinked, kis.Copied}, s3.Initrd.Method)
	assertStaged(t, s3.Initrd, root, "boot/initrd", b.Initrd)
	noTemps(t, filepath.Dir(s3.Initrd.File))
}
