package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Client gets and puts files. Its fields are its configuration; the zero value sends plain
// RFC 1350 requests (512-byte blocks, one at a time, octet mode, no options).
type Client struct {
	// BlockSize, if non-zero, is requested with the blksize option (8 to 65464).
	BlockSize int
	// WindowSize, if non-zero, is requested with the windowsize option (RFC 7440).
	WindowSize int
	// TransferSize asks for tsize: on Get the server announces the file size, on Put the
	// client announces the upload size (when known).
	TransferSize bool
	// TimeoutOption, if non-zero, is requested with the timeout option, in whole seconds (1 to
	// 255), and then also used as the client's own retransmission timeout.
	TimeoutOption int
	// Netascii selects netascii mode: line ends are converted to and from CR LF.
	Netascii bool
	// Options are sent after the ones above, as they are (for conformance tests). An option in
	// the server's OACK that the client did not send is refused with error 8.
	Options []Option
	// Timeout is the first retransmission timeout; 0 means DefaultTimeout. It doubles on each
	// retry.
	Timeout time.Duration
	// Retries is how many times a packet is sent again before giving up; 0 means DefaultRetries.
	Retries int
}

// Get reads filename from the server at addr ("host:port") and writes it to w. It returns what
// was negotiated and moved; the error is an *ErrorPacket (matching errors.Is with an ErrorCode)
// when the server refused.
func (c *Client) Get(ctx context.Context, addr, filename string, w io.Writer) (TransferInfo, error) {
	return c.do(ctx, OpRRQ, addr, filename, w, nil, -1)
}

// Put writes size bytes from r to filename on the server at addr. size < 0 means unknown (tsize
// is then not sent).
func (c *Client) Put(ctx context.Context, addr, filename string, r io.Reader, size int64) (TransferInfo, error) {
	return c.do(ctx, OpWRQ, addr, filename, nil, r, size)
}

func (c *Client) do(ctx context.Context, op Opcode, addr, filename string, w io.Writer, r io.Reader, size int64) (TransferInfo, error) {
	info := TransferInfo{Op: op, Filename: filename, Mode: ModeOctet, BlockSize: DefaultBlockSize,
		WindowSize: 1, Size: -1, Start: time.Now()}
	if c.Netascii {
		info.Mode = ModeNetascii
	}
	done := func(err error) (TransferInfo, error) {
		info.Duration = time.Since(info.Start)
		info.Err = err
		return info, err
	}
	if c.BlockSize != 0 && (c.BlockSize < MinBlockSize || c.BlockSize > MaxBlockSize) {
		return done(fmt.Errorf("tftp: client blksize %d outside %d..%d", c.BlockSize, MinBlockSize, MaxBlockSize))
	}
	if c.WindowSize < 0 || c.WindowSize > 65535 {
		return done(fmt.Errorf("tftp: client windowsize %d outside 1..65535", c.WindowSize))
	}
	if c.TimeoutOption < 0 || c.TimeoutOption > 255 {
		return done(fmt.Errorf("tftp: client timeout option %d outside 1..255", c.TimeoutOption))
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return done(fmt.Errorf("tftp: resolve %q: %w", addr, err))
	}
	server := ua.AddrPort()
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	info.Remote = server
	network := "udp4"
	if server.Addr().Is6() {
		network = "udp6"
	}
	uc, err := net.ListenUDP(network, nil)
	if err != nil {
		return done(fmt.Errorf("tftp: open client socket: %w", err))
	}
	stop := context.AfterFunc(ctx, func() { uc.Close() })
	keepOpen := false
	defer func() {
		if !keepOpen {
			stop()
			uc.Close()
		}
	}()

	req := &RequestPacket{Op: op, Filename: filename, Mode: info.Mode}
	if c.BlockSize != 0 {
		req.Options = append(req.Options, Option{OptBlockSize, strconv.Itoa(c.BlockSize)})
	}
	if c.WindowSize != 0 {
		req.Options = append(req.Options, Option{OptWindowSize, strconv.Itoa(c.WindowSize)})
	}
	if c.TimeoutOption != 0 {
		req.Options = append(req.Options, Option{OptTimeout, strconv.Itoa(c.TimeoutOption)})
	}
	if c.TransferSize {
		if op == OpRRQ {
			req.Options = append(req.Options, Option{OptTransferSize, "0"})
		} else if size >= 0 && !c.Netascii {
			req.Options = append(req.Options, Option{OptTransferSize, strconv.FormatInt(size, 10)})
		}
	}
	req.Options = append(req.Options, c.Options...)
	rrq, err := req.AppendBinary(nil)
	if err != nil {
		return done(err)
	}
	p := params{blksize: DefaultBlockSize, window: 1, timeout: c.Timeout, retries: c.Retries}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if c.TimeoutOption > 0 {
		p.timeout = time.Duration(c.TimeoutOption) * time.Second
	}
	if p.retries <= 0 {
		p.retries = DefaultRetries
	}
	// The request goes to the server's port; the answer comes from its transfer port, which is
	// then the only peer accepted.
	l := &link{c: uc, peer: server, rbuf: make([]byte, 65536)}
	var pr progress
	ctxErr := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("tftp: %v %q: %w", op, filename, ctx.Err())
		}
		return err
	}
	if err := l.send(rrq); err != nil {
		return done(ctxErr(err))
	}
	var first []byte
	clk := startRetryClock(p)
	for first == nil {
		if err := uc.SetReadDeadline(clk.deadline); err != nil {
			return done(err)
		}
		n, from, err := uc.ReadFromUDPAddrPort(l.rbuf)
		if isTimeout(err) {
			if !clk.retry() {
				return done(fmt.Errorf("tftp: no answer from %v to %v %q after %d tries", server, op, filename, clk.tries))
			}
			pr.retransmitted(1)
			if err := l.send(rrq); err != nil {
				return done(ctxErr(err))
			}
			continue
		}
		if err != nil {
			return done(ctxErr(fmt.Errorf("tftp: waiting for the answer to %v %q: %w", op, filename, err)))
		}
		if from.Addr().Unmap() != server.Addr() {
			continue
		}
		// Only a packet that can start this transfer fixes the server's transfer ID; anything
		// else (a late packet of an earlier transfer, say) is ignored.
		pkt, err := ParsePacket(l.rbuf[:n])
		if err != nil {
			continue
		}
		switch pk := pkt.(type) {
		case *ErrorPacket, *OAckPacket:
		case *DataPacket:
			if op != OpRRQ || pk.Block != 1 {
				continue
			}
		case *AckPacket:
			if op != OpWRQ || pk.Block != 0 {
				continue
			}
		default:
			continue
		}
		first = append([]byte(nil), l.rbuf[:n]...)
		l.peer = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		info.Remote = l.peer
	}
	l.rbuf = l.rbuf[:max(p.blksize, c.BlockSize, DefaultBlockSize)+4+1]

	pkt, _ := ParsePacket(first)
	var oacked bool
	switch pk := pkt.(type) {
	case *ErrorPacket:
		return done(wrapf(pk, "tftp: %v %s refused", op, quoteName(filename)))
	case *OAckPacket:
		if err := c.accept(pk, req, &p, &info); err != nil {
			l.sendError(ErrOptionRefused, err.Error())
			return done(err)
		}
		oacked = true
	}
	info.BlockSize, info.WindowSize = p.blksize, p.window
	if need := 2 * p.window * (p.blksize + 64); need > 256*1024 {
		_ = uc.SetReadBuffer(need)
		_ = uc.SetWriteBuffer(need)
	}

	if op == OpRRQ {
		dst := w
		var na *netasciiWriter
		if c.Netascii {
			na = newNetasciiWriter(w)
			dst = na
		}
		var lastSent, pre []byte
		if oacked {
			lastSent, _ = (&AckPacket{Block: 0}).AppendBinary(nil)
			if err := l.send(lastSent); err != nil {
				return done(ctxErr(err))
			}
		} else {
			lastSent, pre = rrq, first
		}
		final, err := recvBlocks(l, p, dst, lastSent, pre, false, &pr)
		if err == nil && na != nil {
			err = na.Flush()
		}
		info.Bytes, info.Retransmits = pr.bytes, pr.retransmits
		if err != nil {
			return done(ctxErr(err))
		}
		// Dally in the background, so that a lost final ACK is repeated without holding up
		// the caller.
		keepOpen = true
		go func() {
			defer stop()
			defer uc.Close()
			dally(l, final, p)
		}()
		return done(nil)
	}
	var src io.Reader = r
	if size >= 0 {
		src = io.LimitReader(r, size)
	}
	if c.Netascii {
		src = newNetasciiReader(src)
	}
	err = sendBlocks(l, p, src, &pr)
	info.Bytes, info.Retransmits = pr.bytes, pr.retransmits
	return done(ctxErr(err))
}

// accept checks an OACK against the request (RFC 2347: only options the client sent, with
// values no larger than asked) and applies it.
func (c *Client) accept(oack *OAckPacket, req *RequestPacket, p *params, info *TransferInfo) error {
	for _, o := range oack.Options {
		asked, ok := req.Option(o.Name)
		if !ok {
			return fmt.Errorf("tftp: server acknowledged option %q that was not requested", o.Name)
		}
		name := strings.ToLower(o.Name)
		if name != OptBlockSize && name != OptWindowSize && name != OptTimeout && name != OptTransferSize {
			continue
		}
		v, err := strconv.ParseInt(o.Value, 10, 64)
		if err != nil {
			return wrapf(err, "tftp: server acknowledged %s=%q", o.Name, o.Value)
		}
		a, _ := strconv.ParseInt(asked, 10, 64)
		switch name {
		case OptBlockSize:
			if v < MinBlockSize || v > a {
				return fmt.Errorf("tftp: server acknowledged blksize %d, asked for %d", v, a)
			}
			p.blksize = int(v)
		case OptWindowSize:
			if v < 1 || v > a {
				return fmt.Errorf("tftp: server acknowledged windowsize %d, asked for %d", v, a)
			}
			p.window = int(v)
		case OptTimeout:
			if v != a {
				return fmt.Errorf("tftp: server acknowledged timeout %d, asked for %d", v, a)
			}
		case OptTransferSize:
			if v < 0 {
				return errors.New("tftp: server acknowledged a negative tsize")
			}
			info.Size = v
		}
	}
	return nil
}
