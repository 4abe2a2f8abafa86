package main_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/internal/peertest"
)

// TestServeUpgradesOnSIGUSR2 runs `netroot serve` from a binary file, replaces the file with
// a second build, and sends SIGUSR2 while libnbd's nbdcopy reads the root export (paced by a
// slow reader of its output, so that the copy spans the upgrade). The copy is byte-exact and
// nbdcopy reports nothing; the old process exits 0 before the copy ends; the new process runs
// the replaced file, serves new NBD clients and the metrics on the same addresses, and stops
// on SIGTERM.
func TestServeUpgradesOnSIGUSR2(t *testing.T) {
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	// The new server is the old one's child; once the old one exits it becomes ours.
	require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()

	dir := t.TempDir()
	bin := filepath.Join(dir, "netroot")
	old, err := os.ReadFile(binary)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, old, 0o755))
	// The second build, put in place just before the upgrade.
	second := filepath.Join(dir, "netroot.new")
	out, err := exec.Command("go", "build", "-o", second, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	kisDir, image, spec := fakeBuild(t, []byte("initrd"))
	export := spec.Name + ".x86_64-" + spec.Version
	logPath := filepath.Join(dir, "log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()
	logs := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	// A file, not a pipe, for the log: the new process inherits it, and Wait would wait for a
	// pipe's last writer.
	srv := exec.Command(bin, serveArgs(kisDir, t.TempDir(), "-no-bootloader", "-metrics-addr", "127.0.0.1:0")...)
	srv.Stdout, srv.Stderr = logFile, logFile
	require.NoError(t, srv.Start())
	oldPID := srv.Process.Pid
	oldDone := make(chan error, 1)
	go func() { oldDone <- srv.Wait() }()
	defer func() { _ = srv.Process.Kill() }()
	waitLog := func(re string) []string {
		t.Helper()
		rx := regexp.MustCompile(re)
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if m := rx.FindStringSubmatch(logs()); m != nil {
				return m
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no log line matching %q:\n%s", re, logs())
		return nil
	}
	nbdAddr := waitLog(`msg="nbd listening" addr=(\S+)`)[1]
	metricsAddr := waitLog(`msg="metrics listening" addr=(\S+)`)[1]
	waitLog(`msg=ready`)

	var copyErr bytes.Buffer
	cp := exec.Command(nbdcopy, "-C", "1", "-R", "1", "--request-size=65536", "nbd://"+nbdAddr+"/"+export, "-")
	cp.Stderr = &copyErr
	pipe, err := cp.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cp.Start())
	defer func() { _ = cp.Process.Kill() }()
	got := make(chan []byte, 1)
	read := make(chan int, 1000)
	go func() {
		// About 3 MB/s: the 6 MiB image takes two seconds.
		var b bytes.Buffer
		buf := make([]byte, 16<<10)
		for {
			n, err := io.ReadFull(pipe, buf)
			b.Write(buf[:n])
			read <- b.Len()
			if err != nil {
				got <- b.Bytes()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for n := 0; n < 512<<10; n = <-read {
	}

	require.NoError(t, os.Rename(second, bin))
	require.NoError(t, srv.Process.Signal(syscall.SIGUSR2))
	newPID, err := strconv.Atoi(waitLog(`msg="upgrade: started the new process" new_pid=(\d+)`)[1])
	require.NoError(t, err)
	defer func() { _ = syscall.Kill(newPID, syscall.SIGKILL) }()
	select {
	case err := <-oldDone:
		require.NoError(t, err, "the old process exits cleanly:\n%s", logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("the old process did not exit:\n%s", logs())
	}
	var copied []byte
	select {
	case copied = <-got:
	case <-time.After(60 * time.Second):
		t.Fatalf("nbdcopy did not finish:\n%s", logs())
	}
	require.NoError(t, cp.Wait(), "nbdcopy: %s", copyErr.String())
	require.Less(t, 0, len(copied))
	assert.Empty(t, copyErr.String(), "nbdcopy reports nothing")
	assert.True(t, bytes.Equal(image, copied), "nbdcopy read the image byte-exact across the upgrade (%d of %d bytes)", len(copied), len(image))
	assert.NotEqual(t, oldPID, newPID)
	l := logs()
	assert.Regexp(t, `msg="upgrade: handed over; stopping" new_pid=`+strconv.Itoa(newPID)+` nbd_connections=1 nbd_draining=0`, l)
	assert.Regexp(t, `msg="upgrade: took over" nbd_connections=1 failed=0`, l)

	// The new process runs the file that replaced the old binary.
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", newPID))
	require.NoError(t, err)
	assert.Equal(t, bin, exe)
	var want, have unix.Stat_t
	require.NoError(t, unix.Stat(bin, &want))
	require.NoError(t, unix.Stat(fmt.Sprintf("/proc/%d/exe", newPID), &have))
	assert.Equal(t, want.Ino, have.Ino)

	// New clients, on the same addresses.
	fresh := filepath.Join(dir, "fresh.img")
	out, err = exec.Command(nbdcopy, "nbd://"+nbdAddr+"/"+export, fresh).CombinedOutput()
	require.NoError(t, err, "%s", out)
	b, err := os.ReadFile(fresh)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(image, b))
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "netroot_nbd_")

	require.NoError(t, syscall.Kill(newPID, syscall.SIGTERM))
	var ws unix.WaitStatus
	_, err = unix.Wait4(newPID, &ws, 0, nil)
	require.NoError(t, err)
	assert.True(t, ws.Exited() && ws.ExitStatus() == 0, "new process: %v\n%s", ws, logs())
	if t.Failed() {
		t.Logf("log:\n%s", logs())
	}
}
