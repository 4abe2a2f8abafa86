package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
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
			hs, ds, err := tc.flags.services(e, ip, t.TempDir())
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
	err := b.installSignedLoaders(e, root, "/", true)
	assert.ErrorContains(t, err, "has no shim")
	assert.ErrorContains(t, err, "(or pass -efi-loaders DIR)")
	require.NoError(t, b.installSignedLoaders(e, root, "/", false))
	assert.Contains(t, logs.String(), "signed UEFI boot loaders missing")
}
