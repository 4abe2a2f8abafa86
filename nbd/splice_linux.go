package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// spliceMin is the smallest write whose payload goes from the socket to the file with splice(2)
// (through a pipe, so that the data is copied once, not twice through this process).
const spliceMin = 64 << 10

// spliceWriter is the pipe a connection splices write payloads through.
type spliceWriter struct {
	r, w   int
	size   int
	inPipe int64 // bytes in the pipe
	broken bool  // closed after an error
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
	if s.broken {
		return
	}
	s.broken = true
	unix.Close(s.r)
	unix.Close(s.w)
}

// writeSpliced serves a write whose payload is still (mostly) in the socket, on the
// request-reading goroutine. The whole payload is received before anything is written, so a
// write cut off by a disconnect leaves nothing, as on the other paths: what the reader has
// buffered stays there, the rest goes from the socket into the pipe and, if the pipe fills
// (its slots hold a packet each), into memory. Then the buffered part and the memory are
// written and the pipe is spliced into the device's file. The payload is always consumed, so
// the stream stays in sync when the file refuses it.
func (c *conn) writeSpliced(r Request) error {
	off, n := int64(r.Offset), int64(r.Length)
	b := int64(c.br.Buffered()) // < n: dispatch splices only payloads not yet in the buffer
	rest := n - b
	var inPipe int64
	var tail *[]byte
	var held hold
	serr := c.awaitPayload(int(n), func() (serr error) {
		inPipe, serr = c.spliceIn(rest)
		if serr == nil && inPipe < rest {
			held = c.acquire(rest-inPipe, true)
			tail = getBuf(int(rest - inPipe))
			serr = c.readSocket(*tail)
		}
		return serr
	})
	defer func() {
		if tail != nil {
			putBuf(tail)
		}
		c.release(held)
		c.pipe.empty()
	}()
	if serr != nil {
		return fmt.Errorf("nbd: reading write payload of %d bytes: %w", r.Length, serr)
	}
	// Received in full: now it is written.
	p, _ := c.br.Peek(int(b))
	_, ferr := c.dev.(io.WriterAt).WriteAt(p, off)
	c.br.Discard(int(b))
	if ferr == nil && inPipe > 0 {
		var f *os.File
		var fo int64
		if f, fo, ferr = c.filer.FileRange(off+b, inPipe); ferr == nil {
			ferr = c.pipe.spliceOut(f, fo)
		}
	}
	if ferr == nil && tail != nil {
		_, ferr = c.dev.(io.WriterAt).WriteAt(*tail, off+b+inPipe)
	}
	if ferr == nil {
		c.countWritten(int64(r.Length))
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

// spliceFits reports whether a write of n bytes can take the splice path: the connection has
// (or can now make) a pipe, and the payload is not already in the reader's buffer.
func (c *conn) spliceFits(n int) bool {
	if c.pipe != nil && c.pipe.broken {
		c.pipe = nil
	}
	if c.pipe == nil && !c.noPipe {
		p, err := newSpliceWriter()
		if err != nil {
			c.log.Debug("nbd: no pipe for splice, writes go through memory", "err", err)
			c.noPipe = true
			return false
		}
		c.pipe = p
	}
	return c.pipe != nil && c.br.Buffered() < n
}

// spliceIn moves up to n payload bytes from the socket into the empty pipe, until they are
// all there or the pipe is full, and returns how many it moved.
func (c *conn) spliceIn(n int64) (got int64, serr error) {
	rc, err := c.nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	p := c.pipe
	for {
		serr = rc.Read(func(fd uintptr) bool {
			for got < n {
				k, err := unix.Splice(int(fd), nil, p.w, nil, int(n-got), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				switch {
				case err == unix.EAGAIN:
					if got > 0 && p.full() {
						return true
					}
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
				p.inPipe += k
			}
			return true
		})
		if c.graceAtShutdown(serr) {
			// Shutdown interrupted a payload that has started: let the client finish it.
			serr = nil
			continue
		}
		return got, serr
	}
}

// readSocket reads b from the socket (the reader's buffer is empty), with readFull's grace
// at shutdown.
func (c *conn) readSocket(b []byte) error {
	n, err := io.ReadFull(c.nc, b)
	if c.graceAtShutdown(err) {
		_, err = io.ReadFull(c.nc, b[n:])
	}
	return err
}

// full reports whether the pipe has no free slot.
func (s *spliceWriter) full() bool {
	fds := []unix.PollFd{{Fd: int32(s.w), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && (n == 0 || fds[0].Revents&unix.POLLOUT == 0)
	}
}

// spliceOut moves what the pipe holds into f at offset fo.
func (s *spliceWriter) spliceOut(f *os.File, fo int64) error {
	fc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	cerr := fc.Control(func(dst uintptr) {
		for s.inPipe > 0 {
			m, err := unix.Splice(s.r, nil, int(dst), &fo, int(s.inPipe), unix.SPLICE_F_MOVE)
			if err == unix.EINTR {
				continue
			}
			if err == nil && m == 0 {
				err = unix.EIO
			}
			if err != nil {
				ferr = os.NewSyscallError("splice", err)
				return
			}
			s.inPipe -= m
		}
	})
	return errors.Join(cerr, ferr)
}

// empty throws away what the pipe still holds, so that it is empty for the next write.
func (s *spliceWriter) empty() {
	if s.inPipe == 0 {
		return
	}
	buf := make([]byte, min(s.inPipe, 64<<10))
	for s.inPipe > 0 {
		m, err := unix.Read(s.r, buf[:min(s.inPipe, int64(len(buf)))])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			// The pipe is unusable; the next write makes a new one.
			s.close()
			s.broken = true
			return
		}
		s.inPipe -= int64(m)
	}
}
