package pxecfg_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/pxecfg"
)

// tftpRoot serves dir with tftpd-hpa on a loopback port, running as nobody, so files that the
// real daemon cannot read fail the test.
type tftpRoot struct {
	t    *testing.T
	dir  string
	addr string
	curl string
}

func startTFTPD(t *testing.T, dir string) *tftpRoot {
	t.Helper()
	tftpd := peertest.Program(t, "in.tftpd", "tftpd-hpa")
	curl := peertest.Program(t, "curl", "curl")
	peertest.Root(t, "tftpd-hpa drops privileges to the user nobody")

	// Find a free loopback port; tftpd binds it right after.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	require.NoError(t, pc.Close())

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, tftpd, "--foreground", "--listen", "--address", addr,
		"--user", "nobody", "--secure", "--verbose", dir)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("tftpd output:\n%s", logs.String())
		}
	})
	r := &tftpRoot{t: t, dir: dir, addr: addr, curl: curl}
	// Wait until the daemon answers (bounded: 50 tries of 100 ms).
	for i := 0; ; i++ {
		if _, err := r.get("no-such-file"); errors.Is(err, errNotFound) {
			break
		}
		require.Less(t, i, 50, "tftpd did not answer on %s", addr)
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

var errNotFound = errors.New("tftp: file not found")

// get fetches name over TFTP with curl; errNotFound is TFTP error 1, which pxelinux expects for
// every configuration name it tries before the one that exists.
func (r *tftpRoot) get(name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.curl, "--silent", "--show-error", "--max-time", "5", "tftp://"+r.addr+"/"+name)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 68 { // CURLE_TFTP_NOTFOUND
		return nil, errNotFound
	}
	if err != nil {
		return nil, errors.New(err.Error() + ": " + errb.String())
	}
	return out.Bytes(), nil
}

// must fetches name and checks it has the content of the file in the tree.
func (r *tftpRoot) must(name string) []byte {
	r.t.Helper()
	got, err := r.get(name)
	require.NoError(r.t, err, "TFTP %s", name)
	want, err := os.ReadFile(filepath.Join(r.dir, filepath.FromSlash(name)))
	require.NoError(r.t, err)
	require.True(r.t, bytes.Equal(want, got), "TFTP %s: %d bytes, file has %d", name, len(got), len(want))
	return got
}

// module fetches a COM32 module from dir and, like ldlinux, the libraries it links against,
// which ldlinux looks up in its own folder.
func (r *tftpRoot) module(dir, name string, fetched map[string]bool) {
	r.t.Helper()
	if fetched[name] {
		return
	}
	fetched[name] = true
	data := r.must(path.Join(dir, name))
	f, err := elf.NewFile(bytes.NewReader(data))
	require.NoError(r.t, err, "module %s", name)
	libs, err := f.ImportedLibraries()
	require.NoError(r.t, err)
	for _, l := range libs {
		r.module(dir, l, fetched)
	}
}

// TestTFTPRootComplete writes a TFTP root for BIOS and UEFI clients with the real boot loader
// files from Debian and checks, through a real TFTP server, that every file pxelinux and
// syslinux.efi ask for, in their order, is there and readable: the loader, its core module, the
// per-client or default configuration, the menu module and its libraries, the kernel and the
// initrds. It boots nothing.
func TestTFTPRootComplete(t *testing.T) {
	peertest.File(t, "/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
	peertest.File(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")
	peertest.File(t, "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi", "syslinux-efi")

	root := t.TempDir()
	// The daemon runs as nobody: let it through the test's private temporary folders.
	require.NoError(t, os.Chmod(root, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(root), 0o755))

	hostA := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	cfg := netrootConfig()
	cfg.UI = "vesamenu.c32"
	hostCfg := &pxecfg.Config{
		Default: "leap",
		Entries: []pxecfg.Entry{pxecfg.NetbootEntry("leap", "boot/linux", []string{"boot/initrd"}, "root=overlay:nbd=192.0.2.1:host-a rd.driver.pre=nbd")},
	}
	for _, fw := range []struct {
		dir  string
		fw   pxecfg.Firmware
		core string // the core module the loader asks for first
	}{{"bios", pxecfg.BIOS, "ldlinux.c32"}, {"efi64", pxecfg.UEFI64, "ldlinux.e64"}} {
		dir := filepath.Join(root, fw.dir)
		files, err := pxecfg.BootFiles(fw.fw, cfg)
		require.NoError(t, err)
		copied, err := pxecfg.InstallBootFiles(dir, files)
		require.NoError(t, err)
		assert.Contains(t, copied, fw.core)
		_, err = pxecfg.WriteDir(dir, cfg, &pxecfg.DirOptions{Formats: pxecfg.FormatPXELinux})
		require.NoError(t, err)
		_, err = pxecfg.WriteDir(dir, hostCfg, &pxecfg.DirOptions{Clients: []pxecfg.Client{{MAC: hostA}}})
		require.NoError(t, err)
		// The kernel and initrds are staged by the caller (package kis); stand-ins here.
		for _, f := range []string{"boot/linux", "boot/initrd", "boot/extra.img"} {
			p := filepath.Join(dir, f)
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, []byte("stand-in for "+f), 0o644))
		}
	}
	// syslinux.efi names its core module in the clear (pxelinux.0 is compressed).
	efi, err := os.ReadFile(filepath.Join(root, "efi64", "syslinux.efi"))
	require.NoError(t, err)
	require.True(t, bytes.Contains(efi, []byte("ldlinux.e64")), "syslinux.efi loads ldlinux.e64")
	require.True(t, bytes.Contains(efi, []byte("pxelinux.cfg")), "syslinux.efi reads pxelinux.cfg/")

	srv := startTFTPD(t, root)
	for _, tc := range []struct {
		name, dir, loader, core string
		mac                     net.HardwareAddr
		ip                      netip.Addr
		wantConfig              string
	}{
		{"bios host with its own file", "bios", "pxelinux.0", "ldlinux.c32", hostA, netip.MustParseAddr("192.0.2.100"), "pxelinux.cfg/01-52-54-00-12-34-56"},
		{"bios host on default", "bios", "pxelinux.0", "ldlinux.c32", net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, netip.MustParseAddr("192.0.2.101"), "pxelinux.cfg/default"},
		{"efi64 host with its own file", "efi64", "syslinux.efi", "ldlinux.e64", hostA, netip.MustParseAddr("192.0.2.100"), "pxelinux.cfg/01-52-54-00-12-34-56"},
		{"efi64 host on default", "efi64", "syslinux.efi", "ldlinux.e64", net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}, netip.MustParseAddr("198.51.100.7"), "pxelinux.cfg/default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := func(n string) string { return path.Join(tc.dir, n) }
			srv.t = t
			srv.must(in(tc.loader))
			srv.must(in(tc.core))
			var cfgName string
			var data []byte
			for _, n := range pxecfg.ConfigNames("", tc.mac, tc.ip) {
				got, err := srv.get(in(n))
				if errors.Is(err, errNotFound) {
					continue
				}
				require.NoError(t, err)
				cfgName, data = n, got
				break
			}
			require.Equal(t, tc.wantConfig, cfgName, "first configuration found in pxelinux's order")
			c, err := pxecfg.Parse(bytes.NewReader(data))
			require.NoError(t, err)
			fetched := map[string]bool{}
			if c.UI != "" {
				srv.module(tc.dir, c.UI, fetched)
				assert.True(t, fetched["libutil.c32"] && fetched["libcom32.c32"], "vesamenu.c32's libraries, read from its ELF header: %v", fetched)
			}
			e, ok := c.Lookup(c.Default)
			require.True(t, ok, "DEFAULT %q is a label", c.Default)
			srv.must(in(e.Kernel))
			for _, i := range e.Initrds {
				srv.must(in(i))
			}
			for _, e := range c.Entries {
				if e.Kernel != "" {
					srv.must(in(e.Kernel))
				}
			}
		})
	}
	t.Run("missing loader names its package", func(t *testing.T) {
		_, err := pxecfg.InstallBootFiles(t.TempDir(), []pxecfg.BootFile{{Name: "pxelinux.0", Source: "/nonexistent/pxelinux.0", Package: "pxelinux"}})
		assert.ErrorContains(t, err, "Debian package pxelinux")
	})
}

// TestGRUBScriptCheck runs GRUB's own parser (grub-script-check) on the GRUB configurations
// the writer produces, including titles and arguments that need quoting.
func TestGRUBScriptCheck(t *testing.T) {
	check := peertest.Program(t, "grub-script-check", "grub-common")
	tricky := netrootConfig()
	tricky.Entries = append(tricky.Entries,
		pxecfg.NetbootEntry("quotes", "boot/it's/linux", []string{"boot/$a{b}/initrd"},
			`"msg=a;b {c} $d" x=|y| plain`),
		pxecfg.Entry{Label: "title", MenuLabel: `It's "${x}" & {braces} # hash`, Kernel: "k", Append: "a=b"},
	)
	// The checker does reject what naive quoting would produce.
	bad := filepath.Join(t.TempDir(), "bad.cfg")
	require.NoError(t, os.WriteFile(bad, []byte("menuentry It's {\n\tlinux /k\n}\n"), 0o644))
	require.Error(t, exec.Command(check, bad).Run(), "grub-script-check accepts an unbalanced quote")

	for name, c := range map[string]*pxecfg.Config{"netroot": netrootConfig(), "tricky": tricky, "site": parseSite(t)} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, pxecfg.WriteGRUB(&b, c))
			p := filepath.Join(t.TempDir(), "grub.cfg")
			require.NoError(t, os.WriteFile(p, b.Bytes(), 0o644))
			out, err := exec.Command(check, p).CombinedOutput()
			require.NoError(t, err, "grub-script-check:\n%s\nconfig:\n%s", out, b.String())
		})
	}
}
