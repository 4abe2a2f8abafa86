package aoe

import (
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchIO returns the recvmmsg/sendmmsg implementation of frameIO for this socket.
func (c *Conn) batchIO() frameIO {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return &mmsgIO{rc: rc, c: c, ifindex: int32(c.ifi.Index)}
}

// mmsgIO batches frames with recvmmsg and sendmmsg. Each goroutine needs its own: it keeps
// the message headers between calls.
type mmsgIO struct {
	rc      syscall.RawConn
	c       *Conn
	ifindex int32
	rmsgs   []unix.Mmsghdr
	riov    []unix.Iovec
	rsa     []unix.RawSockaddrLinklayer
	smsgs   []unix.Mmsghdr
	siov    []unix.Iovec
	ssa     []unix.RawSockaddrLinklayer
	seth    [][ethHeaderLen]byte
}

func (m *mmsgIO) recv(frames []frame) (int, error) {
	m.prepare(frames)
	for {
		var n int
		var serr error
		err := m.rc.Read(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.rmsgs[0])), uintptr(len(frames)),
				unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			if e != 0 {
				serr = e
			}
			n = int(r)
			return true
		})
		if err != nil {
			return 0, err
		}
		if serr != nil {
			return 0, serr
		}
		if k := m.collect(frames, n); k > 0 {
			return k, nil
		}
	}
}

// prepare points the receive message headers at the frames' buffers.
func (m *mmsgIO) prepare(frames []frame) {
	if len(m.rmsgs) < len(frames) {
		m.rmsgs = make([]unix.Mmsghdr, len(frames))
		m.riov = make([]unix.Iovec, len(frames))
		m.rsa = make([]unix.RawSockaddrLinklayer, len(frames))
	}
	for i := range frames {
		m.riov[i].Base = &frames[i].buf[0]
		m.riov[i].SetLen(len(frames[i].buf))
		h := &m.rmsgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.rsa[i]))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &m.riov[i]
		h.SetIovlen(1)
		m.rmsgs[i].Len = 0
	}
}

// collect moves the n received messages with an Ethernet source to the front of frames and
// returns how many there are.
func (m *mmsgIO) collect(frames []frame, n int) int {
	k := 0
	for i := range n {
		sa := &m.rsa[i]
		if sa.Halen != 6 {
			continue
		}
		frames[k].buf, frames[i].buf = frames[i].buf, frames[k].buf
		m.riov[k], m.riov[i] = m.riov[i], m.riov[k]
		frames[k].n = int(m.rmsgs[i].Len)
		copy(frames[k].addr[:], sa.Addr[:6])
		k++
	}
	return k
}

// serveIO returns the frameIO of a Target's workers: blockIO when the blocking receive socket
// opens, else nil (and the workers use batchIO).
func (c *Conn) serveIO() frameIO {
	m, _ := c.batchIO().(*mmsgIO)
	if m == nil || !c.startRx() {
		return nil
	}
	return &blockIO{mmsgIO: m}
}

// blockIO receives on the Conn's rx socket, in a blocking recvmmsg that returns as soon as
// one frame is there and takes whatever else is queued (MSG_WAITFORONE), and sends as mmsgIO
// does.
//
// Waiting in the kernel rather than in the runtime's poller is what vblade does with its
// blocking read: a frame wakes the waiting thread itself, in one system call. Through the
// poller, the same frame costs a failed read, an epoll wake-up of whichever thread polls, a
// hand-over of the goroutine to a P, and on an idle process the wake-up of the runtime's
// monitor thread. Only the worker that holds the receive lock waits here (worker.go), so the
// receive ties up one OS thread. A packet socket's receive cannot be interrupted: it returns
// every rxTimeout so that the worker sees Shutdown and Close.
type blockIO struct {
	*mmsgIO
	yielded time.Time // when recv last let the scheduler run
}

// yieldEvery is how often a worker that never parks passes through the scheduler (see recv).
const yieldEvery = 5 * time.Millisecond

func (b *blockIO) recv(frames []frame) (int, error) {
	// A goroutine that never parks looks to the runtime's monitor like one that hogs its P:
	// after 10 ms on the same scheduling tick the monitor takes the P away while the receive
	// blocks, hands it to another thread, and then polls every 20 µs for a millisecond and
	// more. Passing through the scheduler now and then avoids all three.
	if now := time.Now(); now.Sub(b.yielded) > yieldEvery {
		runtime.Gosched()
		b.yielded = now
	}
	m := b.mmsgIO
	m.prepare(frames)
	for {
		b.c.rxMu.RLock()
		fd := b.c.rx
		if fd < 0 {
			b.c.rxMu.RUnlock()
			return 0, net.ErrClosed
		}
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.rmsgs[0])), uintptr(len(frames)),
			unix.MSG_WAITFORONE, 0, 0)
		b.c.rxMu.RUnlock()
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, os.ErrDeadlineExceeded
		default:
			return 0, os.NewSyscallError("recvmmsg", e)
		}
		if k := m.collect(frames, int(r)); k > 0 {
			return k, nil
		}
	}
}

func (m *mmsgIO) send(frames []frame) error {
	if len(frames) == 0 {
		return nil
	}
	if len(m.smsgs) < len(frames) {
		m.smsgs = make([]unix.Mmsghdr, len(frames))
		m.siov = make([]unix.Iovec, 4*len(frames))
		m.ssa = make([]unix.RawSockaddrLinklayer, len(frames))
		m.seth = make([][ethHeaderLen]byte, len(frames))
	}
	for i := range frames {
		f := &frames[i]
		sa := &m.ssa[i]
		*sa = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(EtherType), Ifindex: m.ifindex, Halen: 6}
		copy(sa.Addr[:], f.addr[:])
		// siov[4i] and siov[4i+1] are the virtio and Ethernet headers the send-only socket
		// takes, siov[4i+2] the frame or its headers and siov[4i+3] its data when apart.
		hdr := &vnetHeader
		if len(f.buf)+len(f.data) < HeaderLen+ATAArgLen {
			hdr = &vnetNone
		}
		eth := &m.seth[i]
		copy(eth[0:6], f.addr[:])
		copy(eth[6:12], m.c.ifi.HardwareAddr)
		eth[12], eth[13] = EtherType>>8, EtherType&0xFF
		iov := m.siov[4*i : 4*i+4]
		iov[0].Base, iov[1].Base, iov[2].Base = &hdr[0], &eth[0], &f.buf[0]
		iov[0].SetLen(len(hdr))
		iov[1].SetLen(ethHeaderLen)
		iov[2].SetLen(len(f.buf))
		n := 3
		if len(f.data) > 0 {
			iov[3].Base = &f.data[0]
			iov[3].SetLen(len(f.data))
			n = 4
		}
		h := &m.smsgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(sa))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &iov[0]
		h.SetIovlen(n)
	}
	done, serr := m.c.sendTx(m.smsgs[:len(frames)])
	if serr != nil {
		return serr
	}
	if done == len(frames) {
		return nil
	}
	// The send-only socket is full or missing: the rest goes out on the main socket, which
	// waits for room through the runtime's poller and takes no virtio header.
	for i := done; i < len(frames); i++ {
		h := &m.smsgs[i].Hdr
		h.Iov = &m.siov[4*i+2]
		h.SetIovlen(int(h.Iovlen) - 2)
	}
	err := m.rc.Write(func(fd uintptr) bool {
		for done < len(frames) {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.smsgs[done])),
				uintptr(len(frames)-done), unix.MSG_DONTWAIT, 0, 0)
			switch {
			case e == unix.EAGAIN || e == unix.ENOBUFS:
				return false
			case e == unix.EINTR:
				continue
			case e != 0:
				serr = e
				return true
			}
			done += int(r)
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// ethHeaderLen is the length of an Ethernet header.
const ethHeaderLen = 14

// vnetHeader is the virtio_net_hdr (linux/virtio_net.h) before each frame on the send-only
// socket. Its only field set, hdr_len, makes the kernel put the Ethernet, AoE and ATA headers
// in the socket buffer's linear part and the sector data at the start of its pages. Those
// pages are then filled from page-aligned sector data with an aligned copy, and the
// receiver's copy out of them is aligned too. Without it the kernel puts only the 14-byte
// Ethernet header in the linear part, and both copies run out of step, which costs AMD's
// rep movsb dearly. vnetNone is for frames shorter than the headers.
var (
	vnetHeader = [10]byte{2: ethHeaderLen + HeaderLen + ATAArgLen}
	vnetNone   [10]byte
)

// sendTx sends msgs on the send-only socket without blocking and returns how many went out.
// It sends none when there is no such socket.
func (c *Conn) sendTx(msgs []unix.Mmsghdr) (int, error) {
	c.txMu.RLock()
	defer c.txMu.RUnlock()
	if c.tx < 0 {
		return 0, nil
	}
	done := 0
	for done < len(msgs) {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(c.tx), uintptr(unsafe.Pointer(&msgs[done])),
			uintptr(len(msgs)-done), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EAGAIN || e == unix.ENOBUFS:
			return done, nil
		case e == unix.EINTR:
			continue
		case e != 0:
			return done, e
		}
		done += int(r)
	}
	return done, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
