// Command store-bench measures a boot storm against replicas that serve a root image from
// S3-compatible object storage (Ceph RGW brought up by .ci/ceph-rgw, or the engine named by
// NETROOT_TEST_S3_ENDPOINT and the AWS_* variables), against the same image served by netroot's
// NBD server from local disk, in the same run.
//
// It pushes a build of -size bytes, then for one and for three replicas (each with its own S3
// client, cache and NBD server on loopback, machines placed by rendezvous hashing of fake MACs)
// runs -clients NBD clients at once, each reading the first -boot-bytes of the image in 128 KiB
// requests as a booting machine reads its root, cold (empty caches) and then warm. It prints
// aggregate throughput, median and p99 completion time, bytes fetched from the store per booted
// machine and the process's CPU time per GB served, with the ratio to local disk.
//
//	go run ./bench/store -clients 30 -size 256MiB -boot-bytes 64MiB
//
// Hold /tmp/netroot-bench.lock while it runs; it is bounded by -timeout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/store"
)

func main() {
	size := flag.Int64("size", 256<<20, "root image size in bytes")
	bootBytes := flag.Int64("boot-bytes", 64<<20, "bytes each machine reads")
	clients := flag.Int("clients", 30, "machines booting at once")
	chunk := flag.Int64("chunk-size", store.DefaultChunkSize, "chunk size")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole benchmark")
	flag.Parse()
	if *bootBytes > *size {
		*bootBytes = *size
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "store-bench-")
	check(err)
	defer os.RemoveAll(tmp)

	cfg, stop := engine(ctx, tmp)
	cleanup = func() { stop(); os.RemoveAll(tmp) }
	defer stop()
	bucket := fmt.Sprintf("netroot-bench-%d", time.Now().UnixNano())
	st, err := store.New(bucket, "bench", cfg)
	check(err)
	check(st.CreateBucket(ctx))
	image := kistest.Image(int(*size), 5)
	kisDir := filepath.Join(tmp, "kis")
	check(os.MkdirAll(kisDir, 0o755))
	b, err := kistest.Write(kisDir, kistest.Spec{Name: "bench", Image: image})
	check(err)
	t0 := time.Now()
	res, err := st.Push(ctx, kisDir, &store.PushOptions{ChunkSize: *chunk})
	check(err)
	fmt.Printf("push: %d MiB in %s (%d chunks uploaded, %d reused)\n", *size>>20, time.Since(t0).Round(time.Millisecond), res.Uploaded, res.Reused)

	// Local disk: netroot's NBD server over the raw image file.
	f, err := backend.OpenFile(b.Image, nil)
	check(err)
	local := serve(f)
	base := storm(ctx, []string{local.addr}, *clients, *bootBytes, image)
	local.srv.Close()
	fmt.Printf("\n%d machines each reading %d MiB of a %d MiB image in %d KiB chunks; readahead still running when a storm ends is not counted\n",
		*clients, *bootBytes>>20, *size>>20, *chunk>>10)
	fmt.Printf("\n%-22s %10s %9s %9s %14s %10s %7s\n", "server", "MB/s", "p50", "p99", "origin MB/mach", "CPU s/GB", "ratio")
	row := func(name string, r result, origin int64) {
		fmt.Printf("%-22s %10.1f %9s %9s %14.2f %10.2f %7.2f\n", name, r.mbps, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond),
			float64(origin)/float64(*clients)/1e6, r.cpuPerGB, r.mbps/base.mbps)
	}
	row("local disk", base, 0)

	for _, n := range []int{1, 3} {
		var reps []*replica
		var addrs []string
		for range n {
			s, err := store.New(bucket, "bench", cfg)
			check(err)
			c, err := store.NewCache(s, &store.CacheConfig{MemoryBytes: 2 * *size})
			check(err)
			dev, err := c.OpenTag(ctx, res.Tag)
			check(err)
			r := serve(dev)
			r.cache = c
			reps = append(reps, r)
			addrs = append(addrs, r.addr)
		}
		for _, phase := range []string{"cold", "warm"} {
			settle(reps)
			before := originBytes(reps)
			r := storm(ctx, addrs, *clients, *bootBytes, image)
			row(fmt.Sprintf("%d replica(s), %s", n, phase), r, originBytes(reps)-before)
		}
		for _, r := range reps {
			r.srv.Close()
		}
	}
}

type replica struct {
	srv   *nbd.Server
	addr  string
	cache *store.Cache
}

func serve(d backend.Device) *replica {
	ex, err := nbd.NewExportSet(&nbd.Export{Name: "root", Device: d})
	check(err)
	srv := &nbd.Server{Exports: ex}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	go srv.Serve(l)
	return &replica{srv: srv, addr: l.Addr().String()}
}

// settle waits until readahead started by the previous storm (past the bytes the machines
// read) has finished, so that it is not counted for the next one.
func settle(reps []*replica) {
	prev := int64(-1)
	for range 50 {
		n := originBytes(reps)
		if n == prev {
			return
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
	}
}

func originBytes(reps []*replica) int64 {
	var n int64
	for _, r := range reps {
		n += r.cache.Stats().OriginBytes
	}
	return n
}

type result struct {
	mbps, cpuPerGB float64
	p50, p99       time.Duration
}

// storm boots clients machines at once; each picks its replica by rendezvous hashing of a fake
// MAC and reads bootBytes sequentially, checking the bytes.
func storm(ctx context.Context, addrs []string, clients int, bootBytes int64, image []byte) result {
	var mu sync.Mutex
	var times []time.Duration
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			mac := net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
			addr := store.PickReplica(mac, addrs)
			t0 := time.Now()
			cl, err := nbd.Dial(ctx, "tcp", addr, nil)
			check(err)
			defer cl.Close()
			_, err = cl.Go(ctx, "root")
			check(err)
			buf := make([]byte, 128<<10)
			for off := int64(0); off < bootBytes; off += int64(len(buf)) {
				n := min(int64(len(buf)), bootBytes-off)
				_, err := cl.ReadAt(buf[:n], off)
				check(err)
				if !bytes.Equal(buf[:n], image[off:off+n]) {
					check(fmt.Errorf("machine %d: wrong bytes at %d", i, off))
				}
			}
			mu.Lock()
			times = append(times, time.Since(t0))
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	slices.Sort(times)
	total := float64(bootBytes) * float64(clients)
	return result{
		mbps:     total / wall.Seconds() / 1e6,
		cpuPerGB: cpu.Seconds() / (total / 1e9),
		p50:      times[len(times)/2],
		p99:      times[min(len(times)-1, len(times)*99/100)],
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// engine returns the S3 engine to use and a function that stops it.
func engine(ctx context.Context, tmp string) (*store.Config, func()) {
	if ep := os.Getenv("NETROOT_TEST_S3_ENDPOINT"); ep != "" {
		cfg := store.ConfigFromEnv()
		cfg.Endpoint = ep
		return &cfg, func() {}
	}
	script := filepath.Join(".ci", "ceph-rgw")
	dir := filepath.Join(tmp, "ceph")
	out, err := exec.CommandContext(ctx, "bash", script, "start", dir).Output()
	if err != nil {
		log.Fatalf("%s start (run from the repository root): %v", script, err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	cfg := &store.Config{Endpoint: env["AWS_ENDPOINT_URL_S3"], Region: env["AWS_REGION"],
		AccessKeyID: env["AWS_ACCESS_KEY_ID"], SecretAccessKey: env["AWS_SECRET_ACCESS_KEY"]}
	return cfg, func() { exec.Command("bash", script, "stop", dir).Run() }
}

// cleanup stops the engine when the benchmark dies on an error.
var cleanup = func() {}

func check(err error) {
	if err != nil {
		cleanup()
		log.Fatal(err)
	}
}
