package aoetest_test

import (
	"testing"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/backend"
)

// A target's test runs the whole suite against one of its devices through an initiator on the
// same segment. For a target that departs from AoEr11, Options.Expect states how (see
// aoetest.Vblade and the aoe package's tests against vblade).
func ExampleRun() {
	testTarget := func(t *testing.T) {
		n := &aoetest.Network{}
		tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: backend.NewMemory(1 << 20)}}}
		go tgt.Serve(n.Attach(nil))
		defer tgt.Close()
		c := aoe.NewClient(n.Attach(nil), nil)
		defer c.Close()

		aoetest.Run(t, aoe.DeviceAddr{Shelf: 0, Slot: 1}, &aoetest.Options{Client: c, Writable: true})
	}
	_ = testTarget
}
