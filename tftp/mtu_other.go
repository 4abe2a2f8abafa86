//go:build !linux

package tftp

import "net"

// pathMTU is unknown on this system.
func pathMTU(*net.UDPConn) int { return 0 }
