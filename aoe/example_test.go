package aoe_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/backend"
)

// A target and an initiator on an in-memory segment: the initiator finds e0.1, writes a
// sector and reads it back.
func Example() {
	n := &aoetest.Network{}
	tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: backend.NewMemory(1 << 20)}}}
	go func() { _ = tgt.Serve(n.Attach(nil)) }()
	defer tgt.Close()

	c := aoe.NewClient(n.Attach(nil), nil)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Open(ctx, 0, 1)
	if err != nil {
		log.Fatal(err)
	}
	sector := make([]byte, aoe.SectorSize)
	copy(sector, "hello, AoE")
	if _, err := d.WriteAtContext(ctx, sector, 8*aoe.SectorSize); err != nil {
		log.Fatal(err)
	}
	got := make([]byte, aoe.SectorSize)
	if _, err := d.ReadAtContext(ctx, got, 8*aoe.SectorSize); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d bytes, %d sectors per frame, %q\n", d.Target.DeviceAddr(), d.Size(), d.SectorsPerFrame, got[:10])
	// Output: e0.1: 1048576 bytes, 2 sectors per frame, "hello, AoE"
}

// Serving a disk image on an interface, as `vblade 0 1 eth0 disk.img` does.
func ExampleTarget_Serve() {
	pc, err := aoe.Listen("eth0")
	if err != nil {
		log.Fatal(err)
	}
	f, err := os.OpenFile("disk.img", os.O_RDWR, 0)
	if err != nil {
		log.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		log.Fatal(err)
	}
	tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: sizedFile{f, fi.Size()}}}}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tgt.Shutdown(ctx)
	}()
	if err := tgt.Serve(pc); err != aoe.ErrServerClosed {
		log.Fatal(err)
	}
}

// sizedFile is an *os.File with the Size method that backend.Device needs.
type sizedFile struct {
	*os.File
	size int64
}

func (s sizedFile) Size() int64 { return s.size }

// Discovering every AoE device on an interface.
func ExampleClient_Discover() {
	pc, err := aoe.Listen("eth0")
	if err != nil {
		log.Fatal(err)
	}
	c := aoe.NewClient(pc, nil)
	defer c.Close()
	found, err := c.Discover(context.Background(), aoe.BroadcastShelf, aoe.BroadcastSlot, time.Second)
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range found {
		fmt.Println(t, "config", string(t.Config.String))
	}
}
