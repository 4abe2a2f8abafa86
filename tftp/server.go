package tftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for zero Server and Client fields.
const (
	// DefaultBlockSize is the RFC 1350 block size, used when no blksize is negotiated.
	DefaultBlockSize = 512
	// MaxBlockSize is the largest blksize RFC 2348 allows.
	MaxBlockSize = 65464
	// MinBlockSize is the smallest blksize RFC 2348 allows.
	MinBlockSize = 8
	// DefaultMaxWindowSize caps the windowsize a server grants.
	DefaultMaxWindowSize = 64
	// DefaultTimeout is the first retransmission timeout; it doubles on each retry.
	DefaultTimeout = time.Second
	// DefaultRetries is how many times a packet is sent again before a transfer is given up.
	DefaultRetries = 5
	// MaxWindowBytes caps windowsize × blksize, so that a large window neither overflows socket
	// buffers nor holds much memory per transfer.
	MaxWindowBytes = 1 << 20
	// DefaultMaxTransfers caps the transfers a server runs at once.
	DefaultMaxTransfers = 512
	// DefaultMaxTransfersPerClient caps the transfers of one client address at once. A PXE
	// client runs one at a time; a boot loader fetching kernel and initrd in parallel, two.
	DefaultMaxTransfersPerClient = 32
	// DefaultMaxBufferBytes is the memory all running transfers together may hold for their
	// windows, receive buffers and read-ahead.
	DefaultMaxBufferBytes = 64 << 20
	// FloorBlockSize is the largest blksize a transfer keeps once the buffer budget is spent
	// (an Ethernet frame's worth).
	FloorBlockSize = 1468
	// DefaultMaxIdle is how long a transfer waits for a silent client, in all, before it is
	// given up.
	DefaultMaxIdle = time.Minute
)

// readAhead is the size of the reads from a handler's content.
const readAhead = 64 << 10

// netasciiBuf is the buffer of a netascii encoder.
const netasciiBuf = 4096

// maxNetasciiTsize is the largest content whose netascii size a server computes for tsize.
const maxNetasciiTsize = 16 << 20

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or Close.
var ErrServerClosed = errors.New("tftp: server closed")

// Server is a TFTP server. Its exported fields are its configuration; set them before Serve.
// The zero value serves nothing (every read is answered "file not found") and refuses uploads.
type Server struct {
	// Handler answers read requests. Nil answers every read with "file not found".
	Handler Handler
	// WriteHandler answers write requests. Nil (the default) refuses all uploads with an access
	// violation.
	WriteHandler Handler
	// Logger receives one line per transfer (client, file, options, bytes, duration, outcome)
	// and debug details. Nil means silent.
	Logger *slog.Logger
	// MaxBlockSize caps the negotiated blksize; 0 means MaxBlockSize. The path MTU to the
	// client caps it further.
	MaxBlockSize int
	// MaxWindowSize caps the negotiated windowsize; 0 means DefaultMaxWindowSize.
	MaxWindowSize int
	// Timeout is the first retransmission timeout when the client does not ask for one with the
	// timeout option (tftpd-hpa's --retransmit); 0 means DefaultTimeout. Each retry doubles it.
	Timeout time.Duration
	// Retries is how many times a packet is sent again before the transfer is given up; 0
	// means DefaultRetries.
	Retries int
	// MaxIdle is how long in all a transfer waits without progress from its client (the sum of
	// its back-offs) before it is given up, whatever timeout the client negotiated; 0 means
	// DefaultMaxIdle and a negative value no limit beyond Retries. A client that asks for
	// timeout 255 and goes away holds its transfer this long, not Retries × 255 s.
	MaxIdle time.Duration
	// MaxTransfers caps the transfers running at once; a request beyond it is answered "server
	// busy" (error 0) from the request port. 0 means DefaultMaxTransfers; negative, no cap.
	MaxTransfers int
	// MaxTransfersPerClient caps the transfers of one client at once, so that one address
	// cannot take all of MaxTransfers. A client is an IPv4 address or an IPv6 /64. 0 means
	// DefaultMaxTransfersPerClient; negative, no cap.
	MaxTransfersPerClient int
	// MaxBufferBytes bounds the memory that running transfers hold together for windows,
	// receive buffers and read-ahead. A transfer whose negotiated buffers do not fit in what is
	// left gets a smaller window, then less read-ahead, then a blksize of at most
	// FloorBlockSize; that floor (about three blocks) it gets even when the budget is spent, so
	// a client is never refused for memory and the budget is exceeded by at most MaxTransfers
	// floors. One client may hold at most a quarter of the budget. 0 means
	// DefaultMaxBufferBytes; negative, no limit.
	MaxBufferBytes int64
	// PortRange, if set, is where the local ports of transfer sockets come from (tftpd-hpa's
	// --port-range), so that a firewall can let exactly those through. The zero value means
	// any ephemeral port.
	PortRange PortRange
	// OnTransferDone, if set, is called after each transfer with what happened, for example to
	// log "client fetched pxelinux.cfg/default". It runs on the transfer's goroutine.
	OnTransferDone func(TransferInfo)

	initOnce sync.Once
	ctx      context.Context // cancelled by Close, and by Shutdown when its context ends
	cancel   context.CancelFunc
	mu       sync.Mutex
	closing  bool
	conns    map[net.PacketConn]struct{}
	active   int
	// clients holds the transfers and buffer bytes of each client (see clientKey); buffered is
	// the sum of the bytes.
	clients  map[netip.Prefix]*clientUse
	buffered int64

	refusedBusy, refusedClient, refusedPort, malformed, budgetShrunk atomic.Uint64

	requests, completed, failed atomic.Uint64
	bytesSent, bytesReceived    atomic.Uint64
	retransmits                 atomic.Uint64
	// socks counts the transfers on a blocking socket and thread of their own (see sock).
	socks atomic.Int32
}

// Stats is a snapshot of a server's counters since it started.
type Stats struct {
	Requests      uint64 // read and write requests received
	Active        int    // transfers running now
	Completed     uint64 // transfers that ended successfully
	Failed        uint64 // transfers that ended with an error (including refused requests)
	BytesSent     uint64 // DATA payload bytes of read requests
	BytesReceived uint64 // DATA payload bytes of write requests
	Retransmits   uint64 // packets sent again: after a timeout, or a window resent from an early ACK
	// Requests refused before a transfer started, by reason; they are counted in Requests
	// but not in Failed.
	RefusedBusy   uint64 // MaxTransfers were running
	RefusedClient uint64 // the client had MaxTransfersPerClient running
	RefusedPort   uint64 // no free port in PortRange (these are counted in Failed too)
	Malformed     uint64 // packets on the request port that did not parse (too many options, say)
	// BudgetShrunk counts transfers given a smaller window, read-ahead or blksize than they
	// negotiated because MaxBufferBytes was spent.
	BudgetShrunk uint64
	// BufferedBytes is the memory that running transfers hold now for windows, receive buffers
	// and read-ahead (see MaxBufferBytes).
	BufferedBytes int64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active, buffered := s.active, s.buffered
	s.mu.Unlock()
	return Stats{
		Requests:      s.requests.Load(),
		Active:        active,
		BufferedBytes: buffered,
		RefusedBusy:   s.refusedBusy.Load(),
		RefusedClient: s.refusedClient.Load(),
		BudgetShrunk:  s.budgetShrunk.Load(),
		RefusedPort:   s.refusedPort.Load(),
		Malformed:     s.malformed.Load(),
		Completed:     s.completed.Load(),
		Failed:        s.failed.Load(),
		BytesSent:     s.bytesSent.Load(),
		BytesReceived: s.bytesReceived.Load(),
		Retransmits:   s.retransmits.Load(),
	}
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.conns = make(map[net.PacketConn]struct{})
		s.clients = make(map[netip.Prefix]*clientUse)
	})
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// ListenAndServe listens on the UDP address addr (":69" when empty) and calls Serve.
func (s *Server) ListenAndServe(addr string) error {
	if addr == "" {
		addr = ":69"
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("tftp: listen on %q: %w", addr, err)
	}
	return s.Serve(pc)
}

// Serve answers requests arriving on pc, a UDP socket, until Shutdown or Close, and then
// returns ErrServerClosed. Each transfer runs on a new UDP socket bound to pc's address and an
// ephemeral port, connected to the client. When pc is bound to a wildcard address, each
// transfer answers from the address its request was sent to (on Linux, through IP_PKTINFO;
// elsewhere from the address routing picks), and Request.LocalAddr is that address. Serve closes
// pc when it returns.
func (s *Server) Serve(pc net.PacketConn) error {
	s.init()
	defer pc.Close()
	laddr, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("tftp: serve needs a UDP socket, not %T", pc.LocalAddr())
	}
	if err := s.PortRange.check(); err != nil {
		return err
	}
	local := laddr.AddrPort()
	// reqLocal is the address the current request was sent to, where the kernel reports it.
	reqLocal := local
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.conns[pc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, pc)
		s.mu.Unlock()
	}()
	read := pc.ReadFrom
	if uc, ok := pc.(*net.UDPConn); ok {
		// A boot storm sends many requests at once; let the kernel queue them.
		_ = uc.SetReadBuffer(1 << 20)
		if local.Addr().IsUnspecified() && enablePktinfo(uc) {
			oob := make([]byte, pktinfoSpace)
			read = func(b []byte) (int, net.Addr, error) {
				n, oobn, _, from, err := uc.ReadMsgUDPAddrPort(b, oob)
				if dst := pktinfoDst(oob[:oobn]); dst.IsValid() {
					reqLocal = netip.AddrPortFrom(dst, local.Port())
				} else {
					reqLocal = local
				}
				return n, net.UDPAddrFromAddrPort(from), err
			}
		}
	}
	log := s.logger()
	buf := make([]byte, 64*1024)
	for {
		reqLocal = local
		n, addr, err := read(buf)
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("tftp: read request: %w", err)
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		from := ua.AddrPort()
		pkt, err := ParsePacket(buf[:n])
		if err != nil {
			s.malformed.Add(1)
			log.Debug("tftp: malformed packet", "client", from, "err", err)
			if n >= 2 && (buf[1] == byte(OpRRQ) || buf[1] == byte(OpWRQ)) && buf[0] == 0 {
				_, _ = pc.WriteTo(errorPacket(ErrIllegalOperation, "malformed request"), addr)
			}
			continue
		}
		req, ok := pkt.(*RequestPacket)
		if !ok {
			// Stray DATA or ACK for a transfer that has ended: no one to answer.
			log.Debug("tftp: ignored packet on the request port", "client", from, "op", pkt.Opcode())
			continue
		}
		s.requests.Add(1)
		key := clientKey(from.Addr())
		if refusal := s.admit(key); refusal != "" {
			if refusal != refusedClosing {
				log.Debug("tftp: request refused", "client", from, "file", logName(req.Filename), "reason", refusal)
				_, _ = pc.WriteTo(errorPacket(ErrNotDefined, refusal), addr)
			}
			continue
		}
		go s.serveRequest(pc, reqLocal, from, key, req)
	}
}

// logName is a client's file name as log lines show it: cut to 256 bytes, so that a 64 KB name
// does not make a 64 KB log line.
func logName(name string) string {
	if len(name) <= 256 {
		return name
	}
	return truncate(name, 256) + "..."
}

// clientKey is what per-client limits count by: an IPv4 address, or the /64 of an IPv6 one (a
// host may pick its source address from a whole /64).
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// clientUse is what one client holds now.
type clientUse struct {
	transfers int
	bytes     int64
}

// refusedClosing is admit's answer when the server is closing: such requests get no answer.
const refusedClosing = "closing"

// limit returns v, or def when v is 0; a result of 0 (v < 0) means no limit.
func limit[T ~int | ~int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// admit counts a new transfer of client key, or returns why it is refused: the message for the
// client's ERROR packet.
func (s *Server) admit(key netip.Prefix) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return refusedClosing
	}
	if m := limit(s.MaxTransfers, DefaultMaxTransfers); m > 0 && s.active >= m {
		s.refusedBusy.Add(1)
		return "server busy"
	}
	u := s.clients[key]
	if m := limit(s.MaxTransfersPerClient, DefaultMaxTransfersPerClient); m > 0 && u != nil && u.transfers >= m {
		s.refusedClient.Add(1)
		return "too many transfers from this address"
	}
	if u == nil {
		u = &clientUse{}
		s.clients[key] = u
	}
	s.active++
	u.transfers++
	return ""
}

// release ends what admit and reserve counted for one transfer.
func (s *Server) release(key netip.Prefix, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	s.buffered -= bytes
	if u := s.clients[key]; u != nil {
		u.transfers--
		u.bytes -= bytes
		if u.transfers <= 0 {
			delete(s.clients, key)
		}
	}
}

// bufferBudget returns how many more buffer bytes client key may reserve now (math.MaxInt64
// when there is no limit). s.mu must be held.
func (s *Server) bufferBudget(key netip.Prefix) int64 {
	m := limit(s.MaxBufferBytes, DefaultMaxBufferBytes)
	if m <= 0 {
		return math.MaxInt64
	}
	left := m - s.buffered
	if u := s.clients[key]; u != nil {
		left = min(left, m/4-u.bytes)
	}
	return max(left, 0)
}

// Shutdown stops accepting requests, waits for running transfers to end and returns nil, or
// stops them when ctx ends and returns ctx's error; the clients of the transfers stopped then get
// an ERROR packet saying that the server shuts down.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.closeListeners()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		active := s.active
		s.mu.Unlock()
		if active == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.cancel()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops accepting requests and ends running transfers now; their clients get an ERROR
// packet saying that the server shuts down.
func (s *Server) Close() error {
	s.init()
	s.closeListeners()
	s.cancel()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for pc := range s.conns {
		pc.Close()
	}
}

// crowded reports whether more transfers run than there are Ps.
func (s *Server) crowded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active > runtime.GOMAXPROCS(0)
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Server) retries() int {
	if s.Retries > 0 {
		return s.Retries
	}
	return DefaultRetries
}

func (s *Server) maxIdle() time.Duration { return limit(s.MaxIdle, DefaultMaxIdle) }

// serveRequest runs one transfer from request to end.
func (s *Server) serveRequest(pc net.PacketConn, local, from netip.AddrPort, key netip.Prefix, pkt *RequestPacket) {
	ctx, cancel := context.WithCancel(s.ctx)
	t := &transfer{
		srv:   s,
		pc:    pc,
		key:   key,
		local: local,
		info: TransferInfo{
			Op: pkt.Op, Remote: from, Filename: pkt.Filename, Mode: strings.ToLower(pkt.Mode),
			BlockSize: DefaultBlockSize, WindowSize: 1, Size: -1, Start: time.Now(),
		},
	}
	t.pr.onRetransmit = func(n int) { s.retransmits.Add(uint64(n)) }
	t.req = &Request{
		Op: pkt.Op, Filename: pkt.Filename, Mode: t.info.Mode, Options: pkt.Options,
		RemoteAddr: from, LocalAddr: local, Size: -1, ctx: ctx,
	}
	if pkt.Op == OpWRQ {
		if v, ok := pkt.Option(OptTransferSize); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				t.req.Size = n
			}
		}
	}
	defer func() {
		cancel()
		if t.link != nil {
			if t.link.s != nil {
				s.socks.Add(-1)
			}
			t.link.close()
		}
		s.release(key, t.reserved)
	}()
	switch {
	case t.info.Mode != ModeOctet && t.info.Mode != ModeNetascii:
		t.Error(ErrIllegalOperation, "unsupported mode "+quoteName(pkt.Mode))
	case pkt.Op == OpWRQ && s.WriteHandler == nil:
		t.Error(ErrAccessViolation, "uploads are disabled")
	case pkt.Op == OpRRQ && s.Handler == nil:
		t.Error(ErrFileNotFound, "file not found")
	default:
		h := s.Handler
		if pkt.Op == OpWRQ {
			h = s.WriteHandler
		}
		s.callHandler(h, t)
		if !t.responded {
			t.Error(ErrFileNotFound, "file not found")
		}
	}
	if t.finalAck != nil {
		// The upload was committed by the handler: only now tell the client it succeeded.
		if err := t.link.send(t.finalAck); err != nil && t.info.Err == nil {
			t.info.Err = err
		}
	}
	t.finish()
	if t.finalAck != nil {
		dally(t.link, t.finalAck, t.params)
	}
}

func (s *Server) callHandler(h Handler, t *transfer) {
	defer func() {
		if v := recover(); v != nil {
			s.logger().Error("tftp: handler panic", "client", t.info.Remote, "file", logName(t.info.Filename),
				"panic", v, "stack", string(debug.Stack()))
			if !t.responded {
				t.Error(ErrNotDefined, "internal error")
			}
		}
	}()
	h.ServeTFTP(t, t.req)
}

// transfer is the ResponseWriter of one request.
type transfer struct {
	srv *Server
	// pc is the request port, for an error when the transfer cannot open a socket of its own.
	pc  net.PacketConn
	key netip.Prefix
	// reserved is what the transfer counts in the server's buffer budget; ahead is the
	// read-ahead it was granted.
	reserved  int64
	ahead     int
	req       *Request
	local     netip.AddrPort
	link      *link
	params    params
	pr        progress
	info      TransferInfo
	responded bool
	finalAck  []byte
}

var _ ResponseWriter = (*transfer)(nil)

// open creates the transfer's own socket, connected to the client, on a port of the server's
// PortRange when it has one. When it cannot, the client is told so from the request port.
func (t *transfer) open() error {
	s := t.srv
	t.params = params{blksize: DefaultBlockSize, window: 1, timeout: s.timeout(), retries: s.retries(),
		maxIdle: s.maxIdle()}
	if err := t.openLink(); err != nil {
		if errors.Is(err, errNoFreePort) {
			s.refusedPort.Add(1)
		}
		_, _ = t.pc.WriteTo(errorPacket(ErrNotDefined, "server busy"), net.UDPAddrFromAddrPort(t.info.Remote))
		return err
	}
	l := t.link
	context.AfterFunc(t.req.Context(), func() {
		// The transfer's context ends with the transfer, or earlier when the server stops it
		// (Close, or Shutdown's deadline): then its client learns why.
		if s.ctx.Err() != nil {
			l.sendFinal(errorPacket(ErrNotDefined, "server shutting down"))
		}
		l.shutdown()
	})
	return nil
}

// errNoFreePort is why a transfer could not start when every port of the range is taken.
var errNoFreePort = errors.New("no free port")

func (t *transfer) openLink() error {
	s := t.srv
	remote := netip.AddrPortFrom(t.info.Remote.Addr().Unmap(), t.info.Remote.Port())
	local := t.local.Addr().Unmap()
	first, n := s.PortRange.span()
	start := 0
	if n > 1 {
		start = rand.IntN(n)
	}
	// A transfer on a blocking socket (see sock) holds an OS thread of its own. That wins while
	// there are no more such transfers than Ps; a boot storm is served faster by the netpoller,
	// which runs any number of transfers on a few threads.
	useSock := int(s.socks.Add(1)) <= runtime.GOMAXPROCS(0)
	if !useSock {
		s.socks.Add(-1)
	}
	for i := range n {
		port := uint16(first + (start+i)%n)
		if useSock {
			sk, err := openSock(local, remote, port)
			if err == nil {
				t.link = &link{s: sk, peer: remote, connected: true}
				sk.crowded = s.crowded
				sk.lockThread()
				return nil
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			s.socks.Add(-1)
			useSock = false
		}
		c, err := dialUDP(t.local.Addr(), remote, port)
		if err == nil {
			t.link = &link{c: c, peer: remote, connected: true}
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
	}
	if useSock {
		s.socks.Add(-1)
	}
	return fmt.Errorf("tftp: transfer to %v: %w in port range %v", remote, errNoFreePort, s.PortRange)
}

// dialUDP opens a netpoller socket from local (any address when unspecified) and port (0:
// ephemeral) to remote.
func dialUDP(local netip.Addr, remote netip.AddrPort, port uint16) (*net.UDPConn, error) {
	laddr := &net.UDPAddr{Port: int(port)}
	if local.IsValid() && !local.IsUnspecified() && local.Unmap().Is4() == remote.Addr().Is4() {
		laddr.IP, laddr.Zone = local.AsSlice(), local.Zone()
	}
	raddr := net.UDPAddrFromAddrPort(remote)
	c, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		return nil, fmt.Errorf("tftp: open transfer socket to %v: %w", raddr, err)
	}
	return c, nil
}

func (t *transfer) Error(code ErrorCode, message string) {
	if t.finalAck != nil {
		// Receive succeeded but the handler could not keep the upload: say so instead of
		// acknowledging the last block.
		t.finalAck = nil
		t.info.Err = &ErrorPacket{Code: code, Message: message}
		t.link.sendError(code, message)
		return
	}
	if t.responded {
		return
	}
	t.responded = true
	t.info.Err = &ErrorPacket{Code: code, Message: message}
	if err := t.open(); err != nil {
		t.info.Err = err
		return
	}
	t.link.sendError(code, message)
}

func (t *transfer) ServeContent(content io.ReaderAt, size int64) error {
	if t.responded {
		return errors.New("tftp: response already sent")
	}
	t.responded = true
	if t.req.Op != OpRRQ {
		t.respondError(ErrIllegalOperation, "not a read request")
		return t.info.Err
	}
	if err := t.open(); err != nil {
		t.info.Err = err
		return err
	}
	n := size
	if n < 0 {
		n = math.MaxInt64
	}
	// Read ahead in large chunks: one pread per 64 KiB rather than one per block, but no more
	// than the content.
	ahead := readAhead
	if size >= 0 && size < readAhead {
		ahead = max(int(size), 16)
	}
	extra, tsize := 0, size
	if t.info.Mode == ModeNetascii {
		// The netascii form is encoded as the transfer goes. Its size is known only by reading
		// the whole content: that is done only for a client that asks for tsize, and only up
		// to maxNetasciiTsize; a larger file goes without tsize (RFC 2349 lets a server leave
		// it out).
		extra = netasciiBuf
		tsize = -1
		if _, asked := t.req.Option(OptTransferSize); asked && size >= 0 && size <= maxNetasciiTsize {
			enc, err := netasciiSize(io.NewSectionReader(content, 0, size))
			if err != nil {
				t.respondErr(wrapf(err, "tftp: read %s", quoteName(t.info.Filename)))
				return t.info.Err
			}
			tsize = enc
		}
	}
	oack := t.negotiate(tsize, t.link.pathMTU(), ahead, extra)
	var src io.Reader = bufio.NewReaderSize(io.NewSectionReader(content, 0, n), t.ahead)
	if t.info.Mode == ModeNetascii {
		src = newNetasciiReader(src)
	}
	t.prepareSocket()
	t.info.Size = tsize
	if oack != nil {
		if err := waitAck0(t.link, t.params, oack, &t.pr); err != nil {
			t.info.Err = err
			return err
		}
	}
	err := sendBlocks(t.link, t.params, src, &t.pr)
	t.info.Err = err
	return err
}

func (t *transfer) Receive(dst io.Writer) (int64, error) {
	if t.responded {
		return 0, errors.New("tftp: response already sent")
	}
	t.responded = true
	if t.req.Op != OpWRQ {
		t.respondError(ErrIllegalOperation, "not a write request")
		return 0, t.info.Err
	}
	if err := t.open(); err != nil {
		t.info.Err = err
		return 0, err
	}
	first := t.negotiate(t.req.Size, t.link.pathMTU(), 0, 0)
	t.prepareSocket()
	t.info.Size = t.req.Size
	if first == nil {
		first, _ = (&AckPacket{Block: 0}).AppendBinary(nil)
	}
	if err := t.link.send(first); err != nil {
		t.info.Err = err
		return 0, err
	}
	w := dst
	var na *netasciiWriter
	if t.info.Mode == ModeNetascii {
		na = newNetasciiWriter(dst)
		w = na
	}
	final, err := recvBlocks(t.link, t.params, w, first, nil, true, &t.pr)
	if err == nil && na != nil {
		err = na.Flush()
	}
	if err != nil {
		t.info.Err = err
		return t.pr.bytes, err
	}
	t.finalAck = final
	return t.pr.bytes, nil
}

// respondError sends an error on a fresh socket after responded was already set.
func (t *transfer) respondError(code ErrorCode, msg string) {
	t.responded = false
	t.Error(code, msg)
}

func (t *transfer) respondErr(err error) {
	t.link.sendError(ErrNotDefined, "read error")
	t.info.Err = err
}

// negotiate picks the values of the options the client sent (RFC 2347: only those), fits the
// buffers into the server's budget (see fit) and returns the OACK to send, or nil when no
// option was accepted. size is the tsize to announce on a read request (< 0: unknown, tsize not
// acknowledged); mtu is the path MTU to the client (0: unknown); ahead is the read-ahead wanted
// and extra what else the transfer buffers besides its window and receive buffer.
func (t *transfer) negotiate(size int64, mtu int, ahead, extra int) []byte {
	s := t.srv
	var acked []Option
	maxBlk := MaxBlockSize
	if s.MaxBlockSize > 0 {
		maxBlk = min(maxBlk, max(s.MaxBlockSize, MinBlockSize))
	}
	if mtu > 0 {
		hdr := 20 + 8 + 4
		if t.req.RemoteAddr.Addr().Unmap().Is6() {
			hdr = 40 + 8 + 4
		}
		maxBlk = max(MinBlockSize, min(maxBlk, mtu-hdr))
	}
	maxWin := DefaultMaxWindowSize
	if s.MaxWindowSize > 0 {
		maxWin = s.MaxWindowSize
	}
	window := 1
	for _, o := range t.req.Options {
		name := strings.ToLower(o.Name)
		v, err := strconv.ParseInt(o.Value, 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case OptBlockSize:
			if v < MinBlockSize {
				continue
			}
			t.params.blksize = int(min(v, int64(maxBlk)))
			acked = append(acked, Option{Name: o.Name}) // filled below, once the budget is known
		case OptTimeout:
			if v < 1 || v > 255 {
				continue
			}
			t.params.timeout = time.Duration(v) * time.Second
			acked = append(acked, Option{Name: o.Name, Value: strconv.FormatInt(v, 10)})
		case OptTransferSize:
			if t.req.Op == OpRRQ {
				if size < 0 {
					continue
				}
				v = size
			} else if v < 0 {
				continue
			}
			acked = append(acked, Option{Name: o.Name, Value: strconv.FormatInt(v, 10)})
		case OptWindowSize:
			if v < 1 || v > 65535 {
				continue
			}
			window = int(min(v, int64(maxWin)))
			acked = append(acked, Option{Name: o.Name}) // filled below
		}
	}
	t.params.window = max(1, min(window, MaxWindowBytes/t.params.blksize))
	t.fit(ahead, extra)
	for i := range acked {
		switch {
		case strings.EqualFold(acked[i].Name, OptBlockSize):
			acked[i].Value = strconv.Itoa(t.params.blksize)
		case strings.EqualFold(acked[i].Name, OptWindowSize):
			acked[i].Value = strconv.Itoa(t.params.window)
		}
	}
	t.info.BlockSize, t.info.WindowSize = t.params.blksize, t.params.window
	if len(acked) == 0 {
		return nil
	}
	b, _ := (&OAckPacket{Options: acked}).AppendBinary(nil)
	return b
}

// fit reserves the transfer's buffers (window ring, receive buffer, read-ahead and extra) in
// the server's budget, shrinking the window, then the read-ahead to one block, then the blksize
// to FloorBlockSize until they fit. What is left then, the floor, is reserved even beyond the
// budget: MaxTransfers bounds the excess. It sets t.ahead to the read-ahead granted.
func (t *transfer) fit(ahead, extra int) {
	s := t.srv
	p := &t.params
	need := func() int64 {
		return int64(p.blksize+5) + int64(extra) + int64(ahead) + int64(p.window)*int64(p.blksize+4)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if left := s.bufferBudget(t.key); need() > left {
		s.budgetShrunk.Add(1)
		fixed := int64(p.blksize+5) + int64(extra) + int64(ahead)
		p.window = max(1, int(min(int64(p.window), (left-fixed)/int64(p.blksize+4))))
		if need() > left && ahead > p.blksize {
			ahead = p.blksize
		}
		if need() > left && p.blksize > FloorBlockSize {
			p.blksize = FloorBlockSize
			ahead = min(ahead, p.blksize)
		}
	}
	t.ahead = ahead
	t.reserved = need()
	s.buffered += t.reserved
	if u := s.clients[t.key]; u != nil {
		u.bytes += t.reserved
	}
}

// prepareSocket sizes the socket buffers for a window of the negotiated size.
func (t *transfer) prepareSocket() {
	need := 2 * t.params.window * (t.params.blksize + 64)
	if need > 256*1024 {
		t.link.setBuffers(need)
	}
	t.link.rbuf = make([]byte, t.params.blksize+4+1)
}

// finish records the outcome in the counters, the log and the hook.
func (t *transfer) finish() {
	s := t.srv
	t.info.Duration = time.Since(t.info.Start)
	t.info.Bytes = t.pr.bytes
	t.info.Retransmits = t.pr.retransmits
	if t.info.Op == OpRRQ {
		s.bytesSent.Add(uint64(t.pr.bytes))
	} else {
		s.bytesReceived.Add(uint64(t.pr.bytes))
	}
	attrs := []any{
		"op", t.info.Op.String(), "client", t.info.Remote.String(), "file", logName(t.info.Filename),
		"mode", t.info.Mode, "bytes", t.info.Bytes, "duration", t.info.Duration,
		"blksize", t.info.BlockSize, "windowsize", t.info.WindowSize, "tsize", t.info.Size,
		"retransmits", t.info.Retransmits,
	}
	switch {
	case t.info.Err == nil:
		s.completed.Add(1)
		s.logger().Info("tftp: transfer done", attrs...)
	case errors.Is(t.info.Err, ErrOptionRefused):
		// PXE firmware often asks for tsize only to learn the size and then refuses the OACK.
		s.failed.Add(1)
		s.logger().Info("tftp: client refused the options", append(attrs, "err", t.info.Err)...)
	case errors.Is(t.info.Err, ErrFileNotFound):
		// Normal: pxelinux tries pxelinux.cfg/<uuid>, <mac>, <hex ip>, ... before default.
		s.failed.Add(1)
		s.logger().Info("tftp: file not found", append(attrs, "err", t.info.Err)...)
	default:
		s.failed.Add(1)
		s.logger().Warn("tftp: transfer failed", append(attrs, "err", t.info.Err)...)
	}
	if s.OnTransferDone != nil {
		s.OnTransferDone(t.info)
	}
}
