package store_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

// A build is pushed once; every replica then reads it through its own cache.
func Example() {
	srv := storetest.Start() // any S3 engine: Ceph RGW, MinIO, AWS S3, ...
	defer srv.Close()
	ctx := context.Background()

	st, err := store.Open("s3://images/site-a", srv.Config())
	if err != nil {
		log.Fatal(err)
	}
	if err := st.CreateBucket(ctx); err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "kis")
	defer os.RemoveAll(dir)
	if _, err := kistest.Write(dir, kistest.Spec{Name: "leap", Version: "1.2.0", Image: kistest.Image(3<<20, 1)}); err != nil {
		log.Fatal(err)
	}
	res, err := st.Push(ctx, dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tag", res.Tag, "->", res.Manifest.Build, "in", len(res.Manifest.Image.Chunks), "chunks")

	// A replica: a cache, and a device per tag for the NBD or AoE server.
	cache, err := store.NewCache(st, &store.CacheConfig{MemoryBytes: 64 << 20})
	if err != nil {
		log.Fatal(err)
	}
	dev, err := cache.OpenTag(ctx, "leap.x86_64")
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := dev.ReadAt(buf, 1<<20); err != nil {
		log.Fatal(err)
	}
	s := cache.Stats()
	fmt.Println("size", dev.Size(), "origin requests", s.Misses)
	// Output:
	// tag leap.x86_64 -> leap.x86_64-1.2.0 in 3 chunks
	// size 3145728 origin requests 1
}

// Every replica probes all of them and places each machine on its rendezvous choice among the
// healthy ones; a machine moves only when its own replica goes down.
func ExampleHealth() {
	replicas := []string{"192.0.2.10", "192.0.2.11", "192.0.2.12"}
	down := map[string]bool{}
	h := store.NewHealth(store.HealthConfig{
		Replicas: replicas,
		// store.NBDProbe(10809) in a replica; here an in-memory network.
		Probe: func(_ context.Context, r string) error {
			if down[r] {
				return fmt.Errorf("dial %s: connection refused", r)
			}
			return nil
		},
		DownAfter: 2,
		OnChange:  func(healthy []string) { fmt.Println("healthy:", healthy) },
	})
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	ctx := context.Background()
	h.Round(ctx) // Run(ctx) does a round every Interval
	first := h.Pick(mac)
	down[first] = true
	h.Round(ctx)
	h.Round(ctx) // the second failure in a row marks it down
	fmt.Println("first choice:", first, "now:", h.Pick(mac), "second choice:", store.Rendezvous(mac, replicas)[1])
	down[first] = false
	h.Round(ctx)
	h.Round(ctx) // UpAfter (2) good probes in a row
	fmt.Println("back:", h.Pick(mac))
	// Output:
	// healthy: [192.0.2.11 192.0.2.12]
	// first choice: 192.0.2.10 now: 192.0.2.11 second choice: 192.0.2.11
	// healthy: [192.0.2.10 192.0.2.11 192.0.2.12]
	// back: 192.0.2.10
}
