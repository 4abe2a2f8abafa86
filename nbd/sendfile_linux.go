package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sendfileConn returns the raw socket under w when messages can be sent to it with sendfile:
// a plain TCP connection.
func sendfileConn(w io.Writer) syscall.RawConn {
	if t, ok := w.(*net.TCPConn); ok {
		if rc, err := t.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// sendFile writes one message made of hdr and the n bytes of f at offset off, with sendfile(2)
// so that they go from the page cache to the socket without a copy into user memory. If the
// file ends early the message cannot be completed and the writer fails.
func (m *msgWriter) sendFile(hdr []byte, f *os.File, off int64, n int) error {
	m.lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if m.rc == nil {
		return errNoSendfile
	}
	if err := m.grow(len(hdr)); err != nil {
		return err
	}
	m.setLen(len(append(m.buf, hdr...)))
	fc, err := f.SyscallConn()
	if err != nil {
		return m.failLocked(fmt.Errorf("sending from %s: %w", f.Name(), err))
	}
	var serr, werr error
	m.armWrite()
	cerr := fc.Control(func(src uintptr) {
		werr = m.rc.Write(func(fd uintptr) bool {
			// What is buffered and the header go first, marked as having more to come so that
			// they share packets with the data.
			for len(m.buf) > 0 {
				k, err := unix.SendmsgN(int(fd), m.buf, nil, nil, unix.MSG_MORE)
				switch {
				case err == unix.EAGAIN:
					return false
				case err == unix.EINTR:
					continue
				case err != nil:
					serr = os.NewSyscallError("sendmsg", err)
					return true
				}
				m.setLen(copy(m.buf, m.buf[k:]))
			}
			for n > 0 {
				k, err := unix.Sendfile(int(fd), int(src), &off, n)
				switch {
				case err == unix.EAGAIN:
					if k > 0 {
						n -= k
					}
					return false
				case err == unix.EINTR:
					continue
				case err != nil:
					serr = os.NewSyscallError("sendfile", err)
					return true
				case k == 0:
					serr = fmt.Errorf("sendfile: %s ends before offset %d: %w", f.Name(), off, io.ErrUnexpectedEOF)
					return true
				}
				n -= k
			}
			return true
		})
	})
	if err := errors.Join(cerr, werr, serr); err != nil {
		m.setLen(0)
		return m.failLocked(err)
	}
	return nil
}
