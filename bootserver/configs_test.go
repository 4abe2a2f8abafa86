package bootserver_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/tftp"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mac(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func TestMachinesGetTheirOwnConfigs(t *testing.T) {
	kisDir := t.TempDir()
	leap := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	tw := writeBuild(t, kisDir, "tw", "2.0.0", 2)
	srv, _ := newServer(t, kisDir)

	// Two images and none chosen: refused, naming both.
	err := srv.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "leap, tw")

	srv.Image = "leap"
	srv.Machines = []bootserver.Machine{
		{MAC: mac("52:54:00:12:34:56"), Image: "tw", Append: "console=ttyS1"},
		{MAC: net.HardwareAddr{0x52, 0x54, 0x00}, Append: "quiet2"},
	}
	run(t, srv)
	const leapID, twID = "leap.x86_64-1.0.0", "tw.x86_64-2.0.0"
	assert.True(t, bytes.Equal(leap, readExport(t, srv, leapID)))
	assert.True(t, bytes.Equal(tw, readExport(t, srv, twID)), "every chosen build is exported by its ID")

	def := readFile(t, srv, "pxelinux.cfg/default")
	assert.Contains(t, def, "nbd=127.0.0.1:"+leapID)
	for _, f := range []string{"pxelinux.cfg/01-52-54-00-12-34-56", "grub/grub.cfg-01-52-54-00-12-34-56", "boot-01-52-54-00-12-34-56.ipxe"} {
		cfg := readFile(t, srv, f)
		assert.Contains(t, cfg, bootserver.Marker, f)
		assert.Contains(t, cfg, "nbd=127.0.0.1:"+twID, f)
		assert.Contains(t, cfg, "console=ttyS1", f)
		assert.Contains(t, cfg, "boot/"+twID+"/linux", f)
	}
	grub := readFile(t, srv, "grub/grub.cfg")
	assert.Contains(t, grub, `if [ "$net_default_mac" = 52:54:00:12:34:56 ]; then configfile /grub/grub.cfg-01-52-54-00-12-34-56; fi`)
	assert.Contains(t, grub, `if regexp '^52:54:00:' "$net_default_mac"; then configfile /grub/grub.cfg-01-$net_default_mac; fi`)
	assert.Less(t, bytes.Index([]byte(grub), []byte("12:34:56")), bytes.Index([]byte(grub), []byte("regexp")), "the exact address is tried before the prefix")
	ipxe := readFile(t, srv, "boot.ipxe")
	assert.Regexp(t, "^#!ipxe\n"+bootserver.Marker, ipxe, "iPXE's signature stays first")
	assert.Contains(t, ipxe, "chain --autofree boot-01-${netX/mac:hexhyp}.ipxe ||")

	// Machines of a prefix group get theirs from the TFTP server, by the names pxelinux and
	// iPXE ask for.
	for _, f := range []string{"pxelinux.cfg/01-52-54-00-aa-bb-cc", "boot-01-52-54-00-aa-bb-cc.ipxe", "/grub/grub.cfg-01-52:54:00:aa:bb:cc"} {
		cfg, err := tftpGet(t, srv, f)
		require.NoError(t, err, f)
		assert.Contains(t, string(cfg), "quiet2", f)
		assert.Contains(t, string(cfg), "nbd=127.0.0.1:"+leapID, f)
	}
	exact, err := tftpGet(t, srv, "pxelinux.cfg/01-52-54-00-12-34-56")
	require.NoError(t, err)
	assert.Contains(t, string(exact), twID, "an exact address wins over its prefix")
	_, err = tftpGet(t, srv, "pxelinux.cfg/01-52-55-00-aa-bb-cc")
	assert.ErrorIs(t, err, tftp.ErrFileNotFound, "other machines fall through to default")
}

func TestNBDHostPlacesMachines(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	// Two replicas; a machine's last byte picks one (store.PickReplica would hash the MAC).
	srv.NBDHost = func(mac net.HardwareAddr) netip.Addr {
		return netip.AddrFrom4([4]byte{198, 51, 100, 10 + mac[5]%2})
	}
	srv.Machines = []bootserver.Machine{{MAC: mac("52:54:00:00:00:03"), Append: "console=ttyS1"}}
	run(t, srv)
	const id = "leap.x86_64-1.0.0"
	assert.Contains(t, readFile(t, srv, "pxelinux.cfg/default"), "nbd=127.0.0.1:"+id, "default: ServerIP")
	assert.Contains(t, readFile(t, srv, "pxelinux.cfg/01-52-54-00-00-00-03"), "nbd=198.51.100.11:"+id)
	for name, host := range map[string]string{
		"pxelinux.cfg/01-52-54-00-00-00-04":  "198.51.100.10",
		"boot-01-52-54-00-00-00-05.ipxe":     "198.51.100.11",
		"grub/grub.cfg-01-52:54:00:00:00:06": "198.51.100.10",
	} {
		cfg, err := tftpGet(t, srv, name)
		require.NoError(t, err, name)
		assert.Contains(t, string(cfg), "nbd="+host+":"+id, name)
		assert.Contains(t, string(cfg), bootserver.Marker, name)
	}
	assert.Contains(t, readFile(t, srv, "grub/grub.cfg"), "configfile /grub/grub.cfg-01-$net_default_mac")
	assert.Contains(t, readFile(t, srv, "boot.ipxe"), "chain --autofree boot-01-${netX/mac:hexhyp}.ipxe ||")
}

func TestForeignConfigsAreKept(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	def := filepath.Join(srv.TFTPRoot, "pxelinux.cfg", "default")
	require.NoError(t, os.MkdirAll(filepath.Dir(def), 0o755))
	require.NoError(t, os.WriteFile(def, []byte("DEFAULT local\n"), 0o644))

	err := srv.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), def, "the error names the file")
	got, _ := os.ReadFile(def)
	assert.Equal(t, "DEFAULT local\n", string(got))

	srv.Force = true // a Run that served nothing may be tried again
	run(t, srv)
	assert.Contains(t, readFile(t, srv, "pxelinux.cfg/default"), bootserver.Marker)
}

func TestStaleConfigsGoAndShadowsAreReported(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.Machines = []bootserver.Machine{{MAC: mac("52:54:00:12:34:56"), Append: "console=ttyS1"}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	require.Eventually(t, func() bool { return srv.ActiveListeners().NBD != nil }, 30e9, 1e7)
	cancel()
	require.NoError(t, <-errc)
	root := srv.TFTPRoot
	require.FileExists(t, filepath.Join(root, "pxelinux.cfg", "01-52-54-00-12-34-56"))
	foreign := filepath.Join(root, "pxelinux.cfg", "01-52-54-00-99-99-99")
	require.NoError(t, os.WriteFile(foreign, []byte("DEFAULT local\n"), 0o644))

	// The next run has no machines: their files go, someone else's stay and are reported.
	var logs syncBuffer
	srv2, _ := newServer(t, kisDir)
	srv2.TFTPRoot = root
	srv2.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	run(t, srv2)
	for _, f := range []string{"pxelinux.cfg/01-52-54-00-12-34-56", "grub/grub.cfg-01-52-54-00-12-34-56", "boot-01-52-54-00-12-34-56.ipxe"} {
		assert.NoFileExists(t, filepath.Join(root, f))
	}
	assert.FileExists(t, foreign)
	assert.Contains(t, logs.String(), "take precedence")
	assert.Contains(t, logs.String(), "pxelinux.cfg/01-52-54-00-99-99-99")
	assert.NotContains(t, readFile(t, srv2, "boot.ipxe"), "chain", "no machines, no dispatch")
}
