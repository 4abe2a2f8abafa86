package aoe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
)

// Defaults for zero ClientConfig fields.
const (
	// DefaultRetransmitTimeout is the retransmit timeout before the client has measured the
	// round trip.
	DefaultRetransmitTimeout = 50 * time.Millisecond
	// DefaultMinRetransmitTimeout is the floor of the measured retransmit timeout.
	DefaultMinRetransmitTimeout = 10 * time.Millisecond
	// DefaultRetries is how many times a request is retransmitted before it fails.
	DefaultRetries = 10
	// DefaultMaxInFlight caps the requests in flight per operation when the target
	// advertises a larger buffer count.
	DefaultMaxInFlight = 64
)

// ErrNoResponse is returned when a request got no response after all its retransmissions.
var ErrNoResponse = errors.New("aoe: no response")

// ClientConfig configures a Client; the zero value of each field means its default.
type ClientConfig struct {
	// RetransmitTimeout is the timeout until round trips have been measured; it then adapts
	// between MinRetransmitTimeout and 2 s, doubling for each retransmission of a request.
	RetransmitTimeout    time.Duration
	MinRetransmitTimeout time.Duration
	// Retries is how many times a request is retransmitted before ErrNoResponse.
	Retries int
	// MaxInFlight caps the requests in flight per read or write; the target's buffer count
	// caps it too.
	MaxInFlight int
	// MaxSectors caps the sectors per ATA frame below what the target and the MTU allow.
	MaxSectors int
	// Logger receives retransmission and discovery events; nil means silent.
	Logger *slog.Logger
}

// Client is an AoE initiator on one PacketConn: it discovers targets, opens their devices and
// reads and writes sectors with many requests in flight. It is safe for concurrent use.
type Client struct {
	pc    net.PacketConn
	cfg   ClientConfig
	mtu   int
	tag   atomic.Uint32
	mu    sync.Mutex
	calls map[uint32]*call
	multi map[uint32]chan<- *Response // Discover listeners, also fed announcements
	// senders are *sender for batched sends, one per concurrent sender.
	senders sync.Pool
	rttMu   sync.Mutex
	srtt    time.Duration
	rttvar  time.Duration
	done    chan struct{}
	err     error

	retransmits atomic.Uint64
	sent        atomic.Uint64
}

// ClientStats are a Client's counters.
type ClientStats struct {
	// Sent counts request frames sent, Retransmits those of them that were sent again.
	Sent, Retransmits uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{Sent: c.sent.Load(), Retransmits: c.retransmits.Load()}
}

// sender is a frameIO for batched sends and its frame list, kept between sends.
type sender struct {
	fio    frameIO
	frames []frame
}

// call is one request awaiting its response.
type call struct {
	tag     uint32
	cmd     Command
	major   uint16
	minor   uint8
	dst     *packet.Addr
	frame   []byte
	sent    time.Time
	tries   int
	done    chan *call
	keep    bool      // copy the whole response into resp
	rbuf    []byte    // ATA read data destination
	resp    *Response // with keep
	flags   Flags
	aoeErr  Error
	ata     [ATAArgLen]byte // the response's ATA argument, read through ataRegs
	lba     uint64
	gotData int
}

// NewClient starts an initiator on pc, which it owns: Close closes it.
func NewClient(pc net.PacketConn, cfg *ClientConfig) *Client {
	c := &Client{pc: pc, calls: map[uint32]*call{}, multi: map[uint32]chan<- *Response{}, done: make(chan struct{})}
	if cfg != nil {
		c.cfg = *cfg
	}
	if c.cfg.RetransmitTimeout <= 0 {
		c.cfg.RetransmitTimeout = DefaultRetransmitTimeout
	}
	if c.cfg.MinRetransmitTimeout <= 0 {
		c.cfg.MinRetransmitTimeout = DefaultMinRetransmitTimeout
	}
	if c.cfg.Retries <= 0 {
		c.cfg.Retries = DefaultRetries
	}
	if c.cfg.MaxInFlight <= 0 {
		c.cfg.MaxInFlight = DefaultMaxInFlight
	}
	c.mtu = DefaultMTU
	if m, ok := pc.(interface{ MTU() int }); ok && m.MTU() > 0 {
		c.mtu = m.MTU()
	}
	c.tag.Store(uint32(time.Now().UnixNano()) & 0x7FFF0000)
	go c.receive()
	return c
}

func (c *Client) logger() *slog.Logger {
	if c.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.cfg.Logger
}

// Close stops the client and closes its PacketConn; operations in progress fail.
func (c *Client) Close() error {
	err := c.pc.Close()
	<-c.done
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("aoe: close: %w", err)
	}
	return nil
}

// HardwareAddr returns the client's own address, when its PacketConn reports one.
func (c *Client) HardwareAddr() net.HardwareAddr {
	if a, ok := c.pc.LocalAddr().(*packet.Addr); ok {
		return a.HardwareAddr
	}
	return nil
}

func (c *Client) nextTag() uint32 {
	for {
		if t := c.tag.Add(1); t != 0 {
			return t
		}
	}
}

func (c *Client) receive() {
	defer close(c.done)
	fio := newFrameIO(c.pc)
	frames := make([]frame, batchSize)
	for i := range frames {
		// Sector data on a page boundary: the kernel copies it from the start of the
		// socket buffer's pages (see vnetHeader), and aligned copies are the fast ones.
		frames[i].buf = aligned(max(c.mtu, DefaultMTU, HeaderLen+ATAArgLen), HeaderLen+ATAArgLen)
	}
	for {
		n, err := fio.recv(frames)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			c.mu.Lock()
			c.err = err
			calls := c.calls
			c.calls = map[uint32]*call{}
			c.mu.Unlock()
			for _, cl := range calls {
				cl.aoeErr, cl.flags = 0, 0
				cl.resp = nil
				cl.done <- cl
			}
			return
		}
		for i := range n {
			c.deliver(frames[i].buf[:frames[i].n], frames[i].addr[:])
		}
	}
}

func (c *Client) deliver(b []byte, from net.HardwareAddr) {
	var h Header
	if h.UnmarshalBinary(b) != nil || !h.Response() {
		return
	}
	if h.Command == CommandATA && h.Flags&FlagError == 0 && len(b) < HeaderLen+ATAArgLen {
		return // a runt: wait for the retransmission's answer
	}
	c.mu.Lock()
	cl := c.calls[h.Tag]
	if cl != nil && (cl.cmd != h.Command ||
		(!bytes.Equal(cl.dst.HardwareAddr, Broadcast) && !bytes.Equal(cl.dst.HardwareAddr, from)) ||
		(cl.major != BroadcastShelf && cl.major != h.Major) || (cl.minor != BroadcastSlot && cl.minor != h.Minor)) {
		cl = nil
	}
	var rtt time.Duration
	if cl != nil {
		delete(c.calls, h.Tag)
		if cl.tries == 1 { // Karn: a retransmitted request's round trip says nothing
			rtt = time.Since(cl.sent)
		}
	}
	var listeners []chan<- *Response
	if cl == nil && h.Command == CommandQueryConfig {
		if l, ok := c.multi[h.Tag]; ok {
			listeners = append(listeners, l)
		} else {
			for _, l := range c.multi {
				listeners = append(listeners, l)
			}
		}
	}
	c.mu.Unlock()
	if cl == nil {
		for _, l := range listeners {
			r := &Response{From: slices.Clone(from)}
			if r.UnmarshalBinary(slices.Clone(b)) == nil {
				select {
				case l <- r:
				default:
				}
			}
		}
		return
	}
	if rtt > 0 {
		c.measure(rtt)
	}
	cl.flags, cl.aoeErr = h.Flags, h.Error
	if cl.keep {
		cl.resp = &Response{From: slices.Clone(from)}
		if err := cl.resp.UnmarshalBinary(slices.Clone(b)); err != nil {
			cl.resp.Message = Message{Header: h}
		}
	} else {
		cl.ata, cl.gotData = [ATAArgLen]byte{}, 0
		if len(b) >= HeaderLen+ATAArgLen {
			copy(cl.ata[:], b[HeaderLen:])
			if cl.rbuf != nil {
				cl.gotData = copy(cl.rbuf, b[HeaderLen+ATAArgLen:])
			}
		}
	}
	cl.done <- cl
}

func (c *Client) measure(rtt time.Duration) {
	c.rttMu.Lock()
	defer c.rttMu.Unlock()
	if c.srtt == 0 {
		c.srtt, c.rttvar = rtt, rtt/2
		return
	}
	d := c.srtt - rtt
	if d < 0 {
		d = -d
	}
	c.rttvar = (3*c.rttvar + d) / 4
	c.srtt = (7*c.srtt + rtt) / 8
}

// rto is the retransmit timeout for a request sent tries times.
func (c *Client) rto(tries int) time.Duration { return backoff(c.rtoBase(), tries) }

// rtoBase is the retransmit timeout for a request sent once.
func (c *Client) rtoBase() time.Duration {
	c.rttMu.Lock()
	defer c.rttMu.Unlock()
	if c.srtt != 0 {
		return max(c.srtt+4*c.rttvar, c.cfg.MinRetransmitTimeout)
	}
	return c.cfg.RetransmitTimeout
}

// backoff doubles the timeout t for each retransmission of a request sent tries times, up
// to 2 s.
func backoff(t time.Duration, tries int) time.Duration {
	for i := 1; i < tries && t < 2*time.Second; i++ {
		t *= 2
	}
	return min(t, 2*time.Second)
}

// send registers cl and transmits its frame.
func (c *Client) send(cl *call) error { return c.transmit(cl, true) }

// sendAll registers calls and transmits their frames in one batch.
func (c *Client) sendAll(calls []*call) error {
	if len(calls) == 0 {
		return nil
	}
	now := time.Now()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return fmt.Errorf("aoe: client closed: %w", c.err)
	}
	for _, cl := range calls {
		cl.tries, cl.sent = 1, now
		c.calls[cl.tag] = cl
	}
	c.mu.Unlock()
	c.sent.Add(uint64(len(calls)))
	s, _ := c.senders.Get().(*sender)
	if s == nil {
		s = &sender{fio: newFrameIO(c.pc)}
	}
	defer c.senders.Put(s)
	s.frames = slices.Grow(s.frames[:0], len(calls))[:len(calls)]
	for i, cl := range calls {
		s.frames[i].buf = cl.frame
		copy(s.frames[i].addr[:], cl.dst.HardwareAddr)
	}
	err := s.fio.send(s.frames)
	clear(s.frames) // the pool must not keep the calls' frames alive
	if err != nil {
		for _, cl := range calls {
			c.forget(cl)
		}
		return fmt.Errorf("aoe: send %d frames: %w", len(calls), err)
	}
	return nil
}

// resend transmits cl's frame again unless its response has arrived meanwhile.
func (c *Client) resend(cl *call) error { return c.transmit(cl, false) }

func (c *Client) transmit(cl *call, first bool) error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return fmt.Errorf("aoe: client closed: %w", c.err)
	}
	if first {
		cl.tries = 0
		c.calls[cl.tag] = cl
	} else if c.calls[cl.tag] != cl {
		c.mu.Unlock()
		return nil
	}
	cl.tries++
	cl.sent = time.Now()
	c.mu.Unlock()
	c.sent.Add(1)
	if !first {
		c.retransmits.Add(1)
	}
	if _, err := c.pc.WriteTo(cl.frame, cl.dst); err != nil {
		c.forget(cl)
		return fmt.Errorf("aoe: send tag %#x to %s: %w", cl.tag, cl.dst.HardwareAddr, err)
	}
	return nil
}

// triesOf returns how often cl has been sent.
func (c *Client) triesOf(cl *call) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cl.tries
}

func (c *Client) forget(cl *call) {
	c.mu.Lock()
	if c.calls[cl.tag] == cl {
		delete(c.calls, cl.tag)
	}
	c.mu.Unlock()
}

// Response is a message a Client received and the target that sent it.
type Response struct {
	Message
	From net.HardwareAddr
}

// Do sends m to dst (Broadcast for any target) with a fresh tag, retransmitting on timeout,
// and returns the first matching response, including responses with FlagError. It fails with
// ErrNoResponse when the retries run out, or with ctx's error.
func (c *Client) Do(ctx context.Context, dst net.HardwareAddr, m *Message) (*Response, error) {
	req := *m
	req.Tag = c.nextTag()
	frame, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	cl := &call{tag: req.Tag, cmd: req.Command, major: req.Major, minor: req.Minor,
		dst: &packet.Addr{HardwareAddr: dst}, frame: frame, done: make(chan *call, 1), keep: true}
	if err := c.roundTrip(ctx, cl); err != nil {
		return nil, err
	}
	return cl.resp, nil
}

// roundTrip sends cl and waits for its response.
func (c *Client) roundTrip(ctx context.Context, cl *call) error {
	if err := c.send(cl); err != nil {
		return err
	}
	timer := time.NewTimer(c.rto(1))
	defer timer.Stop()
	for {
		select {
		case <-cl.done:
			if cl.resp == nil && cl.keep || cl.flags&FlagResponse == 0 {
				return fmt.Errorf("aoe: client closed: %w", net.ErrClosed)
			}
			return nil
		case <-ctx.Done():
			c.forget(cl)
			return fmt.Errorf("aoe: tag %#x to %s: %w", cl.tag, cl.dst.HardwareAddr, ctx.Err())
		case <-timer.C:
			if c.triesOf(cl) > c.cfg.Retries {
				c.forget(cl)
				return fmt.Errorf("aoe: %s to %s at %s after %d tries: %w",
					cl.cmd, DeviceAddr{Shelf: cl.major, Slot: cl.minor}, cl.dst.HardwareAddr, cl.tries, ErrNoResponse)
			}
			if err := c.resend(cl); err != nil {
				return err
			}
			timer.Reset(c.rto(c.triesOf(cl)))
		}
	}
}

// TargetInfo describes a device found by Discover.
type TargetInfo struct {
	// Addr is the target's hardware address.
	Addr  net.HardwareAddr
	Shelf uint16
	Slot  uint8
	// Config is the device's Query Config response.
	Config ConfigArg
}

// DeviceAddr returns the device's shelf and slot.
func (ti TargetInfo) DeviceAddr() DeviceAddr { return DeviceAddr{Shelf: ti.Shelf, Slot: ti.Slot} }

func (ti TargetInfo) String() string {
	return fmt.Sprintf("%s at %s", ti.DeviceAddr(), ti.Addr)
}

// Discover broadcasts a Query Config read for shelf.slot (BroadcastShelf and BroadcastSlot
// for all) and collects the devices that answer, or announce themselves, until wait has passed
// or ctx ends. It repeats the query a few times within wait so that a lost frame does not hide
// a target.
func (c *Client) Discover(ctx context.Context, shelf uint16, slot uint8, wait time.Duration) ([]TargetInfo, error) {
	return c.discover(ctx, shelf, slot, wait, false)
}

func (c *Client) discover(ctx context.Context, shelf uint16, slot uint8, wait time.Duration, first bool) ([]TargetInfo, error) {
	tag := c.nextTag()
	ch := make(chan *Response, 256)
	c.mu.Lock()
	c.multi[tag] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.multi, tag)
		c.mu.Unlock()
	}()
	m := Message{Header: Header{Version: Version, Major: shelf, Minor: slot, Command: CommandQueryConfig, Tag: tag},
		Arg: &ConfigArg{Command: ConfigRead}}
	frame, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	resend := time.NewTicker(max(wait/4, time.Millisecond))
	defer resend.Stop()
	var found []TargetInfo
	bcast := &packet.Addr{HardwareAddr: Broadcast}
	if _, err := c.pc.WriteTo(frame, bcast); err != nil {
		return nil, fmt.Errorf("aoe: discovery broadcast: %w", err)
	}
	for {
		select {
		case r := <-ch:
			arg, ok := r.Arg.(*ConfigArg)
			if !ok || r.Flags&FlagError != 0 || (shelf != BroadcastShelf && r.Major != shelf) ||
				(slot != BroadcastSlot && r.Minor != slot) {
				continue
			}
			ti := TargetInfo{Addr: r.From, Shelf: r.Major, Slot: r.Minor, Config: *arg}
			ti.Config.String = slices.Clone(arg.String)
			if !slices.ContainsFunc(found, func(f TargetInfo) bool {
				return bytes.Equal(f.Addr, ti.Addr) && f.Shelf == ti.Shelf && f.Slot == ti.Slot
			}) {
				c.logger().Info("aoe: discovered target", "target", ti.String(), "sectors_per_frame", arg.SectorCount)
				found = append(found, ti)
				if first {
					return found, nil
				}
			}
		case <-resend.C:
			if _, err := c.pc.WriteTo(frame, bcast); err != nil {
				return found, fmt.Errorf("aoe: discovery broadcast: %w", err)
			}
		case <-deadline.C:
			return found, nil
		case <-ctx.Done():
			if len(found) > 0 {
				return found, nil
			}
			return nil, fmt.Errorf("aoe: discovering %s: %w", DeviceAddr{Shelf: shelf, Slot: slot}, ctx.Err())
		}
	}
}
