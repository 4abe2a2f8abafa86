package dhcp

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	serverAddr = netip.MustParseAddr("192.0.2.1")
	clientMAC  = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	testNow    = time.Now() // leases are counted in Stats by the real clock
)

func TestFirmwareOf(t *testing.T) {
	for _, tc := range []struct {
		arch iana.Arch
		want Firmware
	}{
		{0, FirmwareBIOS},
		{1, FirmwareUnknown}, // NEC PC98
		{2, FirmwareUnknown}, // Itanium
		{6, FirmwareEFIX64},
		{7, FirmwareEFIX64},
		{9, FirmwareEFIX64},
		{10, FirmwareUnknown}, // ARM32 UEFI
		{11, FirmwareEFIARM64},
		{15, FirmwareUnknown}, // x86 UEFI HTTP
		{16, FirmwareEFIX64HTTP},
		{19, FirmwareEFIARM64HTTP},
		{20, FirmwareUnknown},
		{0xffff, FirmwareUnknown},
	} {
		t.Run(tc.arch.String(), func(t *testing.T) {
			assert.Equal(t, tc.want, FirmwareOf(tc.arch))
			assert.Equal(t, tc.arch == 16 || tc.arch == 19, FirmwareOf(tc.arch).HTTP())
		})
	}
}

func TestArchFromClass(t *testing.T) {
	for _, tc := range []struct {
		class string
		arch  iana.Arch
		ok    bool
	}{
		{"PXEClient:Arch:00000:UNDI:002001", 0, true},
		{"PXEClient:Arch:00007:UNDI:003016", 7, true},
		{"HTTPClient:Arch:00016:UNDI:003001", 16, true},
		{"PXEClient", 0, false},
		{"PXEClient:Arch:7:UNDI:003016", 0, false},
		{"PXEClient:Arch:99999:UNDI:003016", 0, false},
		{"PXEClient:Arch:0000x", 0, false},
	} {
		t.Run(tc.class, func(t *testing.T) {
			a, ok := archFromClass(tc.class)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.arch, a)
		})
	}
}

func TestParseLoader(t *testing.T) {
	for l := LoaderAuto; l <= LoaderIPXE; l++ {
		got, ok := ParseLoader(l.String())
		require.True(t, ok, l.String())
		assert.Equal(t, l, got)
	}
	got, ok := ParseLoader("")
	assert.True(t, ok)
	assert.Equal(t, LoaderAuto, got)
	_, ok = ParseLoader("grub2")
	assert.False(t, ok)
}

// request builds a client message with a fixed transaction ID.
func request(t testing.TB, mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0xde, 0xad, 0xbe, 0xef}),
		dhcpv4.WithHwAddr(clientMAC),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithMessageType(mt),
	}, mods...)...)
	require.NoError(t, err)
	return d
}

func pxe(arch iana.Arch, class string) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier,
			append([]byte{0}, 0x8f, 0x6e, 0x4a, 0x1e, 0x2b, 0x7c, 0x4d, 0x3a, 0x9a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77)),
	}
}

func TestGoldenReplies(t *testing.T) {
	bios := pxe(0, "PXEClient:Arch:00000:UNDI:002001")
	efi := pxe(7, "PXEClient:Arch:00007:UNDI:003016")
	for _, tc := range []struct {
		name   string
		srv    *Server
		req    *dhcpv4.DHCPv4
		port   int
		from   string
		to     string
		file   string
		yiaddr string
	}{
		{"proxy-bios-offer", &Server{}, request(t, dhcpv4.MessageTypeDiscover, bios...), 67, "0.0.0.0:68", "255.255.255.255:68", "pxelinux.0", "0.0.0.0"},
		{"proxy-efi-x64-offer", &Server{}, request(t, dhcpv4.MessageTypeDiscover, efi...), 67, "0.0.0.0:68", "255.255.255.255:68", "bootx64.efi", "0.0.0.0"},
		{"proxy-efi-x64-ack-4011", &Server{}, request(t, dhcpv4.MessageTypeRequest, append(efi, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 100)))...), 4011, "192.0.2.100:68", "192.0.2.100:68", "bootx64.efi", "0.0.0.0"},
		{"proxy-http-x64-offer", &Server{}, request(t, dhcpv4.MessageTypeDiscover, pxe(16, "HTTPClient:Arch:00016:UNDI:003001")...), 67, "0.0.0.0:68", "255.255.255.255:68", "http://192.0.2.1/bootx64.efi", "0.0.0.0"},
		{"proxy-arm64-offer", &Server{Loaders: Loaders{ShimARM64: "arm64/bootaa64.efi"}}, request(t, dhcpv4.MessageTypeDiscover, pxe(11, "PXEClient:Arch:00011:UNDI:003000")...), 67, "0.0.0.0:68", "255.255.255.255:68", "arm64/bootaa64.efi", "0.0.0.0"},
		{"proxy-ipxe-offer", &Server{HTTPURL: "http://192.0.2.1:8080/"}, request(t, dhcpv4.MessageTypeDiscover, append(bios, dhcpv4.WithUserClass("iPXE", false))...), 67, "0.0.0.0:68", "255.255.255.255:68", "http://192.0.2.1:8080/boot.ipxe", "0.0.0.0"},
		{"proxy-relayed-offer", &Server{}, request(t, dhcpv4.MessageTypeDiscover, append(efi, dhcpv4.WithGatewayIP(net.IPv4(198, 51, 100, 1)))...), 67, "198.51.100.1:67", "198.51.100.1:67", "bootx64.efi", "0.0.0.0"},
		{"machine-ipxe-chain", &Server{Loaders: Loaders{IPXEBIOS: "undionly.kpxe"}, Machine: func(c *Client) Loader { return LoaderIPXE }}, request(t, dhcpv4.MessageTypeDiscover, bios...), 67, "0.0.0.0:68", "255.255.255.255:68", "undionly.kpxe", "0.0.0.0"},
		// The loader choices for UEFI: iPXE instead of shim, for PXE by EFILoader, for HTTP boot
		// whenever an iPXE binary is named, unless the machine says shim.
		{"proxy-efi-x64-ipxe-offer", &Server{EFILoader: LoaderIPXE, Loaders: Loaders{IPXEX64: "snponly.efi"}}, request(t, dhcpv4.MessageTypeDiscover, efi...), 67, "0.0.0.0:68", "255.255.255.255:68", "snponly.efi", "0.0.0.0"},
		{"proxy-efi-x64-ipxe-ack-4011", &Server{EFILoader: LoaderIPXE, Loaders: Loaders{IPXEX64: "snponly.efi"}}, request(t, dhcpv4.MessageTypeRequest, append(efi, dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 100)))...), 4011, "192.0.2.100:68", "192.0.2.100:68", "snponly.efi", "0.0.0.0"},
		{"proxy-efi-x64-shim-with-ipxe-offer", &Server{EFILoader: LoaderShim, Loaders: Loaders{IPXEX64: "snponly.efi"}}, request(t, dhcpv4.MessageTypeDiscover, efi...), 67, "0.0.0.0:68", "255.255.255.255:68", "bootx64.efi", "0.0.0.0"},
		{"proxy-efi-x64-ipxe-client-offer", &Server{EFILoader: LoaderIPXE, Loaders: Loaders{IPXEX64: "snponly.efi"}}, request(t, dhcpv4.MessageTypeDiscover, append(pxe(7, "PXEClient:Arch:00007:UNDI:003010"), dhcpv4.WithUserClass("iPXE", false))...), 67, "0.0.0.0:68", "255.255.255.255:68", "http://192.0.2.1/boot.ipxe", "0.0.0.0"},
		{"proxy-http-x64-ipxe-offer", &Server{HTTPURL: "http://192.0.2.1:8080", Loaders: Loaders{IPXEX64: "snponly.efi"}}, request(t, dhcpv4.MessageTypeDiscover, pxe(16, "HTTPClient:Arch:00016:UNDI:003001")...), 67, "0.0.0.0:68", "255.255.255.255:68", "http://192.0.2.1:8080/snponly.efi", "0.0.0.0"},
		{"machine-shim-http-offer", &Server{HTTPURL: "http://192.0.2.1:8080", Loaders: Loaders{IPXEX64: "snponly.efi"}, Machine: func(*Client) Loader { return LoaderShim }}, request(t, dhcpv4.MessageTypeDiscover, pxe(16, "HTTPClient:Arch:00016:UNDI:003001")...), 67, "0.0.0.0:68", "255.255.255.255:68", "http://192.0.2.1:8080/bootx64.efi", "0.0.0.0"},
		{"machine-ipxe-efi-offer", &Server{Loaders: Loaders{IPXEX64: "snponly.efi"}, Machine: func(*Client) Loader { return LoaderIPXE }}, request(t, dhcpv4.MessageTypeDiscover, efi...), 67, "0.0.0.0:68", "255.255.255.255:68", "snponly.efi", "0.0.0.0"},
		{"machine-pxelinux-bios-offer", &Server{EFILoader: LoaderIPXE, Loaders: Loaders{IPXEX64: "snponly.efi", IPXEBIOS: "undionly.kpxe"}, Machine: func(*Client) Loader { return LoaderPXELinux }}, request(t, dhcpv4.MessageTypeDiscover, bios...), 67, "0.0.0.0:68", "255.255.255.255:68", "pxelinux.0", "0.0.0.0"},
		{"lab-efi-offer", &Server{Lab: &Lab{Subnet: netip.MustParsePrefix("192.0.2.0/24"), Start: netip.MustParseAddr("192.0.2.100"), End: netip.MustParseAddr("192.0.2.110"), Router: serverAddr, DNS: []netip.Addr{serverAddr}}}, request(t, dhcpv4.MessageTypeDiscover, efi...), 67, "0.0.0.0:68", "255.255.255.255:68", "bootx64.efi", "192.0.2.100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.srv
			s.Addr = serverAddr
			require.NoError(t, s.init())
			reply, to := s.handle(tc.req.ToBytes(), tc.port, netip.MustParseAddrPort(tc.from), testNow)
			require.NotNil(t, reply)
			assert.Equal(t, tc.to, to.String())
			assert.Equal(t, tc.file, reply.BootFileName)
			assert.Equal(t, tc.yiaddr, reply.YourIPAddr.String())
			assert.Equal(t, "192.0.2.1", reply.ServerIdentifier().String())
			assert.Equal(t, tc.req.TransactionID, reply.TransactionID)
			assert.Equal(t, clientMAC, reply.ClientHWAddr)
			if tc.req.ClassIdentifier() != "" {
				// The offer echoes the client's class and its UUID.
				assert.Equal(t, strings.SplitN(tc.req.ClassIdentifier(), ":", 2)[0], reply.ClassIdentifier())
				assert.Equal(t, tc.req.GetOneOption(dhcpv4.OptionClientMachineIdentifier), reply.GetOneOption(dhcpv4.OptionClientMachineIdentifier))
			}
			golden(t, filepath.Join("testdata", tc.name+".golden"), reply.ToBytes())
		})
	}
}

// golden compares b's hex dump with the file, or rewrites the file under -update.
func golden(t *testing.T, path string, b []byte) {
	t.Helper()
	got := hex.Dump(b)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), got)
}

func TestNotAnswered(t *testing.T) {
	efi := pxe(7, "PXEClient:Arch:00007:UNDI:003016")
	for _, tc := range []struct {
		name string
		srv  *Server
		b    []byte
		port int
	}{
		{"plain dhcp client", &Server{}, request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("udhcp 1.35.0"))).ToBytes(), 67},
		{"no vendor class", &Server{}, request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClientArch(7))).ToBytes(), 67},
		{"vendor class not a prefix", &Server{}, request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("XPXEClient:Arch:00007"))).ToBytes(), 67},
		{"request on port 67", &Server{}, request(t, dhcpv4.MessageTypeRequest, efi...).ToBytes(), 67},
		{"discover on port 4011", &Server{}, request(t, dhcpv4.MessageTypeDiscover, efi...).ToBytes(), 4011},
		{"release", &Server{}, request(t, dhcpv4.MessageTypeRelease, efi...).ToBytes(), 4011},
		{"itanium", &Server{}, request(t, dhcpv4.MessageTypeDiscover, pxe(2, "PXEClient:Arch:00002:UNDI:003000")...).ToBytes(), 67},
		{"arm64 without shim", &Server{}, request(t, dhcpv4.MessageTypeDiscover, pxe(11, "PXEClient:Arch:00011:UNDI:003000")...).ToBytes(), 67},
		{"no architecture", &Server{}, request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient"))).ToBytes(), 67},
		{"machine none", &Server{Machine: func(*Client) Loader { return LoaderNone }}, request(t, dhcpv4.MessageTypeDiscover, efi...).ToBytes(), 67},
		{"machine pxelinux on uefi", &Server{Machine: func(*Client) Loader { return LoaderPXELinux }}, request(t, dhcpv4.MessageTypeDiscover, efi...).ToBytes(), 67},
		{"bootreply", &Server{}, func() []byte {
			d := request(t, dhcpv4.MessageTypeDiscover, efi...)
			d.OpCode = dhcpv4.OpcodeBootReply
			return d.ToBytes()
		}(), 67},
		{"short", &Server{}, []byte{1, 1, 6, 0}, 67},
		{"bad cookie", &Server{}, func() []byte { b := request(t, dhcpv4.MessageTypeDiscover, efi...).ToBytes(); b[236] = 0; return b }(), 67},
		{"empty", &Server{}, nil, 67},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.srv
			s.Addr = serverAddr
			reply, _ := answer(s, tc.b, tc.port)
			assert.Nil(t, reply)
			st := s.Stats()
			assert.Equal(t, uint64(1), st.Ignored+st.Malformed)
			assert.Zero(t, st.Offers+st.Acks+st.Naks)
		})
	}
}

// answer runs one packet through s's handler.
func answer(s *Server, b []byte, port int) (*dhcpv4.DHCPv4, netip.AddrPort) {
	if err := s.init(); err != nil {
		panic(err)
	}
	return s.handle(b, port, netip.MustParseAddrPort("0.0.0.0:68"), testNow)
}

func TestMachineHookSeesClient(t *testing.T) {
	var got *Client
	s := &Server{Addr: serverAddr, Machine: func(c *Client) Loader { got = c; return LoaderAuto }}
	reply, _ := answer(s, request(t, dhcpv4.MessageTypeDiscover, pxe(16, "HTTPClient:Arch:00016:UNDI:003001")...).ToBytes(), 67)
	require.NotNil(t, reply)
	require.NotNil(t, got)
	assert.Equal(t, clientMAC, got.MAC)
	assert.Equal(t, iana.Arch(16), got.Arch)
	assert.Equal(t, FirmwareEFIX64HTTP, got.Firmware)
	assert.True(t, got.HTTPClient())
	assert.False(t, got.IPXE)
	// An HTTP boot client gets no PXE vendor options.
	assert.Nil(t, reply.GetOneOption(dhcpv4.OptionVendorSpecificInformation))
	assert.Equal(t, "HTTPClient", reply.ClassIdentifier())
}

func TestPXEVendorOptions(t *testing.T) {
	s := &Server{Addr: serverAddr}
	reply, _ := answer(s, request(t, dhcpv4.MessageTypeDiscover, pxe(7, "PXEClient:Arch:00007:UNDI:003016")...).ToBytes(), 67)
	require.NotNil(t, reply)
	// Tag 6 (discovery control), length 1, bit 3: boot from the offer's file; then the end tag.
	assert.Equal(t, []byte{6, 1, 8, 255}, reply.GetOneOption(dhcpv4.OptionVendorSpecificInformation))
	assert.Equal(t, "192.0.2.1", reply.ServerIPAddr.String())
	assert.Equal(t, dhcpv4.MessageTypeOffer, reply.MessageType())
}

func labServer(t *testing.T, leaseFile string) *Server {
	s := &Server{Addr: serverAddr, Lab: &Lab{
		Subnet:    netip.MustParsePrefix("192.0.2.0/24"),
		Start:     netip.MustParseAddr("192.0.2.1"), // includes the server's own address, never handed out
		End:       netip.MustParseAddr("192.0.2.3"),
		LeaseFile: leaseFile,
	}}
	require.NoError(t, s.init())
	return s
}

func TestLabLeases(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	s := labServer(t, file)
	mac2 := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	mac3 := net.HardwareAddr{2, 0, 0, 0, 0, 3}

	exchange := func(s *Server, mac net.HardwareAddr) (offer, ack *dhcpv4.DHCPv4) {
		t.Helper()
		d := request(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr(mac))
		offer, _ = s.handle(d.ToBytes(), 67, netip.MustParseAddrPort("0.0.0.0:68"), testNow)
		if offer == nil {
			return nil, nil
		}
		r := request(t, dhcpv4.MessageTypeRequest, dhcpv4.WithHwAddr(mac),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverAddr.AsSlice()))))
		ack, _ = s.handle(r.ToBytes(), 67, netip.MustParseAddrPort("0.0.0.0:68"), testNow)
		return offer, ack
	}

	offer, ack := exchange(s, clientMAC)
	require.NotNil(t, ack)
	assert.Equal(t, dhcpv4.MessageTypeOffer, offer.MessageType())
	assert.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	assert.Equal(t, "192.0.2.2", ack.YourIPAddr.String(), "the server's own address is skipped")
	assert.Equal(t, "ffffff00", ack.SubnetMask().String())
	assert.Equal(t, DefaultLeaseTime, ack.IPAddressLeaseTime(0))
	assert.Empty(t, ack.BootFileName, "not a boot client")

	_, ack = exchange(s, mac2)
	require.NotNil(t, ack)
	assert.Equal(t, "192.0.2.3", ack.YourIPAddr.String())

	offer, _ = exchange(s, mac3)
	assert.Nil(t, offer, "range exhausted")

	// Another server's address is refused.
	r := request(t, dhcpv4.MessageTypeRequest, dhcpv4.WithHwAddr(mac3),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 0, 2, 2))))
	nak, _ := s.handle(r.ToBytes(), 67, netip.MustParseAddrPort("0.0.0.0:68"), testNow)
	require.NotNil(t, nak)
	assert.Equal(t, dhcpv4.MessageTypeNak, nak.MessageType())
	assert.Equal(t, 2, s.Stats().ActiveLeases)

	// A restarted server reads the leases back and gives each client its address again.
	s2 := labServer(t, file)
	assert.Equal(t, 2, s2.Stats().ActiveLeases)
	_, ack = exchange(s2, mac2)
	require.NotNil(t, ack)
	assert.Equal(t, "192.0.2.3", ack.YourIPAddr.String())

	// A release frees the address for the next client.
	rel := request(t, dhcpv4.MessageTypeRelease, dhcpv4.WithHwAddr(clientMAC), dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 2)))
	none, _ := s2.handle(rel.ToBytes(), 67, netip.MustParseAddrPort("192.0.2.2:68"), testNow)
	assert.Nil(t, none)
	_, ack = exchange(s2, mac3)
	require.NotNil(t, ack)
	assert.Equal(t, "192.0.2.2", ack.YourIPAddr.String())

	data, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Contains(t, string(data), mac3.String())
	assert.NotContains(t, string(data), clientMAC.String())
	left, err := filepath.Glob(filepath.Join(filepath.Dir(file), ".*tmp*"))
	require.NoError(t, err)
	assert.Empty(t, left, "no temporary files left behind")
}

func TestLabConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		lab  Lab
		want string
	}{
		{"no subnet", Lab{}, "not an IPv4 prefix"},
		{"outside", Lab{Subnet: netip.MustParsePrefix("192.0.2.0/24"), Start: netip.MustParseAddr("198.51.100.1"), End: netip.MustParseAddr("198.51.100.9")}, "198.51.100.1-198.51.100.9"},
		{"reversed", Lab{Subnet: netip.MustParsePrefix("192.0.2.0/24"), Start: netip.MustParseAddr("192.0.2.9"), End: netip.MustParseAddr("192.0.2.1")}, "ascending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{Addr: serverAddr, Lab: &tc.lab}
			err := s.Serve(newFakeConn(67))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "dhcp: "))
		})
	}
	err := (&Server{}).Serve(newFakeConn(67))
	assert.ErrorContains(t, err, "dhcp: server address invalid IP is not IPv4")
}

func TestEFILoaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  *Server
		want string
	}{
		{"ipxe without binary", &Server{EFILoader: LoaderIPXE}, "dhcp: EFI loader ipxe needs the iPXE UEFI binary's name (Loaders.IPXEX64)"},
		{"pxelinux", &Server{EFILoader: LoaderPXELinux}, "dhcp: EFI loader pxelinux: want shim or ipxe"},
		{"none", &Server{EFILoader: LoaderNone}, "dhcp: EFI loader none: want shim or ipxe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.srv
			s.Addr = serverAddr
			assert.EqualError(t, s.Serve(newFakeConn(67)), tc.want)
		})
	}
	// An HTTP boot client without an iPXE binary falls back to shim; with neither, arm64 HTTP
	// boot clients are not answered.
	s := &Server{Addr: serverAddr}
	reply, _ := answer(s, request(t, dhcpv4.MessageTypeDiscover, pxe(16, "HTTPClient:Arch:00016:UNDI:003001")...).ToBytes(), 67)
	require.NotNil(t, reply)
	assert.Equal(t, "http://192.0.2.1/bootx64.efi", reply.BootFileName)
	reply, _ = answer(s, request(t, dhcpv4.MessageTypeDiscover, pxe(19, "HTTPClient:Arch:00019:UNDI:003001")...).ToBytes(), 67)
	assert.Nil(t, reply)
}

// fakeConn is an in-memory UDP socket: packets written to in are read by the server, and the
// server's replies arrive on out.
type fakeConn struct {
	port   int
	in     chan packet
	out    chan packet
	once   sync.Once
	closed chan struct{}
}

type packet struct {
	b    []byte
	addr netip.AddrPort
}

func newFakeConn(port int) *fakeConn {
	return &fakeConn{port: port, in: make(chan packet, 16), out: make(chan packet, 16), closed: make(chan struct{})}
}

var _ net.PacketConn = (*fakeConn)(nil)

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), net.UDPAddrFromAddrPort(p.addr), nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.out <- packet{append([]byte(nil), b...), addr.(*net.UDPAddr).AddrPort()}
	return len(b), nil
}

func (c *fakeConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4zero, Port: c.port} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

func TestServeShutdown(t *testing.T) {
	s := &Server{Addr: serverAddr}
	c67, c4011 := newFakeConn(67), newFakeConn(4011)
	errs := make(chan error, 2)
	go func() { errs <- s.Serve(c67) }()
	go func() { errs <- s.Serve(c4011) }()

	c67.in <- packet{[]byte("garbage"), netip.MustParseAddrPort("0.0.0.0:68")}
	d := request(t, dhcpv4.MessageTypeDiscover, pxe(0, "PXEClient:Arch:00000:UNDI:002001")...)
	c67.in <- packet{d.ToBytes(), netip.MustParseAddrPort("0.0.0.0:68")}
	p := <-c67.out
	assert.Equal(t, "255.255.255.255:68", p.addr.String())
	offer, err := dhcpv4.FromBytes(p.b)
	require.NoError(t, err)
	assert.Equal(t, "pxelinux.0", offer.BootFileName)

	r := request(t, dhcpv4.MessageTypeRequest, append(pxe(0, "PXEClient:Arch:00000:UNDI:002001"), dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 50)))...)
	c4011.in <- packet{r.ToBytes(), netip.MustParseAddrPort("192.0.2.50:68")}
	p = <-c4011.out
	assert.Equal(t, "192.0.2.50:68", p.addr.String())
	ack, err := dhcpv4.FromBytes(p.b)
	require.NoError(t, err)
	assert.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	assert.Equal(t, "0.0.0.0", ack.YourIPAddr.String())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	for range 2 {
		assert.True(t, errors.Is(<-errs, ErrServerClosed))
	}
	assert.True(t, errors.Is(s.Serve(newFakeConn(67)), ErrServerClosed))
	assert.Equal(t, Stats{Received: 3, Malformed: 1, Offers: 1, Acks: 1}, s.Stats())
}
