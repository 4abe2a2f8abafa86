package bootserver

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/netroot/netroot/nbd"
)

// exportTable is the NBD server's ExportLookup: one export per build, named by its build ID.
// The empty name means the default image's current build.
type exportTable struct {
	mu      sync.RWMutex
	exports []*nbd.Export
	byName  map[string]*nbd.Export
	def     string
}

var _ nbd.ExportLookup = (*exportTable)(nil)

func (t *exportTable) add(e *nbd.Export) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName == nil {
		t.byName = map[string]*nbd.Export{}
	}
	t.byName[e.Name] = e
	t.exports = append(t.exports, e)
}

func (t *exportTable) remove(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byName, name)
	t.exports = slices.DeleteFunc(t.exports, func(e *nbd.Export) bool { return e.Name == name })
}

func (t *exportTable) setDefault(name string) {
	t.mu.Lock()
	t.def = name
	t.mu.Unlock()
}

func (t *exportTable) names() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var n []string
	for _, e := range t.exports {
		n = append(n, e.Name)
	}
	return n
}

// LookupExport implements nbd.ExportLookup.
func (t *exportTable) LookupExport(_ context.Context, name string) (*nbd.Export, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if name == "" {
		name = t.def
	}
	if e, ok := t.byName[name]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("%w %q", nbd.ErrUnknownExport, name)
}

// ListExports implements nbd.ExportLookup.
func (t *exportTable) ListExports(context.Context) ([]*nbd.Export, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return slices.Clone(t.exports), nil
}

// connTracker counts the NBD connections attached to each build, so that an old build is kept
// while any client uses it. nbd.Server reports attaching (OnAttach) but not the end of a
// connection, so the tracker keeps the accepted *net.TCPConn values (unwrapped: the NBD
// server's sendfile and splice paths need them as they are) and notices their closing by
// polling.
type connTracker struct {
	s       *Server
	mu      sync.Mutex
	conns   map[string]*trackedConn // by remote address
	pinned  map[string]*build       // attached connections the tracker cannot watch
	stopc   chan struct{}
	stopped sync.Once
	period  time.Duration
}

type trackedConn struct {
	raw   syscall.RawConn
	build *build
}

func newConnTracker(s *Server) *connTracker {
	return &connTracker{s: s, conns: map[string]*trackedConn{}, pinned: map[string]*build{}, stopc: make(chan struct{}), period: 200 * time.Millisecond}
}

// listener returns l with every accepted TCP connection tracked.
func (t *connTracker) listener(l net.Listener) net.Listener { return &trackingListener{l, t} }

type trackingListener struct {
	net.Listener
	t *connTracker
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	l.t.track(c)
	return c, nil
}

// track starts watching c, a connection the NBD server will serve.
func (t *connTracker) track(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	t.mu.Lock()
	t.conns[c.RemoteAddr().String()] = &trackedConn{raw: raw}
	t.mu.Unlock()
}

// attached is the NBD server's OnAttach.
func (t *connTracker) attached(e *nbd.Export, remote net.Addr) {
	s := t.s
	s.mu.Lock()
	b := s.builds[buildOfExport(e)]
	if b != nil {
		b.clients++
	}
	s.mu.Unlock()
	if b == nil {
		return
	}
	key := remote.String()
	t.mu.Lock()
	if tc, ok := t.conns[key]; ok {
		tc.build = b
	} else {
		t.pinned[key] = b
	}
	t.mu.Unlock()
	s.log().Info("nbd client attached", "client", key, "export", e.Name)
	s.emit(Event{Kind: NBDAttach, Build: b.id, Client: addrHost(remote)})
}

func buildOfExport(e *nbd.Export) BuildID {
	id, _ := ParseBuildID(e.Name)
	return id
}

func addrHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}

// run polls the tracked connections until shutdown.
func (t *connTracker) run(context.Context) error {
	tick := time.NewTicker(t.period)
	defer tick.Stop()
	for {
		select {
		case <-t.stopc:
			return nil
		case <-tick.C:
			t.poll()
		}
	}
}

func (t *connTracker) poll() {
	var gone []*build
	t.mu.Lock()
	for key, tc := range t.conns {
		// Control fails once the connection is closed.
		if tc.raw.Control(func(uintptr) {}) == nil {
			continue
		}
		delete(t.conns, key)
		if tc.build != nil {
			gone = append(gone, tc.build)
		}
	}
	t.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	s := t.s
	now := time.Now()
	s.mu.Lock()
	for _, b := range gone {
		b.clients--
		if b.clients == 0 {
			b.lastLeft = now
		}
	}
	s.mu.Unlock()
	for _, b := range gone {
		s.log().Info("nbd client detached", "export", b.id.String())
		s.emit(Event{Kind: NBDDetach, Build: b.id})
	}
}

func (t *connTracker) shutdown(context.Context) error { return t.close() }

func (t *connTracker) close() error {
	t.stopped.Do(func() { close(t.stopc) })
	return nil
}
