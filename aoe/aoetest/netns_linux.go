package aoetest

import (
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/aoe"
)

// ListenIn opens an AoE socket (aoe.Listen) on ifname inside the named network namespace
// (/run/netns/NS, as `ip netns add` creates it). The socket stays in that namespace; the calling
// goroutine's thread is never moved, so tests and benchmarks can drive an initiator and a
// target in two namespaces from one process. It needs root.
func ListenIn(ns, ifname string) (*aoe.Conn, error) {
	type result struct {
		c   *aoe.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		c, lerr := aoe.Listen(ifname)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked so that the runtime retires it with this goroutine.
			if c != nil {
				c.Close()
			}
			ch <- result{err: fmt.Errorf("aoetest: returning to the original network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, lerr}
	}()
	r := <-ch
	return r.c, r.err
}
