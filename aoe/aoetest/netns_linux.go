package aoetest

import (
	"fmt"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/internal/netns"
)

// ListenIn opens an AoE socket (aoe.Listen) on ifname inside the named network namespace
// (/run/netns/NS, as `ip netns add` creates it). The socket stays in that namespace; the calling
// goroutine's thread is never moved, so tests and benchmarks can drive an initiator and a
// target in two namespaces from one process. It needs root.
func ListenIn(ns, ifname string) (*aoe.Conn, error) {
	var c *aoe.Conn
	err := netns.Do(ns, func() (err error) {
		c, err = aoe.Listen(ifname)
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("aoetest: %w", err)
	}
	return c, nil
}
