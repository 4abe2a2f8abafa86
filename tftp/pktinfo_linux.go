package tftp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// pktinfoSpace is room for an IPv4 or IPv6 packet-information control message.
var pktinfoSpace = syscall.CmsgSpace(syscall.SizeofInet6Pktinfo)

// enablePktinfo asks the kernel to report each request's destination address on c, so that a
// server bound to a wildcard address answers from the address the client asked (PXE firmware
// drops answers from any other). It reports whether that worked.
func enablePktinfo(c *net.UDPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = raw.Control(func(fd uintptr) {
		// A dual-stack IPv6 socket takes both, and reports IPv4 requests with IP_PKTINFO.
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1) == nil {
			ok = true
		}
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1) == nil {
			ok = true
		}
	})
	return ok
}

// pktinfoDst returns the destination address in the control messages oob, or the zero Addr.
func pktinfoDst(oob []byte) netip.Addr {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, spec_dst, addr. spec_dst is the address to answer from:
			// the destination itself for a unicast request, the interface's address for a
			// broadcast one.
			return netip.AddrFrom4([4]byte(m.Data[4:8]))
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet6Pktinfo:
			// struct in6_pktinfo: addr, ifindex.
			dst := netip.AddrFrom16([16]byte(m.Data[:16]))
			if dst.IsMulticast() {
				return netip.Addr{}
			}
			if dst.Is4In6() {
				return dst.Unmap()
			}
			if dst.IsLinkLocalUnicast() {
				dst = dst.WithZone(strconv.Itoa(int(binary.NativeEndian.Uint32(m.Data[16:20]))))
			}
			return dst
		}
	}
	return netip.Addr{}
}
