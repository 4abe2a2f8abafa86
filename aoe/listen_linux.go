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
	if serr != nil {
		return serr
	}
	c.openTx()
	return nil
}

// openTx opens the send-only socket for batched sends: SOCK_RAW, because only raw packet
// sockets take the virtio header (see vnetHeader), with protocol 0 so that it receives
// nothing. Without it, batches go out on the main socket.
func (c *Conn) openTx() {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	if len(c.ifi.HardwareAddr) != 6 ||
		unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1) != nil {
		_ = unix.Close(fd)
		return
	}
	// Answers need no queueing discipline; the option exists since Linux 3.14.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	c.txMu.Lock()
	c.tx = fd
	c.txMu.Unlock()
}

func (c *Conn) closeTx() {
	c.txMu.Lock()
	defer c.txMu.Unlock()
	if c.tx >= 0 {
		_ = unix.Close(c.tx)
		c.tx = -1
	}
}
