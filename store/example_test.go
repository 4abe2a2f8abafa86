package store_test

import (
	"context"
	"fmt"
	"log"
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
