package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ConnState is what a connection in transmission negotiated, enough for another Server (in
// another process, after a binary upgrade) to go on serving it: see Server.Handoff and
// Server.Resume. MarshalBinary and UnmarshalBinary carry it between processes.
type ConnState struct {
	// Export is the name the client asked for.
	Export string
	// Size and Flags are what the client was told.
	Size  uint64
	Flags TransmissionFlags
	// Structured reports that structured replies were negotiated.
	Structured bool
	// ExtendedHeaders reports that extended headers were negotiated. This server never
	// negotiates them; Resume refuses a state that has them.
	ExtendedHeaders bool
	// MetaContexts are the metadata contexts selected for the export.
	MetaContexts []MetaContext
	// Pending holds bytes already read from the socket but not yet processed: the start of
	// the requests that follow. The new server reads them before the socket.
	Pending []byte
	// Remote is the client's address, for logs.
	Remote string
}

// MetaContext is a selected metadata context and the ID the client was given for it.
type MetaContext struct {
	ID   uint32
	Name string
}

// Limits of a ConnState's encoding.
const (
	// MaxPendingBytes bounds ConnState.Pending.
	MaxPendingBytes = 1 << 20
	// maxStateContexts bounds ConnState.MetaContexts.
	maxStateContexts = 64
)

// connStateMagic starts a marshalled ConnState; its last byte is the format's version.
const connStateMagic = "NBDSTAT\x01"

const (
	stateStructured = 1 << iota
	stateExtended
)

// AppendBinary appends the encoding of s to b.
func (s ConnState) AppendBinary(b []byte) ([]byte, error) {
	if len(s.Pending) > MaxPendingBytes {
		return b, fmt.Errorf("nbd: connection state: %d pending bytes exceed %d", len(s.Pending), MaxPendingBytes)
	}
	if len(s.MetaContexts) > maxStateContexts {
		return b, fmt.Errorf("nbd: connection state: %d metadata contexts exceed %d", len(s.MetaContexts), maxStateContexts)
	}
	for _, name := range append([]string{s.Export, s.Remote}, contextNames(s.MetaContexts)...) {
		if len(name) > MaxStringLength {
			return b, fmt.Errorf("nbd: connection state: string of %d bytes exceeds %d", len(name), MaxStringLength)
		}
	}
	b = append(b, connStateMagic...)
	var bits uint32
	if s.Structured {
		bits |= stateStructured
	}
	if s.ExtendedHeaders {
		bits |= stateExtended
	}
	b = binary.BigEndian.AppendUint32(b, bits)
	b = binary.BigEndian.AppendUint16(b, uint16(s.Flags))
	b = binary.BigEndian.AppendUint64(b, s.Size)
	b = appendString(b, s.Export)
	b = appendString(b, s.Remote)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.MetaContexts)))
	for _, m := range s.MetaContexts {
		b = binary.BigEndian.AppendUint32(b, m.ID)
		b = appendString(b, m.Name)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Pending)))
	return append(b, s.Pending...), nil
}

func contextNames(ms []MetaContext) []string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return names
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// MarshalBinary encodes s.
func (s ConnState) MarshalBinary() ([]byte, error) { return s.AppendBinary(nil) }

// stateReader takes fields off an encoded ConnState.
type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *stateReader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *stateReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *stateReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (r *stateReader) bytes(limit int, what string) []byte {
	n := r.u32()
	if r.err == nil && n > uint32(limit) {
		r.err = fmt.Errorf("nbd: connection state: %s of %d bytes exceeds %d", what, n, limit)
	}
	return r.take(int(n))
}

// UnmarshalBinary decodes an encoding made by MarshalBinary. Short input returns
// io.ErrUnexpectedEOF; bytes after the encoding are an error.
func (s *ConnState) UnmarshalBinary(b []byte) error {
	r := &stateReader{b: b}
	if m := r.take(len(connStateMagic)); m != nil && string(m) != connStateMagic {
		return fmt.Errorf("nbd: connection state: bad magic %q", m)
	}
	bits := r.u32()
	if r.err == nil && bits&^(stateStructured|stateExtended) != 0 {
		return fmt.Errorf("nbd: connection state: unknown bits %#x", bits)
	}
	var st ConnState
	st.Structured = bits&stateStructured != 0
	st.ExtendedHeaders = bits&stateExtended != 0
	st.Flags = TransmissionFlags(r.u16())
	st.Size = r.u64()
	st.Export = string(r.bytes(MaxStringLength, "export name"))
	st.Remote = string(r.bytes(MaxStringLength, "client address"))
	n := r.u32()
	if r.err == nil && n > maxStateContexts {
		return fmt.Errorf("nbd: connection state: %d metadata contexts exceed %d", n, maxStateContexts)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		id := r.u32()
		name := string(r.bytes(MaxStringLength, "metadata context name"))
		st.MetaContexts = append(st.MetaContexts, MetaContext{ID: id, Name: name})
	}
	if p := r.bytes(MaxPendingBytes, "pending data"); len(p) > 0 {
		st.Pending = bytes.Clone(p)
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("nbd: connection state: %d bytes after the end", len(r.b))
	}
	*s = st
	return nil
}

// HandedConn is a connection that Server.Handoff took out of transmission.
type HandedConn struct {
	// Conn is the client's socket, with no deadline set and nothing buffered for writing; for
	// a TCP connection a *net.TCPConn, whose File gives a descriptor to pass to another
	// process (close Conn after that).
	Conn net.Conn
	// State is what the next server needs to go on (Server.Resume).
	State ConnState
}

// HandoffResult is what Server.Handoff did with each connection.
type HandoffResult struct {
	// Conns are the connections handed over. The caller owns them: pass each on (to Resume in
	// this or another process) or close it.
	Conns []HandedConn
	// Kept counts connections in transmission that cannot be handed over and that the server
	// goes on serving until their clients leave, or Shutdown or Close ends them: TLS
	// connections, whose session keys live inside crypto/tls and cannot leave the process, and
	// connections to copy-on-write exports, whose overlays live in this process.
	Kept int
	// Closed counts connections that were still negotiating when ctx ended, and were closed.
	Closed int
}

// Handoff takes the server's connections out of service so that another Server, usually in a
// new process after a binary upgrade, can go on serving them without the clients noticing.
//
// It closes the listeners (take their descriptors first to pass them on; the kernel keeps
// queueing new connections for the new process) and refuses new connections from then on,
// like Shutdown. Each connection in transmission stops reading new requests, finishes and
// flushes those it has read and is returned in the result with its state, including any bytes
// of later requests already read. Connections still negotiating are let finish: one that
// enters transmission is handed over in turn (its last option reply comes from this server,
// its requests from the next), one that ends negotiation otherwise is closed as usual. TLS and
// copy-on-write connections are not handed over (see HandoffResult.Kept); they keep being
// served by s, so a later Shutdown with a generous deadline lets them drain.
//
// Handoff returns when every connection that can be handed over has been, or when ctx ends:
// connections still negotiating or finishing requests are then closed, and Handoff returns
// ctx's error with the result so far, whose connections still belong to the caller.
// After Handoff, Serve returns ErrServerClosed and the server cannot serve again, except
// through Resume.
func (s *Server) Handoff(ctx context.Context) (*HandoffResult, error) {
	s.mu.Lock()
	if s.handoff != nil {
		s.mu.Unlock()
		return nil, errors.New("nbd: Handoff already called")
	}
	h := &handoffState{done: make(chan struct{})}
	s.handoff = h
	s.handingOff.Store(true)
	s.inShutdown.Store(true)
	for l := range s.listeners {
		(*l).Close()
	}
	for c := range s.conns {
		switch c.startHandoff() {
		case handoffPending:
			h.pending++
		case handoffKept:
			h.res.Kept++
		}
	}
	if h.pending == 0 {
		close(h.done)
	}
	s.mu.Unlock()
	var err error
	select {
	case <-h.done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			if c.handing.Load() {
				if !c.isTransmitting() {
					h.res.Closed++
				}
				c.closeNow()
			}
		}
		s.mu.Unlock()
		<-h.done
	}
	s.mu.Lock()
	res := h.res
	s.mu.Unlock()
	return &res, err
}

// handoffState tracks a Handoff in progress.
type handoffState struct {
	pending int // connections still to resolve
	res     HandoffResult
	done    chan struct{} // closed when pending reaches 0
}

// Outcomes of conn.startHandoff.
const (
	handoffNone    = iota // the connection is already ending
	handoffPending        // the connection will resolve with handoffResolved
	handoffKept           // the connection stays with this server
)

// resolveHandoff records the outcome of a pending connection: handed (non-nil) or not, and
// then kept or gone.
func (s *Server) resolveHandoff(hc *HandedConn, kept bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.handoff
	if hc != nil {
		h.res.Conns = append(h.res.Conns, *hc)
	} else if kept {
		h.res.Kept++
	}
	h.pending--
	if h.pending == 0 {
		close(h.done)
	}
}

// handable reports whether the connection's state can be handed over. Called with c.mu held
// or from the connection's goroutine.
func (c *conn) handable() bool {
	return !c.tls && (c.export == nil || c.export.CopyOnWrite == CopyOnWriteOff)
}

func (c *conn) isTransmitting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.transmitting
}

// startHandoff marks the connection for Handoff (with the server's mu held). A connection in
// transmission stops reading requests; one negotiating goes on until it enters transmission.
func (c *conn) startHandoff() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() {
		return handoffNone
	}
	if c.transmitting && !c.handable() {
		return handoffKept
	}
	c.handing.Store(true)
	if c.transmitting {
		c.closing.Store(true)
		c.nc.SetReadDeadline(time.Now())
	}
	return handoffPending
}

// handOver ends a connection marked for Handoff after its serve loop returned with err: it
// reports the connection handed over, kept or gone, and whether the socket must stay open.
func (c *conn) handOver(err error, transmitted bool) (handed bool) {
	if !c.handing.Load() {
		return false
	}
	if !transmitted || !errors.Is(err, ErrServerClosed) || c.w.flush() != nil {
		c.srv.resolveHandoff(nil, false)
		return false
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if err := nc.SetDeadline(time.Time{}); err != nil {
		c.srv.resolveHandoff(nil, false)
		return false
	}
	st := c.state()
	c.log.Info("nbd: connection handed over", "export", c.export.Name, "pending", len(st.Pending))
	c.srv.stats.handedOver.Add(1)
	c.srv.resolveHandoff(&HandedConn{Conn: nc, State: st}, false)
	return true
}

// state returns the connection's negotiated state for a handoff.
func (c *conn) state() ConnState {
	st := ConnState{
		Export:     c.requested,
		Size:       c.size,
		Flags:      c.flags,
		Structured: c.structured,
		Remote:     addrString(c.remote),
	}
	if c.blockCtx {
		st.MetaContexts = []MetaContext{{ID: metaContextID, Name: MetaContextBaseAllocation}}
	}
	if n := c.br.Buffered(); n > 0 {
		p, _ := c.br.Peek(n)
		st.Pending = bytes.Clone(p)
	}
	return st
}

// pendingReader yields the bytes a previous server had read ahead, in one Read, then the
// socket's.
type pendingReader struct {
	pending []byte
	r       io.Reader
}

func (p *pendingReader) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// Resume serves transmission on a connection that another Server handed over (Handoff) with
// its state st, until the client disconnects, like ServeConn, and closes c. The export is
// looked up by name in s.Exports and must still be there, allowed to the client, reachable
// without TLS, of the same size, and writable if it was; otherwise Resume closes c and returns
// the reason. The connection counts towards the limits and is reported to OnAttach like one
// that negotiated here, but is never refused for a full server or export.
func (s *Server) Resume(ctx context.Context, c net.Conn, st ConnState) error {
	if s.Exports == nil {
		c.Close()
		return errors.New("nbd: Server.Exports is nil")
	}
	cc, ok := s.newConnForced(c)
	if !ok {
		return ErrServerClosed
	}
	defer s.connWG.Done()
	return cc.resume(ctx, st)
}

func (c *conn) resume(ctx context.Context, st ConnState) (err error) {
	defer c.srv.forgetConn(c)
	handed := false
	defer func() {
		if !handed {
			c.closeNow()
		}
	}()
	stop := context.AfterFunc(ctx, c.shutdown)
	defer stop()
	if len(st.Pending) > MaxPendingBytes {
		return fmt.Errorf("nbd: resume: %d pending bytes exceed %d", len(st.Pending), MaxPendingBytes)
	}
	if len(st.Pending) > 0 {
		c.br = bufio.NewReaderSize(&pendingReader{pending: st.Pending, r: c.nc}, max(16<<10, len(st.Pending)))
		if _, err := c.br.Peek(len(st.Pending)); err != nil {
			return fmt.Errorf("nbd: resume: %w", err)
		}
	}
	if err := c.resumeState(ctx, st); err != nil {
		return err
	}
	defer c.srv.releaseExport(c.export)
	c.srv.stats.attached.Add(1)
	c.srv.stats.resumed.Add(1)
	c.log.Info("nbd: client resumed export", "export", c.export.Name, "size", c.size,
		"flags", fmt.Sprintf("%#x", uint16(c.flags)), "pending", len(st.Pending))
	if c.srv.OnAttach != nil {
		c.srv.OnAttach(c.export, c.remote)
	}
	start := time.Now()
	err = c.transmit()
	handed = c.handOver(err, true)
	c.detached(start, err, handed)
	return err
}

// resumeState checks st against this server's export and attaches the connection to it.
func (c *conn) resumeState(ctx context.Context, st ConnState) error {
	if st.ExtendedHeaders {
		return errors.New("nbd: resume: extended headers are not supported")
	}
	for _, m := range st.MetaContexts {
		if m.Name != MetaContextBaseAllocation || m.ID != metaContextID {
			return fmt.Errorf("nbd: resume: metadata context %q with ID %d not supported", m.Name, m.ID)
		}
		if !st.Structured {
			return errors.New("nbd: resume: metadata context without structured replies")
		}
	}
	e, _, reason := c.lookup(ctx, st.Export)
	if e == nil {
		return fmt.Errorf("nbd: resume: %s", reason)
	}
	if e.CopyOnWrite != CopyOnWriteOff {
		return fmt.Errorf("nbd: resume: export %q is copy-on-write", e.Name)
	}
	if size := uint64(e.Device.Size()); size != st.Size {
		return fmt.Errorf("nbd: resume: export %q has size %d, the client was told %d", e.Name, size, st.Size)
	}
	c.structured = len(st.MetaContexts) > 0 || st.Structured
	c.metaSelected, c.metaExport = len(st.MetaContexts) > 0, st.Export
	if !c.srv.acquireExportForced(e) {
		return ErrServerClosed
	}
	if err := c.attachDevice(e, st.Export); err != nil {
		c.srv.releaseExport(e)
		return fmt.Errorf("nbd: resume: %w", err)
	}
	if c.flags&FlagReadOnly != 0 && st.Flags&FlagReadOnly == 0 {
		c.srv.releaseExport(e)
		return fmt.Errorf("nbd: resume: export %q is no longer writable", e.Name)
	}
	// The client keeps what it was told.
	c.flags = st.Flags
	return nil
}
