package bootserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/handoff"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// envUpgradeRole makes the test binary, started by Server.Upgrade, the new server process.
const envUpgradeRole = "BOOTSERVER_TEST_UPGRADE"

// The role is taken in init so that the package's tests need no TestMain.
func init() {
	if os.Getenv(envUpgradeRole) == "" {
		return
	}
	if err := newProcess(); err != nil {
		fmt.Fprintln(os.Stderr, "new process:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// newProcess serves like the test's server, with what the old process handed over, until
// SIGTERM.
func newProcess() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if os.Getenv("BOOTSERVER_TEST_SYSTEMD") != "" {
		// Started as systemd starts a service: only systemd knows the pid between fork and
		// exec.
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	inh, err := handoff.Inherit()
	if err != nil {
		return err
	}
	if err := os.WriteFile(os.Getenv("BOOTSERVER_TEST_PIDFILE"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	srv := &bootserver.Server{
		Source:         &bootserver.KISSource{Dirs: []string{os.Getenv("BOOTSERVER_TEST_KIS")}, CacheDir: os.Getenv("BOOTSERVER_TEST_CACHE")},
		Arch:           "x86_64",
		TFTPRoot:       os.Getenv("BOOTSERVER_TEST_TFTP"),
		ServerIP:       netip.MustParseAddr("127.0.0.1"),
		TFTPAddr:       "127.0.0.1:0",
		NBDAddr:        "127.0.0.1:0",
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid()),
		ProtocolLogger: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid()),
		Inherited:      inh,
	}
	return srv.Run(ctx)
}

// TestUpgradeKeepsNBDClient: a client attached to a build that a reload has since replaced
// reads its export byte-exact across Server.Upgrade; the old server's Run returns, the new
// process serves the old build (which it opened for the resumed client) and the new one on the
// same NBD and TFTP sockets.
func TestUpgradeKeepsNBDClient(t *testing.T) {
	kisDir, cache, tftpRoot := t.TempDir(), t.TempDir(), t.TempDir()
	v1 := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.Source = &bootserver.KISSource{Dirs: []string{kisDir}, CacheDir: cache}
	srv.TFTPRoot = tftpRoot
	logs := &lockedBuffer{}
	srv.Logger = slog.New(slog.NewTextHandler(logs, nil))
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(context.Background()) }()
	require.Eventually(t, func() bool { return srv.ActiveListeners().NBD != nil }, 30*time.Second, 10*time.Millisecond)

	const id1, id2 = "leap.x86_64-1.0.0", "leap.x86_64-1.0.1"
	c, info := attach(t, srv, id1)
	defer c.Close()
	half := info.Size / 2
	first := make([]byte, half)
	_, err := c.ReadAt(first, 0)
	require.NoError(t, err)

	v2 := writeBuild(t, kisDir, "leap", "1.0.1", 2)
	require.NoError(t, srv.Reload(context.Background()))
	require.Equal(t, id2, srv.State().Default.String())

	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	require.NoError(t, err)
	defer stderr.Close()
	newLogs := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
	addrs := srv.ActiveListeners()
	up := &handoff.Upgrade{
		Args: []string{"-test.run=^$"},
		Env: append(os.Environ(), envUpgradeRole+"=1", "BOOTSERVER_TEST_PIDFILE="+pidFile,
			"BOOTSERVER_TEST_KIS="+kisDir, "BOOTSERVER_TEST_CACHE="+cache, "BOOTSERVER_TEST_TFTP="+tftpRoot),
		Stdout: stderr, Stderr: stderr,
		ReadyTimeout: time.Minute,
	}
	require.NoError(t, srv.Upgrade(context.Background(), up), "new process: %s", newLogs())
	select {
	case err := <-errc:
		require.ErrorIs(t, err, bootserver.ErrServerClosed)
	case <-time.After(30 * time.Second):
		t.Fatal("the old server's Run did not return after Upgrade")
	}
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	newPID, err := strconv.Atoi(string(b))
	require.NoError(t, err)
	defer func() {
		_ = syscall.Kill(newPID, syscall.SIGTERM)
		require.Eventually(t, func() bool { return errors.Is(syscall.Kill(newPID, 0), syscall.ESRCH) }, 30*time.Second, 20*time.Millisecond, "new process did not stop: %s", newLogs())
	}()
	assert.NotEqual(t, os.Getpid(), newPID)

	// The rest of the old build, from the new process.
	rest, err := io.ReadAll(io.NewSectionReader(c, half, info.Size-half))
	require.NoError(t, err, "new process: %s", newLogs())
	assert.True(t, bytes.Equal(v1, append(first, rest...)), "the resumed client reads its build byte-exact")
	l := newLogs()
	assert.Contains(t, l, "opened a build a resumed client is attached to")
	assert.Contains(t, l, `msg="upgrade: took over" pid=`+strconv.Itoa(newPID)+" nbd_connections=1 failed=0")
	assert.Contains(t, logs.String(), "upgrade: handed over; stopping")

	// New clients reach the new process on the same sockets.
	got := readExportAt(t, addrs.NBD.Addr().String(), id2)
	assert.True(t, bytes.Equal(v2, got))
	cfg, err := tftpGetAt(t, addrs.TFTP.LocalAddr().String(), "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Contains(t, string(cfg), id2)
	if t.Failed() {
		t.Logf("new process:\n%s\nold process:\n%s", newLogs(), logs.String())
	}
}

// TestUpgradeFailsAndKeepsServing: a new binary that does not exist leaves the old process
// serving as before.
func TestUpgradeFailsAndKeepsServing(t *testing.T) {
	kisDir := t.TempDir()
	img := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	run(t, srv)
	err := srv.Upgrade(context.Background(), &handoff.Upgrade{Path: "/nonexistent/netroot"})
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "/nonexistent/netroot"), "%v", err)
	assert.True(t, bytes.Equal(img, readExport(t, srv, "leap.x86_64-1.0.0")), "still serving")
}

// lockedBuffer is a log destination that goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readExportAt reads the whole export name from the NBD server at addr.
func readExportAt(t *testing.T, addr, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", addr, nil)
	require.NoError(t, err)
	defer c.Close()
	info, err := c.Go(ctx, name)
	require.NoError(t, err)
	data, err := io.ReadAll(io.NewSectionReader(c, 0, info.Size))
	require.NoError(t, err)
	return data
}

func tftpGetAt(t *testing.T, addr, name string) ([]byte, error) {
	t.Helper()
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := (&tftp.Client{}).Get(ctx, addr, name, &buf)
	return buf.Bytes(), err
}

// TestUpgradeDrainsCopyOnWrite: connections to copy-on-write exports cannot move (their
// overlays live in this process); Upgrade counts them as draining, and they end when the old
// process stops.
func TestUpgradeDrainsCopyOnWrite(t *testing.T) {
	kisDir, cache, tftpRoot := t.TempDir(), t.TempDir(), t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.Source = &bootserver.KISSource{Dirs: []string{kisDir}, CacheDir: cache}
	srv.TFTPRoot = tftpRoot
	srv.CopyOnWrite = true
	logs := &lockedBuffer{}
	srv.Logger = slog.New(slog.NewTextHandler(logs, nil))
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(context.Background()) }()
	require.Eventually(t, func() bool { return srv.ActiveListeners().NBD != nil }, 30*time.Second, 10*time.Millisecond)
	c, _ := attach(t, srv, "leap.x86_64-1.0.0")
	defer c.Close()
	_, err := c.WriteAt([]byte("private"), 0)
	require.NoError(t, err)

	dir := t.TempDir()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	require.NoError(t, err)
	defer stderr.Close()
	pidFile := filepath.Join(dir, "pid")
	up := &handoff.Upgrade{
		Args: []string{"-test.run=^$"},
		Env: append(os.Environ(), envUpgradeRole+"=1", "BOOTSERVER_TEST_PIDFILE="+pidFile,
			"BOOTSERVER_TEST_KIS="+kisDir, "BOOTSERVER_TEST_CACHE="+cache, "BOOTSERVER_TEST_TFTP="+tftpRoot),
		Stdout: stderr, Stderr: stderr,
	}
	require.NoError(t, srv.Upgrade(context.Background(), up))
	defer func() {
		b, _ := os.ReadFile(pidFile)
		if pid, err := strconv.Atoi(string(b)); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			require.Eventually(t, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }, 30*time.Second, 20*time.Millisecond)
		}
	}()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, bootserver.ErrServerClosed)
	case <-time.After(60 * time.Second):
		t.Fatal("the old server's Run did not return")
	}
	l := logs.String()
	assert.Contains(t, l, "nbd_connections=0 nbd_draining=1")
	assert.Contains(t, l, "cannot be handed over: they finish their requests and close\" clients=1")
	// The drained connection is closed: the client's next request fails.
	_, err = c.ReadAt(make([]byte, 512), 0)
	assert.Error(t, err)
}

// TestStoreForRestart plays systemd around a restart: the server stores its sockets and its
// NBD connection in a fake service manager's fd store and stops; a new process started with
// them, as systemd starts the next one, resumes the connection (the client reads byte-exact)
// and takes the connection out of the store.
func TestStoreForRestart(t *testing.T) {
	notify := filepath.Join(t.TempDir(), "notify")
	sd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	require.NoError(t, err)
	defer sd.Close()
	t.Setenv("NOTIFY_SOCKET", notify)
	t.Setenv("FDSTORE", "64")
	require.True(t, handoff.FDStoreEnabled())

	kisDir, cache, tftpRoot := t.TempDir(), t.TempDir(), t.TempDir()
	img := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.Source = &bootserver.KISSource{Dirs: []string{kisDir}, CacheDir: cache}
	srv.TFTPRoot = tftpRoot
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(context.Background()) }()
	require.Eventually(t, func() bool { return srv.ActiveListeners().NBD != nil }, 30*time.Second, 10*time.Millisecond)
	addr := srv.ActiveListeners().NBD.Addr().String()
	c, info := attach(t, srv, "leap.x86_64-1.0.0")
	defer c.Close()
	half := info.Size / 2
	first := make([]byte, half)
	_, err = c.ReadAt(first, 0)
	require.NoError(t, err)

	require.NoError(t, srv.StoreForRestart(context.Background()))
	select {
	case err := <-errc:
		require.ErrorIs(t, err, bootserver.ErrServerClosed)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after StoreForRestart")
	}

	// What systemd keeps.
	var names []string
	var files []*os.File
	var other []string
	drain := func() {
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
		for {
			require.NoError(t, sd.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
			n, oobn, _, _, err := sd.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			name, ok := strings.CutPrefix(msg, "FDSTORE=1\nFDNAME=")
			if !ok {
				other = append(other, msg)
				continue
			}
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			require.NoError(t, err)
			fds, err := unix.ParseUnixRights(&cms[0])
			require.NoError(t, err)
			require.Len(t, fds, 1)
			names = append(names, name)
			files = append(files, os.NewFile(uintptr(fds[0]), name))
		}
	}
	drain()
	assert.ElementsMatch(t, []string{"tftp", "nbd", "netroot-handoff-state", "netroot-conn.0"}, names)

	dir := t.TempDir()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	require.NoError(t, err)
	defer stderr.Close()
	newLogs := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
	pidFile := filepath.Join(dir, "pid")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envUpgradeRole+"=1", "BOOTSERVER_TEST_SYSTEMD=1", "BOOTSERVER_TEST_PIDFILE="+pidFile,
		"BOOTSERVER_TEST_KIS="+kisDir, "BOOTSERVER_TEST_CACHE="+cache, "BOOTSERVER_TEST_TFTP="+tftpRoot,
		"LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = stderr, stderr
	require.NoError(t, cmd.Start())
	for _, f := range files {
		_ = f.Close()
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		assert.NoError(t, cmd.Wait(), "new process: %s", newLogs())
	}()

	rest, err := io.ReadAll(io.NewSectionReader(c, half, info.Size-half))
	require.NoError(t, err, "new process: %s", newLogs())
	assert.True(t, bytes.Equal(img, append(first, rest...)), "the client reads byte-exact across the restart")
	assert.True(t, bytes.Equal(img, readExportAt(t, addr, "leap.x86_64-1.0.0")), "the stored listener serves new clients")
	drain()
	assert.ElementsMatch(t, []string{"FDSTOREREMOVE=1\nFDNAME=netroot-handoff-state", "FDSTOREREMOVE=1\nFDNAME=netroot-conn.0"}, other)
	assert.Contains(t, newLogs(), "nbd_connections=1 failed=0")
}
