package tftp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock is a server transfer's UDP socket on Linux: connected to the client, in blocking mode and
// kept out of Go's netpoller. Lock-step TFTP is bound by the round trip, and a blocking recv
// wakes the very thread that waits for the ACK, on the CPU the kernel picks for it, in one
// system call; a netpoller socket costs a failed read, an epoll wake-up of another thread and a
// hand-over of the goroutine on every block. Each transfer waiting in recv holds an OS thread,
// so the server uses this socket for no more transfers at once than there are Ps (see
// transfer.open).
type sock struct {
	fd int
	// mu orders shutdown (any goroutine) against close (the owner), so that shutdown never acts
	// on a descriptor number that close released and the kernel reused.
	mu     sync.Mutex
	closed bool
	// shut is set by shutdown: a recv that returns nothing then reports net.ErrClosed.
	shut atomic.Bool
	// timeo is the SO_RCVTIMEO now set (0: none yet), so that it is set again only when a wait
	// differs from it.
	timeo time.Duration
	// yielded is when recv last let the scheduler run (see recv).
	yielded time.Time
	// locked means lockThread tied the owner's goroutine to its thread.
	locked bool
	// spinning means waits busy-poll first, and misses counts the polls in a row that found
	// nothing (see pace).
	spinning bool
	misses   int
	// crowded, if set, reports that other transfers need the CPUs: then waits never poll.
	crowded func() bool
}

// spinTime bounds one busy-poll: about two loopback round trips between CPUs here.
const spinTime = 50 * time.Microsecond

// openSock opens a UDP socket bound to local (any address when invalid or unspecified) and port
// (0: an ephemeral one), connected to remote.
func openSock(local netip.Addr, remote netip.AddrPort, port uint16) (*sock, error) {
	rsa, family, err := sockaddr(remote)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("tftp: socket: %w", err)
	}
	if !local.IsValid() || local.IsUnspecified() || local.Unmap().Is4() != (family == unix.AF_INET) {
		local = netip.IPv6Unspecified()
		if family == unix.AF_INET {
			local = netip.IPv4Unspecified()
		}
		if port == 0 {
			local = netip.Addr{} // no bind: connect picks the address and port
		}
	}
	if local.IsValid() {
		lsa, lfamily, err := sockaddr(netip.AddrPortFrom(local, port))
		if err == nil && lfamily == family {
			err = unix.Bind(fd, lsa)
		}
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tftp: bind to %v: %w", netip.AddrPortFrom(local, port), err)
		}
	}
	if err := unix.Connect(fd, rsa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tftp: connect to %v: %w", remote, err)
	}
	return &sock{fd: fd}, nil
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int, error) {
	a := ap.Addr().Unmap()
	switch {
	case a.Is4():
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, unix.AF_INET, nil
	case a.Is6() && a.Zone() == "":
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}, unix.AF_INET6, nil
	}
	// Scoped addresses are left to package net, which knows the names of zones.
	return nil, 0, fmt.Errorf("tftp: no raw socket address for %v", ap)
}

func (s *sock) send(b []byte) error {
	for {
		err := unix.Sendto(s.fd, b, unix.MSG_NOSIGNAL, nil)
		if err == unix.EINTR {
			continue
		}
		return s.wrap(err)
	}
}

// sendmsg sends b with the control messages oob.
func (s *sock) sendmsg(b, oob []byte) error {
	for {
		_, err := unix.SendmsgN(s.fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		return s.wrap(err)
	}
}

// recv waits until deadline for a datagram. It returns os.ErrDeadlineExceeded when none came,
// and net.ErrClosed once shutdown was called.
func (s *sock) recv(b []byte, deadline time.Time) (int, error) {
	for {
		now := time.Now()
		// A goroutine that never parks looks to the runtime's monitor like one that hogs its
		// P: every 10 ms it takes the P away while recv blocks, and then keeps polling every
		// 20 µs. Passing through the scheduler now and then avoids both.
		if now.Sub(s.yielded) > 5*time.Millisecond {
			runtime.Gosched()
			s.yielded = now
			if s.locked {
				s.pace()
			}
		}
		d := deadline.Sub(now)
		if d <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		// Setting the timeout costs a system call: keep the one set while it is within 1/16
		// of the wait. A wait cut short comes back here; one that runs long overshoots the
		// deadline by at most that 1/16.
		if d < s.timeo-s.timeo/16 || d > s.timeo+s.timeo/16 {
			// A zero timeval would mean no timeout at all.
			tv := unix.NsecToTimeval(max(d, time.Millisecond).Nanoseconds())
			if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return 0, s.wrap(err)
			}
			s.timeo = d
		}
		if s.spinning {
			if n, ok := s.poll(b); ok {
				if n == 0 && s.shut.Load() {
					return 0, net.ErrClosed
				}
				return n, nil
			}
		}
		n, err := unix.Read(s.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if s.shut.Load() {
				return 0, net.ErrClosed
			}
			continue
		case err != nil:
			return 0, s.wrap(err)
		case n == 0 && s.shut.Load():
			return 0, net.ErrClosed
		}
		return n, nil
	}
}

// lockThread keeps the calling goroutine on its thread until close, so that the CPU the thread
// runs on (see pace) stays meaningful between waits.
func (s *sock) lockThread() {
	runtime.LockOSThread()
	s.locked = true
}

// spinners counts the transfers that busy-poll now; see pace.
var spinners atomic.Int32

// pace decides, every few milliseconds, whether the waits of the next few milliseconds
// busy-poll. A thread asleep in recv is woken by the CPU that received the peer's packet: at
// once if that is its own CPU, through an inter-processor interrupt (slow, in a virtual machine
// above all) otherwise. So when the peer's packets arrive on another CPU, and a CPU is spare
// (fewer transfers poll than there are CPUs but one, and the server is not crowded), a wait
// first polls for up to spinTime; when polling keeps missing (a peer farther away than that),
// the transfer stops polling until the next decision.
func (s *sock) pace() {
	s.stopSpinning()
	s.misses = 0
	if s.crowded != nil && s.crowded() {
		return
	}
	cpu, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_INCOMING_CPU)
	if err != nil || cpu < 0 {
		return
	}
	var here uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&here)), 0, 0); e != 0 || int(here) == cpu {
		return
	}
	if n := spinners.Add(1); int(n) > max(1, runtime.NumCPU()-1) {
		spinners.Add(-1)
		return
	}
	s.spinning = true
}

// stopSpinning ends busy-polling until the next decision of pace.
func (s *sock) stopSpinning() {
	if s.spinning {
		s.spinning = false
		spinners.Add(-1)
	}
}

// poll busy-polls for a datagram for up to spinTime. It reports false when none came.
func (s *sock) poll(b []byte) (int, bool) {
	for t0 := time.Now(); time.Since(t0) < spinTime; {
		r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			unix.MSG_DONTWAIT, 0, 0)
		if e == 0 {
			return int(r), true
		}
		if e != unix.EAGAIN && e != unix.EINTR {
			break // the blocking read reports it
		}
	}
	if s.misses++; s.misses >= 4 {
		s.stopSpinning()
	}
	return 0, false
}

func (s *sock) wrap(err error) error {
	if err == nil {
		return nil
	}
	if s.shut.Load() {
		return net.ErrClosed
	}
	return os.NewSyscallError("udp", err)
}

// sendFinal sends b from any goroutine, unless the socket was closed.
func (s *sock) sendFinal(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		_ = unix.Sendto(s.fd, b, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, nil)
	}
}

// shutdown makes a waiting recv (on any goroutine) return net.ErrClosed, as would closing a
// netpoller socket; closing the descriptor would not wake it.
func (s *sock) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.shut.Store(true)
	_ = unix.Shutdown(s.fd, unix.SHUT_RDWR)
}

// close releases the socket; only its owner calls it, once no recv or send is running.
func (s *sock) close() {
	s.stopSpinning()
	if s.locked {
		runtime.UnlockOSThread()
		s.locked = false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.shut.Store(true)
		_ = unix.Close(s.fd)
	}
}

func (s *sock) setBuffers(n int) {
	_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
}

// pathMTU returns the kernel's path MTU to the peer, or 0 when unknown.
func (s *sock) pathMTU() int { return fdPathMTU(s.fd) }
