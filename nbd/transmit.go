package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netroot/netroot/backend"
)

// Request is a transmission request header.
type Request struct {
	Flags  CommandFlags
	Type   Command
	Cookie uint64
	Offset uint64
	Length uint32
}

// AppendBinary appends the wire form of r (RequestHeaderSize bytes) to b.
func (r Request) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, RequestMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(r.Flags))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Type))
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	b = binary.BigEndian.AppendUint32(b, r.Length)
	return b, nil
}

// MarshalBinary returns the wire form of r.
func (r Request) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, RequestHeaderSize))
}

// UnmarshalBinary parses a request header. Short input returns io.ErrUnexpectedEOF.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) < RequestHeaderSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint32(b); m != RequestMagic {
		return fmt.Errorf("nbd: bad request magic %#x", m)
	}
	r.Flags = CommandFlags(binary.BigEndian.Uint16(b[4:]))
	r.Type = Command(binary.BigEndian.Uint16(b[6:]))
	r.Cookie = binary.BigEndian.Uint64(b[8:])
	r.Offset = binary.BigEndian.Uint64(b[16:])
	r.Length = binary.BigEndian.Uint32(b[24:])
	return nil
}

// budget is a weighted semaphore bounding the bytes a connection holds.
type budget struct {
	mu    sync.Mutex
	cond  sync.Cond
	avail int64
	max   int64
}

func (b *budget) init(n int64) {
	b.avail, b.max = n, n
	b.cond.L = &b.mu
}

func (b *budget) acquire(n int64) int64 {
	n = min(n, b.max)
	b.mu.Lock()
	for b.avail < n {
		b.cond.Wait()
	}
	b.avail -= n
	b.mu.Unlock()
	return n
}

// tryAcquire is acquire that gives up instead of waiting.
func (b *budget) tryAcquire(n int64) (int64, bool) {
	n = min(n, b.max)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.avail < n {
		return 0, false
	}
	b.avail -= n
	return n, true
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// Buffers come from pools by power-of-two size class, 4 KiB to 32 MiB.
const minBufShift, maxBufShift = 12, 25

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func getBuf(n int) *[]byte {
	shift := minBufShift
	if n > 1<<minBufShift {
		shift = bits.Len(uint(n - 1))
	}
	if shift > maxBufShift {
		b := make([]byte, n)
		return &b
	}
	if p, ok := bufPools[shift-minBufShift].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

func putBuf(p *[]byte) {
	c := cap(*p)
	shift := bits.Len(uint(c)) - 1
	if c != 1<<shift || shift < minBufShift || shift > maxBufShift {
		return
	}
	bufPools[shift-minBufShift].Put(p)
}

// errnoOf maps a device error to the protocol's error values.
func errnoOf(err error) Errno {
	var e Errno
	if errors.As(err, &e) {
		if _, ok := errnoText[e]; ok && e != 0 {
			return e
		}
		return EIO // only the document's values may go on the wire
	}
	var re *backend.RangeError
	switch {
	case errors.Is(err, backend.ErrReadOnly):
		return EPERM
	case errors.As(err, &re):
		if re.Op == "write" || re.Op == "zero" {
			return ENOSPC
		}
		return EINVAL
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ENOSPC
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES),
		errors.Is(err, os.ErrPermission):
		return EPERM
	case errors.Is(err, syscall.ENOMEM):
		return ENOMEM
	case errors.Is(err, syscall.EINVAL):
		return EINVAL
	case errors.Is(err, errors.ErrUnsupported), errors.Is(err, syscall.EOPNOTSUPP):
		return ENOTSUP
	}
	return EIO
}

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
		if c.br.Buffered() < RequestHeaderSize {
			// About to wait for the client: the replies held back go out now.
			c.w.idle()
		}
		if c.closing.Load() {
			return ErrServerClosed
		}
		if idle > 0 {
			c.nc.SetReadDeadline(time.Now().Add(idle))
			if c.closing.Load() { // Shutdown's deadline may just have been overwritten
				return ErrServerClosed
			}
		}
		if err := c.readFull(hdr[:], false); err != nil {
			if c.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("nbd: client disconnected without NBD_CMD_DISC: %w", err)
			}
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		// Until this goroutine next waits, replies wait for those of the requests that follow
		// (already received), to share a system call with them.
		c.w.deferred.Store(true)
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
			c.mayBlock(int(r.Length))
			if _, err := io.CopyN(io.Discard, c.br, int64(r.Length)); err != nil {
				return fmt.Errorf("nbd: draining refused write payload: %w", err)
			}
			c.w.deferred.Store(true)
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
		c.w.undefer()
		c.sem <- struct{}{}
		c.w.deferred.Store(true)
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
		c.mayBlock(int(r.Length))
		err := c.readFull(*buf, true)
		c.w.deferred.Store(true)
		if err != nil {
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

// mayBlock ends the deferral of replies if reading n more bytes may wait for the client.
func (c *conn) mayBlock(n int) {
	if c.br.Buffered() < n {
		c.w.undefer()
	}
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
		c.mayBlock(n)
		p, err := c.peek(n)
		c.w.deferred.Store(true)
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
		if c.active.Add(-1) == 0 && !c.w.deferred.Load() {
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
	var h [StructuredReplyHeaderSize + 8]byte
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
	var h [StructuredReplyHeaderSize + 8]byte
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

// readHeader puts the header of a successful read reply with r.Length bytes of data in h.
func (c *conn) readHeader(h *[StructuredReplyHeaderSize + 8]byte, r Request) []byte {
	if !c.structured {
		putSimpleReply(h[:], 0, r.Cookie)
		return h[:SimpleReplyHeaderSize]
	}
	putChunkHeader(h[:], ReplyFlagDone, ReplyTypeOffsetData, r.Cookie, 8+r.Length)
	binary.BigEndian.PutUint64(h[StructuredReplyHeaderSize:], r.Offset)
	return h[:]
}

// sendRead sends the successful reply to a read with its data.
func (c *conn) sendRead(r Request, buf []byte) {
	if c.structured && len(buf) == 0 {
		c.replyNone(r)
		return
	}
	var h [StructuredReplyHeaderSize + 8]byte
	c.send(c.readHeader(&h, r), buf)
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
	type desc struct{ length, flags uint32 }
	var descs []desc
	off, n := int64(r.Offset), int64(r.Length)
	if ex, ok := c.dev.(backend.Extenter); ok {
		exts, err := ex.Extents(off, n)
		if err != nil {
			// The document allows answering "unknown" (status 0) for the whole range instead of
			// failing: qemu-img and nbdcopy then simply read the data.
			c.log.Debug("nbd: extents failed", "export", c.export.Name, "offset", off, "length", n, "err", err)
			exts = nil
		}
		var sum int64
		for _, e := range exts {
			if e.Length <= 0 || sum >= n || len(descs) >= maxExtents {
				break
			}
			l := min(e.Length, n-sum)
			var f uint32
			if e.Hole {
				f |= StateHole
			}
			if e.Zero {
				f |= StateZero
			}
			sum += l
			if k := len(descs); k > 0 && descs[k-1].flags == f && int64(descs[k-1].length)+l <= 1<<32-1<<9 {
				descs[k-1].length += uint32(l)
			} else {
				descs = append(descs, desc{uint32(l), f})
			}
			if r.Flags&CmdFlagReqOne != 0 && len(descs) > 1 {
				break
			}
		}
	}
	if len(descs) == 0 {
		descs = append(descs, desc{r.Length, 0})
	}
	if r.Flags&CmdFlagReqOne != 0 {
		descs = descs[:1]
	}
	b := make([]byte, StructuredReplyHeaderSize+4+8*len(descs))
	putChunkHeader(b, ReplyFlagDone, ReplyTypeBlockStatus, r.Cookie, uint32(4+8*len(descs)))
	p := b[StructuredReplyHeaderSize:]
	binary.BigEndian.PutUint32(p, metaContextID)
	for i, d := range descs {
		binary.BigEndian.PutUint32(p[4+8*i:], d.length)
		binary.BigEndian.PutUint32(p[8+8*i:], d.flags)
	}
	c.send(b)
}

// putSimpleReply puts a simple reply header at the start of b.
func putSimpleReply(b []byte, errno Errno, cookie uint64) {
	SimpleReply{Errno: errno, Cookie: cookie}.AppendBinary(b[:0])
}

// putChunkHeader puts a structured reply chunk header at the start of b.
func putChunkHeader(b []byte, flags ReplyFlags, typ ChunkType, cookie uint64, length uint32) {
	ChunkHeader{Flags: flags, Type: typ, Cookie: cookie, Length: length}.AppendBinary(b[:0])
}

func (c *conn) replyOK(r Request) {
	var h [SimpleReplyHeaderSize]byte
	putSimpleReply(h[:], 0, r.Cookie)
	c.send(h[:])
}

func (c *conn) replyNone(r Request) {
	var h [StructuredReplyHeaderSize]byte
	putChunkHeader(h[:], ReplyFlagDone, ReplyTypeNone, r.Cookie, 0)
	c.send(h[:])
}

// replyError sends an error reply: a structured error chunk with msg when structured replies
// are negotiated, a simple reply otherwise. Its error is that of the connection, which the
// request loop sees too.
func (c *conn) replyError(r Request, errno Errno, msg string) error {
	c.srv.stats.errors.Add(1)
	c.log.Debug("nbd: request failed", "cmd", r.Type.String(), "offset", r.Offset, "length", r.Length,
		"errno", uint32(errno), "reason", msg)
	if !c.structured {
		var h [SimpleReplyHeaderSize]byte
		putSimpleReply(h[:], errno, r.Cookie)
		return c.send(h[:])
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b, _ := ChunkHeader{Flags: ReplyFlagDone, Type: ReplyTypeError, Cookie: r.Cookie, Length: uint32(6 + len(msg))}.
		AppendBinary(make([]byte, 0, StructuredReplyHeaderSize+6+len(msg)))
	b, _ = ErrorChunk{Errno: errno, Message: msg}.AppendBinary(b)
	return c.send(b)
}

var _ net.Conn = (*prefixConn)(nil)
