package bootserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/netroot/netroot/dhcp"
)

// DHCPMode says whether and how a boot server answers DHCP.
type DHCPMode int

// The modes.
const (
	// DHCPOff answers no DHCP: the site's DHCP server must send next-server and a boot file.
	DHCPOff DHCPMode = iota
	// DHCPProxy runs a proxyDHCP beside the site's DHCP server: PXE and HTTP boot clients get
	// their boot file from it, their address from the site's server.
	DHCPProxy
	// DHCPServer runs a full DHCP server for an isolated lab network (addresses and boot files).
	DHCPServer
)

func (m DHCPMode) String() string {
	switch m {
	case DHCPOff:
		return "off"
	case DHCPProxy:
		return "proxy"
	case DHCPServer:
		return "server"
	}
	return fmt.Sprintf("DHCPMode(%d)", int(m))
}

// ParseDHCPMode parses "off", "proxy" or "server".
func ParseDHCPMode(s string) (DHCPMode, error) {
	for _, m := range []DHCPMode{DHCPOff, DHCPProxy, DHCPServer} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("bootserver: DHCP mode %q: want off, proxy or server", s)
}

// ParseRange parses an address range "FIRST-LAST" such as "192.0.2.100-192.0.2.199".
func ParseRange(s string) (first, last netip.Addr, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		first, err = netip.ParseAddr(strings.TrimSpace(a))
		if err == nil {
			last, err = netip.ParseAddr(strings.TrimSpace(b))
		}
	}
	if !ok || err != nil || !first.Is4() || !last.Is4() || last.Less(first) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("bootserver: DHCP range %q: want FIRST-LAST, two IPv4 addresses in ascending order", s)
	}
	return first, last, nil
}

// DHCPMachine chooses the boot loader of one machine, or of a group by MAC prefix (the
// longest match wins), as Machine does for images.
type DHCPMachine struct {
	MAC    net.HardwareAddr
	Loader dhcp.Loader
}

// DHCPMachines returns the loader choices of the machines that name one (Machine.Loader), for
// DHCPOptions.Machines. Machines without a loader take the one of their group, or
// DHCPOptions.Loader. The loaders must be valid, as ParseMachines checks.
func DHCPMachines(ms []Machine) ([]DHCPMachine, error) {
	var out []DHCPMachine
	for _, m := range ms {
		if m.Loader == "" {
			continue
		}
		l, ok := dhcp.ParseLoader(m.Loader)
		if !ok {
			return nil, fmt.Errorf("bootserver: machine %s: loader %q: want auto, pxelinux, shim, ipxe or none", m.MAC, m.Loader)
		}
		out = append(out, DHCPMachine{MAC: m.MAC, Loader: l})
	}
	return out, nil
}

// DHCPOptions configures the DHCP service of a boot server.
type DHCPOptions struct {
	Mode DHCPMode
	// Interface is the network interface to answer on; required unless the machine has only
	// one interface besides loopback.
	Interface string
	// ServerIP is the boot server's address (Server.ServerIP); required.
	ServerIP netip.Addr
	// HTTPURL is the base URL of the HTTP server (HTTPServer) for iPXE and UEFI HTTP boot;
	// empty means "http://" + ServerIP.
	HTTPURL string
	// Loaders names the boot files (dhcp.Loaders); zero means pxelinux.0, bootx64.efi, boot.ipxe.
	Loaders dhcp.Loaders
	// Loader is the loader of machines not in Machines; zero is dhcp.LoaderAuto (by firmware).
	Loader dhcp.Loader
	// EFILoader is what Loader dhcp.LoaderAuto means for x86-64 UEFI PXE clients
	// (dhcp.Server.EFILoader): dhcp.LoaderShim (zero means it too) or dhcp.LoaderIPXE, which
	// needs Loaders.IPXEX64.
	EFILoader dhcp.Loader
	// Machines choose loaders per machine.
	Machines []DHCPMachine
	// Lab is the address range and lease file of DHCPServer mode; required there.
	Lab *dhcp.Lab
	// Logger receives the start-up line and one line per answer; nil means silent.
	Logger *slog.Logger
}

// DHCPService is the proxyDHCP or lab DHCP server as a Service for Server.Services.
type DHCPService struct {
	opts DHCPOptions
	srv  *dhcp.Server
}

// NewDHCPService checks o and returns the service; with DHCPOff it returns nil and no error.
func NewDHCPService(o DHCPOptions) (*DHCPService, error) {
	if o.Mode == DHCPOff {
		return nil, nil
	}
	if o.Mode != DHCPProxy && o.Mode != DHCPServer {
		return nil, fmt.Errorf("bootserver: DHCP mode %v", o.Mode)
	}
	if !o.ServerIP.Is4() {
		return nil, fmt.Errorf("bootserver: DHCP needs the server's IPv4 address, not %v", o.ServerIP)
	}
	if o.Mode == DHCPServer && o.Lab == nil {
		return nil, errors.New("bootserver: DHCP server mode needs an address range")
	}
	switch o.EFILoader {
	case dhcp.LoaderAuto, dhcp.LoaderShim:
	case dhcp.LoaderIPXE:
		if o.Loaders.IPXEX64 == "" {
			return nil, errors.New("bootserver: EFI loader ipxe needs the iPXE UEFI binary (DHCPOptions.Loaders.IPXEX64)")
		}
	default:
		return nil, fmt.Errorf("bootserver: EFI loader %q: want shim or ipxe", o.EFILoader)
	}
	if o.Interface == "" {
		ifname, err := onlyInterface()
		if err != nil {
			return nil, err
		}
		o.Interface = ifname
	}
	if _, err := net.InterfaceByName(o.Interface); err != nil {
		return nil, fmt.Errorf("bootserver: DHCP interface %q: %w", o.Interface, err)
	}
	srv := &dhcp.Server{
		Addr:      o.ServerIP,
		HTTPURL:   o.HTTPURL,
		Loaders:   o.Loaders,
		EFILoader: o.EFILoader,
		Interface: o.Interface,
		Logger:    o.Logger,
	}
	if o.Mode == DHCPServer {
		srv.Lab = o.Lab
	}
	if len(o.Machines) > 0 || o.Loader != dhcp.LoaderAuto {
		machines, def := o.Machines, o.Loader
		srv.Machine = func(c *dhcp.Client) dhcp.Loader { return machineLoader(machines, c.MAC, def) }
	}
	return &DHCPService{opts: o, srv: srv}, nil
}

// machineLoader returns the loader of the longest entry matching mac, or def.
func machineLoader(ms []DHCPMachine, mac net.HardwareAddr, def dhcp.Loader) dhcp.Loader {
	best, l := -1, def
	for _, m := range ms {
		if len(m.MAC) > best && len(mac) == 6 && len(m.MAC) > 0 && bytes.HasPrefix(mac, m.MAC) {
			best, l = len(m.MAC), m.Loader
		}
	}
	return l
}

// onlyInterface returns the machine's one up, non-loopback interface with an IPv4 address.
func onlyInterface() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("bootserver: %w", err)
	}
	var names []string
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				names = append(names, ifi.Name)
				break
			}
		}
	}
	if len(names) != 1 {
		return "", fmt.Errorf("bootserver: DHCP needs an interface to answer on; the interfaces with IPv4 addresses are %q", names)
	}
	return names[0], nil
}

// Name returns "dhcp".
func (d *DHCPService) Name() string { return "dhcp" }

// Server returns the DHCP server, for its Stats.
func (d *DHCPService) Server() *dhcp.Server { return d.srv }

// Serve logs which mode runs on which interface and serves until Shutdown or Close.
func (d *DHCPService) Serve(context.Context) error {
	if l := d.opts.Logger; l != nil {
		attrs := []any{"mode", d.opts.Mode.String(), "interface", d.opts.Interface, "server", d.opts.ServerIP}
		if d.opts.Mode == DHCPServer {
			attrs = append(attrs, "range", d.opts.Lab.Start.String()+"-"+d.opts.Lab.End.String(), "leases", d.opts.Lab.LeaseFile)
		}
		l.Info("dhcp: answering "+map[DHCPMode]string{DHCPProxy: "PXE and HTTP boot clients as proxyDHCP", DHCPServer: "all clients as the lab's DHCP server"}[d.opts.Mode], attrs...)
	}
	if err := d.srv.ListenAndServe(); !errors.Is(err, dhcp.ErrServerClosed) {
		return fmt.Errorf("bootserver: %w", err)
	}
	return nil
}

// Shutdown stops the server.
func (d *DHCPService) Shutdown(ctx context.Context) error { return d.srv.Shutdown(ctx) }

// Close stops the server now.
func (d *DHCPService) Close() error { return d.srv.Close() }

var (
	_ Service = (*DHCPService)(nil)
	_ Service = (*HTTPServer)(nil)
)
