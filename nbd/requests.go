// The request loop of a connection in transmission: reading requests, checking them, and
// serving each inline or on a parked worker (workers.go).

package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/netroot/netroot/backend"
)

// transmit serves requests until the client disconnects or the server shuts down.
func (c *conn) transmit() error {
	maxIn := c.srv.MaxInflight
	if maxIn <= 0 {
		maxIn = DefaultMaxInflight
	}
	c.sem = make(chan struct{}, maxIn)
	c.budget.init(DefaultMaxInflightBytes)
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	c.w.setTimeout(c.srv.writeTimeout(), nc)
	c.startWorkers()
	err := c.readRequests()
	c.inflight.Wait()
	c.stopWorkers()
	if c.pipe != nil {
		c.pipe.close()
	}
	if ferr := c.flush(); err == nil && ferr != nil {
		err = ferr
	}
	if s, ok := c.dev.(backend.Syncer); ok && c.flags&FlagReadOnly == 0 {
		if serr := s.Sync(); serr != nil {
			c.log.Warn("nbd: flushing device at disconnect", "export", c.export.Name, "err", serr)
		}
	}
	if c.closing.Load() && err != nil {
		return ErrServerClosed
	}
	return err
}

func (c *conn) readRequests() error {
	var hdr [RequestHeaderSize]byte
	idle := c.export.IdleTimeout
	if idle == 0 {
		idle = c.srv.IdleTimeout
	}
	for {
		err := c.awaitRequest(func() error {
			if c.closing.Load() {
				return ErrServerClosed
			}
			if idle > 0 {
				c.nc.SetReadDeadline(time.Now().Add(idle))
				if c.closing.Load() { // Shutdown's deadline may just have been overwritten
					return ErrServerClosed
				}
			}
			return c.readFull(hdr[:], false)
		})
		if err != nil {
			if c.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("nbd: client disconnected without NBD_CMD_DISC: %w", err)
			}
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		var r Request
		if err := r.UnmarshalBinary(hdr[:]); err != nil {
			return errors.Join(errHardDisconnect, err)
		}
		idx := int(r.Type)
		if idx >= len(c.srv.stats.requests) {
			idx = len(c.srv.stats.requests) - 1
		}
		c.srv.stats.requests[idx].Add(1)
		c.requests.Add(1)
		c.lastRequest.Store(time.Now().UnixNano())
		if r.Type == CmdDisc {
			return nil
		}
		if err := c.dispatch(r); err != nil {
			return err
		}
	}
}

// shutdownGrace is how long Shutdown lets a client finish sending a request it has started.
const shutdownGrace = 5 * time.Second

// readFull reads b. When Shutdown interrupts a request that has started arriving (started, or
// part of b read), it gives the client shutdownGrace to complete it, so the request is served
// rather than cut in half.
func (c *conn) readFull(b []byte, started bool) error {
	n, err := io.ReadFull(c.br, b)
	if (started || n > 0) && c.graceAtShutdown(err) {
		_, err = io.ReadFull(c.br, b[n:])
	}
	return err
}

// graceAtShutdown reports whether err is the read deadline of Shutdown (or Handoff) cutting
// into a request that has started arriving, and if so gives the client shutdownGrace more to
// complete it. It is the one place of that rule, for every way a request is read.
func (c *conn) graceAtShutdown(err error) bool {
	var ne net.Error
	if err == nil || !c.closing.Load() || !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	c.nc.SetReadDeadline(time.Now().Add(shutdownGrace))
	return true
}

// dispatch validates r, reads its payload and serves it, or hands it to a goroutine.
func (c *conn) dispatch(r Request) error {
	if errno, msg := c.check(r); errno != 0 {
		if r.Type == CmdWrite {
			err := c.awaitPayload(int(r.Length), func() error {
				_, err := io.CopyN(io.Discard, c.br, int64(r.Length))
				return err
			})
			if err != nil {
				return fmt.Errorf("nbd: draining refused write payload: %w", err)
			}
		}
		return c.replyError(r, errno, msg)
	}
	if c.inline(r) {
		return c.serveInline(r)
	}
	if r.Type == CmdWrite && c.sendfile && r.Length >= spliceMin && c.spliceFits(int(r.Length)) {
		return c.writeSpliced(r)
	}
	select {
	case c.sem <- struct{}{}:
	default:
		c.await(func() { c.sem <- struct{}{} })
	}
	var held hold
	var buf *[]byte
	// Reads from a device that lends its bytes or sends from its file take no memory of the
	// server's: they count against the connection's budget only.
	mem := r.Type == CmdWrite || (r.Type == CmdRead && c.slicer == nil && !(c.sendfile && r.Length >= sendfileMin))
	if r.Type == CmdWrite || r.Type == CmdRead {
		held = c.acquire(int64(r.Length), mem)
	}
	if mem {
		buf = getBuf(int(r.Length))
	}
	if r.Type == CmdWrite {
		if err := c.awaitPayload(int(r.Length), func() error { return c.readFull(*buf, true) }); err != nil {
			c.release(held)
			putBuf(buf)
			<-c.sem
			return fmt.Errorf("nbd: reading write payload of %d bytes: %w", r.Length, err)
		}
	}
	c.inflight.Add(1)
	c.active.Add(1)
	c.start(job{r, buf, held})
	return nil
}

// Requests that a device serves in less than slowInline may be served on the request-reading
// goroutine; after one that takes longer, the next slowSpell requests get goroutines of their
// own whatever their size.
// slowInline is a request that takes longer than this, in nanoseconds (a variable for the tests).
var slowInline atomic.Int64

func init() { slowInline.Store(int64(200 * time.Microsecond)) }

const (
	slowSpell = 1024
	// fastStreak is how many requests in a row must take less than slowInline before bursts
	// of requests of at most inlineBurst bytes are served inline; one slow request ends it.
	fastStreak  = 64
	inlineBurst = 8 << 10
)

// timed records how long a request took for the inline rules.
func (c *conn) timed(start time.Time) {
	if time.Since(start) > time.Duration(slowInline.Load()) {
		c.fast.Store(0)
	} else {
		c.fast.Add(1)
	}
}

// inline reports whether r is served on the request-reading goroutine: a small request when
// nothing else is in flight or already received. A goroutine costs more than such a request
// on a device that answers from memory (fio at queue depth 1: about twice the IOPS). Others get
// their own goroutine, so that one slow request does not hold up the rest and reading the next
// request overlaps with the device and with sending the reply.
func (c *conn) inline(r Request) bool {
	if uint64(c.requests.Load()) < c.slowUntil {
		return false
	}
	// Once the device has answered fastStreak requests in a row quickly, small reads and writes
	// are served here even in a burst: handing each to another goroutine (a wake-up and a
	// context switch or two) costs more than the request (fio, 4 KiB at queue depth 32).
	if r.Length <= inlineBurst && c.fast.Load() >= fastStreak {
		switch r.Type {
		case CmdRead:
			return true
		case CmdWrite:
			return int(r.Length) <= c.br.Size()
		}
	}
	if c.active.Load() != 0 {
		return false
	}
	if r.Type == CmdWrite {
		return int(r.Length) <= c.br.Size() && c.br.Buffered() <= int(r.Length)
	}
	if c.br.Buffered() != 0 {
		return false
	}
	switch r.Type {
	case CmdRead:
		return r.Length <= 64<<10
	case CmdBlockStatus, CmdCache:
		return true
	}
	return false
}

// serveInline serves r on the request-reading goroutine.
func (c *conn) serveInline(r Request) (err error) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			c.devicePanicked(r, v)
			err = fmt.Errorf("nbd: device panicked serving %s", r.Type)
		}
	}()
	switch r.Type {
	case CmdRead:
		c.readInline(r)
	case CmdWrite:
		// The payload is used where the reader buffered it.
		n := int(r.Length)
		var p []byte
		err := c.awaitPayload(n, func() (err error) {
			p, err = c.peek(n)
			return err
		})
		if err != nil {
			return fmt.Errorf("nbd: reading write payload of %d bytes: %w", n, err)
		}
		c.handle(r, p)
		c.br.Discard(n)
	default:
		c.handle(r, nil)
	}
	if time.Since(start) > time.Duration(slowInline.Load()) {
		c.slowUntil = uint64(c.requests.Load()) + slowSpell
		c.fast.Store(0)
	} else {
		c.fast.Add(1)
	}
	return nil
}

// peek is readFull for a payload served from the read buffer.
func (c *conn) peek(n int) ([]byte, error) {
	p, err := c.br.Peek(n)
	if len(p) > 0 && c.graceAtShutdown(err) {
		p, err = c.br.Peek(n)
	}
	return p, err
}

// run serves one request and releases what dispatch acquired for it.
func (c *conn) run(r Request, buf *[]byte, held hold) {
	defer c.inflight.Done()
	defer func() {
		// The last reply of a burst flushes the replies held for it.
		if c.active.Add(-1) == 0 && !c.promised() {
			c.w.flush()
		}
	}()
	defer func() { <-c.sem }()
	defer c.release(held)
	if buf != nil {
		defer putBuf(buf)
	}
	defer func() {
		if v := recover(); v != nil {
			c.devicePanicked(r, v)
		}
	}()
	var payload []byte
	if buf != nil {
		payload = *buf
	}
	defer c.timed(time.Now())
	c.handle(r, payload)
}

// devicePanicked fails a request whose device panicked and ends the connection, not the server.
func (c *conn) devicePanicked(r Request, v any) {
	c.log.Error("nbd: device panicked", "export", c.export.Name, "cmd", r.Type.String(),
		"offset", r.Offset, "length", r.Length, "panic", v)
	c.replyError(r, EIO, fmt.Sprintf("export %q: %s %d+%d: internal error", c.export.Name, r.Type, r.Offset, r.Length))
	c.w.flush()
	c.nc.Close()
}

// check applies the protocol's error rules to a request before any work.
func (c *conn) check(r Request) (Errno, string) {
	allowed := CmdFlagFUA
	switch r.Type {
	case CmdRead:
		if c.structured {
			allowed |= CmdFlagDF
		}
	case CmdWriteZeroes:
		allowed |= CmdFlagNoHole | CmdFlagFastZero
	case CmdBlockStatus:
		allowed |= CmdFlagReqOne
	case CmdWrite, CmdFlush, CmdTrim, CmdCache:
	default:
		return EINVAL, fmt.Sprintf("unknown command %s", r.Type)
	}
	if bad := r.Flags &^ allowed; bad != 0 {
		return EINVAL, fmt.Sprintf("%s: flags %#x not valid", r.Type, uint16(bad))
	}
	ro := c.flags&FlagReadOnly != 0
	switch r.Type {
	case CmdWrite, CmdTrim, CmdWriteZeroes:
		if ro {
			return EPERM, fmt.Sprintf("export %q is read-only", c.export.Name)
		}
	case CmdFlush:
		return 0, ""
	case CmdBlockStatus:
		if !c.blockCtx {
			return EINVAL, "NBD_CMD_BLOCK_STATUS without a negotiated metadata context"
		}
		if r.Length == 0 {
			return EINVAL, "NBD_CMD_BLOCK_STATUS of length 0"
		}
	}
	if (r.Type == CmdRead || r.Type == CmdWrite) && r.Length > DefaultMaxPayloadSize {
		return EINVAL, fmt.Sprintf("%s length %d exceeds maximum payload %d", r.Type, r.Length, DefaultMaxPayloadSize)
	}
	if r.Offset > c.size || uint64(r.Length) > c.size-r.Offset {
		errno := EINVAL
		if r.Type == CmdWrite || r.Type == CmdWriteZeroes {
			errno = ENOSPC
		}
		return errno, fmt.Sprintf("export %q: %s %d+%d beyond size %d", c.export.Name, r.Type, r.Offset, r.Length, c.size)
	}
	return 0, ""
}
