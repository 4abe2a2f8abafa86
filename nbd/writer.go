package nbd

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// msgWriter writes whole messages for concurrent senders. Small messages of senders that queue
// up behind each other are coalesced into one write; large payloads go from the caller's
// buffer to the socket with writev, or from a file with sendfile.
//
// The buffer comes from the pool while messages are waiting and goes back when the owner says
// the connection is idle, so that idle connections hold none.
type msgWriter struct {
	mu      sync.Mutex
	waiting atomic.Int32
	w       io.Writer
	// rc is the socket under w, for sendfile; nil when w is not a plain socket (TLS, pipes).
	rc   syscall.RawConn
	bufp *[]byte // the pooled buffer behind buf, or nil
	buf  []byte
	size int
	// pending mirrors len(buf), for deferred flushes that need not take mu.
	pending atomic.Int64
	err     error
	// fail is called (with mu held) on the first write error and returns the error to keep.
	fail func(error) error
	// hold, if set, reports that another message will follow soon, so a flush can wait for it
	// (at most maxHold).
	hold  func() bool
	timer *time.Timer
	armed bool
	// deferred is set while the owner promises to call undefer before it next blocks:
	// messages then wait in the buffer for those that follow them. A server connection keeps
	// the promise in promise.go only.
	deferred atomic.Bool
	// With timeout set, every write must complete within it: armWrite moves dl's write
	// deadline forward when less than three quarters of timeout are left.
	timeout  time.Duration
	dl       writeDeadliner
	deadline time.Time
}

type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// setTimeout makes every later write fail that takes longer than d (none if d <= 0).
func (m *msgWriter) setTimeout(d time.Duration, dl writeDeadliner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d <= 0 {
		dl = nil
	}
	m.timeout, m.dl, m.deadline = d, dl, time.Time{}
}

// armWrite sets the write deadline before a write, with mu held. Moving a deadline costs a
// timer update, so it moves only when a quarter of the timeout has passed: a write then has
// between 3/4 and all of the timeout.
func (m *msgWriter) armWrite() {
	if m.dl == nil {
		return
	}
	now := time.Now()
	if m.deadline.Sub(now) >= m.timeout-m.timeout/4 {
		return
	}
	m.deadline = now.Add(m.timeout)
	m.dl.SetWriteDeadline(m.deadline)
}

func newMsgWriter(w io.Writer, size int, fail func(error) error) *msgWriter {
	m := &msgWriter{size: size, fail: fail}
	m.setWriter(w)
	return m
}

// A part of largePayload bytes or more bypasses the buffer when it does not fit in what is left
// of it, and always from maxCopy bytes on: writev then sends it from the caller's memory.
const (
	largePayload = 4096
	maxCopy      = 16 << 10
)

// flushAt is how much the buffer holds before it is written even while messages are held back:
// a client that sends a burst of requests gets their replies in pieces it can work on while the
// rest are prepared, rather than all at once.
const flushAt = 32 << 10

// grow makes room for n more bytes in the buffer, writing out what it holds if need be.
func (m *msgWriter) grow(n int) error {
	if m.bufp == nil {
		m.bufp = getBuf(max(m.size, n))
		m.buf = (*m.bufp)[:0]
	}
	if cap(m.buf)-len(m.buf) >= n && len(m.buf)+n <= flushAt {
		return nil
	}
	if err := m.flushLocked(); err != nil {
		return err
	}
	if cap(m.buf) < n {
		putBuf(m.bufp)
		m.bufp = getBuf(n)
		m.buf = (*m.bufp)[:0]
	}
	return nil
}

func (m *msgWriter) setLen(n int) {
	m.buf = m.buf[:n]
	m.pending.Store(int64(n))
}

// lock takes mu for one message; waiting counts those queued for it meanwhile, so the holder
// knows that another message follows and can leave the buffer for it to write.
func (m *msgWriter) lock() {
	m.waiting.Add(1)
	m.mu.Lock()
	m.waiting.Add(-1)
}

// send writes one message made of parts. The message is complete on the wire, or the writer
// has failed, before any later message starts.
func (m *msgWriter) send(parts ...[]byte) error {
	m.lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	for _, p := range parts {
		if len(p) > maxCopy || len(p) >= largePayload && len(p) > cap(m.buf)-len(m.buf) {
			bufs := net.Buffers{m.buf, p}
			m.armWrite()
			_, err := bufs.WriteTo(m.w)
			m.setLen(0)
			if err != nil {
				return m.failLocked(err)
			}
			continue
		}
		if err := m.grow(len(p)); err != nil {
			return err
		}
		m.setLen(len(append(m.buf, p...)))
	}
	return m.doneLocked()
}

// doneLocked decides, after a message, whether to write the buffer now.
func (m *msgWriter) doneLocked() error {
	if m.waiting.Load() != 0 || m.deferred.Load() {
		return nil
	}
	if m.hold == nil || len(m.buf) == 0 || !m.hold() {
		return m.flushLocked()
	}
	// Hold the message for the replies being prepared, but never for long: a slow request
	// must not delay the answers of fast ones.
	if !m.armed {
		m.armed = true
		if m.timer == nil {
			m.timer = time.AfterFunc(maxHold, m.timedFlush)
		} else {
			m.timer.Reset(maxHold)
		}
	}
	return nil
}

// errFill wraps the error of a fill function, which does not fail the writer.
type errFill struct{ err error }

func (e errFill) Error() string { return e.err.Error() }
func (e errFill) Unwrap() error { return e.err }

// sendFill writes one message made of hdr and n bytes that fill puts straight into the buffer,
// saving the copy from a buffer of the caller's. If fill fails, nothing of the message is sent
// and sendFill returns fill's error wrapped in errFill.
func (m *msgWriter) sendFill(hdr []byte, n int, fill func([]byte) error) error {
	m.lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if err := m.grow(len(hdr) + n); err != nil {
		return err
	}
	start := len(m.buf)
	b := append(m.buf, hdr...)
	if err := fill(b[len(b) : len(b)+n]); err != nil {
		return errFill{err}
	}
	m.setLen(start + len(hdr) + n)
	return m.doneLocked()
}

// errNoSendfile reports that a message cannot be sent from a file: the connection is not a
// plain socket. Nothing has been written.
var errNoSendfile = errors.New("nbd: sendfile not possible on this connection")

// maxHold bounds how long a reply waits in the buffer for others to share a system call.
const maxHold = 100 * time.Microsecond

func (m *msgWriter) timedFlush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.armed = false
	if m.err == nil {
		m.flushLocked()
	}
}

func (m *msgWriter) flushLocked() error {
	if len(m.buf) == 0 {
		return nil
	}
	m.armWrite()
	_, err := m.w.Write(m.buf)
	m.setLen(0)
	if err != nil {
		return m.failLocked(err)
	}
	return nil
}

func (m *msgWriter) failLocked(err error) error {
	if m.fail != nil {
		err = m.fail(err)
	}
	m.err = err
	return err
}

// flush writes what is buffered.
func (m *msgWriter) flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	return m.flushLocked()
}

// undefer ends a deferral: what is buffered is written, unless a sender is about to (one that
// adds to the buffer after this sees the deferral ended, and writes it itself).
func (m *msgWriter) undefer() {
	m.deferred.Store(false)
	if m.pending.Load() != 0 {
		m.flush()
	}
}

// idle ends a deferral before the owner waits for its peer, and gives the buffer back to the
// pool if nothing is in it.
func (m *msgWriter) idle() {
	m.deferred.Store(false)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.flushLocked()
	}
	if len(m.buf) == 0 && m.bufp != nil && !m.armed {
		putBuf(m.bufp)
		m.bufp, m.buf = nil, nil
	}
}

// setWriter switches the destination, for the TLS upgrade; the buffer must be empty.
func (m *msgWriter) setWriter(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.w, m.rc = w, sendfileConn(w)
}
