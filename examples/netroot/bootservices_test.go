package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/dhcp"
)

func TestBootFlagsServices(t *testing.T) {
	e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ip := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name     string
		flags    bootFlags
		http     string // "" = no HTTP server
		dhcp     bootserver.DHCPMode
		lab      string
		errMatch string
	}{
		{name: "off", flags: bootFlags{dhcp: "off"}},
		{name: "http only", flags: bootFlags{dhcp: "off", httpAddr: ":8080"}, http: ":8080"},
		{name: "proxy", flags: bootFlags{dhcp: "proxy", dhcpIface: "lo"}, http: ":80", dhcp: bootserver.DHCPProxy},
		{name: "server", flags: bootFlags{dhcp: "server", dhcpIface: "lo", dhcpRange: "192.0.2.100-192.0.2.110", httpAddr: ":8080"}, http: ":8080", dhcp: bootserver.DHCPServer, lab: "192.0.2.0/24 192.0.2.100-192.0.2.110"},
		{name: "bad mode", flags: bootFlags{dhcp: "on"}, errMatch: `DHCP mode "on"`},
		{name: "bad loader", flags: bootFlags{dhcp: "proxy", dhcpIface: "lo", loader: "grub"}, errMatch: `-dhcp-loader "grub"`},
		{name: "server without range", flags: bootFlags{dhcp: "server", dhcpIface: "lo"}, errMatch: "-dhcp server needs -dhcp-range"},
		{name: "bad range", flags: bootFlags{dhcp: "server", dhcpIface: "lo", dhcpRange: "192.0.2.9"}, errMatch: "want FIRST-LAST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs, ds, err := tc.flags.services(e, ip, t.TempDir(), nil, false)
			if tc.errMatch != "" {
				assert.ErrorContains(t, err, tc.errMatch)
				return
			}
			require.NoError(t, err)
			if tc.http == "" {
				assert.Nil(t, hs)
			} else {
				require.NotNil(t, hs)
				assert.Equal(t, tc.http, hs.Addr)
			}
			if tc.dhcp == bootserver.DHCPOff {
				assert.Nil(t, ds)
				return
			}
			require.NotNil(t, ds)
			srv := ds.Server()
			assert.Equal(t, ip, srv.Addr)
			assert.Equal(t, "lo", srv.Interface)
			if tc.http == ":80" {
				assert.Equal(t, "http://192.0.2.1", srv.HTTPURL)
			} else {
				assert.Equal(t, "http://192.0.2.1:8080", srv.HTTPURL)
			}
			if tc.lab == "" {
				assert.Nil(t, srv.Lab)
			} else {
				require.NotNil(t, srv.Lab)
				assert.Equal(t, tc.lab, srv.Lab.Subnet.String()+" "+srv.Lab.Start.String()+"-"+srv.Lab.End.String())
			}
		})
	}
}

func TestInstallSignedLoadersFromDir(t *testing.T) {
	var logs bytes.Buffer
	e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(&logs, nil))}
	root := t.TempDir()
	b := bootFlags{efiDir: t.TempDir()}
	err := b.installSignedLoaders(e, root, "/", true, netip.Addr{})
	assert.ErrorContains(t, err, "has no shim")
	assert.ErrorContains(t, err, "(or pass -efi-loaders DIR)")
	require.NoError(t, b.installSignedLoaders(e, root, "/", false, netip.Addr{}))
	assert.Contains(t, logs.String(), "signed UEFI boot loaders missing")
}

func TestBootFlagsLoaders(t *testing.T) {
	e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ip := netip.MustParseAddr("192.0.2.1")
	machines := []bootserver.Machine{
		{MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 1}, Loader: "shim"},
		{MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 2}},
	}
	b := bootFlags{dhcp: "proxy", dhcpIface: "lo", efiLoader: "ipxe"}
	_, _, err := b.services(e, ip, t.TempDir(), machines, false)
	assert.ErrorContains(t, err, "-efi-loader ipxe needs iPXE in the TFTP root")
	_, ds, err := b.services(e, ip, t.TempDir(), machines, true)
	require.NoError(t, err)
	srv := ds.Server()
	assert.Equal(t, dhcp.LoaderIPXE, srv.EFILoader)
	assert.Equal(t, "snponly.efi", srv.Loaders.IPXEX64)
	assert.Equal(t, "undionly.kpxe", srv.Loaders.IPXEBIOS)
	require.NotNil(t, srv.Machine)
	assert.Equal(t, dhcp.LoaderShim, srv.Machine(&dhcp.Client{MAC: machines[0].MAC}))
	assert.Equal(t, dhcp.LoaderAuto, srv.Machine(&dhcp.Client{MAC: machines[1].MAC}))

	b.efiLoader = "shim"
	_, ds, err = b.services(e, ip, t.TempDir(), nil, false)
	require.NoError(t, err)
	assert.Equal(t, dhcp.LoaderShim, ds.Server().EFILoader)
	assert.Empty(t, ds.Server().Loaders.IPXEX64)

	b.efiLoader = "grub"
	_, _, err = b.services(e, ip, t.TempDir(), nil, true)
	assert.EqualError(t, err, `-efi-loader "grub": want shim or ipxe`)
	assert.EqualError(t, b.check(), `-efi-loader "grub": want shim or ipxe`)
	b.efiLoader = "ipxe"
	require.NoError(t, b.check())
	b.dhcp = "on"
	assert.ErrorContains(t, b.check(), `DHCP mode "on"`)
	b.dhcp, b.loader = "proxy", "grub"
	assert.ErrorContains(t, b.check(), `-dhcp-loader "grub"`)
}

func TestInstallIPXE(t *testing.T) {
	var logs bytes.Buffer
	e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(&logs, nil))}
	root, dir := t.TempDir(), t.TempDir()
	b := bootFlags{ipxeDir: dir}
	ok, err := b.installIPXE(e, root, "/", true)
	assert.False(t, ok)
	assert.ErrorContains(t, err, "(or pass -ipxe-loaders DIR)")
	ok, err = b.installIPXE(e, root, "/", false)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.False(t, ipxeInRoot(root))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "snponly.efi"), []byte("efi"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "undionly.kpxe"), []byte("bios"), 0o644))
	ok, err = b.installIPXE(e, root, "/", true)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.True(t, ipxeInRoot(root))
	assert.Contains(t, logs.String(), "installed iPXE")
}

// TestDebianGRUBProxyWarning checks that serve warns when -dhcp proxy would send UEFI PXE
// machines to Debian's GRUB, which ignores a proxyDHCP, and names both ways out; and that it
// does not with -efi-loader ipxe or -dhcp server.
func TestDebianGRUBProxyWarning(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "shimx64.efi.signed"), []byte("shim"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "grubnetx64.efi.signed"), []byte("grub"), 0o644))
	for _, tc := range []struct {
		dhcp, loader string
		warn         bool
	}{
		{"proxy", "shim", true},
		{"proxy", "ipxe", false},
		{"server", "shim", false},
	} {
		t.Run(tc.dhcp+"-"+tc.loader, func(t *testing.T) {
			var logs bytes.Buffer
			e := &env{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(&logs, nil))}
			b := bootFlags{efiDir: dir, dhcp: tc.dhcp, efiLoader: tc.loader}
			require.NoError(t, b.installSignedLoaders(e, t.TempDir(), "/", true, netip.MustParseAddr("192.0.2.1")))
			if !tc.warn {
				assert.NotContains(t, logs.String(), "level=WARN")
				return
			}
			assert.Contains(t, logs.String(), "next-server 192.0.2.1")
			assert.Contains(t, logs.String(), "-efi-loader ipxe")
		})
	}
}
