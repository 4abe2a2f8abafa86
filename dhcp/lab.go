package dhcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/netroot/netroot/internal/atomicfile"
)

// Lab configures the full DHCP server for an isolated lab network, where no other DHCP server
// runs. Every client gets an address; PXE and HTTP boot clients also get their boot file in the
// same offer.
type Lab struct {
	// Subnet is the network the clients are on, for example 192.0.2.0/24; it gives the subnet
	// mask. Required.
	Subnet netip.Prefix
	// Start and End are the first and last address handed out, inside Subnet. Required.
	Start, End netip.Addr
	// Router is the default gateway sent to clients; the zero Addr sends none.
	Router netip.Addr
	// DNS are the name servers sent to clients; none sends none.
	DNS []netip.Addr
	// LeaseTime is how long an address is leased; zero means DefaultLeaseTime.
	LeaseTime time.Duration
	// LeaseFile, if set, keeps the leases across restarts: it is read at start and rewritten
	// atomically (temporary file, sync, rename) whenever a lease changes. Empty keeps them in
	// memory only.
	LeaseFile string
}

// DefaultLeaseTime is the lease time when Lab.LeaseTime is zero.
const DefaultLeaseTime = time.Hour

// offerHold is how long an offered address stays reserved for the client it was offered to.
const offerHold = 30 * time.Second

// Lease is one address leased to one client, as kept in the lease file.
type Lease struct {
	MAC     string     `json:"mac"` // net.HardwareAddr.String()
	Addr    netip.Addr `json:"addr"`
	Expires time.Time  `json:"expires"`
}

type leaseTable struct {
	lab   Lab
	self  netip.Addr
	mu    sync.Mutex
	bound map[string]Lease         // by MAC
	held  map[string]Lease         // offered, not yet requested; by MAC
	bad   map[netip.Addr]time.Time // declined addresses, until
}

func newLeaseTable(lab *Lab, self netip.Addr) (*leaseTable, error) {
	l := *lab
	if !l.Subnet.IsValid() || !l.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("dhcp: lab subnet %v is not an IPv4 prefix", l.Subnet)
	}
	l.Subnet = l.Subnet.Masked()
	if !l.Subnet.Contains(l.Start) || !l.Subnet.Contains(l.End) || l.End.Less(l.Start) {
		return nil, fmt.Errorf("dhcp: lab range %v-%v is not an ascending range inside %v", l.Start, l.End, l.Subnet)
	}
	if l.LeaseTime <= 0 {
		l.LeaseTime = DefaultLeaseTime
	}
	t := &leaseTable{lab: l, self: self, bound: map[string]Lease{}, held: map[string]Lease{}, bad: map[netip.Addr]time.Time{}}
	if l.LeaseFile != "" {
		data, err := os.ReadFile(l.LeaseFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("dhcp: lease file: %w", err)
		default:
			var leases []Lease
			if err := json.Unmarshal(data, &leases); err != nil {
				return nil, fmt.Errorf("dhcp: lease file %s: %w", l.LeaseFile, err)
			}
			for _, ls := range leases {
				if t.inRange(ls.Addr) {
					t.bound[ls.MAC] = ls
				}
			}
		}
	}
	return t, nil
}

func (t *leaseTable) inRange(a netip.Addr) bool {
	return a.Is4() && !a.Less(t.lab.Start) && !t.lab.End.Less(a) && a != t.self
}

func (t *leaseTable) count(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range t.bound {
		if now.Before(l.Expires) {
			n++
		}
	}
	return n
}

// usedBy returns the MAC an address is leased or held for at now, or "".
func (t *leaseTable) usedBy(a netip.Addr, now time.Time) string {
	for _, m := range []map[string]Lease{t.bound, t.held} {
		for mac, l := range m {
			if l.Addr == a && now.Before(l.Expires) {
				return mac
			}
		}
	}
	if until, ok := t.bad[a]; ok && now.Before(until) {
		return "declined"
	}
	return ""
}

// offer picks an address for mac: its current lease, then the one it asks for, then the first
// free one in the range.
func (t *leaseTable) offer(mac string, want netip.Addr, now time.Time) (netip.Addr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// Forget expired offers and declines, so that clients that come and go (or forged
	// hardware addresses) do not grow the table.
	for m, l := range t.held {
		if !now.Before(l.Expires) {
			delete(t.held, m)
		}
	}
	for a, until := range t.bad {
		if !now.Before(until) {
			delete(t.bad, a)
		}
	}
	pick := netip.Addr{}
	if l, ok := t.bound[mac]; ok && t.inRange(l.Addr) {
		if u := t.usedBy(l.Addr, now); u == "" || u == mac {
			pick = l.Addr
		}
	}
	if !pick.IsValid() {
		if l, ok := t.held[mac]; ok && now.Before(l.Expires) {
			pick = l.Addr
		}
	}
	if !pick.IsValid() && t.inRange(want) {
		if u := t.usedBy(want, now); u == "" || u == mac {
			pick = want
		}
	}
	for a := t.lab.Start; !pick.IsValid(); a = a.Next() {
		if t.inRange(a) {
			if u := t.usedBy(a, now); u == "" || u == mac {
				pick = a
			}
		}
		if a == t.lab.End {
			break
		}
	}
	if !pick.IsValid() {
		return netip.Addr{}, false
	}
	t.held[mac] = Lease{MAC: mac, Addr: pick, Expires: now.Add(offerHold)}
	return pick, true
}

// bind leases a to mac if it is free or already mac's, and saves the table.
func (t *leaseTable) bind(mac string, a netip.Addr, now time.Time) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.inRange(a) {
		return false, nil
	}
	if u := t.usedBy(a, now); u != "" && u != mac {
		return false, nil
	}
	delete(t.held, mac)
	t.bound[mac] = Lease{MAC: mac, Addr: a, Expires: now.Add(t.lab.LeaseTime)}
	return true, t.save(now)
}

// release ends mac's lease on a, if it has one, and saves the table.
func (t *leaseTable) release(mac string, a netip.Addr, now time.Time, declined bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.held, mac)
	if declined && t.inRange(a) {
		t.bad[a] = now.Add(t.lab.LeaseTime)
	}
	if l, ok := t.bound[mac]; ok && l.Addr == a {
		delete(t.bound, mac)
		return t.save(now)
	}
	return nil
}

// save writes the unexpired leases to the lease file atomically and durably.
func (t *leaseTable) save(now time.Time) error {
	if t.lab.LeaseFile == "" {
		return nil
	}
	var leases []Lease
	for _, l := range t.bound {
		if now.Before(l.Expires) {
			leases = append(leases, l)
		}
	}
	slices.SortFunc(leases, func(a, b Lease) int { return a.Addr.Compare(b.Addr) })
	data, err := json.MarshalIndent(leases, "", "\t")
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	if err := atomicfile.WriteFile(t.lab.LeaseFile, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("dhcp: lease file: %w", err)
	}
	return nil
}

// handleLab answers a client as the network's DHCP server (RFC 2131 section 4.3).
func (s *Server) handleLab(req *dhcpv4.DHCPv4, c *Client, now time.Time) (*dhcpv4.DHCPv4, string) {
	t := s.leases
	mac := c.MAC.String()
	ip4 := func(ip net.IP) netip.Addr {
		a, _ := netip.AddrFromSlice(ip.To4())
		return a
	}
	var (
		addr netip.Addr
		mt   dhcpv4.MessageType
	)
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		a, ok := t.offer(mac, ip4(req.RequestedIPAddress()), now)
		if !ok {
			return nil, "address range exhausted"
		}
		addr, mt = a, dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		sid := ip4(req.ServerIdentifier())
		if sid.IsValid() && sid != s.Addr {
			// The client chose another server's offer: drop what we held for it.
			_ = t.release(mac, netip.Addr{}, now, false)
			return nil, "client selected another server"
		}
		want := ip4(req.RequestedIPAddress())
		if !want.IsValid() || want.IsUnspecified() {
			want = ip4(req.ClientIPAddr) // renewing or rebinding
		}
		ok, err := t.bind(mac, want, now)
		if err != nil {
			s.logger().Error("dhcp: saving leases", "err", err)
		}
		if !ok {
			nak := s.reply(req, dhcpv4.MessageTypeNak)
			nak.UpdateOption(dhcpv4.OptMessage(fmt.Sprintf("address %v is not available", want)))
			return nak, ""
		}
		addr, mt = want, dhcpv4.MessageTypeAck
	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		a := ip4(req.ClientIPAddr)
		declined := req.MessageType() == dhcpv4.MessageTypeDecline
		if declined {
			a = ip4(req.RequestedIPAddress())
		}
		if err := t.release(mac, a, now, declined); err != nil {
			s.logger().Error("dhcp: saving leases", "err", err)
		}
		return nil, "release and decline need no answer"
	case dhcpv4.MessageTypeInform:
		mt = dhcpv4.MessageTypeAck
	default:
		return nil, "message type not answered"
	}
	var reply *dhcpv4.DHCPv4
	if c.BootClient() {
		reply, _ = s.bootReply(req, c, mt)
	}
	if reply == nil {
		reply = s.reply(req, mt)
	}
	if addr.IsValid() {
		reply.YourIPAddr = net.IP(addr.AsSlice())
		lt := t.lab.LeaseTime
		reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		reply.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
		reply.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	}
	reply.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(t.lab.Subnet.Bits(), 32)))
	if t.lab.Router.IsValid() {
		reply.UpdateOption(dhcpv4.OptRouter(net.IP(t.lab.Router.AsSlice())))
	}
	if len(t.lab.DNS) > 0 {
		var dns []net.IP
		for _, d := range t.lab.DNS {
			dns = append(dns, net.IP(d.AsSlice()))
		}
		reply.UpdateOption(dhcpv4.OptDNS(dns...))
	}
	return reply, ""
}
