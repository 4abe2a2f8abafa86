package bootserver

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/dhcp"
)

func TestParseDHCPMode(t *testing.T) {
	for _, m := range []DHCPMode{DHCPOff, DHCPProxy, DHCPServer} {
		got, err := ParseDHCPMode(m.String())
		require.NoError(t, err)
		assert.Equal(t, m, got)
	}
	_, err := ParseDHCPMode("on")
	assert.EqualError(t, err, `bootserver: DHCP mode "on": want off, proxy or server`)
}

func TestParseRange(t *testing.T) {
	a, b, err := ParseRange("192.0.2.100-192.0.2.199")
	require.NoError(t, err)
	assert.Equal(t, "192.0.2.100", a.String())
	assert.Equal(t, "192.0.2.199", b.String())
	for _, bad := range []string{"", "192.0.2.100", "192.0.2.9-192.0.2.1", "fd00::1-fd00::9", "a-b"} {
		_, _, err := ParseRange(bad)
		assert.ErrorContains(t, err, "want FIRST-LAST", bad)
	}
}

func TestMachineLoader(t *testing.T) {
	ms := []DHCPMachine{
		{MAC: net.HardwareAddr{0x52, 0x54, 0x00}, Loader: dhcp.LoaderIPXE},
		{MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}, Loader: dhcp.LoaderNone},
	}
	assert.Equal(t, dhcp.LoaderNone, machineLoader(ms, net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}, dhcp.LoaderAuto))
	assert.Equal(t, dhcp.LoaderIPXE, machineLoader(ms, net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x57}, dhcp.LoaderAuto))
	assert.Equal(t, dhcp.LoaderAuto, machineLoader(ms, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, dhcp.LoaderAuto))
	assert.Equal(t, dhcp.LoaderPXELinux, machineLoader(ms, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, dhcp.LoaderPXELinux))
}

func TestNewDHCPService(t *testing.T) {
	svc, err := NewDHCPService(DHCPOptions{})
	require.NoError(t, err)
	assert.Nil(t, svc, "off")
	_, err = NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "lo"})
	assert.ErrorContains(t, err, "needs the server's IPv4 address")
	_, err = NewDHCPService(DHCPOptions{Mode: DHCPServer, Interface: "lo", ServerIP: netip.MustParseAddr("192.0.2.1")})
	assert.ErrorContains(t, err, "needs an address range")
	_, err = NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "netroot-none0", ServerIP: netip.MustParseAddr("192.0.2.1")})
	assert.ErrorContains(t, err, `DHCP interface "netroot-none0"`)
	svc, err = NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "lo", ServerIP: netip.MustParseAddr("192.0.2.1"),
		Machines: []DHCPMachine{{MAC: net.HardwareAddr{0x52, 0x54, 0x00}, Loader: dhcp.LoaderNone}}})
	require.NoError(t, err)
	assert.Equal(t, "dhcp", svc.Name())
	require.NotNil(t, svc.Server().Machine)
	assert.Equal(t, dhcp.LoaderNone, svc.Server().Machine(&dhcp.Client{MAC: net.HardwareAddr{0x52, 0x54, 0x00, 1, 2, 3}}))
	assert.Nil(t, svc.Server().Lab)
}

func TestDHCPMachines(t *testing.T) {
	ms, err := ParseMachines([]byte(`
[[machine]]
mac = "52:54:00"
loader = "ipxe"

[[machine]]
mac = "52:54:00:12:34:56"
loader = "shim"

[[machine]]
mac = "52:54:00:12:34:57"
image = "other" # no loader: the group's

[[machine]]
mac = "02:00:00:00:00:01"
loader = "none"
`))
	require.NoError(t, err)
	dm, err := DHCPMachines(ms)
	require.NoError(t, err)
	assert.Len(t, dm, 3)
	svc, err := NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "lo", ServerIP: netip.MustParseAddr("192.0.2.1"),
		Loaders: dhcp.Loaders{IPXEX64: "snponly.efi"}, Loader: dhcp.LoaderPXELinux, Machines: dm})
	require.NoError(t, err)
	for mac, want := range map[string]dhcp.Loader{
		"52:54:00:12:34:56": dhcp.LoaderShim,
		"52:54:00:12:34:57": dhcp.LoaderIPXE,
		"52:54:00:ab:cd:ef": dhcp.LoaderIPXE,
		"02:00:00:00:00:01": dhcp.LoaderNone,
		"02:00:00:00:00:02": dhcp.LoaderPXELinux,
	} {
		hw, _ := net.ParseMAC(mac)
		assert.Equal(t, want, svc.Server().Machine(&dhcp.Client{MAC: hw}), mac)
	}
	_, err = DHCPMachines([]Machine{{MAC: net.HardwareAddr{0x52, 0x54, 0}, Loader: "grub"}})
	assert.EqualError(t, err, `bootserver: machine 52:54:00: loader "grub": want auto, pxelinux, shim, ipxe or none`)
}

func TestDHCPServiceEFILoader(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.1")
	_, err := NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "lo", ServerIP: ip, EFILoader: dhcp.LoaderIPXE})
	assert.EqualError(t, err, "bootserver: EFI loader ipxe needs the iPXE UEFI binary (DHCPOptions.Loaders.IPXEX64)")
	_, err = NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "lo", ServerIP: ip, EFILoader: dhcp.LoaderPXELinux})
	assert.EqualError(t, err, `bootserver: EFI loader "pxelinux": want shim or ipxe`)
	svc, err := NewDHCPService(DHCPOptions{Mode: DHCPProxy, Interface: "lo", ServerIP: ip, EFILoader: dhcp.LoaderIPXE, Loaders: dhcp.Loaders{IPXEX64: "snponly.efi"}})
	require.NoError(t, err)
	assert.Equal(t, dhcp.LoaderIPXE, svc.Server().EFILoader)
}
