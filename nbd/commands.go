// Serving each command against the device: read (copy, lent bytes, sendfile), write, flush,
// trim, write zeroes, cache, block status.

package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/netroot/netroot/backend"
)

// handle serves r. payload is a write's data, or the buffer for a read's (nil when the device
// lends its bytes or sends them itself).
func (c *conn) handle(r Request, payload []byte) {
	var err error
	off, n := int64(r.Offset), int64(r.Length)
	switch r.Type {
	case CmdRead:
		switch {
		case c.sendfile && r.Length >= sendfileMin:
			c.readFile(r)
		case c.slicer != nil:
			c.readSlice(r)
		default:
			c.read(r, payload)
		}
		return
	case CmdWrite:
		_, err = c.dev.(io.WriterAt).WriteAt(payload, off)
		if err == nil {
			c.countWritten(n)
		}
	case CmdFlush:
		err = c.sync()
	case CmdTrim:
		if t, ok := c.dev.(backend.Trimmer); ok && n > 0 {
			err = t.Trim(off, n)
		}
	case CmdWriteZeroes:
		err = c.zero(r)
	case CmdCache:
		// Reads and writes go to the device directly; there is nothing to prefetch into.
	case CmdBlockStatus:
		c.blockStatus(r)
		return
	}
	if err == nil && r.Flags&CmdFlagFUA != 0 && r.Type != CmdFlush && r.Type != CmdCache {
		err = c.sync()
	}
	if err != nil {
		errno := errnoOf(err)
		c.replyError(r, errno, fmt.Sprintf("export %q: %s %d+%d: %v", c.export.Name, r.Type, r.Offset, r.Length, err))
		return
	}
	c.replyOK(r)
}

func (c *conn) sync() error {
	if s, ok := c.dev.(backend.Syncer); ok {
		return s.Sync()
	}
	return nil
}

func (c *conn) zero(r Request) error {
	off, n := int64(r.Offset), int64(r.Length)
	if n == 0 {
		return nil
	}
	if r.Flags&CmdFlagFastZero != 0 {
		// Only a device that says so zeroes faster than a write; the others might fall back to
		// writing zeroes, so refuse at once as the document asks (clients then write data only
		// where it is needed, instead of zeroing everything first).
		if f, ok := c.dev.(backend.FastZeroer); !ok || !f.FastZero() {
			return ENOTSUP
		}
	}
	if z, ok := c.dev.(backend.Zeroer); ok {
		return z.ZeroAt(off, n)
	}
	w := c.dev.(io.WriterAt)
	const chunk = 1 << 20
	zeroes := getBuf(int(min(n, chunk)))
	defer putBuf(zeroes)
	clear(*zeroes)
	for n > 0 {
		k := min(n, int64(len(*zeroes)))
		if _, err := w.WriteAt((*zeroes)[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// readAt fills buf from the device at off.
func (c *conn) readAt(buf []byte, off uint64) error {
	n, err := c.dev.ReadAt(buf, int64(off))
	if n == len(buf) {
		return nil
	} else if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("short read of %d bytes: %w", n, io.ErrUnexpectedEOF)
	}
	return err
}

func (c *conn) readFailed(r Request, err error) {
	c.replyError(r, errnoOf(err), fmt.Sprintf("export %q: read %d+%d: %v", c.export.Name, r.Offset, r.Length, err))
}

func (c *conn) read(r Request, buf []byte) {
	if err := c.readAt(buf, r.Offset); err != nil {
		c.readFailed(r, err)
		return
	}
	c.countRead(int64(len(buf)))
	c.sendRead(r, buf)
}

// readInline reads straight into the reply buffer.
func (c *conn) readInline(r Request) {
	if r.Length == 0 {
		c.sendRead(r, nil)
		return
	}
	var h readReplyHeader
	err := c.w.sendFill(c.readHeader(&h, r), int(r.Length), func(b []byte) error { return c.readAt(b, r.Offset) })
	var fe errFill
	if errors.As(err, &fe) {
		c.readFailed(r, fe.err)
		return
	}
	if err == nil {
		c.countRead(int64(r.Length))
	}
}

// fileRanger is a device that lends the file behind its bytes, such as backend.File: read
// replies are then sent with sendfile(2), from the page cache to the socket without a copy
// into this process.
type fileRanger interface {
	FileRange(off, n int64) (*os.File, int64, error)
}

// sendfileMin is the smallest read sent with sendfile. Below it the system call for the header
// and the missed chance to share a write with other replies cost more than the copy saved.
const sendfileMin = 64 << 10

func (c *conn) readFile(r Request) {
	if r.Length == 0 {
		c.sendRead(r, nil)
		return
	}
	f, fo, err := c.filer.FileRange(int64(r.Offset), int64(r.Length))
	if err != nil {
		c.readFailed(r, err)
		return
	}
	var h readReplyHeader
	err = c.w.sendFile(c.readHeader(&h, r), f, fo, int(r.Length))
	if errors.Is(err, errNoSendfile) {
		buf := getBuf(int(r.Length))
		defer putBuf(buf)
		c.read(r, *buf)
		return
	}
	if err == nil {
		c.countRead(int64(r.Length))
	}
}

// slicer is a device that lends its bytes without copying, such as backend.Mmap: read
// replies are then written to the socket straight from the device's memory.
type slicer interface {
	Slice(off, n int64) ([]byte, error)
}

func (c *conn) readSlice(r Request) {
	b, err := c.slicer.Slice(int64(r.Offset), int64(r.Length))
	if err != nil {
		c.replyError(r, errnoOf(err), fmt.Sprintf("export %q: read %d+%d: %v", c.export.Name, r.Offset, r.Length, err))
		return
	}
	c.countRead(int64(len(b)))
	c.sendRead(r, b)
}

// maxExtents bounds the descriptors of one block status reply.
const maxExtents = 1 << 16

func (c *conn) blockStatus(r Request) {
	var exts []Extent
	off, n := int64(r.Offset), int64(r.Length)
	if ex, ok := c.dev.(backend.Extenter); ok {
		dev, err := ex.Extents(off, n)
		if err != nil {
			// The document allows answering "unknown" (status 0) for the whole range instead of
			// failing: qemu-img and nbdcopy then simply read the data.
			c.log.Debug("nbd: extents failed", "export", c.export.Name, "offset", off, "length", n, "err", err)
			dev = nil
		}
		// The device's extents, clipped to the request, with neighbours of the same status
		// merged while their length fits the descriptor's 32 bits.
		var sum int64
		for _, e := range dev {
			if e.Length <= 0 || sum >= n || len(exts) >= maxExtents {
				break
			}
			l := min(e.Length, n-sum)
			if k := len(exts); k > 0 && exts[k-1].Hole == e.Hole && exts[k-1].Zero == e.Zero && exts[k-1].Length+l <= 1<<32-1<<9 {
				exts[k-1].Length += l
			} else {
				exts = append(exts, Extent{Offset: off + sum, Length: l, Hole: e.Hole, Zero: e.Zero})
			}
			sum += l
			if r.Flags&CmdFlagReqOne != 0 && len(exts) > 1 {
				break
			}
		}
	}
	if len(exts) == 0 {
		exts = append(exts, Extent{Offset: off, Length: n})
	}
	if r.Flags&CmdFlagReqOne != 0 {
		exts = exts[:1]
	}
	c.replyBlockStatus(r, exts)
}
