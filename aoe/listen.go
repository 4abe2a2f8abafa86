package aoe

import (
	"fmt"
	"net"

	"github.com/mdlayher/packet"
)

// Conn is an AF_PACKET datagram socket that sends and receives AoE frames (EtherType 0x88A2)
// on one interface. Its payloads start at the AoE header and its addresses are *packet.Addr.
type Conn struct {
	*packet.Conn
	ifi *net.Interface
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
	c := &Conn{Conn: pc, ifi: ifi}
	if err := c.tune(); err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("aoe: socket options on %q: %w", ifname, err)
	}
	return c, nil
}

// MTU is the interface MTU when the socket was opened: the largest AoE payload it carries.
func (c *Conn) MTU() int { return c.ifi.MTU }

// Interface returns the interface the socket is bound to.
func (c *Conn) Interface() *net.Interface { return c.ifi }

// HardwareAddr returns the interface's hardware address.
func (c *Conn) HardwareAddr() net.HardwareAddr { return c.ifi.HardwareAddr }
