package aoetest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

// DefaultMTU is the MTU of a Network whose MTU field is zero.
const DefaultMTU = 1500

// queueLen is how many frames a Conn holds unread before it drops new ones, as a NIC would.
const queueLen = 4096

// Network is an in-memory Ethernet segment: Conns attached to it exchange AoE payloads by
// hardware address, and frames sent to the broadcast address reach every other Conn. Its
// fields must be set before the first Attach.
type Network struct {
	// MTU is the largest payload a Conn sends, reported by Conn.MTU. Zero means DefaultMTU.
	MTU int
	// Drop, when not nil, is asked about each delivery and drops the frame when it returns
	// true. It may be called concurrently.
	Drop func(src, dst net.HardwareAddr, payload []byte) bool

	mu    sync.Mutex
	conns []*Conn
	next  int
}

// Pipe returns two Conns on a new Network with DefaultMTU.
func Pipe() (a, b *Conn) {
	n := new(Network)
	return n.Attach(nil), n.Attach(nil)
}

// Attach connects a new Conn with hardware address mac; nil mac means a locally administered
// address unique on n.
func (n *Network) Attach(mac net.HardwareAddr) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if mac == nil {
		n.next++
		mac = net.HardwareAddr{0x02, 0, 0, 0, byte(n.next >> 8), byte(n.next)}
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	c := &Conn{net: n, mac: slices.Clone(mac), mtu: mtu, rx: make(chan frame, queueLen),
		closed: make(chan struct{}), dchange: make(chan struct{})}
	n.conns = append(n.conns, c)
	return c
}

type frame struct {
	src  net.HardwareAddr
	data []byte
}

// Conn is one station on a Network. It implements net.PacketConn with *packet.Addr addresses.
type Conn struct {
	net     *Network
	mac     net.HardwareAddr
	mtu     int
	rx      chan frame
	once    sync.Once
	closed  chan struct{}
	dmu     sync.Mutex
	rdl     time.Time
	dchange chan struct{}
}

var _ net.PacketConn = (*Conn)(nil)

// MTU returns the Network's MTU.
func (c *Conn) MTU() int { return c.mtu }

// HardwareAddr returns the Conn's address.
func (c *Conn) HardwareAddr() net.HardwareAddr { return c.mac }

// LocalAddr returns the Conn's *packet.Addr.
func (c *Conn) LocalAddr() net.Addr { return &packet.Addr{HardwareAddr: c.mac} }

// ReadFrom receives one payload.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.dmu.Lock()
		dl, changed := c.rdl, c.dchange
		c.dmu.Unlock()
		var expire <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, c.opError("read", os.ErrDeadlineExceeded)
			}
			t := time.NewTimer(d)
			defer t.Stop()
			expire = t.C
		}
		select {
		case f := <-c.rx:
			return copy(p, f.data), &packet.Addr{HardwareAddr: f.src}, nil
		case <-c.closed:
			return 0, nil, c.opError("read", net.ErrClosed)
		case <-expire:
			return 0, nil, c.opError("read", os.ErrDeadlineExceeded)
		case <-changed:
		}
	}
}

// WriteTo sends p to addr, a *packet.Addr; the broadcast address reaches all other Conns.
// Frames for absent stations, or for stations whose queue is full, are lost silently.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, c.opError("write", net.ErrClosed)
	default:
	}
	a, ok := addr.(*packet.Addr)
	if !ok || len(a.HardwareAddr) != 6 {
		return 0, c.opError("write", fmt.Errorf("aoetest: address %v is not a MAC *packet.Addr", addr))
	}
	if len(p) > c.mtu {
		return 0, c.opError("write", fmt.Errorf("aoetest: payload of %d bytes exceeds MTU %d", len(p), c.mtu))
	}
	bcast := slices.Equal(a.HardwareAddr, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	c.net.mu.Lock()
	conns := slices.Clone(c.net.conns)
	c.net.mu.Unlock()
	for _, d := range conns {
		if d == c || (!bcast && !slices.Equal(d.mac, a.HardwareAddr)) {
			continue
		}
		if c.net.Drop != nil && c.net.Drop(c.mac, a.HardwareAddr, p) {
			continue
		}
		select {
		case <-d.closed:
		case d.rx <- frame{src: c.mac, data: slices.Clone(p)}:
		default:
		}
	}
	return len(p), nil
}

// Close detaches the Conn; blocked reads return net.ErrClosed.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		c.net.conns = slices.DeleteFunc(c.net.conns, func(x *Conn) bool { return x == c })
		c.net.mu.Unlock()
	})
	return nil
}

// SetDeadline sets the read deadline; writes never block.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.rdl = t
	close(c.dchange)
	c.dchange = make(chan struct{})
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes never block.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "aoetest", Addr: c.LocalAddr(), Err: err}
}

// Lossy wraps pc so that it drops a fraction rate of the frames it sends and of the frames it
// receives, chosen by a random schedule seeded with seed: the same seed drops the same frames
// of the same sequence. Dropping received frames loses a peer's responses without touching
// the peer. It keeps pc's MTU method, if any.
func Lossy(pc net.PacketConn, seed uint64, rate float64) net.PacketConn {
	return &lossy{PacketConn: pc, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rate: rate}
}

type lossy struct {
	net.PacketConn
	mu      sync.Mutex
	rng     *rand.Rand
	rate    float64
	dropped int
}

func (l *lossy) WriteTo(p []byte, addr net.Addr) (int, error) {
	l.mu.Lock()
	drop := l.rng.Float64() < l.rate
	if drop {
		l.dropped++
	}
	l.mu.Unlock()
	if drop {
		return len(p), nil
	}
	return l.PacketConn.WriteTo(p, addr)
}

func (l *lossy) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := l.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		l.mu.Lock()
		drop := l.rng.Float64() < l.rate
		if drop {
			l.dropped++
		}
		l.mu.Unlock()
		if !drop {
			return n, addr, nil
		}
	}
}

func (l *lossy) MTU() int {
	if m, ok := l.PacketConn.(interface{ MTU() int }); ok {
		return m.MTU()
	}
	return DefaultMTU
}

// Dropped reports how many frames a PacketConn returned by Lossy has dropped; it returns -1
// for any other PacketConn.
func Dropped(pc net.PacketConn) int {
	l, ok := pc.(*lossy)
	if !ok {
		return -1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}
