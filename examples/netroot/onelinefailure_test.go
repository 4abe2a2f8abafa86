package main_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/tftp"
)

// linesWith returns the log lines so far that contain s; without debug, DEBUG lines (the
// protocol trace -v adds) are left out.
func (p *proc) linesWith(s string, debug bool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines {
		if strings.Contains(l, s) && (debug || !strings.Contains(l, "level=DEBUG")) {
			out = append(out, l)
		}
	}
	return out
}

// Each failure a client or an operator provokes is one log line, even with -v (protocol
// loggers on): the binary and bootserver do not repeat what the servers logged. -v adds the
// protocol's DEBUG trace (an NBD client's refused options, say); those lines are not counted,
// except for a malformed TFTP packet, which is only ever a DEBUG line (anyone can send one).
func TestOneLinePerFailure(t *testing.T) {
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	kisDir := t.TempDir()
	spec := kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(256<<10, 1), Compressed: true}
	_, err := kistest.Write(kisDir, spec)
	require.NoError(t, err)
	p := start(t, serveArgs(kisDir, t.TempDir(), "-v", "-no-bootloader", "-cache-dir", t.TempDir(), "-http-addr", "127.0.0.1:0")...)
	tftpAddr := p.waitLog(t, `msg="tftp listening" addr=(\S+)`)[1]
	nbdAddr := p.waitLog(t, `msg="nbd listening" addr=(\S+)`)[1]
	httpAddr := p.waitLog(t, `msg="http: serving boot files" .*addr=(\S+)`)[1]
	p.waitLog(t, `msg=ready`)

	// TFTP: a name outside the root, a missing file, a packet of no known kind.
	c := &tftp.Client{Timeout: 200 * time.Millisecond, Retries: 1}
	_, err = c.Get(context.Background(), tftpAddr, "../escape-netroot", io.Discard)
	require.Error(t, err)
	_, err = c.Get(context.Background(), tftpAddr, "missing-netroot", io.Discard)
	require.Error(t, err)
	conn, err := net.Dial("udp", tftpAddr)
	require.NoError(t, err)
	_, err = conn.Write([]byte("\x00\x09garbage-netroot"))
	require.NoError(t, err)
	conn.Close()
	// NBD: an export that does not exist.
	out, err := exec.Command(nbdinfo, "nbd://"+nbdAddr+"/no-such-export-netroot").CombinedOutput()
	require.Error(t, err, "%s", out)
	// HTTP: a file that is not there.
	resp, err := http.Get("http://" + httpAddr + "/missing-http-netroot")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	// Reload: a build whose image does not match its .md5.
	spec.Version = "1.15.4"
	b, err := kistest.Write(kisDir, spec)
	require.NoError(t, err)
	md5, err := os.ReadFile(b.MD5)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(b.MD5, []byte(strings.Repeat("0", 32)+string(md5[32:])), 0o644))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitLog(t, `build rejected`)
	p.waitLog(t, `unknown opcode`)

	time.Sleep(300 * time.Millisecond) // any second line would be written by now
	for _, tc := range []struct {
		token, want string
		debug       bool
	}{
		{"../escape-netroot", `level=WARN msg="tftp: transfer failed" .*access violation`, false},
		{"missing-netroot", `level=INFO msg="tftp: file not found"`, false},
		{"no-such-export-netroot", `level=WARN msg="nbd client refused" .*reason="unknown export"`, false},
		{"missing-http-netroot", `level=WARN msg="http: request" .*status=404`, false},
		{"leap-diskless.x86_64-1.15.4", `level=ERROR msg="build rejected: still serving the previous one"`, true},
		{"unknown opcode", `level=DEBUG msg="tftp: malformed packet"`, true},
	} {
		lines := p.linesWith(tc.token, tc.debug)
		if assert.Len(t, lines, 1, "%s:\n%s", tc.token, strings.Join(lines, "\n")) {
			assert.Regexp(t, regexp.MustCompile(tc.want), lines[0])
		}
	}
	assert.Empty(t, p.linesWith(`msg=reload `, true), "the rejection is not repeated by the SIGHUP handler")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}

// netroot nbd logs a refused client once, naming what exists, and a detach with its bytes.
func TestNBDCommandRefusalAndDetach(t *testing.T) {
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	img := t.TempDir() + "/disk.img"
	require.NoError(t, os.WriteFile(img, make([]byte, 65536), 0o644))
	p := start(t, "nbd", "-v", "-export", "disk="+img, "-addr", "127.0.0.1:0")
	addr := p.waitLog(t, `msg="nbd listening" addr=(\S+)`)[1]
	out, err := exec.Command(nbdinfo, "nbd://"+addr+"/no-such-export-netroot").CombinedOutput()
	require.Error(t, err, "%s", out)
	out, err = exec.Command(nbdinfo, "--size", "nbd://"+addr+"/disk").CombinedOutput()
	require.NoError(t, err, "%s", out)
	p.waitLog(t, `msg="nbd client detached" client=127.0.0.1:\d+ export=disk bytes_read=\d+ bytes_written=0 requests=\d+ took=`)
	lines := p.linesWith("no-such-export-netroot", false)
	require.Len(t, lines, 1, strings.Join(lines, "\n"))
	assert.Regexp(t, `level=WARN msg="nbd client refused" client=127.0.0.1:\d+ reason="unknown export" export=no-such-export-netroot exports=\[disk\]`, lines[0])
}
