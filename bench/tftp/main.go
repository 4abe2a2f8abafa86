// Command tftp-bench compares netroot's TFTP server with tftpd-hpa in the same run, on loopback.
//
// It starts both servers as child processes serving the same directory (ours by running this
// program again with -serve), then measures:
//   - single transfers with curl at blksize 512, 1468 and 8192 (the same client for both);
//   - a windowed transfer (windowsize 16, blksize 1468) from our server with atftp, against
//     tftpd-hpa at blksize 1468 with curl (tftpd-hpa has no windowsize);
//   - a boot storm: -clients concurrent fetches of a -storm-size file with our Go client at
//     blksize 1468, reporting aggregate throughput, median and p99 completion time, the peak
//     RSS of our server (tftpd-hpa forks a process per transfer, so its RSS is not comparable)
//     and, for both servers, the peak of the summed proportional set size (PSS) of the server's
//     process tree, sampled every 50 ms, which counts memory shared between forks once.
//
// Every figure is a median of -runs runs, alternating between the servers. Each client's
// download is checked byte for byte once before its timed runs, which write to /dev/null; the
// boot storm checks every transfer. The whole run is bounded by -timeout. It needs root (in.tftpd
// chroots), curl, atftp and tftpd-hpa.
//
// Lock-step figures depend much on where the kernel runs client and server: on one CPU a round
// trip costs two context switches, on two CPUs it costs two cross-CPU wake-ups, which in a
// virtual machine take tens of microseconds each. Which one a run gets varies from run to run
// (tftpd-hpa at blksize 512 has measured 8 to 29 MB/s on the same machine), so use several
// -runs, and pin both servers and the client with taskset to compare per-packet cost alone.
//
//	go run ./bench/tftp -clients 50 -storm-size 8MiB
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netroot/netroot/tftp"
)

func main() {
	serveAddr := flag.String("serve", "", "internal: run our server on this address")
	dir := flag.String("dir", "", "internal: directory our server serves")
	size := flag.String("size", "64MiB", "file size for single transfers")
	stormSize := flag.String("storm-size", "8MiB", "file size each boot storm client fetches")
	clients := flag.Int("clients", 50, "concurrent boot storm clients (at most 1000)")
	runs := flag.Int("runs", 3, "runs per figure (the median is printed)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on the whole benchmark")
	flag.Parse()
	if *serveAddr != "" {
		serveOurs(*serveAddr, *dir)
		return
	}
	if *clients < 1 || *clients > 1000 || *runs < 1 || *runs > 20 {
		log.Fatal("tftp-bench: -clients must be 1..1000 and -runs 1..20")
	}
	single, err := parseSize(*size)
	if err != nil {
		log.Fatal(err)
	}
	storm, err := parseSize(*stormSize)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, single, storm, *clients, *runs); err != nil {
		log.Fatal(err)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("tftp-bench: bad size %q", s)
	}
	return n * mult, nil
}

// serveOurs is the child process running our server.
func serveOurs(addr, dir string) {
	// Every boot storm client comes from 127.0.0.1, and tftpd-hpa has no limits: the per-client
	// cap and the buffer budget are off, so that both servers are measured on the same terms.
	srv := &tftp.Server{Handler: tftp.FileServer(dir), MaxTransfers: -1, MaxTransfersPerClient: -1, MaxBufferBytes: -1}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(addr); err != nil && !errors.Is(err, tftp.ErrServerClosed) {
		log.Fatal(err)
	}
}

func freePort() (string, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	return pc.LocalAddr().String(), nil
}

func writeRandom(path string, n int64, seed uint64) ([32]byte, error) {
	f, err := os.Create(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(seed, 2))
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := n; left > 0; {
		m := min(int64(len(buf)), left)
		for i := range buf[:m] {
			buf[i] = byte(r.Uint32())
		}
		if _, err := io.MultiWriter(f, h).Write(buf[:m]); err != nil {
			return [32]byte{}, err
		}
		left -= m
	}
	return [32]byte(h.Sum(nil)), f.Close()
}

func run(ctx context.Context, single, storm int64, clients, runs int) error {
	tftpd, err := exec.LookPath("in.tftpd")
	if err != nil {
		tftpd = "/usr/sbin/in.tftpd"
	}
	for _, p := range []string{tftpd, "curl", "atftp"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("tftp-bench: %s not found (Debian packages tftpd-hpa, curl, atftp): %w", p, err)
		}
	}
	dir, err := os.MkdirTemp("", "tftp-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	singleSum, err := writeRandom(filepath.Join(dir, "single"), single, 1)
	if err != nil {
		return err
	}
	stormSum, err := writeRandom(filepath.Join(dir, "storm"), storm, 2)
	if err != nil {
		return err
	}

	ours, err := freePort()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	oursCmd := exec.CommandContext(ctx, self, "-serve", ours, "-dir", dir)
	oursCmd.Stderr = os.Stderr
	if err := oursCmd.Start(); err != nil {
		return err
	}
	defer func() { _ = oursCmd.Process.Signal(syscall.SIGTERM); _ = oursCmd.Wait() }()
	peer, err := freePort()
	if err != nil {
		return err
	}
	peerCmd := exec.CommandContext(ctx, tftpd, "--foreground", "--listen", "--address", peer, "--secure",
		"--user", "root", "--blocksize", "65464", dir)
	peerCmd.Stderr = os.Stderr
	if err := peerCmd.Start(); err != nil {
		return err
	}
	defer func() { _ = peerCmd.Process.Kill(); _ = peerCmd.Wait() }()
	for _, a := range []string{ours, peer} {
		if err := waitReady(ctx, a); err != nil {
			return err
		}
	}

	fmt.Printf("loopback, file %d MiB, median of %d runs (MB/s = 10^6 bytes/s)\n", single>>20, runs)
	fmt.Printf("%-40s %10s %10s %7s\n", "case", "netroot", "tftpd-hpa", "ratio")
	// Each client first fetches into a file that is checked byte for byte; the timed runs then
	// write to /dev/null, so that the client's disk is not what is measured.
	out := filepath.Join(dir, "out")
	defer os.Remove(out)
	curlGet := func(addr string, blk int, dst string) func() error {
		return func() error {
			return command(ctx, "curl", "-sS", "--fail", "--tftp-blksize", strconv.Itoa(blk), "-o", dst, "tftp://"+addr+"/single")
		}
	}
	host, port, _ := net.SplitHostPort(ours)
	atftpWin := func(dst string) func() error {
		return func() error {
			return command(ctx, "atftp", "-g", "-r", "single", "-l", dst, "--option", "blksize 1468",
				"--option", "windowsize 16", host, port)
		}
	}
	goWin := func(dst string) func() error {
		return func() error {
			w := io.Discard
			if dst != os.DevNull {
				f, err := os.Create(dst)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			_, err := (&tftp.Client{BlockSize: 1468, WindowSize: 16}).Get(ctx, ours, "single", w)
			return err
		}
	}
	verify := func(get func(string) func() error) error {
		if err := get(out)(); err != nil {
			return err
		}
		return checkFile(out, singleSum)
	}
	for _, c := range []struct {
		name       string
		ours, peer func(string) func() error
	}{
		{"curl, blksize 512", func(d string) func() error { return curlGet(ours, 512, d) }, func(d string) func() error { return curlGet(peer, 512, d) }},
		{"curl, blksize 1468", func(d string) func() error { return curlGet(ours, 1468, d) }, func(d string) func() error { return curlGet(peer, 1468, d) }},
		{"curl, blksize 8192", func(d string) func() error { return curlGet(ours, 8192, d) }, func(d string) func() error { return curlGet(peer, 8192, d) }},
		{"atftp ws16 bs1468 vs curl bs1468", atftpWin, func(d string) func() error { return curlGet(peer, 1468, d) }},
		{"netroot client ws16 bs1468 vs curl", goWin, func(d string) func() error { return curlGet(peer, 1468, d) }},
	} {
		if err := verify(c.ours); err != nil {
			return fmt.Errorf("tftp-bench: %s against netroot: %w", c.name, err)
		}
		if err := verify(c.peer); err != nil {
			return fmt.Errorf("tftp-bench: %s against tftpd-hpa: %w", c.name, err)
		}
		a, b, err := measure(runs, single, c.ours(os.DevNull), c.peer(os.DevNull))
		if err != nil {
			return err
		}
		report(c.name, a, b)
	}

	fmt.Printf("\nboot storm: %d clients x %d MiB, netroot client, blksize 1468\n", clients, storm>>20)
	fmt.Printf("%-12s %10s %10s %10s %12s %16s\n", "server", "MB/s", "p50", "p99", "peak RSS", "peak PSS (tree)")
	for _, s := range []struct {
		name, addr string
		pid        int
		window     int
	}{
		{"netroot", ours, oursCmd.Process.Pid, 1},
		{"tftpd-hpa", peer, peerCmd.Process.Pid, 1},
		{"netroot ws16", ours, oursCmd.Process.Pid, 16},
	} {
		// Sample the proportional set size of the server and all its children (tftpd-hpa forks
		// one per transfer) while the storm runs: memory that the processes share is counted
		// once, so the figure compares with our one process.
		sampleCtx, stopSampling := context.WithCancel(ctx)
		peak := make(chan int64, 1)
		go func() { peak <- samplePSS(sampleCtx, s.pid) }()
		mbps, p50, p99, err := bootStorm(ctx, s.addr, clients, storm, stormSum, s.window)
		stopSampling()
		pss := <-peak
		if err != nil {
			return fmt.Errorf("tftp-bench: boot storm against %s: %w", s.name, err)
		}
		rss := "n/a (forks)"
		if s.pid == oursCmd.Process.Pid {
			rss = peakRSS(s.pid)
		}
		fmt.Printf("%-12s %10.1f %10v %10v %12s %13d kB\n", s.name, mbps, p50.Round(time.Millisecond), p99.Round(time.Millisecond), rss, pss)
	}
	return nil
}

func command(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tftp-bench: %s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func checkFile(path string, want [32]byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if [32]byte(h.Sum(nil)) != want {
		return fmt.Errorf("tftp-bench: %s differs from the served file", path)
	}
	return nil
}

func goGet(ctx context.Context, addr, name string, c *tftp.Client, want [32]byte) error {
	h := sha256.New()
	if _, err := c.Get(ctx, addr, name, h); err != nil {
		return err
	}
	if [32]byte(h.Sum(nil)) != want {
		return errors.New("tftp-bench: content differs")
	}
	return nil
}

func waitReady(ctx context.Context, addr string) error {
	c := &tftp.Client{Timeout: 100 * time.Millisecond, Retries: 1}
	for range 100 {
		if _, err := c.Get(ctx, addr, "storm", io.Discard); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("tftp-bench: server at %s not ready", addr)
}

// measure runs ours and peer alternately, runs times each (so that a change in machine load
// affects both alike), and returns the median throughputs in MB/s.
func measure(runs int, size int64, ours, peer func() error) (float64, float64, error) {
	var a, b []float64
	for range runs {
		for _, m := range []struct {
			f     func() error
			rates *[]float64
		}{{ours, &a}, {peer, &b}} {
			start := time.Now()
			if err := m.f(); err != nil {
				return 0, 0, err
			}
			*m.rates = append(*m.rates, float64(size)/time.Since(start).Seconds()/1e6)
		}
	}
	slices.Sort(a)
	slices.Sort(b)
	return a[len(a)/2], b[len(b)/2], nil
}

func report(name string, ours, peer float64) {
	fmt.Printf("%-40s %10.1f %10.1f %6.2fx\n", name, ours, peer, ours/peer)
}

func bootStorm(ctx context.Context, addr string, clients int, size int64, sum [32]byte, window int) (float64, time.Duration, time.Duration, error) {
	var wg sync.WaitGroup
	times := make([]time.Duration, clients)
	errs := make([]error, clients)
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			c := &tftp.Client{BlockSize: 1468, TransferSize: true}
			if window > 1 {
				c.WindowSize = window
			}
			errs[i] = goGet(ctx, addr, "storm", c, sum)
			times[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	total := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, 0, err
	}
	slices.Sort(times)
	p := func(q float64) time.Duration { return times[min(len(times)-1, int(q*float64(len(times))))] }
	return float64(size) * float64(clients) / total.Seconds() / 1e6, p(0.5), p(0.99), nil
}

// samplePSS returns the largest sum of the proportional set sizes (kB) of pid and its
// descendants, sampled every 50 ms until ctx ends.
func samplePSS(ctx context.Context, pid int) int64 {
	var peak int64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var sum int64
		for _, p := range processTree(pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
			if err != nil {
				continue // it just exited
			}
			for line := range bytes.Lines(b) {
				if v, ok := bytes.CutPrefix(line, []byte("Pss:")); ok {
					f := strings.Fields(string(v))
					if len(f) > 0 {
						n, _ := strconv.ParseInt(f[0], 10, 64)
						sum += n
					}
					break
				}
			}
		}
		peak = max(peak, sum)
		select {
		case <-ctx.Done():
			return peak
		case <-tick.C:
		}
	}
}

// processTree returns pid and its descendants.
func processTree(pid int) []int {
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", tree[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					tree = append(tree, c)
				}
			}
		}
	}
	return tree
}

func peakRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			return strings.Join(strings.Fields(string(v)), " ")
		}
	}
	return "?"
}
