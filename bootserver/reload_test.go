package bootserver_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/tftp"
)

func buildState(srv *bootserver.Server, id string) (bootserver.BuildState, bool) {
	for _, b := range srv.State().Builds {
		if b.ID.String() == id {
			return b, true
		}
	}
	return bootserver.BuildState{}, false
}

func readFile(t *testing.T, srv *bootserver.Server, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(srv.TFTPRoot, rel))
	require.NoError(t, err)
	return string(b)
}

func TestReloadAddsBuild(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, ev := newServer(t, kisDir)
	run(t, srv)
	const v1, v2 = "leap.x86_64-1.0.0", "leap.x86_64-1.1.0"
	require.Contains(t, readFile(t, srv, "pxelinux.cfg/default"), "nbd=127.0.0.1:"+v1)

	img2 := writeBuild(t, kisDir, "leap", "1.1.0", 2)
	require.NoError(t, srv.Reload(context.Background()))
	assert.Equal(t, v2, srv.State().Default.String())
	for _, f := range []string{"pxelinux.cfg/default", "grub/grub.cfg", "boot.ipxe"} {
		cfg := readFile(t, srv, f)
		assert.Contains(t, cfg, "nbd=127.0.0.1:"+v2, f)
		assert.Contains(t, cfg, "boot/"+v2+"/linux", f)
		assert.NotContains(t, cfg, v1, f)
	}
	assert.True(t, bytes.Equal(img2, readExport(t, srv, v2)))
	assert.True(t, bytes.Equal(img2, readExport(t, srv, "")), "new clients asking for the default get the new build")
	assert.True(t, ev.has(bootserver.BuildCurrent, v2))

	// Nobody uses v1: it goes after the grace period, with its staged files.
	require.Eventually(t, func() bool { return ev.has(bootserver.BuildRetired, v1) }, 10*time.Second, 20*time.Millisecond)
	_, ok := buildState(srv, v1)
	assert.False(t, ok)
	assert.NoDirExists(t, filepath.Join(srv.TFTPRoot, "boot", v1))
	assert.DirExists(t, filepath.Join(srv.TFTPRoot, "boot", v2))
	_, err := tftpGet(t, srv, "boot/"+v1+"/linux")
	assert.ErrorIs(t, err, tftp.ErrFileNotFound)
}

func TestOldExportStaysWhileAttached(t *testing.T) {
	kisDir := t.TempDir()
	img1 := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, ev := newServer(t, kisDir)
	cache := srv.Source.(*bootserver.KISSource).CacheDir
	run(t, srv)
	const v1, v2 = "leap.x86_64-1.0.0", "leap.x86_64-1.1.0"

	c, info := attach(t, srv, v1)
	half := make([]byte, info.Size/2)
	_, err := c.ReadAt(half, 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool { b, _ := buildState(srv, v1); return b.Clients == 1 }, 5*time.Second, 10*time.Millisecond)

	writeBuild(t, kisDir, "leap", "1.1.0", 2)
	require.NoError(t, srv.Reload(context.Background()))
	require.Equal(t, v2, srv.State().Default.String())

	// Well past the grace period the attached client still has its build.
	time.Sleep(3 * srv.Grace)
	b, ok := buildState(srv, v1)
	require.True(t, ok, "the old build stays while a client is attached")
	assert.False(t, b.Current)
	assert.Equal(t, 1, b.Clients)
	assert.FileExists(t, filepath.Join(srv.TFTPRoot, "boot", v1, "linux"))
	assert.FileExists(t, filepath.Join(cache, v1), "the unpacked image stays")
	rest, err := io.ReadAll(io.NewSectionReader(c, int64(len(half)), info.Size-int64(len(half))))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(img1, append(half, rest...)), "the connection reads its build byte-exact across the reload")

	// After it leaves (and the grace period), the old build goes.
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool { return ev.has(bootserver.NBDDetach, v1) }, 5*time.Second, 10*time.Millisecond)
	left := time.Now()
	require.Eventually(t, func() bool { return ev.has(bootserver.BuildRetired, v1) }, 10*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(left), srv.Grace-50*time.Millisecond, "kept for the grace period after the last client left")
	assert.NoDirExists(t, filepath.Join(srv.TFTPRoot, "boot", v1))
	assert.NoFileExists(t, filepath.Join(cache, v1), "the unpacked image is removed")
	assert.FileExists(t, filepath.Join(cache, v2))
	_, err = tftpGet(t, srv, "boot/"+v1+"/linux")
	assert.Error(t, err)
}

// corruptBuild writes a build whose .md5 does not match its image.
func corruptBuild(t *testing.T, dir, name, version string) {
	t.Helper()
	b, err := kistest.Write(dir, kistest.Spec{Name: name, Version: version, Image: kistest.Image(256<<10, 9), Compressed: true})
	require.NoError(t, err)
	sum, err := os.ReadFile(b.MD5)
	require.NoError(t, err)
	sum[0] ^= 1 // still hex: '0'..'9' and 'a'..'f' flip within their ranges for most values
	if !bytes.ContainsAny(sum[:1], "0123456789abcdef") {
		sum[0] = '0'
	}
	require.NoError(t, os.WriteFile(b.MD5, sum, 0o644))
}

func TestCorruptBuildIsRefused(t *testing.T) {
	kisDir := t.TempDir()
	img1 := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, ev := newServer(t, kisDir)
	srv.WatchInterval = 50 * time.Millisecond
	run(t, srv)
	const v1, bad = "leap.x86_64-1.0.0", "leap.x86_64-1.1.0"

	corruptBuild(t, kisDir, "leap", "1.1.0")
	err := srv.Reload(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad)
	assert.Equal(t, v1, srv.State().Default.String(), "the running build keeps serving")
	assert.Contains(t, srv.State().Rejected[bootserver.BuildID{Name: "leap", Arch: "x86_64", Version: "1.1.0"}], "md5")
	assert.True(t, ev.has(bootserver.BuildRejected, bad))
	assert.Contains(t, readFile(t, srv, "pxelinux.cfg/default"), "nbd=127.0.0.1:"+v1)
	assert.NoDirExists(t, filepath.Join(srv.TFTPRoot, "boot", bad))
	time.Sleep(3 * srv.Grace)
	assert.True(t, bytes.Equal(img1, readExport(t, srv, v1)), "and stays served past the grace period")
	_, ok := buildState(srv, bad)
	assert.False(t, ok)

	// The watch rolls forward once a good build appears.
	img3 := writeBuild(t, kisDir, "leap", "1.2.0", 3)
	require.Eventually(t, func() bool { return srv.State().Default.String() == "leap.x86_64-1.2.0" }, 10*time.Second, 20*time.Millisecond)
	assert.True(t, bytes.Equal(img3, readExport(t, srv, "leap.x86_64-1.2.0")))
}

func TestFirstBuildCorruptFailsRun(t *testing.T) {
	kisDir := t.TempDir()
	corruptBuild(t, kisDir, "leap", "1.0.0")
	srv, _ := newServer(t, kisDir)
	err := srv.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "leap.x86_64-1.0.0")
	assert.NoDirExists(t, filepath.Join(srv.TFTPRoot, "boot", "leap.x86_64-1.0.0"))
}
