package nbd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Defaults of the Server's limits.
const (
	// DefaultMaxConnections bounds the connections of a Server whose MaxConnections is 0.
	DefaultMaxConnections = 1024
	// DefaultMaxHandshakesPerSource bounds the connections one client address may have
	// negotiating at once, when Server.MaxHandshakesPerSource is 0.
	DefaultMaxHandshakesPerSource = 32
	// DefaultMaxBufferBytes bounds the memory all connections together hold for request
	// payloads and replies, when Server.MaxBufferBytes is 0.
	DefaultMaxBufferBytes = 256 << 20
	// DefaultWriteTimeout is how long a client in transmission may leave a reply untaken,
	// when Server.WriteTimeout is 0.
	DefaultWriteTimeout = time.Minute
)

// RefuseReason says why a server turned a client away.
type RefuseReason int

const (
	// RefusedUnknownExport: the export asked for does not exist (or could not be looked up).
	RefusedUnknownExport RefuseReason = iota
	// RefusedNotAllowed: the export's access list does not include the client.
	RefusedNotAllowed
	// RefusedTLSRequired: the server or the export requires TLS and the client did not
	// upgrade.
	RefusedTLSRequired
	// RefusedExportFull: the export has its Export.MaxConnections.
	RefusedExportFull
	// RefusedServerFull: the server has its MaxConnections; the connection was closed at once.
	RefusedServerFull
	// RefusedHandshakeLimit: the client's address has MaxHandshakesPerSource connections
	// negotiating already; the connection was closed at once.
	RefusedHandshakeLimit
	// NumRefuseReasons is the number of reasons, the length of Stats.Refused.
	NumRefuseReasons
)

func (r RefuseReason) String() string {
	switch r {
	case RefusedUnknownExport:
		return "unknown export"
	case RefusedNotAllowed:
		return "not allowed"
	case RefusedTLSRequired:
		return "TLS required"
	case RefusedExportFull:
		return "export full"
	case RefusedServerFull:
		return "server full"
	case RefusedHandshakeLimit:
		return "too many handshakes from this address"
	}
	return fmt.Sprintf("RefuseReason(%d)", int(r))
}

// Refusal describes a client turned away: at connection time (server full, too many
// handshakes from its address) or when it asked to enter transmission on an export
// (NBD_OPT_GO or NBD_OPT_EXPORT_NAME). Option replies that only inform (NBD_OPT_INFO, LIST,
// metadata contexts) are not refusals.
type Refusal struct {
	Reason RefuseReason
	Remote net.Addr
	// Export is the name the client asked for; empty for refusals at connection time.
	Export string
	// Detail is the message the client was sent, or the log's explanation.
	Detail string
}

// Detach describes a connection that left transmission.
type Detach struct {
	Export *Export
	Remote net.Addr
	// BytesRead and BytesWritten count the data the client read from and wrote to the device;
	// Requests counts its requests.
	BytesRead, BytesWritten, Requests int64
	// Duration is the time spent in transmission.
	Duration time.Duration
	// Err is why the connection ended: nil when the client sent NBD_CMD_DISC, ErrServerClosed
	// at Shutdown, Close or Handoff.
	Err error
	// HandedOver reports that Handoff passed the connection on rather than closing it.
	HandedOver bool
}

func (s *Server) maxConnections() int {
	if s.MaxConnections == 0 {
		return DefaultMaxConnections
	}
	return s.MaxConnections
}

func (s *Server) maxHandshakesPerSource() int {
	if s.MaxHandshakesPerSource == 0 {
		return DefaultMaxHandshakesPerSource
	}
	return s.MaxHandshakesPerSource
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout == 0 {
		return DefaultWriteTimeout
	}
	return s.WriteTimeout
}

// buffers returns the server-wide budget, or nil without a limit.
func (s *Server) buffers() *budget {
	s.bufOnce.Do(func() {
		n := s.MaxBufferBytes
		if n == 0 {
			n = DefaultMaxBufferBytes
		}
		if n > 0 {
			s.bufBudget = new(budget)
			s.bufBudget.init(n)
		}
	})
	return s.bufBudget
}

// refuse counts and reports a refusal.
func (s *Server) refuse(r Refusal) {
	if int(r.Reason) < len(s.stats.refused) {
		s.stats.refused[r.Reason].Add(1)
	}
	s.logger().Debug("nbd: client refused", "client", addrString(r.Remote), "export", r.Export,
		"reason", r.Reason.String(), "detail", r.Detail)
	if s.OnRefuse != nil {
		s.OnRefuse(r)
	}
}

// sourceKey is what per-source limits count by: the IP address, or the whole address when it
// is not an IP address.
func sourceKey(a net.Addr) string {
	if ip, ok := addrIP(a); ok {
		return ip.Unmap().String()
	}
	return addrString(a)
}

// handshakeDone stops counting c as negotiating.
func (s *Server) handshakeDone(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.negotiating {
		return
	}
	c.negotiating = false
	if s.handshakes[c.source]--; s.handshakes[c.source] <= 0 {
		delete(s.handshakes, c.source)
	}
}

// hold is what acquire took from the connection's budget and from the server's.
type hold struct{ conn, srv int64 }

// acquire takes n bytes of the connection's budget and, for memory (mem), of the server's,
// waiting for them (replies held back go out first), and returns what it took.
func (c *conn) acquire(n int64, mem bool) hold {
	var h hold
	var ok, sok bool
	h.conn, ok = c.budget.tryAcquire(n)
	srv := c.srv.buffers()
	if !mem || srv == nil {
		srv, sok = nil, true
	}
	if ok && srv != nil {
		h.srv, sok = srv.tryAcquire(n)
	}
	if ok && sok {
		return h
	}
	c.await(func() {
		if !ok {
			h.conn = c.budget.acquire(n)
		}
		if !sok {
			c.srv.stats.bufferWaits.Add(1)
			h.srv = srv.acquire(n)
		}
	})
	return h
}

// release gives back what acquire took.
func (c *conn) release(h hold) {
	c.budget.release(h.conn)
	if h.srv != 0 {
		c.srv.buffers().release(h.srv)
	}
}

func (c *conn) countRead(n int64) {
	c.srv.stats.bytesRead.Add(n)
	c.bytesRead.Add(n)
}

func (c *conn) countWritten(n int64) {
	c.srv.stats.bytesWritten.Add(n)
	c.bytesWritten.Add(n)
}

// failWrite ends the connection after a write error; a client that left a reply untaken for
// WriteTimeout is counted.
func (c *conn) failWrite(err error) error {
	c.nc.Close()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.srv.stats.writeTimeouts.Add(1)
		c.log.Warn("nbd: client does not take its replies, disconnecting", "timeout", c.srv.writeTimeout())
		return fmt.Errorf("nbd: write to %s: client took no reply for %v: %w", addrString(c.remote), c.srv.writeTimeout(), err)
	}
	return fmt.Errorf("nbd: write to %s: %w", addrString(c.remote), err)
}

// detached reports the end of transmission.
func (c *conn) detached(start time.Time, err error, handed bool) {
	d := Detach{
		Export: c.export, Remote: c.remote,
		BytesRead: c.bytesRead.Load(), BytesWritten: c.bytesWritten.Load(), Requests: c.requests.Load(),
		Duration: time.Since(start), Err: err, HandedOver: handed,
	}
	c.log.Info("nbd: client detached export", "export", c.export.Name, "read", d.BytesRead,
		"written", d.BytesWritten, "requests", d.Requests, "duration", d.Duration.Round(time.Millisecond),
		"handed_over", handed, "err", err)
	if c.srv.OnDetach != nil {
		c.srv.OnDetach(d)
	}
}

var errExportFull = errors.New("export full")

// refuseReasonOf maps the reply refusing an export to the Refusal reason.
func refuseReasonOf(typ ReplyType) RefuseReason {
	switch typ {
	case RepErrPolicy:
		return RefusedNotAllowed
	case RepErrTLSReqd:
		return RefusedTLSRequired
	}
	return RefusedUnknownExport
}

func (c *conn) refuse(reason RefuseReason, export, detail string) {
	c.srv.refuse(Refusal{Reason: reason, Remote: c.remote, Export: export, Detail: detail})
}

// refuseAttach reports an attach that failed for the export's connection limit.
func (c *conn) refuseAttach(export string, err error) {
	if errors.Is(err, errExportFull) {
		c.refuse(RefusedExportFull, export, err.Error())
	}
}

// ConnInfo describes a connection in transmission (see Server.Conns).
type ConnInfo struct {
	Export *Export
	Remote net.Addr
	// Since is when the connection entered transmission (on this server: Resume counts anew).
	Since time.Time
	// LastRequest is when the last request arrived; zero before the first.
	LastRequest time.Time
	// BytesRead and BytesWritten count the data the client read from and wrote to the device.
	BytesRead, BytesWritten, Requests int64
	TLS                               bool
}

// Conns returns the connections in transmission now, not those still negotiating, in no
// particular order.
func (s *Server) Conns() []ConnInfo {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var out []ConnInfo
	for _, c := range conns {
		c.mu.Lock()
		if !c.transmitting {
			c.mu.Unlock()
			continue
		}
		ci := ConnInfo{Export: c.export, Remote: c.remote, Since: c.since, TLS: c.tls}
		c.mu.Unlock()
		if ns := c.lastRequest.Load(); ns != 0 {
			ci.LastRequest = time.Unix(0, ns)
		}
		ci.BytesRead, ci.BytesWritten, ci.Requests = c.bytesRead.Load(), c.bytesWritten.Load(), c.requests.Load()
		out = append(out, ci)
	}
	return out
}
