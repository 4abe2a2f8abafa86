//go:build !linux

package tftp

import (
	"net"
	"net/netip"
)

// pktinfoSpace is zero: destination addresses are not reported on this system.
const pktinfoSpace = 0

// enablePktinfo is unsupported here: a server bound to a wildcard address answers from the
// address routing picks.
func enablePktinfo(*net.UDPConn) bool { return false }

func pktinfoDst([]byte) netip.Addr { return netip.Addr{} }
