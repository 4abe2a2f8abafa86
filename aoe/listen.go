package aoe

import (
	"fmt"
	"net"
	"sync"

	"github.com/mdlayher/packet"
)

// Conn is an AF_PACKET datagram socket that sends and receives AoE frames (EtherType 0x88A2)
// on one interface. Its payloads start at the AoE header and its addresses are *packet.Addr.
type Conn struct {
	*packet.Conn
	ifi *net.Interface
	// tx is a second, send-only socket for batched sends (-1 when there is none). It is kept
	// out of the runtime's poller: the poller asks for write readiness on its sockets, so
	// every frame the peer consumed from a socket the poller watches would be an edge that
	// wakes a sleeping thread for nothing.
	// It takes a virtio and an Ethernet header before each frame (see vnetHeader).
	txMu sync.RWMutex // held for reading while a send uses tx
	tx   int
	// rx is the blocking receive socket outside the runtime's poller that a Target's workers
	// wait on (see blockIO), -1 when there is none. It receives nothing until startRx.
	rxMu   sync.RWMutex // held for reading while a receive waits on rx
	rx     int
	rxOpen bool // startRx moved the receiving to rx
}

var _ net.PacketConn = (*Conn)(nil)

// Listen opens an AoE socket on the named interface. It needs CAP_NET_RAW. The socket does not
// see the frames it sends itself.
func Listen(ifname string) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("aoe: interface %q: %w", ifname, err)
	}
	pc, err := packet.Listen(ifi, packet.Datagram, EtherType, nil)
	if err != nil {
		return nil, fmt.Errorf("aoe: listen on %q: %w", ifname, err)
	}
	c := &Conn{Conn: pc, ifi: ifi, tx: -1, rx: -1}
	if err := c.tune(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("aoe: socket options on %q: %w", ifname, err)
	}
	return c, nil
}

// Close closes the socket.
func (c *Conn) Close() error {
	c.closeTx()
	c.closeRx()
	return c.Conn.Close()
}

// MTU is the interface MTU when the socket was opened: the largest AoE payload it carries.
func (c *Conn) MTU() int { return c.ifi.MTU }

// Interface returns the interface the socket is bound to.
func (c *Conn) Interface() *net.Interface { return c.ifi }

// HardwareAddr returns the interface's hardware address.
func (c *Conn) HardwareAddr() net.HardwareAddr { return c.ifi.HardwareAddr }
