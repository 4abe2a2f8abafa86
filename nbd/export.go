package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/netroot/netroot/backend"
)

// TLSMode is a TLS policy, for a whole server (Server.TLSMode) or one export (Export.TLS).
type TLSMode int

const (
	// TLSDefault is the zero value. On a Server it means TLSOptional when TLSConfig is set and
	// TLSOff otherwise; on an Export it means the export follows the server.
	TLSDefault TLSMode = iota
	// TLSOff refuses NBD_OPT_STARTTLS (NOTLS mode).
	TLSOff
	// TLSOptional lets clients upgrade to TLS when they choose (SELECTIVETLS mode): exports that
	// require TLS are hidden from NBD_OPT_LIST and refused until the client upgrades.
	TLSOptional
	// TLSRequired on a Server refuses every option but STARTTLS and ABORT until the client
	// upgrades (FORCEDTLS mode); on an Export it makes that export reachable over TLS only.
	TLSRequired
)

func (m TLSMode) String() string {
	switch m {
	case TLSDefault:
		return "default"
	case TLSOff:
		return "off"
	case TLSOptional:
		return "optional"
	case TLSRequired:
		return "required"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// CopyOnWriteMode says whether an export's writes go to a private overlay, and whose.
type CopyOnWriteMode int

const (
	// CopyOnWriteOff writes to the device itself (when the export is writable).
	CopyOnWriteOff CopyOnWriteMode = iota
	// CopyOnWritePerConnection gives every connection its own overlay, dropped when the
	// connection ends.
	CopyOnWritePerConnection
	// CopyOnWritePerClient gives every client IP address one overlay shared by its connections,
	// kept while the server runs, so a client that reconnects (after a reboot of its initrd
	// stage, for instance) finds its writes again.
	CopyOnWritePerClient
)

// Export is a block device offered to clients under a name.
type Export struct {
	// Name is what clients ask for. The empty name is the default export of NBD_OPT_GO and
	// NBD_OPT_EXPORT_NAME.
	Name string
	// Description is shown to clients that list exports or ask for details; optional.
	Description string
	// Device holds the data. It must not be nil.
	Device backend.Device
	// Writable lets clients write when Device implements io.WriterAt (and does not report
	// ReadOnly() true). The zero value exports read-only.
	Writable bool
	// CopyOnWrite sends clients' writes to private overlays and leaves Device untouched; the
	// export is then writable for clients even when Device is read-only.
	CopyOnWrite CopyOnWriteMode
	// NewOverlay creates an overlay over base for CopyOnWrite, for example a
	// backend.NewCopyOnWrite over a temporary file; it must implement io.WriterAt, and is closed
	// (if it is an io.Closer) when it is no longer used. Nil means an overlay in memory
	// (backend.NewCopyOnWrite without a file).
	NewOverlay func(base backend.Device) (backend.Device, error)
	// TLS is this export's TLS policy; only TLSRequired changes anything (see TLSMode).
	TLS TLSMode
	// Allow lists the client addresses allowed to use the export. Nil allows everyone. Clients
	// whose address is not an IP address (net.Pipe, Unix sockets) match only when Allow is nil.
	Allow []netip.Prefix
	// MaxConnections limits concurrent connections to the export; 0 means no limit.
	MaxConnections int
	// IdleTimeout disconnects a client of this export that sends no request for this long;
	// 0 means the Server's IdleTimeout, negative never.
	IdleTimeout time.Duration
}

// Allowed reports whether a client at addr may use the export.
func (e *Export) Allowed(addr net.Addr) bool {
	if e.Allow == nil {
		return true
	}
	ip, ok := addrIP(addr)
	if !ok {
		return false
	}
	for _, p := range e.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func addrIP(addr net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.IPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if addr == nil {
			return netip.Addr{}, false
		}
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	return ip.Unmap(), ip.IsValid()
}

// ErrUnknownExport is returned by an ExportLookup for a name it does not serve.
var ErrUnknownExport = errors.New("nbd: unknown export")

// ExportLookup finds exports for a Server. Implementations must be safe for concurrent use; a
// provisioning tool can add and remove exports at run time.
type ExportLookup interface {
	// LookupExport returns the export named name, or an error wrapping ErrUnknownExport.
	LookupExport(ctx context.Context, name string) (*Export, error)
	// ListExports returns the exports to announce to NBD_OPT_LIST.
	ListExports(ctx context.Context) ([]*Export, error)
}

// ExportSet is a ready-made ExportLookup: a set of exports by name, safe for concurrent use.
// The zero value is an empty set.
type ExportSet struct {
	mu      sync.RWMutex
	exports []*Export
}

var _ ExportLookup = (*ExportSet)(nil)

// NewExportSet returns a set holding exports; it returns an error for a duplicate name or an
// export without a Device.
func NewExportSet(exports ...*Export) (*ExportSet, error) {
	s := &ExportSet{}
	for _, e := range exports {
		if err := s.Add(e); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Add adds e. The first export added is also the default export, used when a client asks for
// the empty name and no export is named "".
func (s *ExportSet) Add(e *Export) error {
	if e == nil || e.Device == nil {
		return fmt.Errorf("nbd: export %q has no device", exportName(e))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.exports {
		if x.Name == e.Name {
			return fmt.Errorf("nbd: export %q already exists", e.Name)
		}
	}
	s.exports = append(s.exports, e)
	return nil
}

func exportName(e *Export) string {
	if e == nil {
		return ""
	}
	return e.Name
}

// Remove removes the export named name and reports whether it was there. Connections already
// using it keep it until they end.
func (s *ExportSet) Remove(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.exports, func(e *Export) bool { return e.Name == name })
	if i < 0 {
		return false
	}
	s.exports = slices.Delete(s.exports, i, i+1)
	return true
}

// LookupExport implements ExportLookup.
func (s *ExportSet) LookupExport(_ context.Context, name string) (*Export, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.exports {
		if e.Name == name {
			return e, nil
		}
	}
	if name == "" && len(s.exports) > 0 {
		return s.exports[0], nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownExport, name)
}

// ListExports implements ExportLookup.
func (s *ExportSet) ListExports(context.Context) ([]*Export, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.exports), nil
}
