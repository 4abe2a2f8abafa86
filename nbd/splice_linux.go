package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// spliceMin is the smallest write whose payload goes from the socket to the file with splice(2)
// (through a pipe, so that the data is copied once, not twice through this process).
const spliceMin = 64 << 10

// spliceWriter is the pipe a connection splices write payloads through.
type spliceWriter struct {
	r, w int
	size int
}

func newSpliceWriter() (*spliceWriter, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	s := &spliceWriter{r: p[0], w: p[1], size: 64 << 10}
	// A larger pipe moves more per pair of system calls; the default is fine where refused.
	if n, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20); err == nil {
		s.size = n
	}
	return s, nil
}

func (s *spliceWriter) close() {
	unix.Close(s.r)
	unix.Close(s.w)
}

// writeSpliced serves a write whose payload is still (mostly) in the socket, on the
// request-reading goroutine: what the reader has buffered is written from there, the rest is
// spliced from the socket into the device's file. The payload is always consumed, so the stream
// stays in sync when the file refuses it.
func (c *conn) writeSpliced(r Request) error {
	off, n := int64(r.Offset), int64(r.Length)
	var ferr error
	if b := int64(c.br.Buffered()); b > 0 {
		k := min(b, n)
		p, _ := c.br.Peek(int(k))
		_, ferr = c.dev.(io.WriterAt).WriteAt(p, off)
		c.br.Discard(int(k))
		off, n = off+k, n-k
	}
	if n > 0 {
		c.w.undefer()
		f, fo, err := c.filer.FileRange(off, n)
		if ferr == nil {
			ferr = err
		}
		if ferr == nil && c.pipe == nil {
			c.pipe, ferr = newSpliceWriter()
		}
		var got int64
		if ferr == nil {
			got, ferr, err = c.spliceIn(f, fo, n)
			if err != nil {
				return fmt.Errorf("nbd: reading write payload of %d bytes: %w", r.Length, err)
			}
		}
		if rest := n - got; rest > 0 {
			// The file failed: drain the payload so that the next request is read from its start.
			if _, err := io.CopyN(io.Discard, c.br, rest); err != nil {
				return fmt.Errorf("nbd: draining refused write payload: %w", err)
			}
		}
		c.w.deferred.Store(true)
	}
	if ferr == nil {
		c.srv.stats.bytesWritten.Add(int64(r.Length))
		if r.Flags&CmdFlagFUA != 0 {
			ferr = c.sync()
		}
	}
	if ferr != nil {
		return c.replyError(r, errnoOf(ferr), fmt.Sprintf("export %q: write %d+%d: %v", c.export.Name, r.Offset, r.Length, ferr))
	}
	c.replyOK(r)
	return nil
}

// spliceIn moves n payload bytes from the socket to f at offset fo and returns how many it
// consumed from the socket, the file's error and the socket's. After a file error the pipe is
// emptied and the rest is left in the socket.
func (c *conn) spliceIn(f *os.File, fo, n int64) (got int64, ferr, serr error) {
	rc, err := c.nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	fc, err := f.SyscallConn()
	if err != nil {
		return 0, err, nil
	}
	p := c.pipe
	var inPipe int64
	cerr := fc.Control(func(dst uintptr) {
		for {
			serr = rc.Read(func(fd uintptr) bool {
				for got < n && ferr == nil {
					k, err := unix.Splice(int(fd), nil, p.w, nil, int(min(n-got, int64(p.size))), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
					switch {
					case err == unix.EAGAIN:
						return false
					case err == unix.EINTR:
						continue
					case err != nil:
						serr = os.NewSyscallError("splice", err)
						return true
					case k == 0:
						serr = io.ErrUnexpectedEOF
						return true
					}
					got += k
					inPipe += k
					for inPipe > 0 {
						m, err := unix.Splice(p.r, nil, int(dst), &fo, int(inPipe), unix.SPLICE_F_MOVE)
						if err == unix.EINTR {
							continue
						}
						if err == nil && m == 0 {
							err = unix.EIO
						}
						if err != nil {
							ferr = os.NewSyscallError("splice", err)
							break
						}
						inPipe -= m
					}
				}
				return true
			})
			var ne net.Error
			if serr != nil && c.closing.Load() && errors.As(serr, &ne) && ne.Timeout() {
				// Shutdown interrupted a payload that has started: let the client finish it.
				c.nc.SetReadDeadline(time.Now().Add(shutdownGrace))
				serr = nil
				continue
			}
			return
		}
	})
	if cerr != nil && ferr == nil {
		ferr = cerr
	}
	// Whatever the file did not take is thrown away, so the pipe is empty for the next write.
	var buf []byte
	if inPipe > 0 {
		buf = make([]byte, min(inPipe, 64<<10))
	}
	for inPipe > 0 {
		m, err := unix.Read(p.r, buf[:min(inPipe, int64(len(buf)))])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			serr = errors.Join(serr, fmt.Errorf("emptying splice pipe: %w", err))
			break
		}
		inPipe -= int64(m)
	}
	return got, ferr, serr
}
