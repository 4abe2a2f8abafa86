// The handshake: greeting, option haggling (LIST, STARTTLS, INFO/GO, EXPORT_NAME,
// STRUCTURED_REPLY, META_CONTEXT) and option replies.

package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
)

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
	g, _ := Greeting{Flags: FlagFixedNewstyle | FlagNoZeroes}.AppendBinary(greet[:0])
	if err := c.send(g); err != nil {
		return false, err
	}
	var cf [ClientFlagsSize]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false, fmt.Errorf("nbd: reading client flags: %w", err)
	}
	var flags ClientFlags
	flags.UnmarshalBinary(cf[:]) // cannot fail: cf is ClientFlagsSize long
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
		b, _ := ServerReply{Name: e.Name, Description: clipString(e.Description)}.AppendBinary(nil)
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
	b, _ := ExportNameReply{Size: c.size, Flags: c.flags}.AppendBinary(make([]byte, 0, ExportNameReplySize+ExportNameZeroes))
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
			b, _ = InfoTextReply{Type: InfoName, Text: e.Name}.AppendBinary(nil)
		case InfoDescription:
			b, _ = InfoTextReply{Type: InfoDescription, Text: clipString(e.Description)}.AppendBinary(nil)
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

var _ net.Conn = (*prefixConn)(nil)
