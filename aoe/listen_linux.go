package aoe

import "golang.org/x/sys/unix"

// socketBuffer is the receive and send buffer Listen asks for, so that bursts of jumbo frames
// from many tags in flight are not dropped by the kernel.
const socketBuffer = 4 << 20

func (c *Conn) tune() error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// Not seeing our own frames halves the work of the receive path; the option exists
		// since Linux 4.20, so its absence is not an error.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		for _, opt := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[0], socketBuffer) != nil {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[1], socketBuffer); e != nil {
					serr = e
				}
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
