// Command aoebench compares netroot's AoE target with vblade, both read by netroot's
// initiator over a veth pair between two network namespaces, at MTU 1500 and 9000. It prints
// sequential read throughput, target CPU per GB read, random 4 KiB read IOPS and the target's
// CPU per random read for each, and the ratios; also the target's context switches per MB and
// the initiator's own CPU per GB.
// With -repeat N it measures N rounds, each target once per round in a rotated order, and prints
// the medians and ranges of each figure and of the ratios taken within a round.
// With -null it also measures netroot's target over a backend that does no I/O, which shows
// what the initiator and the veth pair allow at most. It needs root, ip (iproute2) and
// vblade, and cleans up after itself.
//
//	go run ./bench/aoe -size 256 -rand 20000 -null
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/backend"
)

func main() {
	serve := flag.Bool("serve", false, "internal: serve -file as e0.1 on -iface until killed")
	iface := flag.String("iface", "", "internal: interface for -serve")
	file := flag.String("file", "", "internal: image for -serve")
	sizeMiB := flag.Int("size", 256, "image size and sequential read length in MiB")
	randReads := flag.Int("rand", 20000, "random 4 KiB reads per run")
	depth := flag.Int("depth", 32, "random reads in flight")
	mtus := flag.String("mtu", "1500,9000", "MTUs to measure")
	timeout := flag.Duration("timeout", 60*time.Second, "limit for each measurement")
	null := flag.Bool("null", false, "also measure netroot's target with a backend that does no I/O: the initiator's ceiling")
	targets := flag.String("targets", "netroot,vblade", "targets to measure (netroot/KEY=VALUE: netroot's target with KEY=VALUE in its environment); ratios need vblade")
	repeat := flag.Int("repeat", 1, "rounds per MTU, each measuring every target in a rotated order; more than one prints medians and ranges")
	flag.Parse()
	if *serve {
		serveTarget(*iface, *file, *null)
		return
	}
	if os.Geteuid() != 0 {
		log.Fatal("aoebench: needs root for network namespaces and AF_PACKET sockets")
	}
	vblade, err := exec.LookPath("vblade")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/vblade"); serr != nil {
			log.Fatal("aoebench: vblade not found (Debian package vblade)")
		}
		vblade = "/usr/sbin/vblade"
	}
	dir, err := os.MkdirTemp("", "aoebench")
	must(err)
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	must(writeImage(img, int64(*sizeMiB)<<20))
	if path := os.Getenv("AOEBENCH_CLIENTPROFILE"); path != "" {
		pf, err := os.Create(path)
		must(err)
		must(pprof.StartCPUProfile(pf))
		defer pprof.StopCPUProfile()
	}

	fmt.Printf("%-8s %-6s %-5s %12s %12s %12s %12s %12s %12s\n", "target", "mtu", "round", "seq MB/s", "CPU s/GB", "rand IOPS", "CPU us/req", "ctxsw/MB", "client s/GB")
	for _, ms := range strings.Split(*mtus, ",") {
		mtu, err := strconv.Atoi(strings.TrimSpace(ms))
		must(err)
		names := strings.Split(*targets, ",")
		if *null {
			names = append(names, "null")
		}
		all := map[string][]result{}
		ratios := map[string][][4]float64{}
		for round := range *repeat {
			// Each round measures every target once, starting with a different one, so that a
			// change in the machine's load falls on all of them alike.
			res := map[string]result{}
			for i := range names {
				name := names[(i+round)%len(names)]
				r, err := measure(name, vblade, img, mtu, int64(*sizeMiB)<<20, *randReads, *depth, *timeout)
				if err != nil {
					log.Printf("aoebench: %s at MTU %d: %v", name, mtu, err)
					return
				}
				res[name] = r
				all[name] = append(all[name], r)
				fmt.Printf("%-8s %-6d %-5d %12.1f %12.2f %12.0f %12.2f %12.1f %12.2f\n", name, mtu, round+1, r.mbps, r.cpuPerGB, r.iops, r.usPerReq, r.switchesPerMB, r.clientPerGB)
			}
			for _, name := range names {
				a, ok := res[name]
				b, okb := res["vblade"]
				if ok && okb && strings.HasPrefix(name, "netroot") {
					ratios[name] = append(ratios[name], [4]float64{a.mbps / b.mbps, a.cpuPerGB / b.cpuPerGB, a.iops / b.iops, a.usPerReq / b.usPerReq})
				}
			}
		}
		if *repeat > 1 {
			for _, name := range names {
				rs := all[name]
				f := func(get func(result) float64) string {
					v := make([]float64, len(rs))
					for i, r := range rs {
						v[i] = get(r)
					}
					return spread(v)
				}
				fmt.Printf("%-8s %-6d %-5s %s %s %s %s %s %s\n", name, mtu, "med",
					f(func(r result) float64 { return r.mbps }), f(func(r result) float64 { return r.cpuPerGB }),
					f(func(r result) float64 { return r.iops }), f(func(r result) float64 { return r.usPerReq }),
					f(func(r result) float64 { return r.switchesPerMB }),
					f(func(r result) float64 { return r.clientPerGB }))
			}
		}
		for _, name := range names {
			rs := ratios[name]
			if len(rs) == 0 {
				continue
			}
			col := func(i int) string {
				v := make([]float64, len(rs))
				for k, r := range rs {
					v[k] = r[i]
				}
				return spread(v)
			}
			label := "ratio"
			if name != "netroot" {
				label = "ratio " + name
			}
			fmt.Printf("%-8s %-6d %-5s %s %s %s %s   (%s/vblade in the same round)\n", label, mtu, "med", col(0), col(1), col(2), col(3), name)
		}
	}
}

// spread formats the median of v and, for more than one value, its range.
func spread(v []float64) string {
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if len(v) == 1 {
		return fmt.Sprintf("%12.3g", med)
	}
	return fmt.Sprintf("%12s", fmt.Sprintf("%.3g[%.3g-%.3g]", med, v[0], v[len(v)-1]))
}

type result struct{ mbps, cpuPerGB, iops, usPerReq, switchesPerMB, clientPerGB float64 }

func must(err error) {
	if err != nil {
		log.Fatal("aoebench: ", err)
	}
}

func writeImage(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Close()
}

// serveTarget runs in the target namespace as a child process, so that its CPU time is its own.
// With null, reads return zeros without touching the file, so that what is measured is the
// initiator, the network and the target's frame handling.
func serveTarget(iface, file string, null bool) {
	pc, err := aoe.Listen(iface)
	must(err)
	f, err := os.Open(file)
	must(err)
	fi, err := f.Stat()
	must(err)
	var dev backend.Device = imageFile{f, fi.Size()}
	if null {
		dev = nullDevice(fi.Size())
	}
	tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: dev, ReadOnly: true}}}
	// AOEBENCH_WORKERS overrides the target's worker count, to compare settings.
	if w, err := strconv.Atoi(os.Getenv("AOEBENCH_WORKERS")); err == nil {
		tgt.Workers = w
	}
	if path := os.Getenv("AOEBENCH_CPUPROFILE"); path != "" {
		pf, err := os.Create(path)
		must(err)
		must(pprof.StartCPUProfile(pf))
		defer pprof.StopCPUProfile()
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		_ = tgt.Close()
	}()
	if err := tgt.Serve(pc); !errors.Is(err, aoe.ErrServerClosed) {
		log.Print(err)
	}
}

// imageFile is a read-only image read with pread.
type imageFile struct {
	*os.File
	size int64
}

func (f imageFile) Size() int64 { return f.size }

var _ backend.Device = imageFile{}

// nullDevice is a read-only device whose reads leave the buffer as it is.
type nullDevice int64

func (n nullDevice) Size() int64 { return int64(n) }

func (n nullDevice) ReadAt(p []byte, off int64) (int, error) { return len(p), nil }

func measure(name, vblade, img string, mtu int, size int64, nrand, depth int, limit time.Duration) (result, error) {
	var res result
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	nsA, nsB := "aoebench-"+id+"-a", "aoebench-"+id+"-b"
	ifA, ifB := "aoeb"+id+"a", "aoeb"+id+"b"
	for _, ns := range []string{nsA, nsB} {
		if err := run("ip", "netns", "add", ns); err != nil {
			return res, err
		}
		defer run("ip", "netns", "del", ns) //nolint:errcheck
	}
	for _, args := range [][]string{
		{"link", "add", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB},
		{"-n", nsA, "link", "set", ifA, "mtu", fmt.Sprint(mtu), "up"},
		{"-n", nsB, "link", "set", ifB, "mtu", fmt.Sprint(mtu), "up"},
	} {
		if err := run("ip", args...); err != nil {
			return res, err
		}
	}
	var cmd *exec.Cmd
	slot := uint8(1)
	if name == "vblade" {
		slot = 2
		args := append([]string{"netns", "exec", nsA}, wrap(name)...)
		cmd = exec.Command("ip", append(args, vblade, "-r", "0", "2", ifA, img)...)
	} else {
		self, err := os.Executable()
		if err != nil {
			return res, err
		}
		args := []string{"netns", "exec", nsA}
		args = append(args, wrap(name)...)
		args = append(args, self, "-serve", "-iface", ifA, "-file", img)
		if name == "null" {
			args = append(args, "-null")
		}
		cmd = exec.Command("ip", args...)
		// A target named netroot/KEY=VALUE[/KEY=VALUE...] runs netroot's target with KEY=VALUE in its
		// environment, to compare settings within one round.
		if _, kv, ok := strings.Cut(name, "/"); ok {
			cmd.Env = append(os.Environ(), strings.Split(kv, "/")...)
		}
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	pc, err := aoetest.ListenIn(nsB, ifB)
	if err != nil {
		return res, err
	}
	c := aoe.NewClient(pc, nil)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	d, err := c.Open(ctx, 0, slot)
	if err != nil {
		return res, err
	}
	size = min(size, d.Size())

	// Sequential read in 4 MiB calls, like a dd of the whole image.
	buf := make([]byte, 4<<20)
	cpu0, cs0, self0 := cpuTime(cmd.Process.Pid), ctxSwitches(cmd.Process.Pid), selfCPU()
	start := time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if _, err := d.ReadAtContext(ctx, buf[:n], off); err != nil {
			return res, err
		}
	}
	el := time.Since(start)
	cpu := cpuTime(cmd.Process.Pid) - cpu0
	res.clientPerGB = (selfCPU() - self0).Seconds() / (float64(size) / 1e9)
	res.switchesPerMB = float64(ctxSwitches(cmd.Process.Pid)-cs0) / (float64(size) / 1e6)
	res.mbps = float64(size) / el.Seconds() / 1e6
	res.cpuPerGB = cpu.Seconds() / (float64(size) / 1e9)

	// Random 4 KiB reads, depth of them in flight.
	var next atomic.Int64
	var wg sync.WaitGroup
	var ferr atomic.Value
	cpu0 = cpuTime(cmd.Process.Pid)
	start = time.Now()
	for w := range depth {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			b := make([]byte, 4096)
			for next.Add(1) <= int64(nrand) {
				off := r.Int64N(size/4096) * 4096
				if _, err := d.ReadAtContext(ctx, b, off); err != nil {
					ferr.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e, ok := ferr.Load().(error); ok {
		return res, e
	}
	res.iops = float64(nrand) / time.Since(start).Seconds()
	res.usPerReq = (cpuTime(cmd.Process.Pid) - cpu0).Seconds() * 1e6 / float64(nrand)
	if st := c.Stats(); st.Retransmits > 0 {
		fmt.Fprintf(os.Stderr, "%s mtu %d: %d of %d frames retransmitted\n", name, mtu, st.Retransmits, st.Sent)
	}
	return res, nil
}

// wrap is the command that AOEBENCH_WRAP asks to run the target under, such as
// "perf record -g -o /tmp/{}.data --" ({} is the target's name). The CPU and context switch
// figures then count the wrapper, not the target.
func wrap(name string) []string {
	file := strings.NewReplacer("/", "_", "=", "_").Replace(name)
	return strings.Fields(strings.ReplaceAll(os.Getenv("AOEBENCH_WRAP"), "{}", file))
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// cpuTime is the time the threads of a process have run, from /proc/PID/task/*/schedstat
// (nanoseconds, where /proc/PID/stat counts 10 ms ticks).
func cpuTime(pid int) time.Duration {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var t time.Duration
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			t += time.Duration(ns)
		}
	}
	return t
}

// ctxSwitches is the number of context switches of all threads of a process so far, from
// /proc/PID/task/*/status; threads that have exited are not counted.
func ctxSwitches(pid int) int64 {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

// selfCPU is this process's user plus system time: the initiator's CPU.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
