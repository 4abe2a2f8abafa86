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
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netroot/netroot/backend"
)

// Limits on what a client may send during the handshake.
const (
	// maxOptionLength is the longest option data read; longer options are drained (up to
	// maxOptionDrain) and refused with NBD_REP_ERR_TOO_BIG.
	maxOptionLength = 64 << 10
	// maxOptionDrain is the longest option the server drains; a longer one ends the session.
	maxOptionDrain = 16 << 20
	// maxOptions bounds the options of one handshake, so a client cannot haggle forever.
	maxOptions = 4096
	// metaContextID is the ID given to base:allocation.
	metaContextID = 1
)

var errHardDisconnect = errors.New("nbd: session ended by protocol violation")

// conn is one server connection.
type conn struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader
	remote net.Addr
	log    *slog.Logger

	mu           sync.Mutex // guards transmitting and closing
	transmitting bool
	closing      atomic.Bool
	// handing is set while Server.Handoff waits for this connection.
	handing atomic.Bool
	// source is the client's sourceKey; negotiating (guarded by the server's mu) that the
	// connection counts among its source's handshakes.
	source      string
	negotiating bool
	// Counted for Detach and Conns.
	bytesRead, bytesWritten, requests atomic.Int64
	since                             time.Time    // entered transmission; set before transmitting
	lastRequest                       atomic.Int64 // Unix nanoseconds of the last request, 0 before

	// Negotiation state.
	tls          bool
	noZeroes     bool
	structured   bool
	metaExport   string // export named in the last successful SET_META_CONTEXT
	metaSelected bool

	// Transmission state.
	export    *Export
	requested string // the export name the client asked for
	dev       backend.Device
	flags     TransmissionFlags
	size      uint64
	blockCtx  bool // base:allocation selected for this export
	slicer    slicer
	filer     fileRanger
	sendfile  bool // reads are sent from filer's file with sendfile, writes spliced into it
	pipe      *spliceWriter
	noPipe    bool // making a pipe failed: writes go through memory

	w *msgWriter

	inflight sync.WaitGroup
	active   atomic.Int32 // requests being handled, whose replies are still to come
	// Until requests reaches slowUntil, none are served inline.
	slowUntil uint64
	// fast counts the requests in a row served in less than slowInline.
	fast    atomic.Int64
	sem     chan struct{}
	budget  budget
	workers workers
}

func newServerConn(s *Server, c net.Conn) *conn {
	cc := &conn{
		srv:    s,
		nc:     c,
		br:     bufio.NewReaderSize(c, 16<<10),
		remote: c.RemoteAddr(),
		log:    s.logger().With("client", addrString(c.RemoteAddr())),
	}
	cc.w = newMsgWriter(c, 32<<10, cc.failWrite)
	cc.w.hold = func() bool { return cc.active.Load() > 1 }
	return cc
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// shutdown asks the connection to end gracefully: a negotiating connection is closed at once,
// one in transmission stops reading requests and finishes those it has.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing.Store(true)
	if !c.transmitting {
		c.nc.Close()
		return
	}
	c.nc.SetReadDeadline(time.Now())
}

func (c *conn) closeNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing.Store(true)
	c.nc.Close()
}

func (c *conn) serve(ctx context.Context) (err error) {
	defer c.srv.forgetConn(c)
	// Closes the current connection, unless it was handed over: after STARTTLS that ends the
	// TLS session properly.
	handed, transmitted := false, false
	defer func() {
		if !handed {
			c.closeNow()
		}
	}()
	var start time.Time
	defer func() {
		handed = c.handOver(err, transmitted)
		if transmitted {
			c.detached(start, err, handed)
		}
	}()
	stop := context.AfterFunc(ctx, c.shutdown)
	defer stop()
	if d := c.srv.handshakeTimeout(); d > 0 {
		c.nc.SetDeadline(time.Now().Add(d))
	}
	done, err := c.handshake(ctx)
	c.srv.handshakeDone(c)
	if c.export != nil {
		// Attached, even if the final reply could not be sent.
		defer c.srv.releaseExport(c.export)
		defer c.dropOverlay()
	}
	if err != nil || done {
		if err != nil && c.closing.Load() {
			err = ErrServerClosed
		}
		if err != nil {
			c.log.Debug("nbd: handshake ended", "err", err)
		}
		return err
	}
	if c.handing.Load() && !c.handable() {
		// Negotiated TLS or a copy-on-write export during a Handoff: this server keeps it.
		c.handing.Store(false)
		c.srv.resolveHandoff(nil, true)
	}
	c.nc.SetDeadline(time.Time{})
	c.srv.stats.attached.Add(1)
	c.log.Info("nbd: client attached export", "export", c.export.Name, "size", c.size,
		"flags", fmt.Sprintf("%#x", uint16(c.flags)), "tls", c.tls)
	if c.srv.OnAttach != nil {
		c.srv.OnAttach(c.export, c.remote)
	}
	transmitted, start = true, time.Now()
	return c.transmit()
}

func (c *conn) send(parts ...[]byte) error { return c.w.send(parts...) }

func (c *conn) flush() error { return c.w.flush() }

// --- handshake ---

func (c *conn) optReply(opt Option, typ ReplyType, data []byte) error {
	var a [OptionReplyHeaderSize]byte
	h, _ := OptionReplyHeader{Option: opt, Type: typ, Length: uint32(len(data))}.AppendBinary(a[:0])
	return c.send(h, data)
}

func (c *conn) optError(opt Option, typ ReplyType, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.log.Debug("nbd: option refused", "option", opt.String(), "reply", typ.String(), "reason", msg)
	return c.optReply(opt, typ, []byte(clipString(msg)))
}

func clipString(s string) string {
	if len(s) > MaxStringLength {
		return s[:MaxStringLength]
	}
	return s
}

// handshake runs the negotiation. It returns done when the session ended without entering
// transmission (NBD_OPT_ABORT).
func (c *conn) handshake(ctx context.Context) (done bool, err error) {
	var greet [HandshakeSize]byte
	binary.BigEndian.PutUint64(greet[0:], Magic)
	binary.BigEndian.PutUint64(greet[8:], OptionMagic)
	binary.BigEndian.PutUint16(greet[16:], uint16(FlagFixedNewstyle|FlagNoZeroes))
	if err := c.send(greet[:]); err != nil {
		return false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false, fmt.Errorf("nbd: reading client flags: %w", err)
	}
	flags := ClientFlags(binary.BigEndian.Uint32(cf[:]))
	if flags&^(FlagCFixedNewstyle|FlagCNoZeroes) != 0 {
		return false, fmt.Errorf("nbd: unknown client flags %#x", uint32(flags))
	}
	c.noZeroes = flags&FlagCNoZeroes != 0
	fixed := flags&FlagCFixedNewstyle != 0

	var hdr [OptionHeaderSize]byte
	for range maxOptions {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return false, fmt.Errorf("nbd: client left during negotiation: %w", err)
			}
			return false, fmt.Errorf("nbd: reading option: %w", err)
		}
		var oh OptionHeader
		if err := oh.UnmarshalBinary(hdr[:]); err != nil {
			return false, err
		}
		opt, n := oh.Option, oh.Length
		if n > maxOptionLength {
			if n > maxOptionDrain || opt == OptExportName {
				return false, fmt.Errorf("nbd: option %s length %d too large", opt, n)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(n)); err != nil {
				return false, fmt.Errorf("nbd: draining option %s: %w", opt, err)
			}
			if err := c.optError(opt, RepErrTooBig, "option %s length %d exceeds %d", opt, n,
				maxOptionLength); err != nil {
				return false, err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return false, fmt.Errorf("nbd: reading option %s data: %w", opt, err)
		}
		done, transmit, err := c.option(ctx, opt, data, fixed)
		if err != nil || done || transmit {
			if err == nil {
				err = c.flush()
			}
			return done, err
		}
	}
	return false, fmt.Errorf("nbd: more than %d options", maxOptions)
}

// option handles one option. transmit reports that the connection entered transmission.
func (c *conn) option(ctx context.Context, opt Option, data []byte, fixed bool) (done, transmit bool, err error) {
	if c.srv.tlsMode() == TLSRequired && !c.tls {
		switch opt {
		case OptStartTLS, OptAbort:
		case OptExportName:
			c.refuse(RefusedTLSRequired, string(data), "the server requires TLS")
			return false, false, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q before TLS on a TLS-only server", data)
		case OptGo:
			var req InfoRequest
			req.UnmarshalBinary(data) // the name, if it parses, is only reported
			c.refuse(RefusedTLSRequired, req.Name, "the server requires TLS")
			return false, false, c.optError(opt, RepErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
		default:
			return false, false, c.optError(opt, RepErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
		}
	}
	if c.srv.inShutdown.Load() && !c.srv.handingOff.Load() && opt != OptAbort {
		if opt == OptExportName {
			return false, false, ErrServerClosed
		}
		return false, false, c.optError(opt, RepErrShutdown, "server is shutting down")
	}
	switch opt {
	case OptExportName:
		return false, true, c.exportName(ctx, string(data))
	case OptAbort:
		// The client may already have gone; an error writing the ACK does not matter.
		c.optReply(opt, RepAck, nil)
		c.flush()
		return true, false, nil
	case OptList:
		return false, false, c.list(ctx, data)
	case OptStartTLS:
		return false, false, c.startTLS(ctx, data, fixed)
	case OptInfo, OptGo:
		transmit, err := c.infoGo(ctx, opt, data)
		return false, transmit, err
	case OptStructuredReply:
		if len(data) != 0 {
			return false, false, c.optError(opt, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY with %d bytes of data", len(data))
		}
		c.structured = true
		return false, false, c.optReply(opt, RepAck, nil)
	case OptListMetaContext, OptSetMetaContext:
		return false, false, c.metaContext(ctx, opt, data)
	default:
		return false, false, c.optError(opt, RepErrUnsup, "option %s is not supported", opt)
	}
}

// lookup finds an export and checks that this client may use it. On refusal it returns the
// reply type and the reason.
func (c *conn) lookup(ctx context.Context, name string) (*Export, ReplyType, string) {
	e, err := c.srv.Exports.LookupExport(ctx, name)
	if err != nil || e == nil {
		if err == nil || errors.Is(err, ErrUnknownExport) {
			return nil, RepErrUnknown, fmt.Sprintf("export %q not found", name)
		}
		return nil, RepErrUnknown, fmt.Sprintf("export %q: %v", name, err)
	}
	if e.Device == nil {
		return nil, RepErrUnknown, fmt.Sprintf("export %q has no device", name)
	}
	if !e.Allowed(c.remote) {
		return nil, RepErrPolicy, fmt.Sprintf("export %q: client %s not allowed", name, addrString(c.remote))
	}
	if e.TLS == TLSRequired && !c.tls {
		return nil, RepErrTLSReqd, fmt.Sprintf("export %q requires TLS", name)
	}
	return e, 0, ""
}

func (c *conn) list(ctx context.Context, data []byte) error {
	if len(data) != 0 {
		return c.optError(OptList, RepErrInvalid, "NBD_OPT_LIST with %d bytes of data", len(data))
	}
	if c.srv.DisableList {
		return c.optError(OptList, RepErrPolicy, "listing exports is disabled")
	}
	exports, err := c.srv.Exports.ListExports(ctx)
	if err != nil {
		return c.optError(OptList, RepErrPlatform, "listing exports: %v", err)
	}
	for _, e := range exports {
		if !e.Allowed(c.remote) || (e.TLS == TLSRequired && !c.tls) {
			continue
		}
		b := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
		b = append(b, e.Name...)
		b = append(b, clipString(e.Description)...)
		if err := c.optReply(OptList, RepServer, b); err != nil {
			return err
		}
	}
	return c.optReply(OptList, RepAck, nil)
}

func (c *conn) startTLS(ctx context.Context, data []byte, fixed bool) error {
	switch {
	case len(data) != 0:
		return c.optError(OptStartTLS, RepErrInvalid, "NBD_OPT_STARTTLS with %d bytes of data", len(data))
	case c.tls:
		return c.optError(OptStartTLS, RepErrInvalid, "TLS is already negotiated")
	case c.srv.tlsMode() == TLSOff:
		return c.optError(OptStartTLS, RepErrPolicy, "TLS is not enabled on this server")
	case !fixed:
		return c.optError(OptStartTLS, RepErrInvalid, "TLS needs fixed newstyle negotiation")
	}
	if err := c.optReply(OptStartTLS, RepAck, nil); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	var under net.Conn = c.nc
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		under = &prefixConn{Conn: c.nc, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), c.nc)}
	}
	tc := tls.Server(under, c.srv.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("nbd: TLS handshake with %s: %w", addrString(c.remote), err)
	}
	c.mu.Lock()
	c.nc = tc
	c.tls = true
	c.mu.Unlock()
	c.w.setWriter(tc)
	c.br.Reset(tc)
	// The document forbids keeping negotiation state across STARTTLS.
	c.structured = false
	c.metaSelected = false
	c.metaExport = ""
	return nil
}

// prefixConn replays bytes read ahead before the TLS upgrade.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (c *conn) exportName(ctx context.Context, name string) error {
	e, typ, reason := c.lookup(ctx, name)
	if e == nil {
		c.refuse(refuseReasonOf(typ), name, reason)
		return fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME: %s", reason)
	}
	if err := c.attach(e, name); err != nil {
		c.refuseAttach(name, err)
		return fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME: %w", err)
	}
	b := make([]byte, ExportNameReplySize, ExportNameReplySize+ExportNameZeroes)
	binary.BigEndian.PutUint64(b[0:], c.size)
	binary.BigEndian.PutUint16(b[8:], uint16(c.flags))
	if !c.noZeroes {
		b = b[:ExportNameReplySize+ExportNameZeroes]
	}
	return c.send(b)
}

func (c *conn) infoGo(ctx context.Context, opt Option, data []byte) (transmit bool, err error) {
	var req InfoRequest
	if err := req.UnmarshalBinary(data); err != nil {
		return false, c.optError(opt, RepErrInvalid, "%s: malformed data of %d bytes: %v", opt, len(data), err)
	}
	name, infos := req.Name, req.Infos
	if len(name) > MaxStringLength {
		return false, c.optError(opt, RepErrInvalid, "%s: export name length %d exceeds %d", opt, len(name), MaxStringLength)
	}
	e, typ, reason := c.lookup(ctx, name)
	if e == nil {
		if opt == OptGo {
			c.refuse(refuseReasonOf(typ), name, reason)
		}
		return false, c.optError(opt, typ, "%s", reason)
	}
	var size uint64
	var flags TransmissionFlags
	if opt == OptGo {
		if err := c.attach(e, name); err != nil {
			c.refuseAttach(name, err)
			return false, c.optError(opt, RepErrPolicy, "%v", err)
		}
		size, flags = c.size, c.flags
	} else {
		size, flags = uint64(e.Device.Size()), c.exportFlags(e, nil)
	}
	b, _ := InfoExportReply{Size: size, Flags: flags}.AppendBinary(nil)
	if err := c.optReply(opt, RepInfo, b); err != nil {
		return false, err
	}
	for _, info := range infos {
		var b []byte
		switch info {
		case InfoName:
			b = binary.BigEndian.AppendUint16(nil, uint16(InfoName))
			b = append(b, e.Name...)
		case InfoDescription:
			b = binary.BigEndian.AppendUint16(nil, uint16(InfoDescription))
			b = append(b, clipString(e.Description)...)
		case InfoBlockSize:
			b, _ = InfoBlockSizeReply{Min: DefaultMinBlockSize, Preferred: DefaultPreferredBlockSize,
				MaxPayload: DefaultMaxPayloadSize}.AppendBinary(nil)
		default:
			continue
		}
		if err := c.optReply(opt, RepInfo, b); err != nil {
			return false, err
		}
	}
	return opt == OptGo, c.optReply(opt, RepAck, nil)
}

// exportFlags computes the transmission flags of e served from dev (nil: before the
// connection's device exists, for NBD_OPT_INFO).
func (c *conn) exportFlags(e *Export, dev backend.Device) TransmissionFlags {
	f := FlagHasFlags | FlagSendCache
	if dev == nil {
		dev = e.Device
	}
	cow := e.CopyOnWrite != CopyOnWriteOff
	if cow || (e.Writable && backend.IsWritable(e.Device)) {
		f |= FlagSendFlush | FlagSendFUA | FlagSendWriteZeroes | FlagSendFastZero
		if _, ok := dev.(backend.Trimmer); ok || cow {
			f |= FlagSendTrim
		}
	} else {
		f |= FlagReadOnly
	}
	if c.structured {
		f |= FlagSendDF
	}
	if canMultiConn(e) {
		f |= FlagCanMultiConn
	}
	return f
}

// canMultiConn reports whether e may advertise NBD_FLAG_CAN_MULTI_CONN: whether a client's
// connections see each other's completed writes, and a FLUSH on one makes the writes of all
// durable. That holds when every connection of the client uses the same device: a read-only
// export, a writable one (the server keeps no per-connection cache: writes go to the one
// device, a backend.File's one descriptor, whose FLUSH is an fsync of the whole file), and
// per-client overlays (one per client address). Per-connection overlays are private, so
// their writes are not seen by the client's other connections.
func canMultiConn(e *Export) bool {
	return e.CopyOnWrite != CopyOnWritePerConnection
}

// attach makes e this connection's export, creating its overlay if it has one.
func (c *conn) attach(e *Export, requested string) error {
	if !c.srv.acquireExport(e) {
		return fmt.Errorf("export %q: connection limit %d reached: %w", e.Name, e.MaxConnections, errExportFull)
	}
	if err := c.attachDevice(e, requested); err != nil {
		c.srv.releaseExport(e)
		return err
	}
	return nil
}

// attachDevice is attach after the export's connection count was taken.
func (c *conn) attachDevice(e *Export, requested string) error {
	dev := e.Device
	var err error
	switch e.CopyOnWrite {
	case CopyOnWritePerConnection:
		dev, err = newOverlay(e)
	case CopyOnWritePerClient:
		key := addrString(c.remote)
		if ip, ok := addrIP(c.remote); ok {
			key = ip.String()
		}
		dev, err = c.srv.clientOverlay(e, key)
	}
	if err == nil && e.CopyOnWrite != CopyOnWriteOff {
		if _, ok := dev.(io.WriterAt); !ok {
			err = fmt.Errorf("overlay %T cannot be written", dev)
		}
	}
	if err != nil {
		return fmt.Errorf("export %q: creating overlay: %w", e.Name, err)
	}
	c.export, c.requested, c.dev = e, requested, dev
	c.slicer, _ = dev.(slicer)
	if f, ok := dev.(fileRanger); ok {
		if _, _, err := f.FileRange(0, 0); err == nil && c.w.rc != nil {
			c.filer, c.sendfile = f, true
		}
	}
	c.size = uint64(dev.Size())
	c.flags = c.exportFlags(e, dev)
	c.blockCtx = c.structured && c.metaSelected && c.metaExport == requested
	c.mu.Lock()
	c.since = time.Now()
	c.transmitting = true
	if c.handing.Load() && c.handable() {
		// Entered transmission during a Handoff: hand over before reading any request.
		c.closing.Store(true)
	}
	c.mu.Unlock()
	return nil
}

func (c *conn) dropOverlay() {
	if c.export.CopyOnWrite != CopyOnWritePerConnection {
		return
	}
	if cl, ok := c.dev.(io.Closer); ok {
		cl.Close()
	}
}

func (c *conn) metaContext(ctx context.Context, opt Option, data []byte) error {
	if opt == OptSetMetaContext {
		// A SET replaces the previous selection even when it fails.
		c.metaSelected, c.metaExport = false, ""
		if !c.structured {
			return c.optError(opt, RepErrInvalid, "%s before NBD_OPT_STRUCTURED_REPLY", opt)
		}
	}
	var req MetaContextRequest
	if err := req.UnmarshalBinary(data); err != nil {
		return c.optError(opt, RepErrInvalid, "%s: malformed data of %d bytes: %v", opt, len(data), err)
	}
	name, queries := req.Name, req.Queries
	for _, q := range queries {
		if !bytes.Contains([]byte(q), []byte(":")) {
			return c.optError(opt, RepErrInvalid, "%s: query %q has no namespace", opt, q)
		}
	}
	if e, typ, reason := c.lookup(ctx, name); e == nil {
		return c.optError(opt, typ, "%s", reason)
	}
	match := false
	if opt == OptListMetaContext && len(queries) == 0 {
		match = true
	}
	for _, q := range queries {
		if q == MetaContextBaseAllocation || (opt == OptListMetaContext && q == "base:") {
			match = true
		}
	}
	if match {
		id := uint32(0)
		if opt == OptSetMetaContext {
			id = metaContextID
			c.metaSelected, c.metaExport = true, name
		}
		b, _ := MetaContextReply{ID: id, Name: MetaContextBaseAllocation}.AppendBinary(nil)
		if err := c.optReply(opt, RepMetaContext, b); err != nil {
			return err
		}
	}
	return c.optReply(opt, RepAck, nil)
}
