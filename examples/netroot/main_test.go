package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/tftp"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netroot-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "netroot")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building netroot: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is the binary running as a subprocess, its log lines collected as they come.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	mu     sync.Mutex
	lines  []string
	more   chan struct{}
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(binary, args...))
}

func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	args := cmd.Args
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, more: make(chan struct{}, 1), done: make(chan struct{})}
	p.cmd.Stdout = p.stdout
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("netroot %s\nstderr:\n%s\nstdout:\n%s", strings.Join(args, " "), p.log(), p.stdout.String())
		}
	})
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// match returns the submatches of the first log line so far that matches rx, or nil.
func (p *proc) match(rx *regexp.Regexp) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if m := rx.FindStringSubmatch(l); m != nil {
			return m
		}
	}
	return nil
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proc) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(60 * time.Second)
	for {
		if m := p.match(rx); m != nil {
			return m
		}
		select {
		case <-p.more:
		case <-p.done:
			// Lines written just before the exit are collected by now.
			if m := p.match(rx); m != nil {
				return m
			}
			t.Fatalf("netroot exited (%v) before logging %q", p.err, re)
		case <-deadline:
			t.Fatalf("netroot did not log %q within 60s", re)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *proc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(60 * time.Second):
		t.Fatal("netroot did not exit within 60s")
		return nil
	}
}

// fakeBuild writes a KIS build with a compressed root image and KIWI's .append.
func fakeBuild(t *testing.T, initrd []byte) (dir string, image []byte, spec kistest.Spec) {
	t.Helper()
	dir = t.TempDir()
	spec = kistest.Spec{
		Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(6<<20, 42), Compressed: true,
		Kernel: bytes.Repeat([]byte("KERNEL"), 20000), Initrd: initrd,
		Append: "root=UUID=4b3c6f27-0000 rd.kiwi.custom=1 quiet",
	}
	_, err := kistest.Write(dir, spec)
	require.NoError(t, err)
	return dir, spec.Image, spec
}

func serveArgs(kisDir, tftpRoot string, extra ...string) []string {
	return append([]string{"serve", "-kis", kisDir, "-tftp-root", tftpRoot, "-server-ip", "127.0.0.1", "-allow-loopback",
		"-tftp-addr", "127.0.0.1:0", "-nbd-addr", "127.0.0.1:0", "-allow-nonstandard-nbd-port",
		"-append", "console=ttyS0,115200", "-pxelinux-serial", "0 115200"}, extra...)
}

func TestServeWithRealClients(t *testing.T) {
	curl := peertest.Program(t, "curl", "curl")
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	pxelinux := peertest.File(t, "/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
	peertest.File(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")

	initrd := make([]byte, 3<<20)
	_, _ = rand.Read(initrd)
	kisDir, image, spec := fakeBuild(t, initrd)
	tftpRoot := t.TempDir()
	p := start(t, serveArgs(kisDir, tftpRoot)...)
	tftpAddr := p.waitLog(t, `msg="tftp listening" addr=(\S+)`)[1]
	nbdAddr := p.waitLog(t, `msg="nbd listening" addr=(\S+)`)[1]
	p.waitLog(t, `msg=ready`)
	export := "leap-diskless.x86_64-1.15.3"

	fetch := func(name string, blksize int) []byte {
		t.Helper()
		out := filepath.Join(t.TempDir(), "f")
		cmd := exec.Command(curl, "-sS", "--tftp-blksize", fmt.Sprint(blksize), "-o", out, "tftp://"+tftpAddr+"/"+name)
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "curl %s: %s", name, b)
		data, err := os.ReadFile(out)
		require.NoError(t, err)
		return data
	}
	cfg := string(fetch("pxelinux.cfg/default", 512))
	assert.Contains(t, cfg, "SERIAL 0 115200")
	assert.Contains(t, cfg, "root=overlay:nbd=127.0.0.1:"+export)
	assert.Contains(t, cfg, "rd.driver.pre=nbd")
	assert.Contains(t, cfg, "rd.kiwi.custom=1", "KIWI's .append options are carried over")
	assert.Contains(t, cfg, "console=ttyS0,115200")
	assert.NotContains(t, cfg, "root=UUID", "KIWI's own root= is replaced by the network root")
	assert.Contains(t, cfg, "IPAPPEND 2")
	assert.Equal(t, spec.Kernel, fetch("boot/linux", 1468))
	assert.Equal(t, spec.Kernel, fetch("/boot/linux", 512), "GRUB's absolute names are relative to the TFTP root")
	assert.Equal(t, initrd, fetch("boot/initrd", 8192))
	want, err := os.ReadFile(pxelinux)
	require.NoError(t, err)
	assert.Equal(t, want, fetch("pxelinux.0", 1468))
	for _, f := range []string{"ldlinux.c32", "grub/grub.cfg", "boot.ipxe"} {
		assert.NotEmpty(t, fetch(f, 1468), f)
	}

	uri := "nbd://" + nbdAddr + "/" + export
	out, err := exec.Command(nbdinfo, "--json", uri).Output()
	require.NoError(t, err)
	var info struct {
		Exports []struct {
			Name string `json:"export-name"`
			Size int64  `json:"export-size"`
			RO   bool   `json:"is_read_only"`
		} `json:"exports"`
	}
	require.NoError(t, json.Unmarshal(out, &info), "%s", out)
	require.Len(t, info.Exports, 1)
	assert.Equal(t, export, info.Exports[0].Name)
	assert.Equal(t, int64(len(image)), info.Exports[0].Size)
	assert.True(t, info.Exports[0].RO, "the root image is exported read-only")

	copied := filepath.Join(t.TempDir(), "root.img")
	b, err := exec.Command(nbdcopy, uri, copied).CombinedOutput()
	require.NoError(t, err, "%s", b)
	got, err := os.ReadFile(copied)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(image, got), "nbdcopy read the root image byte-exact")

	p.waitLog(t, `msg="client fetched" client=127.0.0.1 file=boot/initrd`)
	p.waitLog(t, `msg="nbd client attached"`)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
	p.waitLog(t, `msg=stopped`)
}

func TestServeSIGTERMLetsTransfersFinish(t *testing.T) {
	initrd := make([]byte, 12<<20)
	_, _ = rand.Read(initrd)
	kisDir, _, _ := fakeBuild(t, initrd)
	p := start(t, serveArgs(kisDir, t.TempDir(), "-no-bootloader")...)
	tftpAddr := p.waitLog(t, `msg="tftp listening" addr=(\S+)`)[1]
	p.waitLog(t, `msg=ready`)

	// A slow lock-step transfer (512-byte blocks), interrupted by SIGTERM once it has begun.
	pr, pw := io.Pipe()
	type result struct {
		data []byte
		err  error
	}
	res := make(chan result, 1)
	go func() {
		data, err := io.ReadAll(pr)
		res <- result{data, err}
	}()
	getErr := make(chan error, 1)
	go func() {
		_, err := (&tftp.Client{}).Get(context.Background(), tftpAddr, "boot/initrd", pw)
		pw.CloseWithError(err)
		getErr <- err
	}()
	p.waitLog(t, `msg="client fetched".*file=pxelinux|tftp listening`) // the server is up
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLog(t, `shutting down`)
	require.NoError(t, <-getErr, "the running transfer finishes after SIGTERM")
	r := <-res
	require.NoError(t, r.err)
	assert.True(t, bytes.Equal(initrd, r.data), "the transfer is byte-exact")
	assert.NoError(t, p.wait(t))
	p.waitLog(t, `msg=stopped`)
}

func TestServeRefusesUnbootableSetups(t *testing.T) {
	kisDir, _, _ := fakeBuild(t, []byte("initrd"))
	emptySysroot := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"loopback server ip", []string{"serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-server-ip", "127.0.0.1"},
			"-server-ip 127.0.0.1 is a loopback address: a network-booted machine would look for its NBD server on itself"},
		{"nbd listen address does not cover the server ip", []string{"serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-server-ip", "127.0.0.1", "-allow-loopback", "-nbd-addr", "127.0.0.2:10809"},
			`-nbd-addr "127.0.0.2:10809" listens on 127.0.0.2 only, but clients are told to connect to 127.0.0.1`},
		{"nbd port other than 10809", []string{"serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-server-ip", "127.0.0.1", "-allow-loopback", "-nbd-addr", "127.0.0.1:10810"},
			`-nbd-addr "127.0.0.1:10810": kiwi-overlay clients run nbd-client on port 10809`},
		{"server ip not local", []string{"serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-server-ip", "192.0.2.77"},
			"-server-ip 192.0.2.77: no local interface has this address"},
		{"ipv6 server ip", []string{"serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-server-ip", "fd00::1"},
			`-server-ip "fd00::1": want an IPv4 address`},
		{"missing aoe interface", []string{"serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-nbd=false", "-aoe-iface", "nosuch0"},
			`-aoe-iface "nosuch0": no such network interface`},
		{"missing pxelinux.0", serveArgs(kisDir, t.TempDir(), "-bootloader-sysroot", emptySysroot),
			"pxelinux"},
		{"no kis dir", []string{"serve", "-server-ip", "127.0.0.1", "-allow-loopback"}, "-kis DIR is required"},
		{"empty kis dir", []string{"serve", "-kis", t.TempDir(), "-tftp-root", t.TempDir(), "-server-ip", "127.0.0.1", "-allow-loopback", "-allow-nonstandard-nbd-port", "-nbd-addr", "127.0.0.1:0"},
			"holds no kernel, initrd, root image or bundle of a KIS build"},
		{"nothing to serve", []string{"serve", "-kis", kisDir, "-nbd=false"}, "nothing to serve"},
		{"aoe vblade args", []string{"aoe", "0", "1", "nosuch0", "/dev/null"}, `IFACE "nosuch0": no such network interface`},
		{"aoe broadcast shelf", []string{"aoe", "65535", "1", "lo", "/dev/null"}, `SHELF "65535"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "%s", out)
			assert.Contains(t, string(out), tc.want)
		})
	}
}

func TestDemoStartsServesAndStops(t *testing.T) {
	p := start(t) // no arguments: the demo
	p.waitLog(t, `msg=ready`)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.stdout.String(), "Serving until Ctrl-C") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	out := p.stdout.String()
	assert.Contains(t, out, "pxelinux.cfg/default")
	assert.Contains(t, out, "root=overlay:nbd=127.0.0.1:netroot-demo.x86_64-1.0.0")
	assert.Contains(t, out, "matches the build's .md5")
	assert.NotContains(t, out, "FAILED")
	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
	assert.NoError(t, p.wait(t))
}

func TestCmdline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		want    string
		wantErr bool
	}{
		{"nbd", []string{"cmdline", "-nbd", "192.0.2.1:root"}, "root=overlay:nbd=192.0.2.1:root rd.driver.pre=nbd", false},
		{"aoe", []string{"cmdline", "-aoe", "e0.1", "-overlay-readonly"}, "root=overlay:aoe=e0.1", false},
		{"nbd with port", []string{"cmdline", "-nbd", "192.0.2.1:10809:root"}, "", true},
		{"aoe interface name", []string{"cmdline", "-aoe", "eth0"}, "", true},
		{"parse", []string{"cmdline", "-parse", "quiet root=overlay:nbd=192.0.2.1:img rd.driver.pre=nbd"}, "nbd-client 192.0.2.1 /dev/nbd0 -name img", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(binary, tc.args...).CombinedOutput()
			if tc.wantErr {
				require.Error(t, err, "%s", out)
				return
			}
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), tc.want)
		})
	}
}

func TestMetrics(t *testing.T) {
	kisDir, _, _ := fakeBuild(t, []byte("initrd"))
	p := start(t, serveArgs(kisDir, t.TempDir(), "-no-bootloader", "-metrics-addr", "127.0.0.1:0")...)
	maddr := p.waitLog(t, `msg="metrics listening" addr=(\S+)`)[1]
	tftpAddr := p.waitLog(t, `msg="tftp listening" addr=(\S+)`)[1]
	p.waitLog(t, `msg=ready`)
	var buf bytes.Buffer
	_, err := (&tftp.Client{}).Get(context.Background(), tftpAddr, "boot/initrd", &buf)
	require.NoError(t, err)
	p.waitLog(t, `msg="client fetched" client=127.0.0.1 file=boot/initrd`) // counted by now
	resp, err := http.Get("http://" + maddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^netroot_tftp_transfers_total\{result="completed"\} [1-9]`, string(body))
	assert.Regexp(t, `(?m)^netroot_tftp_sent_bytes_total [1-9]`, string(body))
	assert.Contains(t, string(body), "netroot_nbd_connections_total")
	assert.Contains(t, string(body), "netroot_build_info{")
	assert.Contains(t, string(body), "go_goroutines")
	assert.Contains(t, string(body), "process_resident_memory_bytes")

	// The same listener serves the status page and its JSON.
	st, err := http.Get("http://" + maddr + "/status.json")
	require.NoError(t, err)
	defer st.Body.Close()
	var status struct {
		Transfers []struct{ File string } `json:"recent_transfers"`
	}
	require.NoError(t, json.NewDecoder(st.Body).Decode(&status))
	require.NotEmpty(t, status.Transfers)
	assert.Equal(t, "boot/initrd", status.Transfers[0].File)
	page, err := http.Get("http://" + maddr + "/")
	require.NoError(t, err)
	page.Body.Close()
	assert.Equal(t, http.StatusOK, page.StatusCode)
	assert.Equal(t, "text/html; charset=utf-8", page.Header.Get("Content-Type"))
}

func TestNBDServerConfigDropIn(t *testing.T) {
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	data := make([]byte, 2<<20)
	_, _ = rand.Read(data)
	require.NoError(t, os.WriteFile(img, data, 0o644))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	cfg := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"[generic]\nport = %d\nlistenaddr = 127.0.0.1\nallowlist = true\n[root]\nexportname = %s\nreadonly = true\nbogus = 1\n", port, img)), 0o644))

	p := start(t, "nbd", "-config", cfg)
	p.waitLog(t, `msg="nbd config: ignored".*bogus`)
	p.waitLog(t, `msg="nbd listening" addr=127.0.0.1:`+strconv.Itoa(port))
	out, err := exec.Command(nbdinfo, "--list", fmt.Sprintf("nbd://127.0.0.1:%d", port)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "export=\"root\"")
	copied := filepath.Join(dir, "copy.img")
	out, err = exec.Command(nbdcopy, fmt.Sprintf("nbd://127.0.0.1:%d/root", port), copied).CombinedOutput()
	require.NoError(t, err, "%s", out)
	got, err := os.ReadFile(copied)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}

func TestServeConfigFile(t *testing.T) {
	kisDir, _, _ := fakeBuild(t, []byte("initrd"))
	tftpRoot := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "netroot.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`# netroot serve settings
kis = %q
tftp-root = %q
server-ip = "127.0.0.1"
allow-loopback = true
tftp-addr = "127.0.0.1:0"
nbd-addr = "127.0.0.1:0"
allow-nonstandard-nbd-port = true
no-bootloader = true
append = "console=ttyS1"
mac = ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]
`, kisDir, tftpRoot)), 0o644))

	t.Run("flags win over the file", func(t *testing.T) {
		p := start(t, "serve", "-config", cfg, "-append", "console=ttyS0,115200")
		p.waitLog(t, `msg=ready`)
		for _, name := range []string{"01-52-54-00-12-34-56", "01-52-54-00-ab-cd-ef"} {
			b, err := os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", name))
			require.NoError(t, err, "per-MAC config from the file's mac list")
			assert.Contains(t, string(b), "console=ttyS0,115200")
			assert.NotContains(t, string(b), "ttyS1")
		}
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		assert.NoError(t, p.wait(t))
	})
	t.Run("unknown setting", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.toml")
		require.NoError(t, os.WriteFile(bad, []byte("tftp-rot = \"/srv\"\n"), 0o644))
		out, err := exec.Command(binary, "serve", "-config", bad).CombinedOutput()
		require.Error(t, err)
		assert.Contains(t, string(out), `unknown setting "tftp-rot"`)
	})
}

func TestSystemdSocketActivationAndNotify(t *testing.T) {
	activate := peertest.Program(t, "systemd-socket-activate", "systemd")
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	kisDir, image, _ := fakeBuild(t, []byte("initrd"))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nbdAddr := l.Addr().String()
	require.NoError(t, l.Close())
	notifyPath := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	require.NoError(t, err)
	defer notify.Close()

	// systemd-socket-activate listens on the NBD address and starts netroot with the socket
	// (named "nbd") once a client connects, as a systemd .socket unit would.
	cmd := exec.Command(activate, "-l", nbdAddr, "--fdname=nbd", "-E", "NOTIFY_SOCKET="+notifyPath, "--",
		binary, "serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-server-ip", "127.0.0.1", "-allow-loopback",
		"-tftp-addr", "127.0.0.1:0", "-nbd-addr", "127.0.0.1:0", "-allow-nonstandard-nbd-port", "-no-bootloader")
	p := startCmd(t, cmd)
	p.waitLog(t, `Listening on`) // systemd-socket-activate's own line
	out, err := exec.Command(nbdinfo, "--size", "nbd://"+nbdAddr+"/leap-diskless.x86_64-1.15.3").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, fmt.Sprint(len(image)), strings.TrimSpace(string(out)))
	p.waitLog(t, `msg="using inherited sockets" from=systemd names=nbd`)
	p.waitLog(t, `msg="nbd listening" addr=`+regexp.QuoteMeta(nbdAddr))

	require.NoError(t, notify.SetReadDeadline(time.Now().Add(30*time.Second)))
	buf := make([]byte, 256)
	n, err := notify.Read(buf)
	require.NoError(t, err)
	assert.Contains(t, string(buf[:n]), "READY=1", "sd_notify readiness")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}

func TestUnprivilegedErrorsNameTheCapability(t *testing.T) {
	peertest.Root(t, "switching to an unprivileged user with runuser")
	runuser := peertest.Program(t, "runuser", "util-linux")
	// The test binary's folder is private to root; let the unprivileged user run it.
	require.NoError(t, os.Chmod(filepath.Dir(binary), 0o755))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"tftp on port 69", []string{"tftp", "-root", "/usr/share", "-addr", "127.0.0.1:69"}, "CAP_NET_BIND_SERVICE"},
		{"aoe raw socket", []string{"aoe", "-r", "0", "1", "lo", "/etc/hostname"}, "CAP_NET_RAW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(runuser, append([]string{"-u", "nobody", "--", binary}, tc.args...)...).CombinedOutput()
			require.Error(t, err, "%s", out)
			assert.Contains(t, string(out), tc.want)
			assert.Contains(t, string(out), "run as root or grant")
		})
	}
}

func TestInspectDrawsAProgressBarOnATerminal(t *testing.T) {
	script := peertest.Program(t, "script", "util-linux")
	kisDir := t.TempDir()
	_, err := kistest.Write(kisDir, kistest.Spec{Name: "plain", Image: kistest.Image(2<<20, 3)})
	require.NoError(t, err)

	// On a terminal (script gives the command a pseudo-terminal) the check draws a bar.
	out, err := exec.Command(script, "-qec", binary+" inspect -kis "+kisDir, "/dev/null").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "verifying  [==============================] 100.0%")
	assert.Regexp(t, `md5\s+ok`, string(out))

	// Elsewhere it writes log lines instead.
	out, err = exec.Command(binary, "inspect", "-kis", kisDir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "[===")
	assert.Contains(t, string(out), "msg=verifying")
	assert.Regexp(t, `md5\s+ok`, string(out))
}

func TestStageAndPXECommands(t *testing.T) {
	kisDir, _, spec := fakeBuild(t, []byte("the initrd"))
	tftpRoot := t.TempDir()

	out, err := exec.Command(binary, "stage", "-kis", kisDir, "-tftp-root", tftpRoot, "-per-build").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "boot/leap-diskless.x86_64-1.15.3/linux")
	kernel, err := os.ReadFile(filepath.Join(tftpRoot, "boot", "leap-diskless.x86_64-1.15.3", "linux"))
	require.NoError(t, err)
	assert.Equal(t, spec.Kernel, kernel)
	initrd, err := os.ReadFile(filepath.Join(tftpRoot, "boot", "leap-diskless.x86_64-1.15.3", "initrd"))
	require.NoError(t, err)
	assert.Equal(t, []byte("the initrd"), initrd)

	out, err = exec.Command(binary, "pxe", "-tftp-root", tftpRoot, "-aoe", "e2.5", "-overlay-size", "25%",
		"-mac", "52:54:00:00:00:01", "-ip", "192.0.2.0/24", "-kernel-path", "boot/leap-diskless.x86_64-1.15.3/linux",
		"-initrd-path", "boot/leap-diskless.x86_64-1.15.3/initrd").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, name := range []string{"01-52-54-00-00-00-01", "C00002"} {
		b, err := os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", name))
		require.NoError(t, err, "per-client file %s", name)
		assert.Contains(t, string(b), "root=overlay:aoe=e2.5")
		assert.Contains(t, string(b), "rd.root.overlay.size=25%")
		assert.Contains(t, string(b), "rd.driver.pre=aoe")
		assert.Contains(t, string(b), "LINUX boot/leap-diskless.x86_64-1.15.3/linux")
	}
	_, err = os.Stat(filepath.Join(tftpRoot, "pxelinux.cfg", "default"))
	assert.ErrorIs(t, err, os.ErrNotExist, "per-client files replace the default")

	out, err = exec.Command(binary, "pxe", "-tftp-root", tftpRoot, "-aoe", "eth0").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "eth0")
}

// smallBuild writes a small uncompressed build of leap-diskless (cheaper than fakeBuild's
// compressed one: the xz encoder is slow on a loaded machine).
func smallBuild(t *testing.T, dir, version string, seed uint64) kistest.Spec {
	t.Helper()
	spec := kistest.Spec{Name: "leap-diskless", Version: version, Image: kistest.Image(256<<10, seed),
		Append: "root=UUID=4b3c6f27-0000 rd.kiwi.custom=1 quiet"}
	_, err := kistest.Write(dir, spec)
	require.NoError(t, err)
	return spec
}

func TestServeSIGHUPRollsForward(t *testing.T) {
	kisDir := t.TempDir()
	smallBuild(t, kisDir, "1.15.3", 42)
	tftpRoot := t.TempDir()
	p := start(t, serveArgs(kisDir, tftpRoot, "-no-bootloader", "-grace", "200ms")...)
	p.waitLog(t, `msg=ready`)
	const v1, v2 = "leap-diskless.x86_64-1.15.3", "leap-diskless.x86_64-1.15.4"
	cfg, err := os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", "default"))
	require.NoError(t, err)
	assert.Contains(t, string(cfg), "nbd=127.0.0.1:"+v1)

	smallBuild(t, kisDir, "1.15.4", 43)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitLog(t, `msg="serving build" build=`+regexp.QuoteMeta(v2))
	cfg, err = os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", "default"))
	require.NoError(t, err)
	assert.Contains(t, string(cfg), "nbd=127.0.0.1:"+v2, "new boots get the new build")
	assert.Contains(t, string(cfg), "LINUX boot/"+v2+"/linux")
	p.waitLog(t, `msg="build retired" build=`+regexp.QuoteMeta(v1))

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t), "SIGHUP does not end the server")
}

func TestServeChoosesAmongImages(t *testing.T) {
	kisDir := t.TempDir()
	for _, s := range []kistest.Spec{
		{Name: "leap", Version: "1.0.0"}, {Name: "leap", Version: "1.2.0"},
		{Name: "leap", Arch: "aarch64", Version: "9.0.0"}, {Name: "tw", Version: "2.0.0"},
	} {
		_, err := kistest.Write(kisDir, s)
		require.NoError(t, err)
	}
	args := func(extra ...string) []string {
		return serveArgs(kisDir, t.TempDir(), append([]string{"-no-bootloader", "-arch", "x86_64"}, extra...)...)
	}
	// A second KIWI output folder: its images count too.
	other := t.TempDir()
	_, err := kistest.Write(other, kistest.Spec{Name: "sles", Version: "15.6.0"})
	require.NoError(t, err)
	out, err := exec.Command(binary, args("-kis", other)...).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "several images for x86_64: leap, sles, tw")

	for _, tc := range []struct{ name, want string }{
		{"leap", "leap.x86_64-1.2.0"},              // newest of the name and arch, never aarch64's 9.0.0
		{"leap.x86_64-1.0.0", "leap.x86_64-1.0.0"}, // the build ID inspect prints
		{"sles", "sles.x86_64-15.6.0"},             // from the second folder
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, args("-kis", other, "-name", tc.name)...)
			p.waitLog(t, `msg="serving build" build=`+regexp.QuoteMeta(tc.want))
			p.waitLog(t, `msg=ready`)
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			assert.NoError(t, p.wait(t))
		})
	}
}

func TestServeMachinesFileAndForeignConfigs(t *testing.T) {
	kisDir := t.TempDir()
	smallBuild(t, kisDir, "1.15.3", 42)
	tftpRoot := t.TempDir()
	def := filepath.Join(tftpRoot, "pxelinux.cfg", "default")
	require.NoError(t, os.MkdirAll(filepath.Dir(def), 0o755))
	require.NoError(t, os.WriteFile(def, []byte("DEFAULT local\n"), 0o644))
	machines := filepath.Join(t.TempDir(), "machines.toml")
	require.NoError(t, os.WriteFile(machines, []byte("[[machine]]\nmac = \"52:54:00:12:34:56\"\nappend = \"console=ttyS1\"\n"), 0o644))
	args := serveArgs(kisDir, tftpRoot, "-no-bootloader", "-machines", machines)

	out, err := exec.Command(binary, args...).CombinedOutput()
	require.Error(t, err, "%s", out)
	assert.Contains(t, string(out), def+" was not written by netroot")

	p := start(t, append(args, "-force")...)
	p.waitLog(t, `msg=ready`)
	for _, f := range []string{"pxelinux.cfg/01-52-54-00-12-34-56", "grub/grub.cfg-01-52-54-00-12-34-56", "boot-01-52-54-00-12-34-56.ipxe"} {
		b, err := os.ReadFile(filepath.Join(tftpRoot, f))
		require.NoError(t, err, f)
		assert.Contains(t, string(b), "console=ttyS1", f)
		assert.Contains(t, string(b), "# Written by netroot", f)
	}
	b, err := os.ReadFile(def)
	require.NoError(t, err)
	assert.Contains(t, string(b), "root=overlay:nbd=127.0.0.1:leap-diskless.x86_64-1.15.3", "-force replaced the foreign default")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}
