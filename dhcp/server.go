package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Ports a boot server listens on.
const (
	ServerPort = 67   // DHCP (and proxyDHCP offers)
	ClientPort = 68   // where replies to clients without an address go
	PXEPort    = 4011 // proxyDHCP requests (PXE boot server discovery)
)

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or Close.
var ErrServerClosed = errors.New("dhcp: server closed")

// Server is a proxyDHCP server, or with Lab set a full DHCP server. Its exported fields are its
// configuration; set them before Serve. Addr is required.
type Server struct {
	// Addr is the server's IPv4 address as clients reach it: the server identifier (option
	// 54), the next server (siaddr) clients load TFTP boot files from, and the host of HTTP
	// boot URLs.
	Addr netip.Addr
	// HTTPURL is the base URL of the HTTP server that serves the boot files (iPXE script, UEFI
	// HTTP boot); empty means "http://" + Addr.
	HTTPURL string
	// Loaders names the boot files; zero fields mean the defaults.
	Loaders Loaders
	// EFILoader is what LoaderAuto sends x86-64 UEFI PXE clients to: LoaderShim (the zero
	// value LoaderAuto means it too), shim and then GRUB, signed for Secure Boot; or LoaderIPXE,
	// the iPXE binary Loaders.IPXEX64 (required then), which is unsigned (Secure Boot off only)
	// but takes its boot information from a proxyDHCP and fetches everything over HTTP.
	EFILoader Loader
	// Machine, if set, is asked which loader boots each client, for example from a per-machine
	// configuration; LoaderAuto (or a nil Machine) picks by the client's firmware.
	Machine func(c *Client) Loader
	// Lab, if set, makes the server a full DHCP server that hands out addresses from a range,
	// for a network with no other DHCP server. Nil (the default) is proxyDHCP: no addresses,
	// and only PXE and HTTP boot clients are answered.
	Lab *Lab
	// Interface is the network interface ListenAndServe binds to (SO_BINDTODEVICE); empty
	// means all interfaces, which only suits a machine with one.
	Interface string
	// Logger receives one line per answer and debug details; nil means silent.
	Logger *slog.Logger

	initOnce sync.Once
	initErr  error
	files    Loaders
	httpBase string
	leases   *leaseTable

	mu      sync.Mutex
	closing bool
	conns   map[net.PacketConn]struct{}
	serving sync.WaitGroup

	received, malformed, ignored atomic.Uint64
	offers, acks, naks           atomic.Uint64
}

// Stats is a snapshot of a server's counters since it started.
type Stats struct {
	Received     uint64 // packets read
	Malformed    uint64 // packets that are not DHCP requests
	Ignored      uint64 // requests not answered (not a boot client, another server's, no loader)
	Offers       uint64 // DHCPOFFERs sent
	Acks         uint64 // DHCPACKs sent
	Naks         uint64 // DHCPNAKs sent (lab mode)
	ActiveLeases int    // addresses leased now (lab mode)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	_ = s.init()
	st := Stats{
		Received:  s.received.Load(),
		Malformed: s.malformed.Load(),
		Ignored:   s.ignored.Load(),
		Offers:    s.offers.Load(),
		Acks:      s.acks.Load(),
		Naks:      s.naks.Load(),
	}
	if s.leases != nil {
		st.ActiveLeases = s.leases.count(time.Now())
	}
	return st
}

func (s *Server) init() error {
	s.initOnce.Do(func() {
		s.conns = map[net.PacketConn]struct{}{}
		if !s.Addr.Is4() {
			s.initErr = fmt.Errorf("dhcp: server address %v is not IPv4", s.Addr)
			return
		}
		s.files = s.Loaders.withDefaults()
		switch s.EFILoader {
		case LoaderAuto, LoaderShim:
		case LoaderIPXE:
			if s.files.IPXEX64 == "" {
				s.initErr = errors.New("dhcp: EFI loader ipxe needs the iPXE UEFI binary's name (Loaders.IPXEX64)")
				return
			}
		default:
			s.initErr = fmt.Errorf("dhcp: EFI loader %v: want shim or ipxe", s.EFILoader)
			return
		}
		s.httpBase = s.HTTPURL
		if s.httpBase == "" {
			s.httpBase = "http://" + s.Addr.String()
		}
		if s.Lab != nil {
			s.leases, s.initErr = newLeaseTable(s.Lab, s.Addr)
		}
	})
	return s.initErr
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// ListenAndServe opens UDP port 67 (and 4011 for proxyDHCP) on s.Interface, with broadcasts
// allowed, and serves them until Shutdown or Close. It needs root (or CAP_NET_BIND_SERVICE and
// CAP_NET_RAW).
func (s *Server) ListenAndServe() error {
	if err := s.init(); err != nil {
		return err
	}
	ports := []int{ServerPort}
	if s.Lab == nil {
		ports = append(ports, PXEPort)
	}
	var pcs []net.PacketConn
	for _, p := range ports {
		pc, err := server4.NewIPv4UDPConn(s.Interface, &net.UDPAddr{Port: p})
		if err != nil {
			for _, c := range pcs {
				c.Close()
			}
			return fmt.Errorf("dhcp: listen on port %d of interface %q: %w", p, s.Interface, err)
		}
		pcs = append(pcs, pc)
	}
	errc := make(chan error, len(pcs))
	for _, pc := range pcs {
		go func() { errc <- s.Serve(pc) }()
	}
	err := <-errc
	if !errors.Is(err, ErrServerClosed) {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	for range pcs[1:] {
		<-errc
	}
	return err
}

// Serve answers requests arriving on pc, a UDP socket bound to port 67 or 4011, until Shutdown
// or Close, and then returns ErrServerClosed. Replies to clients without an address are
// broadcast to port 68, so pc must allow broadcasts (SO_BROADCAST), as ListenAndServe's do.
// Serve closes pc when it returns.
func (s *Server) Serve(pc net.PacketConn) error {
	defer pc.Close()
	if err := s.init(); err != nil {
		return err
	}
	port := 0
	if ua, ok := pc.LocalAddr().(*net.UDPAddr); ok {
		port = ua.Port
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.conns[pc] = struct{}{}
	s.serving.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, pc)
		s.mu.Unlock()
		s.serving.Done()
	}()
	log := s.logger()
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		s.received.Add(1)
		var from netip.AddrPort
		if ua, ok := addr.(*net.UDPAddr); ok {
			from = ua.AddrPort()
		}
		reply, to := s.handle(buf[:n], port, from, time.Now())
		if reply == nil {
			continue
		}
		if _, err := pc.WriteTo(reply.ToBytes(), net.UDPAddrFromAddrPort(to)); err != nil {
			log.Warn("dhcp: send reply", "client", reply.ClientHWAddr.String(), "to", to, "err", err)
		}
	}
}

// Shutdown stops the server and returns when every Serve has returned, or when ctx ends.
// Requests are answered as they arrive, so there is nothing to drain.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Close()
	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the server now: every Serve returns ErrServerClosed.
func (s *Server) Close() error {
	_ = s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for pc := range s.conns {
		pc.Close()
	}
	return nil
}

var broadcast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)

// handle answers one packet received on local port port from from. It returns the reply and
// where to send it, or nil.
func (s *Server) handle(b []byte, port int, from netip.AddrPort, now time.Time) (*dhcpv4.DHCPv4, netip.AddrPort) {
	log := s.logger()
	req, err := dhcpv4.FromBytes(b)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) == 0 {
		s.malformed.Add(1)
		log.Debug("dhcp: malformed packet", "from", from, "len", len(b), "err", err)
		return nil, netip.AddrPort{}
	}
	c := clientOf(req)
	var reply *dhcpv4.DHCPv4
	var why string
	if s.Lab != nil && port != PXEPort {
		reply, why = s.handleLab(req, c, now)
	} else {
		reply, why = s.handleProxy(req, c, port)
	}
	if reply == nil {
		s.ignored.Add(1)
		log.Debug("dhcp: not answered", "client", c.MAC.String(), "type", req.MessageType(), "class", c.Class, "arch", c.Arch, "why", why)
		return nil, netip.AddrPort{}
	}
	switch reply.MessageType() {
	case dhcpv4.MessageTypeOffer:
		s.offers.Add(1)
	case dhcpv4.MessageTypeAck:
		s.acks.Add(1)
	case dhcpv4.MessageTypeNak:
		s.naks.Add(1)
	}
	to := broadcast
	gi, _ := netip.AddrFromSlice(req.GatewayIPAddr.To4())
	ci, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
	switch {
	case gi.IsValid() && !gi.IsUnspecified():
		to = netip.AddrPortFrom(gi, ServerPort)
	case port == PXEPort && from.IsValid() && !from.Addr().Unmap().IsUnspecified():
		// The client sent its request from its own address; answer it there.
		to = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	case ci.IsValid() && !ci.IsUnspecified() && reply.MessageType() != dhcpv4.MessageTypeNak:
		to = netip.AddrPortFrom(ci, ClientPort)
	}
	log.Info("dhcp: answered", "client", c.MAC.String(), "type", reply.MessageType(), "firmware", c.Firmware,
		"arch", uint16(c.Arch), "ipxe", c.IPXE, "address", reply.YourIPAddr, "file", reply.BootFileName, "to", to)
	return reply, to
}

// handleProxy answers a PXE or HTTP boot client with boot information and no address:
// DHCPDISCOVER with DHCPOFFER, and a DHCPREQUEST or DHCPINFORM sent to port 4011 with DHCPACK.
func (s *Server) handleProxy(req *dhcpv4.DHCPv4, c *Client, port int) (*dhcpv4.DHCPv4, string) {
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		if port == PXEPort {
			return nil, "discover on the PXE port"
		}
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		// On port 67 a request selects the site DHCP server's offer; it is not ours.
		if port != PXEPort {
			return nil, "request on port 67 belongs to the DHCP server"
		}
		mt = dhcpv4.MessageTypeAck
	default:
		return nil, "message type not answered by proxyDHCP"
	}
	if !c.BootClient() {
		return nil, "not a PXE or HTTP boot client"
	}
	reply, why := s.bootReply(req, c, mt)
	if reply == nil {
		return nil, why
	}
	reply.YourIPAddr = net.IPv4zero
	return reply, ""
}

// bootReply is a reply of type mt carrying c's boot information, or nil when no loader boots c.
func (s *Server) bootReply(req *dhcpv4.DHCPv4, c *Client, mt dhcpv4.MessageType) (*dhcpv4.DHCPv4, string) {
	l := LoaderAuto
	if s.Machine != nil {
		l = s.Machine(c)
	}
	if l == LoaderNone {
		return nil, "machine configured not to boot"
	}
	if !c.HasArch && !c.IPXE {
		return nil, "client names no architecture"
	}
	file := bootFile(l, c, s.files, s.httpBase, s.EFILoader)
	if file == "" {
		return nil, fmt.Sprintf("no %v loader for firmware %v (arch %d)", l, c.Firmware, uint16(c.Arch))
	}
	reply := s.reply(req, mt)
	reply.ServerIPAddr = net.IP(s.Addr.AsSlice())
	reply.BootFileName = file
	if c.HTTPClient() {
		reply.UpdateOption(dhcpv4.OptClassIdentifier(ClassHTTP))
	} else {
		reply.UpdateOption(dhcpv4.OptClassIdentifier(ClassPXE))
		if !c.IPXE {
			// PXE discovery control (PXE 2.1 table 2-1, tag 6) with bit 3 set: boot the file in
			// this offer, without boot server discovery or a menu.
			reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
		}
	}
	if len(c.UUID) > 0 {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, c.UUID))
	}
	return reply, ""
}

func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	if r.GatewayIPAddr == nil {
		r.GatewayIPAddr = net.IPv4zero
	}
	if mt == dhcpv4.MessageTypeAck {
		r.ClientIPAddr = req.ClientIPAddr
	}
	r.UpdateOption(dhcpv4.OptMessageType(mt))
	r.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(s.Addr.AsSlice())))
	if ri := req.GetOneOption(dhcpv4.OptionRelayAgentInformation); ri != nil {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, ri))
	}
	if id := req.GetOneOption(dhcpv4.OptionClientIdentifier); id != nil {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, id))
	}
	return r
}
