package pxecfg

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ConfigDir is the folder, relative to pxelinux's own, in which it looks for its configuration.
const ConfigDir = "pxelinux.cfg"

// ConfigNames returns the configuration files pxelinux tries, in its order, for a client with
// the given SMBIOS UUID (from DHCP option 97; empty to skip), hardware address (nil to skip) and
// IPv4 address (the zero Addr to skip):
//
//	pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d
//	pxelinux.cfg/01-88-99-aa-bb-cc-dd
//	pxelinux.cfg/C000025B, C000025, ..., C
//	pxelinux.cfg/default
//
// The names use '/' and are relative to pxelinux's directory in the TFTP root.
func ConfigNames(uuid string, mac net.HardwareAddr, ip netip.Addr) []string {
	var names []string
	if uuid != "" {
		names = append(names, ConfigDir+"/"+strings.ToLower(uuid))
	}
	if len(mac) > 0 {
		names = append(names, ConfigDir+"/"+macName(mac))
	}
	if ip.Is4() || ip.Is4In6() {
		h := ipName(ip)
		for i := len(h); i > 0; i-- {
			names = append(names, ConfigDir+"/"+h[:i])
		}
	}
	return append(names, ConfigDir+"/default")
}

// macName is the ARP hardware type (1 for Ethernet, as pxelinux uses for every 6-byte address;
// 32 for InfiniBand's 20-byte ones) and the address, in lower-case hex joined by dashes.
func macName(mac net.HardwareAddr) string {
	htype := "01"
	if len(mac) == 20 {
		htype = "20"
	}
	parts := []string{htype}
	for _, b := range mac {
		parts = append(parts, hex.EncodeToString([]byte{b}))
	}
	return strings.Join(parts, "-")
}

// ipName is the IPv4 address as 8 upper-case hex digits.
func ipName(ip netip.Addr) string {
	a := ip.Unmap().As4()
	return strings.ToUpper(hex.EncodeToString(a[:]))
}

// Client identifies one machine for a per-client configuration file. Set one field; when
// several are set, the most specific one that pxelinux tries first names the file (UUID, then
// MAC, then IP).
type Client struct {
	UUID string
	MAC  net.HardwareAddr
	IP   netip.Addr
	// IPPrefix, with IP, names a file for a whole subnet: pxelinux tries shorter and shorter
	// hex prefixes of the address, so a /8, /12, /16, ... /32 (multiples of 4 bits) is one file.
	// Zero means the single address (/32).
	IPPrefix int
}

// ConfigName returns the file under pxelinux.cfg that pxelinux picks for the client.
func (c Client) ConfigName() (string, error) {
	switch {
	case c.UUID != "":
		if err := validUUID(c.UUID); err != nil {
			return "", err
		}
		return ConfigDir + "/" + strings.ToLower(c.UUID), nil
	case len(c.MAC) > 0:
		if len(c.MAC) != 6 && len(c.MAC) != 20 {
			return "", fmt.Errorf("pxecfg: hardware address %v is neither 6 nor 20 bytes", c.MAC)
		}
		return ConfigDir + "/" + macName(c.MAC), nil
	case c.IP.IsValid():
		if !c.IP.Unmap().Is4() {
			return "", fmt.Errorf("pxecfg: client address %v is not IPv4; pxelinux names files after IPv4 addresses only", c.IP)
		}
		bits := c.IPPrefix
		if bits == 0 {
			bits = 32
		}
		if bits%4 != 0 || bits < 4 || bits > 32 {
			return "", fmt.Errorf("pxecfg: prefix /%d is not a multiple of 4 between 4 and 32, which pxelinux's hex names can express", c.IPPrefix)
		}
		p := netip.PrefixFrom(c.IP.Unmap(), bits).Masked()
		if p.Addr() != c.IP.Unmap() {
			return "", fmt.Errorf("pxecfg: address %v has host bits set for prefix /%d", c.IP, bits)
		}
		return ConfigDir + "/" + ipName(c.IP)[:bits/4], nil
	}
	return "", fmt.Errorf("pxecfg: client %+v has no UUID, MAC or IP", c)
}

func validUUID(s string) error {
	if len(s) != 36 {
		return fmt.Errorf("pxecfg: UUID %q is not 36 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		dash := i == 8 || i == 13 || i == 18 || i == 23
		if dash != (c == '-') || !dash && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return fmt.Errorf("pxecfg: UUID %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
		}
	}
	return nil
}
