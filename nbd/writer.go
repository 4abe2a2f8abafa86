package nbd

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// msgWriter writes whole messages for concurrent senders. Small messages of senders that queue
// up behind each other are coalesced into one write; large payloads go from the caller's
// buffer to the socket with writev.
type msgWriter struct {
	mu      sync.Mutex
	waiting atomic.Int32
	w       io.Writer
	buf     []byte
	err     error
	// fail is called (with mu held) on the first write error and returns the error to keep.
	fail func(error) error
	// hold, if set, reports that another message will follow soon, so a flush can wait for it
	// (at most maxHold).
	hold  func() bool
	timer *time.Timer
	armed bool
}

func newMsgWriter(w io.Writer, size int, fail func(error) error) *msgWriter {
	return &msgWriter{w: w, buf: make([]byte, 0, size), fail: fail}
}

// largePayload is the size from which a part bypasses the buffer.
const largePayload = 4096

// send writes one message made of parts. The message is complete on the wire, or the writer
// has failed, before any later message starts.
func (m *msgWriter) send(parts ...[]byte) error {
	m.waiting.Add(1)
	m.mu.Lock()
	m.waiting.Add(-1)
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	for _, p := range parts {
		free := cap(m.buf) - len(m.buf)
		switch {
		case len(p) <= free:
			m.buf = append(m.buf, p...)
		case len(p) >= largePayload:
			bufs := net.Buffers{m.buf, p}
			_, err := bufs.WriteTo(m.w)
			m.buf = m.buf[:0]
			if err != nil {
				return m.failLocked(err)
			}
		default:
			if err := m.flushLocked(); err != nil {
				return err
			}
			m.buf = append(m.buf, p...)
		}
	}
	if m.waiting.Load() == 0 {
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
	}
	return nil
}

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
	_, err := m.w.Write(m.buf)
	m.buf = m.buf[:0]
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

// setWriter switches the destination, for the TLS upgrade; the buffer must be empty.
func (m *msgWriter) setWriter(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.w = w
}
