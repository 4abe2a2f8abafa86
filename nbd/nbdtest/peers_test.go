package nbdtest_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
)

const imageSize = 64 << 20

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until addr accepts connections, or the peer has exited.
func waitListening(addr string, exited func() bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if exited() {
			return fmt.Errorf("peer exited before listening on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after 10s", addr)
}

// onFreePort calls start with free loopback ports until it succeeds, up to three times: another
// program may take a port between freePort and the peer binding it.
func onFreePort(t *testing.T, start func(port int) (string, error)) string {
	t.Helper()
	var err error
	for range 3 {
		var addr string
		if addr, err = start(freePort(t)); err == nil {
			return addr
		}
		t.Logf("retrying on another port: %v", err)
	}
	t.Fatalf("peer did not start: %v", err)
	return ""
}

func image(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "disk.img")
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	require.NoError(t, os.Truncate(p, imageSize))
	return p
}

// nbdServerConfig is the configuration file both nbd-server and netroot serve in these tests:
// a writable export "rw" and a read-only export "ro" of the same image.
func nbdServerConfig(port int, generic, img string) string {
	return fmt.Sprintf(`[generic]
port = %d
listenaddr = 127.0.0.1
allowlist = true
%s[rw]
exportname = %s
flush = true
fua = true
trim = true
[ro]
exportname = %s
readonly = true
`, port, generic, img, img)
}

// startNBDServer runs the reference nbd-server on a loopback port with a writable export "rw"
// and a read-only export "ro" and returns its address.
// generic adds lines to the [generic] section.
func startNBDServer(t *testing.T, generic string) string {
	bin := peertest.Program(t, "nbd-server", "nbd-server")
	dir := t.TempDir()
	img := image(t, dir)
	return onFreePort(t, func(port int) (string, error) {
		cfg := filepath.Join(dir, "config")
		pidFile := filepath.Join(dir, "pid")
		os.Remove(pidFile)
		require.NoError(t, os.WriteFile(cfg, []byte(nbdServerConfig(port, generic, img)), 0o644))
		// nbd-server daemonizes (without -d it forks per client; with -d it serves one
		// client), so it is stopped through its pid file.
		out, err := exec.Command(bin, "-C", cfg, "-p", pidFile).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("nbd-server: %v: %s", err, out)
		}
		var pid int
		deadline := time.Now().Add(10 * time.Second)
		for pid == 0 && time.Now().Before(deadline) {
			b, _ := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			if pid == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if pid == 0 {
			return "", fmt.Errorf("nbd-server wrote no pid file")
		}
		t.Cleanup(func() {
			syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		})
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return addr, waitListening(addr, func() bool { return syscall.Kill(pid, 0) != nil })
	})
}

// startNBDKit runs nbdkit's file plugin on a loopback port, read-only when ro is set.
func startNBDKit(t *testing.T, img string, ro bool, extra ...string) string {
	bin := peertest.Program(t, "nbdkit", "nbdkit")
	return onFreePort(t, func(port int) (string, error) {
		args := []string{"-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port)}
		if ro {
			args = append(args, "-r")
		}
		args = append(args, extra...)
		args = append(args, "file", "file="+img)
		cmd := exec.Command(bin, args...)
		cmd.Stderr = logWriter{t} // nbdkit reports the suite's deliberate protocol violations
		if err := cmd.Start(); err != nil {
			return "", err
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return addr, waitListening(addr, func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		})
	})
}

// TestNBDServer runs the suite against the reference implementation, which shows that the suite
// checks the protocol rather than netroot's reading of it. Where nbd-server 3.24 differs from
// the document's recommendations, the difference is stated.
func TestNBDServer(t *testing.T) {
	addr := startNBDServer(t, "")
	nbdtest.Run(t, addr, &nbdtest.Options{
		Export:         "rw",
		Size:           imageSize,
		ReadOnlyExport: "ro",
		Expect:         nbdServerExpect,
	})
}

// nbdServerExpect is how nbd-server 3.24 differs from the document's recommendations.
var nbdServerExpect = nbdtest.Expect{
	// nbd-server opens the file only on GO, so INFO reports size 0.
	InfoSizeZero: true,
	// nbd-server 3.24 has no structured replies and no metadata contexts.
	NoStructuredReplies:   true,
	NoBaseAllocation:      true,
	MetaWithoutStructured: nbd.RepErrUnsup,
	// Deviations from the document's MUSTs: it keeps going after unknown client
	// flags, lists exports after rejecting a LIST with data without skipping the
	// data, and stops answering after rejecting a GO whose name overruns it.
	UnknownClientFlagsAccepted: true,
	ListWithDataDesyncs:        true,
	MalformedGoDesyncs:         true,
}

// TestNBDKit runs the suite against nbdkit's file plugin.
func TestNBDKit(t *testing.T) {
	img := image(t, t.TempDir())
	addr := startNBDKit(t, img, false)
	roAddr := startNBDKit(t, img, true)
	nbdtest.Run(t, addr, &nbdtest.Options{
		Export:         "",
		Size:           imageSize,
		ReadOnlyExport: "",
		ReadOnlyAddr:   roAddr,
		Expect: nbdtest.Expect{
			UnknownExport: nbd.RepAck,
		},
	})
}

// logWriter sends a peer's diagnostics to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("peer: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
