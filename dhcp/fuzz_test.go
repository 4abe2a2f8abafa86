package dhcp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/stretchr/testify/require"
)

// FuzzHandle feeds arbitrary packets to the proxyDHCP and the lab server. Neither may panic,
// the proxy answers only PXE and HTTP boot clients and never with an address, and every reply
// parses back.
func FuzzHandle(f *testing.F) {
	for _, d := range []*dhcpv4.DHCPv4{
		request(f, dhcpv4.MessageTypeDiscover, pxe(0, "PXEClient:Arch:00000:UNDI:002001")...),
		request(f, dhcpv4.MessageTypeDiscover, pxe(7, "PXEClient:Arch:00007:UNDI:003016")...),
		request(f, dhcpv4.MessageTypeRequest, pxe(7, "PXEClient:Arch:00007:UNDI:003016")...),
		request(f, dhcpv4.MessageTypeDiscover, pxe(16, "HTTPClient:Arch:00016:UNDI:003001")...),
		request(f, dhcpv4.MessageTypeDiscover, dhcpv4.WithUserClass("iPXE", false), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient"))),
		request(f, dhcpv4.MessageTypeDiscover),
	} {
		f.Add(d.ToBytes(), false, false)
		f.Add(d.ToBytes(), true, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, pxePort, lab bool) {
		s := &Server{Addr: serverAddr, Loaders: Loaders{ShimARM64: "bootaa64.efi", IPXEBIOS: "undionly.kpxe"}}
		if len(b) > 0 && b[len(b)-1]&1 != 0 {
			// The iPXE choice for UEFI, picked by a bit the fuzzer controls.
			s.EFILoader, s.Loaders.IPXEX64 = LoaderIPXE, "snponly.efi"
		}
		if lab {
			s.Lab = &Lab{
				Subnet: netip.MustParsePrefix("192.0.2.0/24"),
				Start:  netip.MustParseAddr("192.0.2.10"),
				End:    netip.MustParseAddr("192.0.2.20"),
			}
		}
		port := ServerPort
		if pxePort {
			port = PXEPort
		}
		reply, to := answer(s, b, port)
		if reply == nil {
			return
		}
		require.True(t, to.IsValid())
		back, err := dhcpv4.FromBytes(reply.ToBytes())
		require.NoError(t, err)
		req, err := dhcpv4.FromBytes(b)
		require.NoError(t, err, "a reply to a packet that does not parse")
		require.Equal(t, req.TransactionID, back.TransactionID)
		if !lab || pxePort {
			class := req.ClassIdentifier()
			require.True(t, strings.HasPrefix(class, "PXEClient") || strings.HasPrefix(class, "HTTPClient"), "proxy answered class %q", class)
			require.True(t, back.YourIPAddr.IsUnspecified(), "proxy handed out %v", back.YourIPAddr)
			require.NotEmpty(t, back.BootFileName)
		}
	})
}
