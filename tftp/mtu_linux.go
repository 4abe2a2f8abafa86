package tftp

import (
	"net"
	"syscall"
)

// pathMTU returns the kernel's path MTU for the connected socket c, or 0 when unknown.
func pathMTU(c *net.UDPConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	mtu := 0
	_ = raw.Control(func(fd uintptr) { mtu = fdPathMTU(int(fd)) })
	return mtu
}

// fdPathMTU returns the kernel's path MTU for the connected socket fd, or 0 when unknown.
func fdPathMTU(fd int) int {
	v, err := syscall.GetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_MTU)
	if err != nil {
		v, err = syscall.GetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_MTU)
	}
	if err != nil {
		return 0
	}
	return v
}
