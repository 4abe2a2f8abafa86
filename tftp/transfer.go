package tftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// maxBackoff caps the exponential back-off of one wait.
const maxBackoff = 16 * time.Second

// link is one end of a transfer: a UDP socket and the peer's transfer ID (address and port).
type link struct {
	// c is the socket, unless s is set.
	c *net.UDPConn
	// s, on Linux, is a server transfer's blocking socket outside the netpoller.
	s    *sock
	peer netip.AddrPort
	// connected means c was connected to peer, so the kernel filters other senders.
	connected bool
	rbuf      []byte
	// noGSO is set once segmentation offload failed on this socket.
	noGSO bool
	oob   []byte
}

// sendEach sends b as packets of seg bytes (the last may be shorter).
func (l *link) sendEach(b []byte, seg int) error {
	for len(b) > 0 {
		n := min(seg, len(b))
		if err := l.send(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (l *link) send(b []byte) error {
	var err error
	if l.s != nil {
		err = l.s.send(b)
	} else if l.connected {
		_, err = l.c.Write(b)
	} else {
		_, err = l.c.WriteToUDPAddrPort(b, l.peer)
	}
	if err != nil {
		return fmt.Errorf("tftp: send to %v: %w", l.peer, err)
	}
	return nil
}

// recv waits until deadline for a packet from the peer. A packet from any other transfer ID is
// answered with ERROR 5 and otherwise ignored (RFC 1350 section 4).
func (l *link) recv(deadline time.Time) ([]byte, error) {
	if l.s != nil {
		n, err := l.s.recv(l.rbuf, deadline)
		if err != nil {
			return nil, err
		}
		return l.rbuf[:n], nil
	}
	if err := l.c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	for {
		if l.connected {
			n, err := l.c.Read(l.rbuf)
			if err != nil {
				return nil, err
			}
			return l.rbuf[:n], nil
		}
		n, from, err := l.c.ReadFromUDPAddrPort(l.rbuf)
		if err != nil {
			return nil, err
		}
		if sameAddrPort(from, l.peer) {
			return l.rbuf[:n], nil
		}
		b, _ := (&ErrorPacket{Code: ErrUnknownTID, Message: "unknown transfer ID"}).AppendBinary(nil)
		_, _ = l.c.WriteToUDPAddrPort(b, from)
	}
}

// sendFinal sends b from any goroutine, unless the socket is already closed: the ERROR packet
// of a transfer that the server stops.
func (l *link) sendFinal(b []byte) {
	if l.s != nil {
		l.s.sendFinal(b)
	} else {
		_, _ = l.c.Write(b)
	}
}

// shutdown makes the owner's waits return net.ErrClosed; any goroutine may call it.
func (l *link) shutdown() {
	if l.s != nil {
		l.s.shutdown()
	} else {
		l.c.Close()
	}
}

// close closes the socket.
func (l *link) close() {
	if l.s != nil {
		l.s.close()
	} else {
		l.c.Close()
	}
}

// setBuffers sets the socket's send and receive buffer sizes.
func (l *link) setBuffers(n int) {
	if l.s != nil {
		l.s.setBuffers(n)
	} else {
		_ = l.c.SetWriteBuffer(n)
		_ = l.c.SetReadBuffer(n)
	}
}

// pathMTU returns the kernel's path MTU to the peer, or 0 when unknown.
func (l *link) pathMTU() int {
	if l.s != nil {
		return l.s.pathMTU()
	}
	return pathMTU(l.c)
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// sendError tells the peer why the transfer ends. Errors sending it are of no interest: the
// transfer is over either way.
func (l *link) sendError(code ErrorCode, msg string) {
	_ = l.send(errorPacket(code, msg))
}

// maxErrorMessage caps the message of the ERROR packets the server sends: whatever a handler
// or a client's name put in it, the packet stays small.
const maxErrorMessage = 200

// errorPacket returns the wire form of an ERROR packet with msg cut to maxErrorMessage bytes.
func errorPacket(code ErrorCode, msg string) []byte {
	if len(msg) > maxErrorMessage {
		msg = truncate(msg, maxErrorMessage-3) + "..."
	}
	b, _ := (&ErrorPacket{Code: code, Message: msg}).AppendBinary(make([]byte, 0, 4+len(msg)+1))
	return b
}

// wrapped is an error of this package around another whose text may start with the package
// prefix too: the prefix is said once ("tftp: write block 3: disk full", not "tftp: write
// block 3: tftp: disk full").
type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// wrapf returns err wrapped with the formatted context, its own "tftp: " prefix dropped.
func wrapf(err error, format string, args ...any) error {
	return &wrapped{msg: fmt.Sprintf(format, args...) + ": " + strings.TrimPrefix(err.Error(), "tftp: "), err: err}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// params are the negotiated values of one transfer.
type params struct {
	blksize int
	window  int
	timeout time.Duration
	retries int
	// maxIdle, if positive, caps the whole wait without progress, all retries included.
	maxIdle time.Duration
}

// progress counts what a transfer did, for logs and counters.
type progress struct {
	bytes       int64
	retransmits int
	// onRetransmit, if set, is told about each retransmitted packet as it happens.
	onRetransmit func(n int)
}

func (pr *progress) retransmitted(n int) {
	pr.retransmits += n
	if pr.onRetransmit != nil {
		pr.onRetransmit(n)
	}
}

func backoff(d time.Duration) time.Duration { return min(2*d, maxBackoff) }

// retryClock is a transfer's retransmission timer: the wait for the peer starts at the
// negotiated timeout, doubles with each retry (up to maxBackoff), and starts over whenever the
// transfer makes progress.
type retryClock struct {
	base     time.Duration
	max      int
	maxIdle  time.Duration
	timeout  time.Duration
	tries    int
	deadline time.Time
	// giveUp is when the wait ends whatever the retries left (maxIdle after the last
	// progress); zero without maxIdle.
	giveUp time.Time
}

func startRetryClock(p params) retryClock {
	c := retryClock{base: p.timeout, max: p.retries, maxIdle: p.maxIdle}
	c.progress()
	return c
}

// progress starts the wait over: the peer moved the transfer on.
func (c *retryClock) progress() {
	now := time.Now()
	c.timeout, c.tries = c.base, 0
	if c.maxIdle > 0 {
		c.giveUp = now.Add(c.maxIdle)
	}
	c.setDeadline(now)
}

func (c *retryClock) setDeadline(now time.Time) {
	c.deadline = now.Add(c.timeout)
	if !c.giveUp.IsZero() && c.deadline.After(c.giveUp) {
		c.deadline = c.giveUp
	}
}

// retry backs off after a timeout. It reports false once the retries or maxIdle are used up.
func (c *retryClock) retry() bool {
	now := time.Now()
	if c.tries++; c.tries > c.max || (!c.giveUp.IsZero() && !now.Before(c.giveUp)) {
		return false
	}
	c.timeout = backoff(c.timeout)
	c.setDeadline(now)
	return true
}

// waitAck0 sends pkt (an OACK) until the peer acknowledges it with ACK 0.
func waitAck0(l *link, p params, pkt []byte, pr *progress) error {
	if err := l.send(pkt); err != nil {
		return err
	}
	clk := startRetryClock(p)
	for {
		b, err := l.recv(clk.deadline)
		if isTimeout(err) {
			if !clk.retry() {
				return fmt.Errorf("tftp: no ACK of the OACK after %d tries", clk.tries)
			}
			pr.retransmitted(1)
			if err := l.send(pkt); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("tftp: waiting for ACK 0: %w", err)
		}
		if len(b) < 4 {
			continue
		}
		switch Opcode(binary.BigEndian.Uint16(b)) {
		case OpACK:
			if binary.BigEndian.Uint16(b[2:]) == 0 {
				return nil
			}
		case OpERROR:
			return peerError(b)
		}
	}
}

func peerError(b []byte) error {
	pkt, err := ParsePacket(b)
	if err != nil {
		return wrapf(err, "tftp: malformed error packet from peer")
	}
	return wrapf(pkt.(*ErrorPacket), "tftp: peer ended the transfer")
}

// sendBlocks sends src as DATA blocks of p.blksize, p.window at a time (RFC 7440), until a
// block shorter than blksize has been acknowledged. Block numbers roll over from 65535 to 0.
// Only a timeout causes a retransmission: a duplicate ACK is ignored, which avoids the
// sorcerer's apprentice syndrome.
func sendBlocks(l *link, p params, src io.Reader, pr *progress) error {
	w := uint64(p.window)
	// The window's blocks lie back to back in one ring, so that a run of them can go out in one
	// system call (see sendSegments).
	sz := 4 + p.blksize
	ring := make([]byte, int(w)*sz)
	lens := make([]int, w)
	var (
		base   uint64 = 1 // first unacknowledged block
		filled uint64     // highest block read from src
		sent   uint64     // highest block sent
		last   uint64     // the final block, once known
	)
	// sendFrom sends blocks from..base+w-1, reading those not yet read.
	sendFrom := func(from uint64) error {
		end := base + w - 1
		if last != 0 && end > last {
			end = last
		}
		for k := from; k <= end; k++ {
			if k <= filled {
				if k <= sent {
					pr.retransmitted(1)
				}
				continue
			}
			slot := ring[int(k%w)*sz:][:sz]
			n, err := io.ReadFull(src, slot[4:])
			if err != nil && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
				l.sendError(ErrNotDefined, "read error")
				return wrapf(err, "tftp: read block %d", k)
			}
			binary.BigEndian.PutUint16(slot, uint16(OpDATA))
			binary.BigEndian.PutUint16(slot[2:], uint16(k))
			lens[k%w] = 4 + n
			filled = k
			pr.bytes += int64(n)
			if n < p.blksize {
				last, end = k, k
			}
		}
		// Send runs of blocks that are contiguous in the ring. Only the run's last block can be
		// short: it is the file's last.
		for k := from; k <= end; {
			i := k % w
			n := min(end-k+1, w-i)
			start := int(i) * sz
			stop := start + int(n-1)*sz + lens[(k+n-1)%w]
			if err := l.sendSegments(ring[start:stop], sz); err != nil {
				return err
			}
			k += n
		}
		sent = max(sent, end)
		return nil
	}
	if err := sendFrom(base); err != nil {
		return err
	}
	clk := startRetryClock(p)
	for {
		b, err := l.recv(clk.deadline)
		if isTimeout(err) {
			if !clk.retry() {
				l.sendError(ErrNotDefined, "timeout")
				return fmt.Errorf("tftp: no ACK for block %d after %d tries", base, clk.tries)
			}
			if err := sendFrom(base); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("tftp: waiting for ACK of block %d: %w", base, err)
		}
		if len(b) < 4 {
			continue
		}
		switch Opcode(binary.BigEndian.Uint16(b)) {
		case OpACK:
		case OpERROR:
			return peerError(b)
		default:
			continue
		}
		// Map the 16-bit block number into base-1..sent; anything else is stale.
		d := uint64(binary.BigEndian.Uint16(b[2:]) - uint16(base-1))
		if d == 0 || d > sent-(base-1) {
			continue
		}
		k := base - 1 + d
		if k == last {
			return nil
		}
		base = k + 1
		clk.progress()
		// RFC 7440: continue with the window that follows the acknowledged block. Blocks already
		// sent after k were lost or are about to be, as the receiver acknowledges early only then.
		if err := sendFrom(base); err != nil {
			return err
		}
	}
}

// recvBlocks receives DATA blocks into dst until a short block, acknowledging every p.window
// blocks (RFC 7440) and the last one. lastSent is what to send again when the peer is silent
// (the OACK or ACK 0 that started the transfer); first, if not nil, is a DATA packet already
// received. It returns the final ACK so that the caller can dally; with holdFinal it does not
// send it, so that the caller can first commit what it received.
func recvBlocks(l *link, p params, dst io.Writer, lastSent []byte, first []byte, holdFinal bool, pr *progress) ([]byte, error) {
	var (
		next    uint64 = 1 // next expected block
		acked   uint64     // last block acknowledged
		gapAckd bool       // an out-of-order block was answered since the last progress
	)
	ack := make([]byte, 4)
	binary.BigEndian.PutUint16(ack, uint16(OpACK))
	sendAck := func(k uint64) error {
		binary.BigEndian.PutUint16(ack[2:], uint16(k))
		acked = k
		lastSent = ack
		return l.send(ack)
	}
	clk := startRetryClock(p)
	for {
		var b []byte
		var err error
		if first != nil {
			b, first = first, nil
		} else {
			b, err = l.recv(clk.deadline)
		}
		if isTimeout(err) {
			if !clk.retry() {
				l.sendError(ErrNotDefined, "timeout")
				return nil, fmt.Errorf("tftp: no DATA block %d after %d tries", next, clk.tries)
			}
			gapAckd = false
			pr.retransmitted(1)
			if err := l.send(lastSent); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tftp: waiting for DATA block %d: %w", next, err)
		}
		if len(b) < 4 {
			continue
		}
		switch Opcode(binary.BigEndian.Uint16(b)) {
		case OpDATA:
		case OpERROR:
			return nil, peerError(b)
		case OpOACK:
			// The peer did not get our ACK 0 and repeats its OACK.
			if next == 1 {
				if err := sendAck(0); err != nil {
					return nil, err
				}
			}
			continue
		default:
			continue
		}
		if binary.BigEndian.Uint16(b[2:]) != uint16(next) {
			// Out of order, or a repeat after a lost ACK: say once where we are.
			if !gapAckd {
				gapAckd = true
				if err := sendAck(next - 1); err != nil {
					return nil, err
				}
			}
			continue
		}
		data := b[4:]
		if len(data) > p.blksize {
			l.sendError(ErrIllegalOperation, "block larger than blksize")
			return nil, fmt.Errorf("tftp: block %d of %d bytes exceeds blksize %d", next, len(data), p.blksize)
		}
		if _, err := dst.Write(data); err != nil {
			// The client learns the code and, from an *ErrorPacket, its message; other errors
			// may name server paths, so they stay in the server's log.
			code, msg := ErrDiskFull, "cannot store the upload"
			var ec ErrorCode
			var ep *ErrorPacket
			if errors.As(err, &ep) {
				code, msg = ep.Code, ep.Message
			} else if errors.As(err, &ec) {
				code = ec
			}
			l.sendError(code, msg)
			return nil, wrapf(err, "tftp: write block %d", next)
		}
		pr.bytes += int64(len(data))
		k := next
		next++
		gapAckd = false
		clk.progress()
		if len(data) < p.blksize {
			if holdFinal {
				binary.BigEndian.PutUint16(ack[2:], uint16(k))
				return ack, nil
			}
			if err := sendAck(k); err != nil {
				return nil, err
			}
			return ack, nil
		}
		if k-acked >= uint64(p.window) {
			if err := sendAck(k); err != nil {
				return nil, err
			}
		}
	}
}

// dally waits for repeats of the final DATA block (our final ACK was lost) and acknowledges
// them again (RFC 1350 section 6). It waits long enough for two of the peer's retransmissions
// (timeout, then twice that), and after each repeat twice as long again, as the peer backs off.
func dally(l *link, finalAck []byte, p params) {
	wait := 4 * p.timeout
	if p.maxIdle > 0 {
		wait = min(wait, p.maxIdle)
	}
	deadline := time.Now().Add(wait)
	for {
		b, err := l.recv(deadline)
		if err != nil {
			return
		}
		if len(b) >= 4 && Opcode(binary.BigEndian.Uint16(b)) == OpDATA &&
			binary.BigEndian.Uint16(b[2:]) == binary.BigEndian.Uint16(finalAck[2:]) {
			_ = l.send(finalAck)
			wait = min(2*wait, 2*maxBackoff)
			deadline = time.Now().Add(wait)
		}
	}
}
