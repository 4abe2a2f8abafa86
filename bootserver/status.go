package bootserver

import (
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Status is what a Server serves and what it saw, for people (StatusHandler's page) and
// programs (its JSON form at /status.json).
type Status struct {
	Time time.Time `json:"time"`
	// Version and Revision identify the running binary (BinaryVersion).
	Version  string `json:"version"`
	Revision string `json:"revision"`
	// Started is when Run started serving; zero before.
	Started time.Time `json:"started,omitzero"`
	// Builds are the builds served: current ones and older ones kept for their clients.
	Builds []BuildStatus `json:"builds"`
	// Default is the build ID new boots without a machine entry get.
	Default string `json:"default"`
	// Rejected are builds that failed to open, with why.
	Rejected map[string]string `json:"rejected,omitempty"`
	// Clients are the NBD clients attached now, oldest first.
	Clients []ClientStatus `json:"nbd_clients"`
	// Transfers are the most recent TFTP and HTTP transfers, newest first.
	Transfers []EventStatus `json:"recent_transfers"`
	// Menus are the boot configurations in effect, by path in the TFTP root.
	Menus []MenuStatus `json:"menus"`
	// Machines are the clients the server saw, by MAC address where it is known (IP address
	// otherwise), most recently seen first, each with the timeline of what the server saw of it.
	Machines []MachineStatus `json:"machines"`
}

// BuildStatus is one build in a Status.
type BuildStatus struct {
	ID      string `json:"id"`
	Image   string `json:"image"`
	Version string `json:"version"`
	Current bool   `json:"current"`
	Clients int    `json:"nbd_clients"`
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd"`
	AoE     string `json:"aoe,omitempty"`
}

// ClientStatus is an NBD connection attached to a build's export.
type ClientStatus struct {
	Client string `json:"client"`
	MAC    string `json:"mac,omitempty"`
	Export string `json:"export"`
	// Attached is when the connection entered transmission (in this process).
	Attached time.Time `json:"attached"`
	// Age is how long it has been attached, as text such as "1m30s".
	Age string `json:"age"`
	// LastRequest is when its last request arrived; zero before the first.
	LastRequest time.Time `json:"last_request,omitzero"`
	// BytesRead and BytesWritten count what the client read from and wrote to the export.
	BytesRead    int64 `json:"bytes_read"`
	BytesWritten int64 `json:"bytes_written"`
	Requests     int64 `json:"requests"`
	TLS          bool  `json:"tls,omitempty"`
}

// EventStatus is one Event in a Status.
type EventStatus struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Client string    `json:"client,omitempty"`
	Build  string    `json:"build,omitempty"`
	File   string    `json:"file,omitempty"`
	Bytes  int64     `json:"bytes,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// MenuStatus is a boot configuration file netroot wrote.
type MenuStatus struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

// MachineStatus is what the server saw of one machine.
type MachineStatus struct {
	// Key is the MAC address, or the IP address when the MAC is not known.
	Key       string    `json:"key"`
	Addresses []string  `json:"addresses,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Errors counts the timeline's events that carry an error.
	Errors   int           `json:"errors"`
	Timeline []EventStatus `json:"timeline"`
}

// Limits of what a Server keeps for its status: a fixed memory bound whatever the clients do.
const (
	statusMachines  = 256 // machines remembered; the least recently seen is forgotten first
	statusTimeline  = 64  // events per machine; the oldest go first
	statusTransfers = 50  // recent TFTP/HTTP transfers
	statusMenuBytes = 16 << 10
	statusMenus     = 64
)

// recorder keeps, within the limits above, what the status page shows of client events.
type recorder struct {
	mu       sync.Mutex
	started  time.Time
	machines map[string]*machineRecord
	// ipToKey remembers which machine key an IP address last belonged to, so that an NBD
	// attach is put on the timeline of the machine whose TFTP fetches came from that address.
	ipToKey   map[string]string
	transfers []EventStatus // ring, newest last
	menus     []string
	// mac finds the MAC address of an IPv4 neighbour (the kernel's ARP table); nil: unknown.
	mac func(netip.Addr) net.HardwareAddr
}

type machineRecord struct {
	key      string
	addrs    []string
	first    time.Time
	last     time.Time
	errors   int
	timeline []EventStatus
}

func newRecorder() *recorder {
	return &recorder{
		machines: map[string]*machineRecord{},
		ipToKey:  map[string]string{},
		mac:      neighbourMAC,
	}
}

// eventStatus is e as a Status entry.
func eventStatus(e Event) EventStatus {
	es := EventStatus{Time: e.Time, Kind: e.Kind.String(), Client: unmapClient(e.Client), File: e.File, Bytes: e.Bytes}
	if e.Build != (BuildID{}) {
		es.Build = e.Build.String()
	}
	if e.Err != nil {
		es.Error = truncate(e.Err.Error(), 512)
	}
	return es
}

// unmapClient writes an IPv4-mapped IPv6 client address ([::ffff:192.0.2.1]:1234) as IPv4.
func unmapClient(c string) string {
	if ap, err := netip.ParseAddrPort(c); err == nil && ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	if a, err := netip.ParseAddr(c); err == nil && a.Is4In6() {
		return a.Unmap().String()
	}
	return c
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// clientEvent reports whether an event of kind k is about one client machine.
func clientEvent(k EventKind) bool {
	switch k {
	case TFTPTransfer, HTTPRequest, NBDAttach, NBDDetach, AoEDiscover, NBDRefused:
		return true
	}
	// Kinds added by services (DHCP offers, say) that name a client count too.
	return k > HTTPRequest
}

// record files e.
func (r *recorder) record(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case Ready:
		r.started = e.Time
		return
	case ConfigWritten:
		if e.File != "" && !slices.Contains(r.menus, e.File) && len(r.menus) < statusMenus {
			r.menus = append(r.menus, e.File)
		}
		return
	}
	if !clientEvent(e.Kind) || e.Client == "" {
		return
	}
	es := eventStatus(e)
	key, addr := r.machineKey(e.Client)
	switch e.Kind {
	case TFTPTransfer, HTTPRequest:
		if len(r.transfers) == statusTransfers {
			r.transfers = slices.Delete(r.transfers, 0, 1)
		}
		r.transfers = append(r.transfers, es)
	}
	m := r.machines[key]
	if m == nil {
		if len(r.machines) >= statusMachines {
			r.evictOldest()
		}
		m = &machineRecord{key: key, first: e.Time}
		r.machines[key] = m
	}
	m.last = e.Time
	if addr != "" && !slices.Contains(m.addrs, addr) && len(m.addrs) < 8 {
		m.addrs = append(m.addrs, addr)
	}
	if es.Error != "" {
		m.errors++
	}
	if len(m.timeline) == statusTimeline {
		m.timeline = slices.Delete(m.timeline, 0, 1)
	}
	m.timeline = append(m.timeline, es)
}

// machineKey returns the key of the machine client (an IP or MAC address) is, and the IP
// address to list for it ("" for a MAC).
func (r *recorder) machineKey(client string) (key, addr string) {
	if hw, err := net.ParseMAC(client); err == nil {
		return hw.String(), ""
	}
	ap, err := netip.ParseAddrPort(client)
	var ip netip.Addr
	if err == nil {
		ip = ap.Addr()
	} else if ip, err = netip.ParseAddr(client); err != nil {
		return client, ""
	}
	ip = ip.Unmap()
	addr = ip.String()
	if r.mac != nil {
		if hw := r.mac(ip); hw != nil {
			r.ipToKey[addr] = hw.String()
			return hw.String(), addr
		}
	}
	if k, ok := r.ipToKey[addr]; ok {
		return k, addr
	}
	return addr, addr
}

// macOfClient returns the MAC address of the machine at client (an IP address with or
// without port), when known: from what the recorder learnt of the address first, so that a
// status page listing many connections does not read the ARP table for each.
func (r *recorder) macOfClient(client string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ap, err := netip.ParseAddrPort(client); err == nil {
		if k, ok := r.ipToKey[ap.Addr().Unmap().String()]; ok {
			return k
		}
	}
	key, _ := r.machineKey(client)
	if _, err := net.ParseMAC(key); err == nil {
		return key
	}
	return ""
}

func (r *recorder) evictOldest() {
	var oldest *machineRecord
	for _, m := range r.machines {
		if oldest == nil || m.last.Before(oldest.last) {
			oldest = m
		}
	}
	if oldest != nil {
		delete(r.machines, oldest.key)
		for ip, k := range r.ipToKey {
			if k == oldest.key {
				delete(r.ipToKey, ip)
			}
		}
	}
}

// snapshot fills the client part of st.
func (r *recorder) snapshot(st *Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st.Started = r.started
	for i := len(r.transfers) - 1; i >= 0; i-- {
		st.Transfers = append(st.Transfers, r.transfers[i])
	}
	for _, m := range r.machines {
		st.Machines = append(st.Machines, MachineStatus{
			Key: m.key, Addresses: slices.Clone(m.addrs), FirstSeen: m.first, LastSeen: m.last,
			Errors: m.errors, Timeline: slices.Clone(m.timeline),
		})
	}
	slices.SortFunc(st.Machines, func(a, b MachineStatus) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), strings.Compare(a.Key, b.Key))
	})
}

// Status returns what the server serves and what it saw of its clients. Before Run it holds
// only the binary's version.
func (s *Server) Status() Status {
	now := time.Now()
	st := Status{Time: now, Rejected: map[string]string{}}
	st.Version, st.Revision, _ = BinaryVersion()
	r := s.recorder.Load()
	if r == nil {
		return st
	}
	state := s.State()
	for _, b := range state.Builds {
		st.Builds = append(st.Builds, BuildStatus{
			ID: b.ID.String(), Image: b.ID.Name, Version: b.ID.Version, Current: b.Current,
			Clients: b.Clients, Kernel: b.Kernel, Initrd: b.Initrd, AoE: b.AoE,
		})
	}
	slices.SortFunc(st.Builds, func(a, b BuildStatus) int { return strings.Compare(a.ID, b.ID) })
	if state.Default != (BuildID{}) {
		st.Default = state.Default.String()
	}
	for id, why := range state.Rejected {
		st.Rejected[id.String()] = why
	}
	r.snapshot(&st)
	if n := s.NBDServer(); n != nil {
		for _, c := range n.Conns() {
			cs := ClientStatus{Client: unmapClient(addrString(c.Remote)), Attached: c.Since,
				Age: now.Sub(c.Since).Round(time.Second).String(), LastRequest: c.LastRequest,
				BytesRead: c.BytesRead, BytesWritten: c.BytesWritten, Requests: c.Requests, TLS: c.TLS}
			if c.Export != nil {
				cs.Export = c.Export.Name
			}
			cs.MAC = r.macOfClient(cs.Client)
			st.Clients = append(st.Clients, cs)
		}
		slices.SortFunc(st.Clients, func(a, b ClientStatus) int {
			return cmp.Or(a.Attached.Compare(b.Attached), strings.Compare(a.Client, b.Client))
		})
	}
	r.mu.Lock()
	menus := slices.Clone(r.menus)
	r.mu.Unlock()
	slices.Sort(menus)
	st.Menus = readMenus(s.TFTPRoot, menus)
	return st
}

// readMenus reads the boot configurations at paths (relative to the TFTP root) that still
// exist, each up to statusMenuBytes.
func readMenus(root string, paths []string) []MenuStatus {
	if root == "" || len(paths) == 0 {
		return nil
	}
	rt, err := os.OpenRoot(root)
	if err != nil {
		return nil
	}
	defer rt.Close()
	var out []MenuStatus
	for _, p := range paths {
		f, err := rt.Open(p)
		if err != nil {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(f, statusMenuBytes+1))
		f.Close()
		if err != nil {
			continue
		}
		content := string(b)
		if len(b) > statusMenuBytes {
			content = string(b[:statusMenuBytes]) + "\n…"
		}
		out = append(out, MenuStatus{Path: p, Content: content})
	}
	return out
}

//go:embed status.html
var statusHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"size": humanBytes,
}).Parse(statusHTML))

// humanBytes formats n as B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

// StatusHandler serves the status page for people at "/" and the same Status as JSON at
// "/status.json"; any other path is not found, so the handler can share a mux (with
// /metrics, say). The page refreshes itself every few seconds.
func (s *Server) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/status.json":
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(s.Status())
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_ = statusPage.Execute(w, s.Status())
		default:
			http.NotFound(w, r)
		}
	})
}
