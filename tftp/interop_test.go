package tftp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/tftp"
)

// run runs a peer program with a deadline and fails the test with its output on error.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

// interopText is a config file with every kind of line end, for netascii.
var interopText = []byte("DEFAULT linux\nLABEL linux\r\n  KERNEL boot/linux\rAPPEND root=overlay:nbd\n\n")

// interopServer serves binary files around block boundaries and interopText to the peer
// clients, and accepts uploads of up to 1 MiB.
func interopServer(t *testing.T) (dir, upload, addr string, srv *tftp.Server) {
	dir, upload = t.TempDir(), t.TempDir()
	for _, n := range []int{0, 512, 1468 * 7, 300_001} {
		writeFile(t, dir, fmt.Sprintf("bin%d", n), randomBytes(n, uint64(n)))
	}
	writeFile(t, dir, "pxelinux.cfg/default", interopText)
	srv = &tftp.Server{
		Handler:      tftp.FileServer(dir),
		WriteHandler: tftp.UploadServer(upload, &tftp.UploadConfig{MaxSize: 1 << 20}),
		Timeout:      500 * time.Millisecond,
	}
	return dir, upload, serve(t, srv), srv
}

func TestInteropClients(t *testing.T) {
	curl := peertest.Program(t, "curl", "curl")
	hpa := peertest.Program(t, "tftp", "tftp-hpa")
	atftp := peertest.Program(t, "atftp", "atftp")
	_, upload, addr, srv := interopServer(t)
	host, port, _ := net.SplitHostPort(addr)
	out := t.TempDir()

	type tc struct {
		name string
		file string
		prog string
		args func(local string) []string
		want []byte
	}
	var cases []tc
	for _, n := range []int{0, 512, 1468 * 7, 300_001} {
		file := fmt.Sprintf("bin%d", n)
		want := randomBytes(n, uint64(n))
		url := "tftp://" + addr + "/" + file
		for _, blk := range []string{"", "512", "1468", "8192", "65464"} {
			if n == 0 {
				// curl (7.88) always asks for tsize and rejects the RFC-correct "tsize 0" of an
				// empty file (tftpd-hpa gets the same); it fetches one only without options.
				continue
			}
			args := []string{"-sS", "--fail", "-o"}
			name := "curl/" + file + "/default"
			if blk != "" {
				name = "curl/" + file + "/blksize=" + blk
			}
			cases = append(cases, tc{name, file, curl, func(local string) []string {
				a := append(append([]string{}, args...), local)
				if blk != "" {
					a = append(a, "--tftp-blksize", blk)
				}
				return append(a, url)
			}, want})
		}
		cases = append(cases, tc{"curl/" + file + "/no-options", file, curl, func(local string) []string {
			return []string{"-sS", "--fail", "--tftp-no-options", "-o", local, url}
		}, want})
		cases = append(cases, tc{"tftp-hpa/" + file + "/octet", file, hpa, func(local string) []string {
			return []string{"-m", "octet", host, port, "-c", "get", file, local}
		}, want})
		for _, opts := range [][]string{nil, {"blksize 1468"}, {"blksize 1468", "windowsize 16", "tsize 0"}, {"blksize 8192", "windowsize 64"}} {
			name := "atftp/" + file + "/" + strings.ReplaceAll(strings.Join(opts, ","), " ", "=")
			cases = append(cases, tc{name, file, atftp, func(local string) []string {
				a := []string{"-g", "-r", file, "-l", local}
				for _, o := range opts {
					a = append(a, "--option", o)
				}
				return append(a, host, port)
			}, want})
		}
	}
	cases = append(cases,
		tc{"tftp-hpa/netascii", "pxelinux.cfg/default", hpa, func(local string) []string {
			return []string{"-m", "netascii", host, port, "-c", "get", "pxelinux.cfg/default", local}
		}, interopText},
		tc{"curl/subdir", "pxelinux.cfg/default", curl, func(local string) []string {
			return []string{"-sS", "--fail", "-o", local, "tftp://" + addr + "/pxelinux.cfg/default"}
		}, interopText},
	)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			local := filepath.Join(out, strconv.Itoa(i))
			run(t, out, c.prog, c.args(local)...)
			got, err := os.ReadFile(local)
			require.NoError(t, err)
			require.Equal(t, sha256.Sum256(c.want), sha256.Sum256(got), "content of %s", c.file)
		})
	}

	t.Run("missing", func(t *testing.T) {
		cmd := exec.Command(curl, "-sS", "--fail", "-o", filepath.Join(out, "missing"), "tftp://"+addr+"/nope")
		_, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, 68, ee.ExitCode(), "curl's CURLE_TFTP_NOTFOUND")
	})

	t.Run("uploads", func(t *testing.T) {
		content := randomBytes(70_000, 99)
		src := filepath.Join(out, "upload-src")
		require.NoError(t, os.WriteFile(src, content, 0o644))
		run(t, out, curl, "-sS", "--fail", "-T", src, "tftp://"+addr+"/from-curl")
		run(t, out, curl, "-sS", "--fail", "--tftp-blksize", "1468", "-T", src, "tftp://"+addr+"/from-curl-1468")
		run(t, out, hpa, "-m", "octet", host, port, "-c", "put", src, "from-hpa")
		run(t, out, atftp, "-p", "-l", src, "-r", "from-atftp", "--option", "blksize 1468", "--option", "tsize 70000", host, port)
		run(t, out, atftp, "-p", "-l", src, "-r", "from-atftp-w8", "--option", "blksize 1468", "--option", "windowsize 8", host, port)
		for _, name := range []string{"from-curl", "from-curl-1468", "from-hpa", "from-atftp", "from-atftp-w8"} {
			got, err := os.ReadFile(filepath.Join(upload, name))
			require.NoError(t, err, name)
			assert.Equal(t, sha256.Sum256(content), sha256.Sum256(got), name)
		}
		// Over the limit: refused by tsize, or cut off, and nothing left behind.
		big := filepath.Join(out, "big")
		require.NoError(t, os.WriteFile(big, randomBytes(2<<20, 5), 0o644))
		cmd := exec.Command(curl, "-sS", "--fail", "-T", big, "tftp://"+addr+"/too-big")
		_, err := cmd.CombinedOutput()
		require.Error(t, err)
		_, err = os.Stat(filepath.Join(upload, "too-big"))
		assert.ErrorIs(t, err, os.ErrNotExist)
		entries, err := os.ReadDir(upload)
		require.NoError(t, err)
		assert.Len(t, entries, 5, "no temporary files left")
	})
	assert.NotZero(t, srv.Stats().Completed)
}

// TestInteropRollover fetches, with curl at blksize 512, a file that wraps the block number.
func TestInteropRollover(t *testing.T) {
	curl := peertest.Program(t, "curl", "curl")
	const size = 65536*512*2 + 777 // wraps twice
	addr := serve(t, &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(patternReaderAt{size}, size)
	}), Timeout: 500 * time.Millisecond})
	local := filepath.Join(t.TempDir(), "big")
	run(t, "", curl, "-sS", "--fail", "--tftp-blksize", "512", "-o", local, "tftp://"+addr+"/big")
	f, err := os.Open(local)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	require.Equal(t, patternSum(size), [32]byte(h.Sum(nil)))
}

// freePort returns a loopback UDP port that was free a moment ago, for a peer server.
func freePort(t *testing.T) int {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// startPeer runs a peer server as the test's child and stops it when the test ends.
func startPeer(t *testing.T, name string, args ...string) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

// waitReady polls the peer server until it serves name.
func waitReady(t *testing.T, addr, name string) {
	c := &tftp.Client{Timeout: 100 * time.Millisecond, Retries: 1}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := get(t, c, addr, name)
		if err == nil {
			return
		}
		require.True(t, time.Now().Before(deadline), "peer server at %s not ready: %v", addr, err)
		time.Sleep(50 * time.Millisecond)
	}
}

// peerServerFiles fills dir with the files our client fetches from peer servers.
func peerServerFiles(t *testing.T, dir string) map[string][]byte {
	files := map[string][]byte{}
	for _, n := range []int{0, 511, 512, 1468 * 16, 1_000_003} {
		name := fmt.Sprintf("bin%d", n)
		files[name] = randomBytes(n, uint64(n)+7)
		writeFile(t, dir, name, files[name])
	}
	writeFile(t, dir, "ready", []byte("ok"))
	// The peers run as root here but may drop privileges.
	require.NoError(t, os.Chmod(dir, 0o777))
	return files
}

func clientCases(window bool) map[string]tftp.Client {
	cs := map[string]tftp.Client{
		"plain":         {},
		"blksize=1468":  {BlockSize: 1468, TransferSize: true},
		"blksize=8192":  {BlockSize: 8192},
		"blksize=65464": {BlockSize: 65464, TransferSize: true},
		"timeout=2":     {TimeoutOption: 2, TransferSize: true},
	}
	if window {
		cs["blksize=1468,windowsize=16"] = tftp.Client{BlockSize: 1468, WindowSize: 16, TransferSize: true}
		cs["blksize=512,windowsize=64"] = tftp.Client{BlockSize: 512, WindowSize: 64}
	}
	return cs
}

func testClientAgainst(t *testing.T, addr, upDir string, files map[string][]byte, window bool) {
	for name, c := range clientCases(window) {
		t.Run(name, func(t *testing.T) {
			c.Timeout = 500 * time.Millisecond
			for file, want := range files {
				got, info, err := get(t, &c, addr, file)
				require.NoError(t, err, file)
				require.Equal(t, sha256.Sum256(want), sha256.Sum256(got), file)
				if c.TransferSize {
					assert.EqualValues(t, len(want), info.Size, file)
				}
				if c.BlockSize != 0 {
					assert.Equal(t, c.BlockSize, info.BlockSize, file)
				}
				if c.WindowSize != 0 {
					assert.Equal(t, c.WindowSize, info.WindowSize, file)
				}
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, _, err := get(t, &tftp.Client{Timeout: 500 * time.Millisecond}, addr, "no-such-file")
		require.ErrorIs(t, err, tftp.ErrFileNotFound)
	})
	t.Run("put", func(t *testing.T) {
		for name, c := range clientCases(window) {
			c.Timeout = 500 * time.Millisecond
			content := randomBytes(200_000+len(name), 3)
			remote := "up-" + strings.NewReplacer("=", "", ",", "-").Replace(name)
			// tftpd-hpa without -c and atftpd only write files that exist.
			writeFile(t, upDir, remote, nil)
			require.NoError(t, os.Chmod(filepath.Join(upDir, remote), 0o666))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := c.Put(ctx, addr, remote, bytes.NewReader(content), int64(len(content)))
			cancel()
			require.NoError(t, err, name)
			// atftpd acknowledges the last block before it flushes and closes the file.
			want := sha256.Sum256(content)
			var got []byte
			require.Eventually(t, func() bool {
				got, _ = os.ReadFile(filepath.Join(upDir, remote))
				return sha256.Sum256(got) == want
			}, 5*time.Second, 20*time.Millisecond, "%s: uploaded %d bytes, file has %d", name, len(content), len(got))
		}
	})
}

func TestInteropTFTPDHPA(t *testing.T) {
	peertest.Root(t, "in.tftpd chroots into its directory")
	tftpd := peertest.Program(t, "in.tftpd", "tftpd-hpa")
	dir := t.TempDir()
	files := peerServerFiles(t, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startPeer(t, tftpd, "--foreground", "--listen", "--address", addr, "--secure", "--create",
		"--user", "root", "--blocksize", "65464", dir)
	waitReady(t, addr, "ready")
	testClientAgainst(t, addr, dir, files, false)
	t.Run("netascii", func(t *testing.T) {
		writeFile(t, dir, "text", interopText)
		got, _, err := get(t, &tftp.Client{Netascii: true, Timeout: 500 * time.Millisecond}, addr, "text")
		require.NoError(t, err)
		assert.Equal(t, interopText, got)
	})
}

// atftpdPath unpacks Debian's atftpd (which conflicts with tftpd-hpa, so it is not installed)
// into a cache folder and returns its binary. It unpacks into a fresh folder and renames it
// into place, so that concurrent test runs never see half a package.
func atftpdPath(t *testing.T) string {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	parent := filepath.Join(cache, "netroot-tftp-peers")
	dir := filepath.Join(parent, "atftpd")
	bin := filepath.Join(dir, "root", "usr", "sbin", "atftpd")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	aptGet := peertest.Program(t, "apt-get", "apt")
	dpkg := peertest.Program(t, "dpkg", "dpkg")
	require.NoError(t, os.MkdirAll(parent, 0o755))
	tmp, err := os.MkdirTemp(parent, "atftpd-*")
	require.NoError(t, err)
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, aptGet, "download", "atftpd")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		peertest.Missing(t, "apt-get download atftpd failed: "+err.Error()+": "+string(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "atftpd_*.deb"))
	if len(debs) == 0 {
		peertest.Missing(t, "apt-get download atftpd left no .deb in "+tmp)
	}
	if out, err := exec.CommandContext(ctx, dpkg, "-x", debs[0], filepath.Join(tmp, "root")).CombinedOutput(); err != nil {
		peertest.Missing(t, "dpkg -x atftpd: "+err.Error()+": "+string(out))
	}
	// Another run may have won the race; its copy is as good.
	if err := os.Rename(tmp, dir); err != nil {
		_, statErr := os.Stat(bin)
		require.NoError(t, statErr, "rename %s to %s: %v", tmp, dir, err)
	}
	return bin
}

func TestInteropAtftpd(t *testing.T) {
	peertest.Root(t, "atftpd is unpacked into root's cache and switches user")
	atftpd := atftpdPath(t)
	dir := t.TempDir()
	files := peerServerFiles(t, dir)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	startPeer(t, atftpd, "--daemon", "--no-fork", "--port", strconv.Itoa(port), "--bind-address", "127.0.0.1",
		"--user", "root", "--group", "root", "--logfile", "-", "--no-multicast", dir)
	waitReady(t, addr, "ready")
	testClientAgainst(t, addr, dir, files, true)
}
