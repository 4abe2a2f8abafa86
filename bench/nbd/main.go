// Command nbd serves one file with netroot's NBD server for the comparison in run.sh.
//
//	go run ./bench/nbd -addr 127.0.0.1:10900 -file /dev/shm/bench.img -backend file
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:10809", "TCP address to listen on")
	file := flag.String("file", "", "image file to export")
	name := flag.String("name", "bench", "export name")
	kind := flag.String("backend", "file", "storage: file (pread/pwrite), mmap or memory (file loaded into RAM)")
	readOnly := flag.Bool("readonly", false, "export read-only")
	perSource := flag.Int("max-handshakes-per-source", 0, "nbd.Server.MaxHandshakesPerSource (0: the default, negative: no limit)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "nbd bench server:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*addr, *file, *name, *kind, *readOnly, *perSource); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "nbd bench server:", err)
		os.Exit(1)
	}
}

func run(addr, file, name, kind string, readOnly bool, perSource int) error {
	if file == "" {
		return fmt.Errorf("-file is required")
	}
	var dev backend.Device
	switch kind {
	case "file":
		f, err := backend.OpenFile(file, &backend.FileOptions{ReadOnly: readOnly})
		if err != nil {
			return err
		}
		defer f.Close()
		dev = f
	case "mmap":
		m, err := backend.OpenMmap(file, &backend.MmapOptions{ReadOnly: readOnly})
		if err != nil {
			return err
		}
		defer m.Close()
		dev = m
	case "memory":
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		dev = backend.NewMemoryFrom(b, readOnly)
	default:
		return fmt.Errorf("unknown -backend %q", kind)
	}
	set, err := nbd.NewExportSet(&nbd.Export{Name: name, Device: dev, Writable: !readOnly})
	if err != nil {
		return err
	}
	srv := &nbd.Server{Addr: addr, Exports: set, MaxHandshakesPerSource: perSource}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nbd.ErrServerClosed {
		return err
	}
	return nil
}
