package bootserver

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
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

	// looked records when each export was last looked up: a client between its lookup and
	// OnAttach is not counted yet, so a build looked up within the grace period stays.
	lookMu sync.Mutex
	looked map[string]time.Time
}

func (t *exportTable) lookedUp(name string) time.Time {
	t.lookMu.Lock()
	defer t.lookMu.Unlock()
	return t.looked[name]
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
	t.lookMu.Lock()
	delete(t.looked, name)
	t.lookMu.Unlock()
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
		t.lookMu.Lock()
		if t.looked == nil {
			t.looked = map[string]time.Time{}
		}
		t.looked[e.Name] = time.Now()
		t.lookMu.Unlock()
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

// connTracker counts the NBD connections attached to each build (nbd.Server's OnAttach and
// OnDetach), so that an old build is kept while any client uses it.
type connTracker struct {
	s        *Server
	refusals RefusalLogger
}

func newConnTracker(s *Server) *connTracker {
	return &connTracker{s: s, refusals: RefusalLogger{Logger: s.log(), Exports: s.exports}}
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
	s.log().Info("nbd client attached", "client", addrString(remote), "export", e.Name)
	s.emit(Event{Kind: NBDAttach, Build: b.id, Client: addrHost(remote)})
}

// detached is the NBD server's OnDetach.
func (t *connTracker) detached(d nbd.Detach) {
	s := t.s
	s.mu.Lock()
	b := s.builds[buildOfExport(d.Export)]
	if b != nil {
		b.clients--
		if b.clients == 0 {
			b.lastLeft = time.Now()
		}
	}
	s.mu.Unlock()
	if b == nil {
		return
	}
	s.log().Info("nbd client detached", "client", addrString(d.Remote), "export", d.Export.Name,
		"read", d.BytesRead, "took", d.Duration.Round(time.Millisecond), "handed_over", d.HandedOver)
	s.emit(Event{Kind: NBDDetach, Build: b.id, Client: addrHost(d.Remote), Bytes: d.BytesRead, Err: d.Err})
}

func buildOfExport(e *nbd.Export) BuildID {
	id, _ := ParseBuildID(e.Name)
	return id
}

func addrHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return addrString(a)
}
