// A server connection: its state and lifecycle (serve, shutdown, close). The handshake is in
// handshake.go, attaching an export in attach.go, transmission in requests.go.

package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
