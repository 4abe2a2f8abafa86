package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Inherited is what a new process received from the process it replaces. A nil *Inherited (a
// process started normally) has no listeners and no connections, so callers need not check.
type Inherited struct {
	ch        *channel // nil once Ready has run
	listeners []File   // not yet taken

	// From systemd: the connections found in the fd store and the names to remove from it
	// once Ready hands them to the caller.
	systemd     bool
	conns       []File
	removeNames []string
}

// listenersTimeout bounds the wait for the first message, which the old process sends right
// after starting this one.
const listenersTimeout = 10 * time.Second

// Inherit returns what the old process passes when this one was started by [Upgrade.Start],
// or what systemd passes (socket units' sockets by FileDescriptorName=, and what an earlier
// process put in the fd store with [Store]), and nil when there is nothing. It reads the
// listening sockets at once; the established connections come with Ready. The caller starts its
// servers on the inherited listeners (see Listener, PacketConn), opening its own for the names
// it did not get, and then calls Ready. Call it once, early: it takes LISTEN_FDS from the
// environment.
func Inherit() (*Inherited, error) {
	v, ok := os.LookupEnv(EnvFD)
	if !ok {
		return fromSystemd()
	}
	// A later upgrade of this process sets it afresh; nothing else may mistake it for its own.
	_ = os.Unsetenv(EnvFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("handoff: %s=%q: want a descriptor number of at least 3", EnvFD, v)
	}
	unix.CloseOnExec(fd)
	ch, err := newChannel(os.NewFile(uintptr(fd), "handoff"))
	if err != nil {
		return nil, err
	}
	_, files, err := ch.expect(msgListeners, time.Now().Add(listenersTimeout))
	if err != nil {
		_ = ch.Close()
		return nil, err
	}
	return &Inherited{ch: ch, listeners: files}, nil
}

// FromSystemd reports whether the descriptors came from systemd (socket units, the fd store)
// rather than from a process started by Upgrade.
func (h *Inherited) FromSystemd() bool { return h != nil && h.systemd }

// Names lists the names of the listeners not yet taken.
func (h *Inherited) Names() []string {
	if h == nil {
		return nil
	}
	names := make([]string, len(h.listeners))
	for i, f := range h.listeners {
		names[i] = f.Name
	}
	return names
}

// Take returns the inherited listener descriptor named name and hands its ownership to the
// caller, or nil when there is none.
func (h *Inherited) Take(name string) *os.File {
	if h == nil {
		return nil
	}
	for i, f := range h.listeners {
		if f.Name == name {
			h.listeners = append(h.listeners[:i], h.listeners[i+1:]...)
			return f.File
		}
	}
	return nil
}

// Listener returns the inherited stream listener named name, or nil (and no error) when there
// is none.
func (h *Inherited) Listener(name string) (net.Listener, error) {
	f := h.Take(name)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: inherited listener %q: %w", name, err)
	}
	return l, nil
}

// PacketConn returns the inherited datagram socket named name, or nil (and no error) when there
// is none.
func (h *Inherited) PacketConn(name string) (net.PacketConn, error) {
	f := h.Take(name)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: inherited socket %q: %w", name, err)
	}
	return pc, nil
}

// Ready reports to the old process that this one serves, then receives the established
// connections it hands over, until it says that was all, and confirms. From then on this
// process owns them and should serve them at once; the old one closes its copies and exits.
// timeout bounds the whole exchange (the old process finishes its requests in flight first).
// Listeners never taken are closed. On an error no connection is returned: the old process
// keeps or closes them.
func (h *Inherited) Ready(ctx context.Context, timeout time.Duration) ([]File, error) {
	if h == nil {
		return nil, nil
	}
	CloseFiles(h.listeners)
	h.listeners = nil
	if h.systemd {
		conns := h.conns
		h.conns, h.systemd = nil, false
		if err := removeStored(h.removeNames); err != nil {
			// Still ours; a later restart would pass stale copies, which Inherit drops
			// (they have no state) or the caller finds closed.
			return conns, err
		}
		return conns, nil
	}
	if h.ch == nil {
		return nil, nil
	}
	ch := h.ch
	h.ch = nil
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { _ = ch.c.SetReadDeadline(time.Now()) })
	defer stop()
	if err := ch.send(message{Type: msgReady, PID: os.Getpid()}, nil); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	var conns []File
	for {
		m, files, err := ch.recv(deadline)
		if err == nil && m.Type != msgConns && m.Type != msgDone {
			CloseFiles(files)
			err = fmt.Errorf("handoff: got %q message, want connections", m.Type)
		}
		if err == nil && m.Type == msgDone && m.Count != len(conns)+len(files) {
			err = fmt.Errorf("handoff: old process sent %d connections but says %d", len(conns)+len(files), m.Count)
		}
		if err != nil {
			CloseFiles(files)
			CloseFiles(conns)
			if ctx.Err() != nil {
				err = ctx.Err()
			} else if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("handoff: connections not handed over within %v", timeout)
			}
			return nil, err
		}
		conns = append(conns, files...)
		if m.Type == msgDone {
			break
		}
	}
	if err := ch.send(message{Type: msgAck, Count: len(conns)}, nil); err != nil {
		CloseFiles(conns)
		return nil, err
	}
	return conns, nil
}
