package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/netroot/netroot/backend"
)

// DialOptions configure a Client; nil means defaults.
type DialOptions struct {
	// Dialer dials the connection; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// TLSConfig makes the client upgrade with NBD_OPT_STARTTLS as its first option and fail if
	// the server refuses. Nil means no TLS.
	TLSConfig *tls.Config
	// NoStructuredReplies keeps to simple replies (no NBD_OPT_STRUCTURED_REPLY); BlockStatus is
	// then unavailable.
	NoStructuredReplies bool
	// NoMetaContext skips selecting base:allocation before Go.
	NoMetaContext bool
}

// ExportInfo describes an export as a server announced it.
type ExportInfo struct {
	Name        string
	Description string
	// Size and Flags are known after Info or Go.
	Size  int64
	Flags TransmissionFlags
	// MinBlockSize, PreferredBlockSize and MaxPayloadSize are the server's size constraints,
	// or the document's defaults when the server sent none.
	MinBlockSize, PreferredBlockSize, MaxPayloadSize uint32
}

// OptionError is a server's error reply to an option.
type OptionError struct {
	Option  Option
	Reply   ReplyType
	Message string
}

func (e *OptionError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("nbd: %s refused: %s", e.Option, e.Reply)
	}
	return fmt.Sprintf("nbd: %s refused: %s: %s", e.Option, e.Reply, e.Message)
}

// Error is a server's error reply to a transmission request. It unwraps to its Errno.
type Error struct {
	Command Command
	Offset  uint64
	Length  uint32
	Errno   Errno
	// Message is the server's explanation, sent with structured replies; may be empty.
	Message string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nbd: %s %d+%d: %v", e.Command, e.Offset, e.Length, e.Errno)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *Error) Unwrap() error { return e.Errno }

// closeWait bounds how long Close waits for replies to requests in flight.
const closeWait = 10 * time.Second

// ErrClientClosed is returned by requests on a Client after Close.
var ErrClientClosed = errors.New("nbd: client closed")

// Extent is a run of the export with uniform allocation status: what a backend.Extenter
// reports, what the server sends for NBD_CMD_BLOCK_STATUS in the base:allocation context (Hole
// is StateHole, Zero is StateZero) and what Client.BlockStatus returns.
type Extent = backend.Extent

// maxErrorChunk bounds an error chunk: the fixed fields, a message and an offset.
const maxErrorChunk = 6 + 65535 + 8

// readN reads n bytes, allocating as they arrive rather than trusting n up front.
func readN(r io.Reader, n int) ([]byte, error) {
	if n <= 64<<10 {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	k, err := buf.ReadFrom(io.LimitReader(r, int64(n)))
	if err == nil && k < int64(n) {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}

// maxChunk bounds the payload a client accepts in one reply chunk.
const maxChunk = DefaultMaxPayloadSize + 4 + 8<<20

var (
	_ io.ReaderAt          = (*Client)(nil)
	_ io.WriterAt          = (*Client)(nil)
	_ backend.WriterDevice = (*Client)(nil) // a Client can itself be exported: a proxy
	_ error                = (*Error)(nil)
	_ error                = (*OptionError)(nil)
	_ error                = Errno(0)
)

// Client is an NBD client. After Dial it is negotiating: List, Info and Go are available. After
// Go it is in transmission: ReadAt, WriteAt, Flush, Trim, Zero, Cache, BlockStatus and Do may be
// called concurrently, and their requests are pipelined on the one connection.
type Client struct {
	nc         net.Conn
	br         *bufio.Reader
	w          *msgWriter
	opts       DialOptions
	structured bool
	tls        bool

	hmu          sync.Mutex // serialises negotiation
	transmitting bool
	info         ExportInfo
	metaID       uint32
	metaOK       bool

	pmu     sync.Mutex
	pending map[uint64]*call
	cookie  uint64
	err     error // set once the connection failed or closed
	done    chan struct{}
}

type call struct {
	req     Request
	mu      sync.Mutex // held while the reply's data is stored into buf
	buf     []byte
	gone    bool // the caller stopped waiting; store nothing
	covered uint64
	err     error
	extents []Extent
	done    chan struct{}
}

// Dial connects to an NBD server and negotiates up to option haggling: fixed newstyle, TLS
// when opts.TLSConfig is set, and structured replies unless disabled.
func Dial(ctx context.Context, network, addr string, opts *DialOptions) (*Client, error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial %s %s: %w", network, addr, err)
	}
	c, err := NewClient(ctx, nc, &o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// NewClient negotiates over an established connection, like Dial.
func NewClient(ctx context.Context, nc net.Conn, opts *DialOptions) (*Client, error) {
	c := &Client{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), pending: make(map[uint64]*call), done: make(chan struct{})}
	if opts != nil {
		c.opts = *opts
	}
	c.w = newMsgWriter(nc, 32<<10, func(err error) error {
		return fmt.Errorf("nbd: write: %w", err)
	})
	err := c.negotiating(ctx, func() error { return c.greet(ctx) })
	if err != nil {
		return nil, err
	}
	return c, nil
}

// negotiating runs f with the connection's deadline following ctx.
func (c *Client) negotiating(ctx context.Context, f func() error) error {
	if d, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(d)
		defer c.nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	err := f()
	if !stop() && err != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

func (c *Client) greet(ctx context.Context) error {
	var g [HandshakeSize]byte
	if _, err := io.ReadFull(c.br, g[:]); err != nil {
		return fmt.Errorf("nbd: reading server greeting: %w", err)
	}
	var gr Greeting
	if err := gr.UnmarshalBinary(g[:]); err != nil {
		return err
	}
	hf := gr.Flags
	if hf&FlagFixedNewstyle == 0 {
		return errors.New("nbd: server does not support fixed newstyle negotiation")
	}
	cf := FlagCFixedNewstyle
	if hf&FlagNoZeroes != 0 {
		cf |= FlagCNoZeroes
	}
	var fb [ClientFlagsSize]byte
	fbs, _ := cf.AppendBinary(fb[:0])
	if err := c.w.send(fbs); err != nil {
		return err
	}
	if c.opts.TLSConfig != nil {
		if err := c.simpleOption(OptStartTLS, nil); err != nil {
			return fmt.Errorf("nbd: TLS required by the client: %w", err)
		}
		tc := tls.Client(c.nc, c.opts.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("nbd: TLS handshake: %w", err)
		}
		c.nc = tc
		c.br.Reset(tc)
		c.w.setWriter(tc)
		c.tls = true
	}
	if !c.opts.NoStructuredReplies {
		err := c.simpleOption(OptStructuredReply, nil)
		var oe *OptionError
		switch {
		case err == nil:
			c.structured = true
		case errors.As(err, &oe):
		default:
			return err
		}
	}
	return nil
}

// TLS reports whether the connection is encrypted.
func (c *Client) TLS() bool { return c.tls }

// StructuredReplies reports whether the server agreed to structured replies.
func (c *Client) StructuredReplies() bool { return c.structured }

func (c *Client) sendOption(opt Option, data []byte) error {
	var a [OptionHeaderSize]byte
	h, _ := OptionHeader{Option: opt, Length: uint32(len(data))}.AppendBinary(a[:0])
	return c.w.send(h, data)
}

// readOptionReply reads one option reply to opt.
func (c *Client) readOptionReply(opt Option) (ReplyType, []byte, error) {
	var h [OptionReplyHeaderSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading reply to %s: %w", opt, err)
	}
	var rh OptionReplyHeader
	if err := rh.UnmarshalBinary(h[:]); err != nil {
		return 0, nil, err
	}
	if rh.Option != opt {
		return 0, nil, fmt.Errorf("nbd: reply to %s while waiting for %s", rh.Option, opt)
	}
	typ, n := rh.Type, rh.Length
	if n > maxOptionDrain {
		return 0, nil, fmt.Errorf("nbd: reply to %s of %d bytes is too large", opt, n)
	}
	data, err := readN(c.br, int(n))
	if err != nil {
		return 0, nil, fmt.Errorf("nbd: reading reply to %s: %w", opt, err)
	}
	if typ.IsError() {
		return typ, data, &OptionError{Option: opt, Reply: typ, Message: string(data)}
	}
	return typ, data, nil
}

// simpleOption sends an option whose only good reply is NBD_REP_ACK.
func (c *Client) simpleOption(opt Option, data []byte) error {
	if err := c.sendOption(opt, data); err != nil {
		return err
	}
	typ, _, err := c.readOptionReply(opt)
	if err != nil {
		return err
	}
	if typ != RepAck {
		return fmt.Errorf("nbd: unexpected reply %s to %s", typ, opt)
	}
	return nil
}

func (c *Client) checkNegotiating() error {
	if c.transmitting {
		return errors.New("nbd: option haggling is over")
	}
	return nil
}

// List asks for the server's exports (NBD_OPT_LIST). Only Name and Description are set.
func (c *Client) List(ctx context.Context) ([]ExportInfo, error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if err := c.checkNegotiating(); err != nil {
		return nil, err
	}
	var list []ExportInfo
	err := c.negotiating(ctx, func() error {
		if err := c.sendOption(OptList, nil); err != nil {
			return err
		}
		for {
			typ, data, err := c.readOptionReply(OptList)
			if err != nil {
				return err
			}
			switch typ {
			case RepAck:
				return nil
			case RepServer:
				var sr ServerReply
				if err := sr.UnmarshalBinary(data); err != nil {
					return fmt.Errorf("nbd: malformed NBD_REP_SERVER of %d bytes: %w", len(data), err)
				}
				list = append(list, ExportInfo{Name: sr.Name, Description: sr.Description})
			default:
				return fmt.Errorf("nbd: unexpected reply %s to NBD_OPT_LIST", typ)
			}
		}
	})
	return list, err
}

// Info asks for the details of an export (NBD_OPT_INFO) without entering transmission.
func (c *Client) Info(ctx context.Context, name string) (ExportInfo, error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if err := c.checkNegotiating(); err != nil {
		return ExportInfo{}, err
	}
	var info ExportInfo
	err := c.negotiating(ctx, func() error {
		var err error
		info, err = c.infoGo(OptInfo, name)
		return err
	})
	return info, err
}

// Go selects an export and enters transmission (NBD_OPT_GO, or NBD_OPT_EXPORT_NAME with servers
// that do not know NBD_OPT_GO). With structured replies it first selects base:allocation, so
// BlockStatus works when the server offers it.
func (c *Client) Go(ctx context.Context, name string) (ExportInfo, error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if err := c.checkNegotiating(); err != nil {
		return ExportInfo{}, err
	}
	var info ExportInfo
	err := c.negotiating(ctx, func() error {
		if c.structured && !c.opts.NoMetaContext {
			if err := c.setMetaContext(name); err != nil {
				return err
			}
		}
		var err error
		info, err = c.infoGo(OptGo, name)
		var oe *OptionError
		if errors.As(err, &oe) && oe.Reply == RepErrUnsup {
			info, err = c.exportName(name)
		}
		return err
	})
	if err != nil {
		return ExportInfo{}, err
	}
	c.info = info
	c.transmitting = true
	go c.readLoop()
	return info, nil
}

func (c *Client) setMetaContext(name string) error {
	b, _ := MetaContextRequest{Name: name, Queries: []string{MetaContextBaseAllocation}}.AppendBinary(nil)
	if err := c.sendOption(OptSetMetaContext, b); err != nil {
		return err
	}
	c.metaOK = false
	for {
		typ, data, err := c.readOptionReply(OptSetMetaContext)
		var oe *OptionError
		if errors.As(err, &oe) {
			return nil // the server has no metadata contexts; BlockStatus will be refused
		}
		if err != nil {
			return err
		}
		switch typ {
		case RepAck:
			return nil
		case RepMetaContext:
			var mc MetaContextReply
			if err := mc.UnmarshalBinary(data); err != nil {
				return fmt.Errorf("nbd: malformed NBD_REP_META_CONTEXT of %d bytes: %w", len(data), err)
			}
			if mc.Name == MetaContextBaseAllocation {
				c.metaID, c.metaOK = mc.ID, true
			}
		default:
			return fmt.Errorf("nbd: unexpected reply %s to NBD_OPT_SET_META_CONTEXT", typ)
		}
	}
}

func (c *Client) infoGo(opt Option, name string) (ExportInfo, error) {
	b, _ := InfoRequest{Name: name, Infos: []InfoType{InfoName, InfoDescription, InfoBlockSize}}.AppendBinary(nil)
	if err := c.sendOption(opt, b); err != nil {
		return ExportInfo{}, err
	}
	info := ExportInfo{Name: name, MinBlockSize: DefaultMinBlockSize,
		PreferredBlockSize: DefaultPreferredBlockSize, MaxPayloadSize: DefaultMaxPayloadSize}
	gotExport := false
	for {
		typ, data, err := c.readOptionReply(opt)
		if err != nil {
			return ExportInfo{}, err
		}
		switch typ {
		case RepAck:
			if !gotExport {
				return ExportInfo{}, fmt.Errorf("nbd: %s succeeded without NBD_INFO_EXPORT", opt)
			}
			return info, nil
		case RepInfo:
			var it InfoTextReply
			if err := it.UnmarshalBinary(data); err != nil {
				return ExportInfo{}, fmt.Errorf("nbd: NBD_REP_INFO of %d bytes", len(data))
			}
			switch it.Type {
			case InfoExport:
				var ie InfoExportReply
				if err := ie.UnmarshalBinary(data); err != nil {
					return ExportInfo{}, fmt.Errorf("nbd: NBD_INFO_EXPORT of %d bytes: %w", len(data), err)
				}
				info.Size, info.Flags = int64(ie.Size), ie.Flags
				gotExport = true
			case InfoName:
				info.Name = it.Text
			case InfoDescription:
				info.Description = it.Text
			case InfoBlockSize:
				var bs InfoBlockSizeReply
				if err := bs.UnmarshalBinary(data); err != nil {
					return ExportInfo{}, fmt.Errorf("nbd: NBD_INFO_BLOCK_SIZE of %d bytes: %w", len(data), err)
				}
				info.MinBlockSize, info.PreferredBlockSize, info.MaxPayloadSize = bs.Min, bs.Preferred, bs.MaxPayload
			}
		default:
			return ExportInfo{}, fmt.Errorf("nbd: unexpected reply %s to %s", typ, opt)
		}
	}
}

func (c *Client) exportName(name string) (ExportInfo, error) {
	if err := c.sendOption(OptExportName, []byte(name)); err != nil {
		return ExportInfo{}, err
	}
	var b [ExportNameReplySize]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q refused: %w", name, err)
	}
	var r ExportNameReply
	r.UnmarshalBinary(b[:]) // cannot fail: b is ExportNameReplySize long
	return ExportInfo{Name: name, Size: int64(r.Size), Flags: r.Flags,
		MinBlockSize: DefaultMinBlockSize, PreferredBlockSize: DefaultPreferredBlockSize,
		MaxPayloadSize: DefaultMaxPayloadSize}, nil
}

// Export returns the export selected by Go.
func (c *Client) Export() ExportInfo { return c.info }

// Size returns the size of the export selected by Go.
func (c *Client) Size() int64 { return c.info.Size }

// Close ends the session: NBD_OPT_ABORT while negotiating, NBD_CMD_DISC in transmission (after
// the requests in flight are answered), and closes the connection.
func (c *Client) Close() error {
	c.hmu.Lock()
	transmitting := c.transmitting
	c.hmu.Unlock()
	if !transmitting {
		c.nc.SetDeadline(time.Now().Add(time.Second))
		c.sendOption(OptAbort, nil)
		c.readOptionReply(OptAbort)
		return c.nc.Close()
	}
	c.pmu.Lock()
	if c.err != nil {
		c.pmu.Unlock()
		<-c.done
		return nil
	}
	c.err = ErrClientClosed
	var waits []chan struct{}
	for _, cl := range c.pending {
		waits = append(waits, cl.done)
	}
	c.pmu.Unlock()
	// Requests in flight get a bounded time to be answered before the disconnect.
	timeout := time.NewTimer(closeWait)
	defer timeout.Stop()
wait:
	for _, w := range waits {
		select {
		case <-w:
		case <-timeout.C:
			break wait
		}
	}
	r, _ := Request{Type: CmdDisc}.MarshalBinary()
	c.w.send(r)
	err := c.nc.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil // the reader saw the server close first
	}
	return err
}

// --- transmission ---

// start registers a request and sends it.
func (c *Client) start(req Request, data []byte) (*call, error) {
	cl := &call{req: req, done: make(chan struct{})}
	if req.Type == CmdRead {
		cl.buf = data
	}
	c.pmu.Lock()
	if c.err != nil {
		c.pmu.Unlock()
		return nil, c.err
	}
	c.cookie++
	cl.req.Cookie = c.cookie
	c.pending[cl.req.Cookie] = cl
	c.pmu.Unlock()
	var h [RequestHeaderSize]byte
	cl.req.AppendBinary(h[:0])
	var err error
	if req.Type == CmdWrite {
		err = c.w.send(h[:], data)
	} else {
		err = c.w.send(h[:])
	}
	if err != nil {
		c.fail(err)
	}
	return cl, nil
}

// wait waits for cl's reply or for ctx to end.
func (c *Client) wait(ctx context.Context, cl *call) error {
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
		cl.mu.Lock()
		cl.gone = true
		cl.mu.Unlock()
		return fmt.Errorf("nbd: %s %d+%d: %w", cl.req.Type, cl.req.Offset, cl.req.Length, ctx.Err())
	}
}

// Do sends one request and waits for its reply: a low-level access for tests and tools. For
// CmdWrite data is the payload; for CmdRead it receives the data and must be req.Length long.
// req.Cookie is assigned by the client.
func (c *Client) Do(ctx context.Context, req Request, data []byte) error {
	if !c.isTransmitting() {
		return errors.New("nbd: Do before Go")
	}
	if req.Type == CmdRead && len(data) != int(req.Length) {
		return fmt.Errorf("nbd: read buffer of %d bytes for length %d", len(data), req.Length)
	}
	cl, err := c.start(req, data)
	if err != nil {
		return err
	}
	return c.wait(ctx, cl)
}

func (c *Client) isTransmitting() bool {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return c.transmitting
}

func (c *Client) maxRequest() int {
	m := int(c.info.MaxPayloadSize)
	if m <= 0 || m > DefaultMaxPayloadSize {
		m = DefaultMaxPayloadSize
	}
	return m
}

// ReadAt implements io.ReaderAt, splitting large reads into pipelined requests.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if !c.isTransmitting() {
		return 0, errors.New("nbd: ReadAt before Go")
	}
	if off < 0 {
		return 0, fmt.Errorf("nbd: read at negative offset %d", off)
	}
	var eof error
	if off >= c.info.Size {
		if len(p) == 0 && off == c.info.Size {
			return 0, nil
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.info.Size-off {
		p = p[:c.info.Size-off]
		eof = io.EOF
	}
	n, err := c.split(context.Background(), CmdRead, p, off, 0)
	if err != nil {
		return n, err
	}
	return n, eof
}

// WriteAt implements io.WriterAt, splitting large writes into pipelined requests.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	return c.Write(context.Background(), p, off, 0)
}

// Write writes p at off with flags (CmdFlagFUA), splitting large writes into pipelined requests.
func (c *Client) Write(ctx context.Context, p []byte, off int64, flags CommandFlags) (int, error) {
	if !c.isTransmitting() {
		return 0, errors.New("nbd: Write before Go")
	}
	if off < 0 {
		return 0, fmt.Errorf("nbd: write at negative offset %d", off)
	}
	return c.split(ctx, CmdWrite, p, off, flags)
}

// split issues the requests of a read or write of p at off, all at once, and waits for them.
// It returns the bytes done before the first failed request.
func (c *Client) split(ctx context.Context, cmd Command, p []byte, off int64, flags CommandFlags) (int, error) {
	max := c.maxRequest()
	var calls []*call
	var err error
	// An empty p still makes one request, of length 0.
	for done := 0; ; {
		k := min(len(p)-done, max)
		var cl *call
		cl, err = c.start(Request{Type: cmd, Flags: flags, Offset: uint64(off) + uint64(done), Length: uint32(k)}, p[done:done+k])
		if err != nil {
			break
		}
		calls = append(calls, cl)
		if done += k; done == len(p) {
			break
		}
	}
	n := 0
	failed := err != nil
	for _, cl := range calls {
		if werr := c.wait(ctx, cl); werr != nil {
			if !failed {
				err, failed = werr, true
			}
			continue
		}
		if !failed {
			n += int(cl.req.Length)
		}
	}
	return n, err
}

// Flush asks the server to make completed writes durable (NBD_CMD_FLUSH).
func (c *Client) Flush(ctx context.Context) error {
	return c.Do(ctx, Request{Type: CmdFlush}, nil)
}

// Trim tells the server that [off, off+n) is no longer needed (NBD_CMD_TRIM).
func (c *Client) Trim(ctx context.Context, off, n int64) error {
	return c.ranged(ctx, CmdTrim, off, n, 0)
}

// Zero writes zeroes to [off, off+n) (NBD_CMD_WRITE_ZEROES); flags may hold CmdFlagNoHole,
// CmdFlagFastZero and CmdFlagFUA.
func (c *Client) Zero(ctx context.Context, off, n int64, flags CommandFlags) error {
	return c.ranged(ctx, CmdWriteZeroes, off, n, flags)
}

// Cache asks the server to prefetch [off, off+n) (NBD_CMD_CACHE).
func (c *Client) Cache(ctx context.Context, off, n int64) error {
	return c.ranged(ctx, CmdCache, off, n, 0)
}

func (c *Client) ranged(ctx context.Context, cmd Command, off, n int64, flags CommandFlags) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("nbd: %s of negative range %d+%d", cmd, off, n)
	}
	const step = 1 << 30
	for {
		k := min(n, step)
		if err := c.Do(ctx, Request{Type: cmd, Flags: flags, Offset: uint64(off), Length: uint32(k)}, nil); err != nil {
			return err
		}
		off += k
		n -= k
		if n == 0 {
			return nil
		}
	}
}

// BlockStatus reports the allocation of [off, off+n) (NBD_CMD_BLOCK_STATUS with
// base:allocation). The extents start at off and may cover less (or, for the last one, more)
// than n. flags may hold CmdFlagReqOne.
func (c *Client) BlockStatus(ctx context.Context, off int64, n uint32, flags CommandFlags) ([]Extent, error) {
	if !c.isTransmitting() {
		return nil, errors.New("nbd: BlockStatus before Go")
	}
	if !c.metaOK {
		return nil, errors.New("nbd: the server did not select base:allocation")
	}
	if off < 0 {
		return nil, fmt.Errorf("nbd: block status at negative offset %d", off)
	}
	cl, err := c.start(Request{Type: CmdBlockStatus, Flags: flags, Offset: uint64(off), Length: n}, nil)
	if err != nil {
		return nil, err
	}
	if err := c.wait(ctx, cl); err != nil {
		return nil, err
	}
	return cl.extents, nil
}

// fail ends the connection with err, failing every pending request.
func (c *Client) fail(err error) {
	c.pmu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.pmu.Unlock()
	c.nc.Close()
}

func (c *Client) readLoop() {
	defer close(c.done)
	err := c.readReplies()
	c.nc.Close()
	c.pmu.Lock()
	if c.err == nil {
		c.err = err
	}
	ferr := c.err
	pending := c.pending
	c.pending = make(map[uint64]*call)
	c.pmu.Unlock()
	for _, cl := range pending {
		cl.err = fmt.Errorf("nbd: %s %d+%d: connection lost: %w", cl.req.Type, cl.req.Offset, cl.req.Length, ferr)
		close(cl.done)
	}
}

func (c *Client) readReplies() error {
	for {
		if err := c.readReply(); err != nil {
			return err
		}
	}
}

func (c *Client) lookupCall(cookie uint64) (*call, error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	cl, ok := c.pending[cookie]
	if !ok {
		return nil, fmt.Errorf("nbd: reply for unknown cookie %#x", cookie)
	}
	return cl, nil
}

func (c *Client) complete(cl *call) {
	c.pmu.Lock()
	delete(c.pending, cl.req.Cookie)
	c.pmu.Unlock()
	close(cl.done)
}

// readReply reads one simple reply or structured chunk.
func (c *Client) readReply() error {
	var h [StructuredReplyHeaderSize]byte
	if _, err := io.ReadFull(c.br, h[:4]); err != nil {
		return fmt.Errorf("nbd: reading reply: %w", err)
	}
	// The magic says which header this is; each is then parsed by its wire value.
	switch m := binary.BigEndian.Uint32(h[:]); m {
	case SimpleReplyMagic:
		if _, err := io.ReadFull(c.br, h[4:SimpleReplyHeaderSize]); err != nil {
			return fmt.Errorf("nbd: reading reply: %w", err)
		}
		var sr SimpleReply
		if err := sr.UnmarshalBinary(h[:]); err != nil {
			return err
		}
		cl, err := c.lookupCall(sr.Cookie)
		if err != nil {
			return err
		}
		if errno := sr.Errno; errno != 0 {
			cl.err = &Error{Command: cl.req.Type, Offset: cl.req.Offset, Length: cl.req.Length, Errno: errno}
		} else if cl.req.Type == CmdRead {
			if err := c.store(cl, 0, int(cl.req.Length)); err != nil {
				return err
			}
		} else if cl.req.Type == CmdBlockStatus {
			return fmt.Errorf("nbd: simple reply to NBD_CMD_BLOCK_STATUS")
		}
		c.complete(cl)
		return nil
	case StructuredReplyMagic:
		if !c.structured {
			return errors.New("nbd: structured reply chunk without structured replies negotiated")
		}
		if _, err := io.ReadFull(c.br, h[4:]); err != nil {
			return fmt.Errorf("nbd: reading reply chunk: %w", err)
		}
		var ch ChunkHeader
		if err := ch.UnmarshalBinary(h[:]); err != nil {
			return err
		}
		return c.readChunk(ch.Flags, ch.Type, ch.Cookie, ch.Length)
	default:
		return fmt.Errorf("nbd: bad reply magic %#x", m)
	}
}

// store reads n bytes of read data into cl.buf at pos, or discards them if the caller left.
func (c *Client) store(cl *call, pos, n int) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var err error
	if cl.gone {
		_, err = io.CopyN(io.Discard, c.br, int64(n))
	} else {
		_, err = io.ReadFull(c.br, cl.buf[pos:pos+n])
	}
	if err != nil {
		return fmt.Errorf("nbd: reading %d bytes of read data: %w", n, err)
	}
	return nil
}

func (c *Client) readChunk(flags ReplyFlags, typ ChunkType, cookie uint64, length uint32) error {
	if length > maxChunk {
		return fmt.Errorf("nbd: %s chunk of %d bytes is too large", typ, length)
	}
	cl, err := c.lookupCall(cookie)
	if err != nil {
		return err
	}
	req := cl.req
	bad := func(format string, args ...any) error {
		return fmt.Errorf("nbd: %s chunk for %s %d+%d: %s", typ, req.Type, req.Offset, req.Length, fmt.Sprintf(format, args...))
	}
	switch {
	case typ == ChunkTypeNone:
		if length != 0 || flags&ReplyFlagDone == 0 {
			return bad("length %d, flags %#x", length, uint16(flags))
		}
	case typ == ChunkTypeOffsetData:
		if req.Type != CmdRead || length < 9 {
			return bad("length %d", length)
		}
		var ob [OffsetDataChunkSize]byte
		if _, err := io.ReadFull(c.br, ob[:]); err != nil {
			return bad("%v", err)
		}
		var od OffsetDataChunk
		od.UnmarshalBinary(ob[:]) // cannot fail: ob is OffsetDataChunkSize long
		off, n := od.Offset, uint64(length-OffsetDataChunkSize)
		if off < req.Offset || off-req.Offset > uint64(req.Length) || n > uint64(req.Length)-(off-req.Offset) {
			return bad("data %d+%d outside the request", off, n)
		}
		if err := c.store(cl, int(off-req.Offset), int(n)); err != nil {
			return err
		}
		cl.covered += n
	case typ == ChunkTypeOffsetHole:
		if req.Type != CmdRead || length != 12 {
			return bad("length %d", length)
		}
		var b [12]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return bad("%v", err)
		}
		var hole OffsetHoleChunk
		if err := hole.UnmarshalBinary(b[:]); err != nil {
			return bad("%v", err)
		}
		off, n := hole.Offset, uint64(hole.Length)
		if n == 0 || off < req.Offset || off-req.Offset > uint64(req.Length) || n > uint64(req.Length)-(off-req.Offset) {
			return bad("hole %d+%d outside the request", off, n)
		}
		cl.mu.Lock()
		if !cl.gone {
			clear(cl.buf[off-req.Offset : off-req.Offset+n])
		}
		cl.mu.Unlock()
		cl.covered += n
	case typ == ChunkTypeBlockStatus:
		if req.Type != CmdBlockStatus || length < 12 || (length-4)%8 != 0 {
			return bad("length %d", length)
		}
		if err := c.readBlockStatus(cl, length); err != nil {
			return bad("%v", err)
		}
	case typ.IsError():
		if length < 6 || length > maxErrorChunk {
			return bad("length %d", length)
		}
		b, err := readN(c.br, int(length))
		if err != nil {
			return bad("%v", err)
		}
		// Every error chunk starts like NBD_REPLY_TYPE_ERROR; the fields of the chunk's type
		// that may follow the message (the offset of NBD_REPLY_TYPE_ERROR_OFFSET) are not kept.
		var ec ErrorChunk
		if _, err := ec.unmarshalPrefix(b); err != nil {
			return bad("%v", err)
		}
		errno := ec.Errno
		if errno == 0 {
			errno = EIO // the document requires nonzero; treat a zero as a generic failure
		}
		if cl.err == nil {
			cl.err = &Error{Command: req.Type, Offset: req.Offset, Length: req.Length, Errno: errno, Message: ec.Message}
		}
	default:
		return bad("unknown chunk type")
	}
	if flags&ReplyFlagDone != 0 {
		if cl.err == nil {
			switch {
			case req.Type == CmdRead && cl.covered != uint64(req.Length):
				cl.err = fmt.Errorf("nbd: %s %d+%d: reply covered %d bytes", req.Type, req.Offset, req.Length, cl.covered)
			case req.Type == CmdBlockStatus && len(cl.extents) == 0:
				cl.err = fmt.Errorf("nbd: %s %d+%d: reply has no extents", req.Type, req.Offset, req.Length)
			}
		}
		c.complete(cl)
	}
	return nil
}

// blockStatusBatch is how many block status descriptors the client reads at a time: a chunk is
// read in pieces, so a lying length costs no memory.
const blockStatusBatch = 1024

// readBlockStatus reads the payload of a block status chunk of length bytes (at least one
// descriptor, a whole number of them) and keeps its extents, up to maxExtents, if they are of
// base:allocation.
func (c *Client) readBlockStatus(cl *call, length uint32) error {
	left := int(length)
	buf := make([]byte, 4+min(left-4, blockStatusBatch*BlockStatusDescriptorSize))
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return err
	}
	left -= len(buf)
	bs := BlockStatusChunk{Offset: int64(cl.req.Offset)}
	if err := bs.UnmarshalBinary(buf); err != nil {
		return err
	}
	room := 0
	if bs.ContextID == c.metaID {
		room = maxExtents - len(cl.extents)
	}
	keep := func(e []Extent) {
		n := min(len(e), room)
		cl.extents = append(cl.extents, e[:n]...)
		room -= n
	}
	keep(bs.Extents)
	last := bs.Extents[len(bs.Extents)-1]
	pos := last.Offset + last.Length
	var more []Extent
	for left > 0 {
		p := buf[:min(left, blockStatusBatch*BlockStatusDescriptorSize)]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return err
		}
		left -= len(p)
		var err error
		if more, pos, err = appendExtents(more[:0], p, pos); err != nil {
			return err
		}
		keep(more)
	}
	return nil
}
