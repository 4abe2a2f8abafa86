// Command kis-bench compares kis.Unpack (decompressing a KIWI .xz root image with
// github.com/ulikunitz/xz, checking its MD5 and writing it sparsely) with the real xz
// (`xz -dc IMAGE.xz > IMAGE`), and kis.Verify of a raw image with md5sum, on a generated image
// compressed the way KIWI compresses it (xz -f --threads=0). It prints our figure, the peer's
// figure and their ratio.
//
//	go run ./bench/kis -size 64
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
)

func main() {
	size := flag.Int("size", 64, "image size in MiB (at most 1024)")
	runs := flag.Int("runs", 1, "timed runs of each side (at most 5); the best is printed")
	flag.Parse()
	if *size < 1 || *size > 1024 || *runs < 1 || *runs > 5 {
		log.Fatal("kis-bench: -size must be 1..1024 and -runs 1..5")
	}
	for _, p := range []string{"xz", "md5sum"} {
		if _, err := exec.LookPath(p); err != nil {
			log.Fatalf("kis-bench: %s not found (Debian packages xz-utils, coreutils)", p)
		}
	}
	dir, err := os.MkdirTemp("", "kis-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	const id = "bench.x86_64-1.0.0"
	image := kistest.Image(*size<<20, 42)
	raw := filepath.Join(dir, id)
	if err := os.WriteFile(raw, image, 0o644); err != nil {
		log.Fatal(err)
	}
	if out, err := exec.Command("xz", "-f", "-k", "--threads=0", raw).CombinedOutput(); err != nil {
		log.Fatalf("kis-bench: xz: %v: %s", err, out)
	}
	st, err := os.Stat(raw + ".xz")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(raw+".md5", []byte(kistest.Checksum(image, st.Size())), 0o644); err != nil {
		log.Fatal(err)
	}
	for _, f := range []string{id + "-6.1.0.kernel", id + ".initrd"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	b := kis.Build{Dir: dir, Name: "bench", Arch: "x86_64", Version: "1.0.0", Kernel: filepath.Join(dir, id+"-6.1.0.kernel"),
		Initrd: filepath.Join(dir, id+".initrd"), CompressedImage: raw + ".xz", MD5: raw + ".md5"}
	ctx := context.Background()
	mib := float64(*size)

	best := func(f func() error) time.Duration {
		var d time.Duration
		for i := 0; i < *runs; i++ {
			start := time.Now()
			if err := f(); err != nil {
				log.Fatal(err)
			}
			if e := time.Since(start); i == 0 || e < d {
				d = e
			}
		}
		return d
	}
	ours := best(func() error {
		cache, err := os.MkdirTemp(dir, "cache-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(cache)
		_, err = kis.Unpack(ctx, b, &kis.UnpackOptions{Dir: cache})
		return err
	})
	peer := best(func() error {
		out := filepath.Join(dir, "xz-out")
		defer os.Remove(out)
		return exec.Command("sh", "-c", "xz -dc "+raw+".xz > "+out).Run()
	})
	fmt.Printf("unpack %d MiB .xz: kis.Unpack %.1f MiB/s, xz -dc %.1f MiB/s, ratio %.2f\n",
		*size, mib/ours.Seconds(), mib/peer.Seconds(), peer.Seconds()/ours.Seconds())

	b.Image, b.CompressedImage = raw, ""
	ours = best(func() error { return kis.Verify(ctx, b, nil) })
	peer = best(func() error { return exec.Command("md5sum", raw).Run() })
	fmt.Printf("verify %d MiB raw: kis.Verify %.1f MiB/s, md5sum %.1f MiB/s, ratio %.2f\n",
		*size, mib/ours.Seconds(), mib/peer.Seconds(), peer.Seconds()/ours.Seconds())
}
