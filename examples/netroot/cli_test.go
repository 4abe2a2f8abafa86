package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/store"
)

// runBinary runs the built binary and returns its stdout, stderr and exit status.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		require.NoError(t, err)
	}
	return o.String(), e.String(), code
}

func TestHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string // on stdout
	}{
		{"-h", []string{"-h"}, []string{"usage: netroot", "serve", "Global flags", "-log-level"}},
		{"help", []string{"help"}, []string{"usage: netroot", "inspect"}},
		{"help command", []string{"help", "tftp"}, []string{"usage: netroot tftp", "-port-range", "-map-file", "-log-level"}},
		{"command -h", []string{"serve", "-h"}, []string{"usage: netroot serve", "-server-ip", "-v", "-log-format"}},
		{"version", []string{"version"}, []string{"netroot ", "revision "}},
		{"-version", []string{"-version"}, []string{"netroot ", "revision "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBinary(t, tc.args...)
			assert.Equal(t, 0, code, "stderr: %s", errOut)
			for _, w := range tc.want {
				assert.Contains(t, out, w)
			}
			assert.Empty(t, errOut, "help and version go to stdout only")
		})
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string // on stderr
	}{
		{"unexpected argument", []string{"stage", "-kis", dir, "out"}, `stage: unexpected argument "out"`},
		{"tftp arguments after a positional one", []string{"tftp", "-addr", "127.0.0.1:0", dir, "-root", "/x"}, "at most one DIR"},
		{"tftp root twice", []string{"tftp", "-tftp-root", dir, dir}, "give one"},
		{"misspelt flag", []string{"serve", "-kiss", dir}, "unknown flag -kiss (did you mean -kis?)"},
		{"misspelt command", []string{"sevre"}, `unknown command "sevre" (did you mean "serve"?)`},
		{"bad log level after the command", []string{"cmdline", "-nbd", "192.0.2.1:root", "-log-level", "loud"}, `-log-level "loud"`},
		{"help for no such command", []string{"help", "nope"}, `unknown command "nope"`},
		{"bad port range", []string{"tftp", "-port-range", "9:1", dir}, "-port-range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBinary(t, tc.args...)
			assert.Equal(t, 2, code, "stdout: %s\nstderr: %s", out, errOut)
			assert.Contains(t, errOut, tc.want)
			assert.Equal(t, 1, strings.Count(errOut, tc.want), "reported once: %s", errOut)
		})
	}
}

func TestGlobalFlagsAfterTheCommand(t *testing.T) {
	out, errOut, code := runBinary(t, "cmdline", "-nbd", "192.0.2.1:root", "-log-format", "json", "-log-level", "debug")
	require.Equal(t, 0, code, "stderr: %s", errOut)
	assert.Contains(t, out, "root=overlay:nbd=192.0.2.1:root")
}

func TestInspectFailsOnABadImage(t *testing.T) {
	dir := t.TempDir()
	b, err := kistest.Write(dir, kistest.Spec{Name: "leap", Version: "1.0.0"})
	require.NoError(t, err)
	out, errOut, code := runBinary(t, "inspect", "-kis", dir)
	require.Equal(t, 0, code, "a good build: %s%s", out, errOut)
	assert.Regexp(t, `(?m)^md5 +ok$`, out)

	f, err := os.OpenFile(b.Image, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff, 0xfe}, 100)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	out, errOut, code = runBinary(t, "inspect", "-kis", dir)
	assert.Equal(t, 1, code, "a failed check fails the command: %s", out)
	assert.Contains(t, out, "BAD")
	assert.Contains(t, errOut, "md5 check failed for leap.x86_64-1.0.0")
}

// TestServeReplicasPlaceMachines: with -replicas and no probes every machine's config names the
// replica its MAC hashes to, as store.PickReplica computes it on every replica.
func TestServeReplicasPlaceMachines(t *testing.T) {
	kisDir, _, _ := fakeBuild(t, []byte("initrd"))
	tftpRoot := t.TempDir()
	replicas := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	macs := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04"}
	args := serveArgs(kisDir, tftpRoot, "-no-bootloader", "-replicas", strings.Join(replicas, ","), "-replica-probe-interval", "0")
	for _, m := range macs {
		args = append(args, "-mac", m)
	}
	p := start(t, args...)
	p.waitLog(t, `msg=ready`)
	seen := map[string]bool{}
	for _, m := range macs {
		hw, err := net.ParseMAC(m)
		require.NoError(t, err)
		want := store.PickReplica(hw, replicas)
		seen[want] = true
		cfg, err := os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", "01-"+strings.ReplaceAll(m, ":", "-")))
		require.NoError(t, err)
		assert.Contains(t, string(cfg), "root=overlay:nbd="+want+":", "machine %s", m)
	}
	assert.Greater(t, len(seen), 1, "the machines spread over the replicas")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))

	_, errOut, code := runBinary(t, serveArgs(kisDir, t.TempDir(), "-replicas", "127.0.0.1,host-b")...)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `-replicas: "host-b" is not an IPv4 address`)
}

// TestServeReplicasFileProbed: with -replicas-file the replicas are probed over NBD; one that
// does not answer is marked down (logged once), the configs stop naming it, and a replica
// added to the file is probed and used.
func TestServeReplicasFileProbed(t *testing.T) {
	kisDir, _, _ := fakeBuild(t, []byte("initrd"))
	tftpRoot := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	file := filepath.Join(t.TempDir(), "replicas")
	// 127.0.0.1 is this server; 127.0.0.2 has nothing on the port.
	require.NoError(t, os.WriteFile(file, []byte("# the site's replicas\n127.0.0.1\n127.0.0.2 # rack 2\n"), 0o644))
	macs := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04", "52:54:00:00:00:05"}
	args := serveArgs(kisDir, tftpRoot, "-no-bootloader", "-replicas-file", file, "-nbd-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"-replica-probe-interval", "50ms", "-replica-down-after", "2")
	for _, m := range macs {
		args = append(args, "-mac", m)
	}
	p := start(t, args...)
	p.waitLog(t, `msg=ready`)
	p.waitLog(t, `level=WARN msg="store: replica down.*replica=127.0.0.2`)
	p.waitLog(t, `msg="replicas: boot configs rewritten"`)
	for _, m := range macs {
		cfg, err := os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", "01-"+strings.ReplaceAll(m, ":", "-")))
		require.NoError(t, err)
		assert.Contains(t, string(cfg), "root=overlay:nbd=127.0.0.1:", "machine %s: the only healthy replica", m)
	}
	require.NoError(t, os.WriteFile(file, []byte("127.0.0.3\n"), 0o644))
	p.waitLog(t, `msg="replicas: file changed" replicas=\[127.0.0.3\]`)
	p.waitLog(t, `msg="store: replica down.*replica=127.0.0.3`)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
	assert.Len(t, regexp.MustCompile(`msg="store: replica down.*replica=127.0.0.2`).FindAllString(p.log(), -1), 1, "the transition is logged once")

	_, errOut, code := runBinary(t, serveArgs(kisDir, t.TempDir(), "-replicas", "127.0.0.1", "-nbd-addr", "127.0.0.1:0")...)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "needs a fixed -nbd-addr port")
}
