package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netroot/netroot/backend"
)

// Defaults for zero Server fields.
const (
	// DefaultHandshakeTimeout bounds option haggling, TLS included.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultMaxInflight is how many requests of one connection are served at a time.
	DefaultMaxInflight = 64
	// DefaultMaxInflightBytes bounds the request and reply data one connection holds in memory.
	DefaultMaxInflightBytes = 64 << 20
)

// ErrServerClosed is returned by Serve, ListenAndServe and ServeConn after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// Server serves exports to NBD clients. Its exported fields are its configuration; set them
// before serving and do not change them afterwards.
type Server struct {
	// Addr is the TCP address ListenAndServe listens on; "" means ":10809".
	Addr string
	// Exports finds exports by name. It must be set; an *ExportSet will do.
	Exports ExportLookup
	// TLSConfig enables NBD_OPT_STARTTLS. To verify client certificates against a CA, set its
	// ClientAuth (tls.RequireAndVerifyClientCert) and ClientCAs.
	TLSConfig *tls.Config
	// TLSMode is the server's TLS policy; see TLSMode. TLSOptional and TLSRequired need
	// TLSConfig.
	TLSMode TLSMode
	// DisableList refuses NBD_OPT_LIST with NBD_REP_ERR_POLICY (nbd-server's allowlist=false).
	DisableList bool
	// HandshakeTimeout bounds the handshake; 0 means DefaultHandshakeTimeout, negative none.
	HandshakeTimeout time.Duration
	// IdleTimeout disconnects a client that sends no request for this long; 0 means never,
	// which suits root file systems that can stay idle for hours.
	IdleTimeout time.Duration
	// MaxInflight bounds concurrent requests per connection; 0 means DefaultMaxInflight.
	MaxInflight int
	// MaxConnections bounds concurrent connections to the server; 0 means
	// DefaultMaxConnections, negative no limit. A connection beyond it is closed at once.
	// Exports have their own limit too.
	MaxConnections int
	// MaxHandshakesPerSource bounds the connections one client IP address may have negotiating
	// at once, so that one address cannot hold every slot; 0 means
	// DefaultMaxHandshakesPerSource, negative no limit. A connection beyond it is closed at
	// once.
	MaxHandshakesPerSource int
	// MaxBufferBytes bounds the memory that all connections together hold for request payloads
	// and replies being sent (each connection also holds at most DefaultMaxInflightBytes);
	// 0 means DefaultMaxBufferBytes, negative no limit. A connection that would exceed it
	// waits before reading its next request.
	MaxBufferBytes int64
	// WriteTimeout disconnects a client in transmission that leaves a reply untaken for this
	// long (a client that sends requests and stops reading would otherwise hold the memory of
	// their replies); 0 means DefaultWriteTimeout, negative none.
	WriteTimeout time.Duration
	// Logger receives connection-level events; nil means silent.
	Logger *slog.Logger
	// OnAttach, if set, is called when a client enters transmission on an export.
	OnAttach func(export *Export, remote net.Addr)
	// OnDetach, if set, is called when a connection leaves transmission.
	OnDetach func(Detach)
	// OnRefuse, if set, is called when a client is turned away; see Refusal.
	OnRefuse func(Refusal)

	mu          sync.Mutex
	listeners   map[*net.Listener]struct{}
	conns       map[*conn]struct{}
	exportConns map[string]int
	overlays    map[string]backend.Device
	inShutdown  atomic.Bool
	handingOff  atomic.Bool
	handoff     *handoffState
	handshakes  map[string]int // connections negotiating, by sourceKey
	bufOnce     sync.Once
	bufBudget   *budget
	connWG      sync.WaitGroup
	stats       counters
}

// UnknownCommands is the index of Stats.Requests that counts commands the document does not
// define.
const UnknownCommands = int(CmdResize) + 1

// Stats are a server's counters since it started.
type Stats struct {
	// Connections counts accepted connections, ActiveConnections those open now.
	Connections, ActiveConnections int64
	// Attached counts connections that entered transmission, Resumed those of them handed
	// over by another server (Resume), HandedOver those passed on by Handoff.
	Attached, Resumed, HandedOver int64
	// Refused counts clients turned away, by reason.
	Refused [NumRefuseReasons]int64
	// BufferedBytes is the memory held now for request payloads and replies, against
	// BufferLimit (MaxBufferBytes; 0 without a limit). BufferWaits counts the times a
	// connection waited for that memory.
	BufferedBytes, BufferLimit, BufferWaits int64
	// WriteTimeouts counts clients disconnected for leaving replies untaken (WriteTimeout).
	WriteTimeouts int64
	// Requests counts transmission requests by command: Requests[cmd] for the commands up to
	// CmdResize, Requests[UnknownCommands] for any other.
	Requests [UnknownCommands + 1]int64
	// BytesRead and BytesWritten count data read from and written to devices for clients.
	BytesRead, BytesWritten int64
	// Errors counts error replies.
	Errors int64
}

type counters struct {
	connections, active, attached atomic.Int64
	resumed, handedOver           atomic.Int64
	refused                       [NumRefuseReasons]atomic.Int64
	bufferWaits, writeTimeouts    atomic.Int64
	requests                      [UnknownCommands + 1]atomic.Int64
	bytesRead, bytesWritten       atomic.Int64
	errors                        atomic.Int64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Connections:       s.stats.connections.Load(),
		ActiveConnections: s.stats.active.Load(),
		Attached:          s.stats.attached.Load(),
		Resumed:           s.stats.resumed.Load(),
		HandedOver:        s.stats.handedOver.Load(),
		BufferWaits:       s.stats.bufferWaits.Load(),
		WriteTimeouts:     s.stats.writeTimeouts.Load(),
		BytesRead:         s.stats.bytesRead.Load(),
		BytesWritten:      s.stats.bytesWritten.Load(),
		Errors:            s.stats.errors.Load(),
	}
	for i := range st.Requests {
		st.Requests[i] = s.stats.requests[i].Load()
	}
	for i := range st.Refused {
		st.Refused[i] = s.stats.refused[i].Load()
	}
	if b := s.buffers(); b != nil {
		b.mu.Lock()
		st.BufferedBytes, st.BufferLimit = b.max-b.avail, b.max
		b.mu.Unlock()
	}
	return st
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return discardLogger
}

var discardLogger = slog.New(slog.DiscardHandler)

func (s *Server) tlsMode() TLSMode {
	if s.TLSConfig == nil {
		return TLSOff
	}
	if s.TLSMode == TLSDefault {
		return TLSOptional
	}
	return s.TLSMode
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout == 0 {
		return DefaultHandshakeTimeout
	}
	return s.HandshakeTimeout
}

// ListenAndServe listens on s.Addr and serves it until Shutdown or Close.
func (s *Server) ListenAndServe() error {
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	addr := s.Addr
	if addr == "" {
		addr = ":" + strconv.Itoa(DefaultPort)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("nbd: listen %q: %w", addr, err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l and serves each in its own goroutine. It always returns a
// non-nil error and closes l; after Shutdown or Close the error is ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	if s.Exports == nil {
		l.Close()
		return errors.New("nbd: Server.Exports is nil")
	}
	if !s.trackListener(&l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	defer l.Close()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		delay = 0
		cc, ok := s.newConn(c)
		if !ok {
			continue
		}
		go func() {
			defer s.connWG.Done()
			cc.serve(context.Background())
		}()
	}
}

// ServeConn serves one connection until the client disconnects, and closes c. It returns nil
// when the client ended the session properly (NBD_OPT_ABORT or NBD_CMD_DISC).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	if s.Exports == nil {
		c.Close()
		return errors.New("nbd: Server.Exports is nil")
	}
	cc, ok := s.newConn(c)
	if !ok {
		return ErrServerClosed
	}
	defer s.connWG.Done()
	return cc.serve(ctx)
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[*net.Listener]struct{})
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

// newConn registers c. It refuses (and closes) c when the server is shutting down or full.
func (s *Server) newConn(c net.Conn) (*conn, bool) { return s.registerConn(c, false) }

// newConnForced is newConn that admits c beyond MaxConnections.
func (s *Server) newConnForced(c net.Conn) (*conn, bool) { return s.registerConn(c, true) }

func (s *Server) registerConn(c net.Conn, force bool) (*conn, bool) {
	cc, refusal := s.admit(c, force)
	if refusal != nil {
		c.Close()
		s.refuse(*refusal)
	}
	return cc, cc != nil
}

// admit registers c, or says why not (nil, nil: shutting down).
func (s *Server) admit(c net.Conn, force bool) (*conn, *Refusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		c.Close()
		return nil, nil
	}
	src := sourceKey(c.RemoteAddr())
	if !force {
		if limit := s.maxConnections(); limit > 0 && len(s.conns) >= limit {
			return nil, &Refusal{Reason: RefusedServerFull, Remote: c.RemoteAddr(),
				Detail: fmt.Sprintf("%d connections, the server's limit", limit)}
		}
		if limit := s.maxHandshakesPerSource(); limit > 0 && s.handshakes[src] >= limit {
			return nil, &Refusal{Reason: RefusedHandshakeLimit, Remote: c.RemoteAddr(),
				Detail: fmt.Sprintf("%d connections from %s negotiating, the limit per address", limit, src)}
		}
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	cc := newServerConn(s, c)
	cc.source = src
	if !force {
		if s.handshakes == nil {
			s.handshakes = make(map[string]int)
		}
		s.handshakes[src]++
		cc.negotiating = true
	}
	s.conns[cc] = struct{}{}
	s.connWG.Add(1)
	s.stats.connections.Add(1)
	s.stats.active.Add(1)
	return cc, nil
}

func (s *Server) forgetConn(cc *conn) {
	s.handshakeDone(cc)
	s.mu.Lock()
	delete(s.conns, cc)
	s.mu.Unlock()
	s.stats.active.Add(-1)
}

// acquireExport counts a connection to e, refusing beyond e.MaxConnections.
func (s *Server) acquireExport(e *Export) bool { return s.countExport(e, false) }

// acquireExportForced counts a connection to e whatever its limit.
func (s *Server) acquireExportForced(e *Export) bool { return s.countExport(e, true) }

func (s *Server) countExport(e *Export, force bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exportConns == nil {
		s.exportConns = make(map[string]int)
	}
	if !force && e.MaxConnections > 0 && s.exportConns[e.Name] >= e.MaxConnections {
		return false
	}
	s.exportConns[e.Name]++
	return true
}

func (s *Server) releaseExport(e *Export) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exportConns[e.Name]--
}

// clientOverlay returns the per-client overlay of e for the client at key, creating it.
func (s *Server) clientOverlay(e *Export, key string) (backend.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := e.Name + "\x00" + key
	if d, ok := s.overlays[k]; ok {
		return d, nil
	}
	d, err := newOverlay(e)
	if err != nil {
		return nil, err
	}
	if s.overlays == nil {
		s.overlays = make(map[string]backend.Device)
	}
	s.overlays[k] = d
	return d, nil
}

// Shutdown stops the server gracefully: it closes the listeners and the connections still
// negotiating, lets every connection in transmission finish the requests it has read, flushes
// the devices and closes the connections. It returns when all are closed, or with ctx's error
// when ctx ends first (the remaining connections are then closed at once).
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	for l := range s.listeners {
		(*l).Close()
	}
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.closeOverlays()
		return nil
	case <-ctx.Done():
		s.closeConns()
		return ctx.Err()
	}
}

// closeOverlays releases the per-client overlays once no connection uses them.
func (s *Server) closeOverlays() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, d := range s.overlays {
		if c, ok := d.(io.Closer); ok {
			c.Close()
		}
		delete(s.overlays, k)
	}
}

// Close stops the server now: it closes the listeners and all connections without waiting for
// requests in flight. Per-client overlays are kept (connections may still be using them) and
// released by a Shutdown that completes.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	for l := range s.listeners {
		(*l).Close()
	}
	s.mu.Unlock()
	s.closeConns()
	return nil
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.closeNow()
	}
}
