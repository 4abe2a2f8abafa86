package main_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/tftp"
)

// openDir returns a new directory under the system's temporary folder that other users may
// enter (t.TempDir's are private to root).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "netroot-priv-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// idLines returns the Uid:, Gid: and Groups: lines of a process, tabs made spaces.
func idLines(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") || strings.HasPrefix(l, "Groups:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return out
}

var nobodyIDs = []string{"Uid: 65534 65534 65534 65534", "Gid: 65534 65534 65534 65534", "Groups: 65534"}

// serve -user nobody: the sockets are opened as root, then everything (unpacking into the
// cache, staging, serving, reloading) runs as nobody, and root cannot come back.
func TestServeDropsRootToUser(t *testing.T) {
	peertest.Root(t, "dropping privileges needs root")
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	base := openDir(t)
	kisDir := filepath.Join(base, "kis")
	require.NoError(t, os.Mkdir(kisDir, 0o755))
	spec := kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(1<<20, 6), Compressed: true,
		Initrd: []byte("initrd 1.15.3")}
	_, err := kistest.Write(kisDir, spec)
	require.NoError(t, err)
	tftpRoot, cache := filepath.Join(base, "tftp"), filepath.Join(base, "cache") // made for nobody

	p := start(t, serveArgs(kisDir, tftpRoot, "-no-bootloader", "-cache-dir", cache, "-user", "nobody", "-grace", "100ms")...)
	p.waitLog(t, `msg="dropped root privileges" user=nobody uid=65534 group=nogroup gid=65534`)
	tftpAddr := p.waitLog(t, `msg="tftp listening" addr=(\S+)`)[1]
	nbdAddr := p.waitLog(t, `msg="nbd listening" addr=(\S+)`)[1]
	p.waitLog(t, `msg=ready`)
	assert.Equal(t, nobodyIDs, idLines(t, p.cmd.Process.Pid))
	// The drop came before the first build was unpacked: nobody owns what was written.
	for _, f := range []string{filepath.Join(cache, "leap-diskless.x86_64-1.15.3"), filepath.Join(tftpRoot, "pxelinux.cfg", "default")} {
		st, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, uint32(65534), st.Sys().(*syscall.Stat_t).Uid, f)
	}

	var buf bytes.Buffer
	_, err = (&tftp.Client{}).Get(context.Background(), tftpAddr, "boot/initrd", &buf)
	require.NoError(t, err)
	assert.Equal(t, "initrd 1.15.3", buf.String())
	out, err := exec.Command(nbdinfo, "--size", "nbd://"+nbdAddr+"/leap-diskless.x86_64-1.15.3").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "1048576", strings.TrimSpace(string(out)))

	// A reload as nobody unpacks and stages the next build.
	spec.Version, spec.Image, spec.Initrd = "1.15.4", kistest.Image(1<<20, 7), []byte("initrd 1.15.4")
	_, err = kistest.Write(kisDir, spec)
	require.NoError(t, err)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitLog(t, `msg="serving build" build=leap-diskless.x86_64-1.15.4`)
	buf.Reset()
	_, err = (&tftp.Client{}).Get(context.Background(), tftpAddr, "boot/initrd", &buf)
	require.NoError(t, err)
	assert.Equal(t, "initrd 1.15.4", buf.String())
	assert.Equal(t, nobodyIDs, idLines(t, p.cmd.Process.Pid))

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}

// tftp -u (tftpd-hpa's) and nbd with nbd-server's user= drop root after listening and serve.
func TestTFTPAndNBDDropRoot(t *testing.T) {
	peertest.Root(t, "dropping privileges needs root")
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	base := openDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(base, "hello"), []byte("hi"), 0o644))

	p := start(t, "tftp", "-u", "nobody", "-addr", "127.0.0.1:0", base)
	addr := p.waitLog(t, `msg="tftp listening" addr=(\S+)`)[1]
	p.waitLog(t, `msg="dropped root privileges" user=nobody`)
	assert.Equal(t, nobodyIDs, idLines(t, p.cmd.Process.Pid))
	var buf bytes.Buffer
	_, err := (&tftp.Client{}).Get(context.Background(), addr, "hello", &buf)
	require.NoError(t, err)
	assert.Equal(t, "hi", buf.String())

	img := filepath.Join(base, "disk.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 65536), 0o600)) // only root may open it
	conf := filepath.Join(base, "config")
	require.NoError(t, os.WriteFile(conf, []byte("[generic]\n\tuser = nobody\n\tgroup = nogroup\n[disk]\n\texportname = "+img+"\n\treadonly = true\n"), 0o644))
	n := start(t, "nbd", "-config", conf, "-addr", "127.0.0.1:0")
	nbdAddr := n.waitLog(t, `msg="nbd listening" addr=(\S+)`)[1]
	n.waitLog(t, `msg="dropped root privileges" user=nobody`)
	assert.Equal(t, []string{"Uid: 65534 65534 65534 65534", "Gid: 65534 65534 65534 65534"}, idLines(t, n.cmd.Process.Pid)[:2])
	out, err := exec.Command(nbdinfo, "--size", "nbd://"+nbdAddr+"/disk").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "65536", strings.TrimSpace(string(out)), "the image opened as root is served as nobody")
}

// An unknown user or group, or a group alone, fails before any work; so does a directory the
// user could not write.
func TestPrivilegeErrors(t *testing.T) {
	kisDir := t.TempDir()
	_, err := kistest.Write(kisDir, kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(64<<10, 6)})
	require.NoError(t, err)
	serve := func(extra ...string) []string {
		return serveArgs(kisDir, t.TempDir(), append([]string{"-no-bootloader"}, extra...)...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown user", serve("-user", "no-such-user-netroot"), `-user: privdrop: user "no-such-user-netroot": no such user`},
		{"unknown group", serve("-user", "nobody", "-group", "no-such-group-netroot"), `privdrop: group "no-such-group-netroot": no such group`},
		{"group alone", serve("-group", "nogroup"), `-group "nogroup" needs -user`},
		{"root", serve("-user", "root"), `is root (uid 0)`},
		{"tftp unknown user", []string{"tftp", "-u", "no-such-user-netroot", "-addr", "127.0.0.1:0", kisDir}, `no such user`},
		{"nbd unknown user", []string{"nbd", "-export", "x=" + filepath.Join(kisDir, "leap-diskless.x86_64-1.15.3"), "-addr", "127.0.0.1:0", "-user", "no-such-user-netroot"}, `no such user`},
		{"aoe unknown user", []string{"aoe", "-user", "no-such-user-netroot", "0", "1", "lo", filepath.Join(kisDir, "leap-diskless.x86_64-1.15.3")}, `no such user`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runBinary(t, tc.args...)
			assert.NotZero(t, code)
			assert.Contains(t, stderr, tc.want)
			assert.NotContains(t, stderr, "ready")
		})
	}

	t.Run("nbd-server config user unknown", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "config")
		require.NoError(t, os.WriteFile(conf, []byte("[generic]\n\tuser = no-such-user-netroot\n[x]\n\texportname = "+
			filepath.Join(kisDir, "leap-diskless.x86_64-1.15.3")+"\n"), 0o644))
		_, stderr, code := runBinary(t, "nbd", "-config", conf, "-addr", "127.0.0.1:0")
		assert.NotZero(t, code)
		assert.Contains(t, stderr, "user= in "+conf+`: privdrop: user "no-such-user-netroot": no such user`)
	})

	t.Run("tftp root nobody cannot write", func(t *testing.T) {
		peertest.Root(t, "dropping privileges needs root")
		tftpRoot := t.TempDir() // root's, mode 0700
		_, stderr, code := runBinary(t, serveArgs(kisDir, tftpRoot, "-no-bootloader", "-user", "nobody")...)
		assert.NotZero(t, code)
		assert.Contains(t, stderr, `-tftp-root "`+tftpRoot+`" is not writable by user nobody`)
		assert.NotContains(t, stderr, "msg=ready")
	})
}

// After the drop, SIGUSR2 still upgrades: the new process starts as nobody, takes the sockets
// (TFTP, NBD, metrics, and HTTP opened before the drop) and serves.
func TestUpgradeAfterDroppingRoot(t *testing.T) {
	peertest.Root(t, "dropping privileges needs root")
	curl := peertest.Program(t, "curl", "curl")
	require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
	base := openDir(t)
	bin := filepath.Join(base, "netroot")
	data, err := os.ReadFile(binary)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	kisDir := filepath.Join(base, "kis")
	require.NoError(t, os.Mkdir(kisDir, 0o755))
	_, err = kistest.Write(kisDir, kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(64<<10, 6), Initrd: []byte("initrd")})
	require.NoError(t, err)
	logPath := filepath.Join(base, "log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()
	logs := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	waitLog := func(re string) []string {
		t.Helper()
		rx := regexp.MustCompile(re)
		for range 3000 {
			if m := rx.FindStringSubmatch(logs()); m != nil {
				return m
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no log line matching %q:\n%s", re, logs())
		return nil
	}
	srv := exec.Command(bin, serveArgs(kisDir, filepath.Join(base, "tftp"), "-no-bootloader", "-user", "nobody",
		"-metrics-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0")...)
	srv.Stdout, srv.Stderr = logFile, logFile
	require.NoError(t, srv.Start())
	defer func() { _ = srv.Process.Kill() }()
	oldDone := make(chan error, 1)
	go func() { oldDone <- srv.Wait() }()
	tftpAddr := waitLog(`msg="tftp listening" addr=(\S+)`)[1]
	httpAddr := waitLog(`msg="http: serving boot files" .*addr=(\S+)`)[1]
	waitLog(`msg=ready`)

	require.NoError(t, srv.Process.Signal(syscall.SIGUSR2))
	newPID, err := strconv.Atoi(waitLog(`msg="upgrade: started the new process" new_pid=(\d+)`)[1])
	require.NoError(t, err)
	defer func() { _ = syscall.Kill(newPID, syscall.SIGKILL) }()
	select {
	case err := <-oldDone:
		require.NoError(t, err, logs())
	case <-time.After(60 * time.Second):
		t.Fatal("the old process did not exit")
	}
	assert.Equal(t, nobodyIDs, idLines(t, newPID))
	assert.Len(t, regexp.MustCompile(`msg="dropped root privileges"`).FindAllString(logs(), -1), 2, "the new process checks it runs as nobody")

	var buf bytes.Buffer
	_, err = (&tftp.Client{}).Get(context.Background(), tftpAddr, "boot/initrd", &buf)
	require.NoError(t, err)
	assert.Equal(t, "initrd", buf.String())
	out, err := exec.Command(curl, "-sS", "-f", "http://"+httpAddr+"/boot/initrd").CombinedOutput()
	require.NoError(t, err, "%s\n%s", out, logs())
	assert.Equal(t, "initrd", string(out), "the HTTP socket went over to the new process")

	require.NoError(t, syscall.Kill(newPID, syscall.SIGTERM))
	var ws unix.WaitStatus
	_, err = unix.Wait4(newPID, &ws, 0, nil)
	require.NoError(t, err)
	assert.Equal(t, 0, ws.ExitStatus(), logs())
}
