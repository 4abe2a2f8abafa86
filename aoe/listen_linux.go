package aoe

import (
	"time"

	"golang.org/x/sys/unix"
)

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
	c.newRx()
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

// rxTimeout bounds each blocking receive on the rx socket, so that a worker notices Shutdown
// and Close (which cannot interrupt a packet socket's receive) within it.
const rxTimeout = 50 * time.Millisecond

// newRx opens the socket that becomes the blocking receive socket when a Target serves on the
// Conn. It is opened here, in the network namespace the Conn is opened in, bound to protocol
// 0 so that it receives nothing until startRx binds it to AoE's EtherType.
func (c *Conn) newRx() {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	tv := unix.NsecToTimeval(rxTimeout.Nanoseconds())
	if unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: c.ifi.Index}) != nil ||
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) != nil {
		_ = unix.Close(fd)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
	}
	c.rxMu.Lock()
	c.rx = fd
	c.rxMu.Unlock()
}

// startRx moves the receiving of AoE frames from the main socket to rx, once, and reports
// whether rx receives them. The main socket is bound to protocol 0, which takes it off the
// receive path: frames are not queued twice and do not wake the runtime's poller.
func (c *Conn) startRx() bool {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	if c.rxOpen || c.rx < 0 {
		return c.rxOpen && c.rx >= 0
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	if unix.Bind(c.rx, &unix.SockaddrLinklayer{Protocol: htons(EtherType), Ifindex: c.ifi.Index}) != nil {
		return false
	}
	var berr error
	if err := rc.Control(func(fd uintptr) {
		berr = unix.Bind(int(fd), &unix.SockaddrLinklayer{Protocol: 0, Ifindex: c.ifi.Index})
	}); err != nil || berr != nil {
		_ = unix.Bind(c.rx, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: c.ifi.Index})
		return false
	}
	c.rxOpen = true
	return true
}

func (c *Conn) closeRx() {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	if c.rx >= 0 {
		_ = unix.Close(c.rx)
		c.rx = -1
	}
}
