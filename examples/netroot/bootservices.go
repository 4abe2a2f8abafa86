package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/dhcp"
	"github.com/netroot/netroot/pxecfg"
)

// bootFlags are serve's flags for booting any firmware: DHCP, HTTP and the signed UEFI loaders.
type bootFlags struct {
	dhcp      string
	dhcpIface string
	loader    string
	dhcpRange string
	dhcpNet   string
	dhcpRtr   string
	leaseFile string
	leaseTime time.Duration
	httpAddr  string
	efiDir    string
}

func (b *bootFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.dhcp, "dhcp", "off", "answer DHCP: off (the site's DHCP server sends next-server and the boot file), proxy (proxyDHCP beside the site's DHCP server: PXE and HTTP boot clients only, no addresses), server (full DHCP server for an isolated lab: needs -dhcp-range)")
	fs.StringVar(&b.dhcpIface, "dhcp-iface", "", "interface to answer DHCP on (default: the only one with an IPv4 address)")
	fs.StringVar(&b.loader, "dhcp-loader", "auto", "boot loader the DHCP answers send machines to: auto (iPXE clients boot.ipxe over HTTP, BIOS pxelinux.0, UEFI shim and GRUB), pxelinux, shim, ipxe or none")
	fs.StringVar(&b.dhcpRange, "dhcp-range", "", "with -dhcp server: addresses to hand out, FIRST-LAST, such as 192.0.2.100-192.0.2.199")
	fs.StringVar(&b.dhcpNet, "dhcp-subnet", "", "with -dhcp server: the clients' subnet, such as 192.0.2.0/24 (default: -server-ip's /24)")
	fs.StringVar(&b.dhcpRtr, "dhcp-router", "", "with -dhcp server: default gateway sent to clients (default: none)")
	fs.StringVar(&b.leaseFile, "dhcp-lease-file", "", "with -dhcp server: file keeping the leases across restarts (default: memory only)")
	fs.DurationVar(&b.leaseTime, "dhcp-lease-time", dhcp.DefaultLeaseTime, "with -dhcp server: lease time")
	fs.StringVar(&b.httpAddr, "http-addr", "", "serve the TFTP root read-only over HTTP on this address, for iPXE and UEFI HTTP boot (default :80 when -dhcp is on, else off)")
	fs.StringVar(&b.efiDir, "efi-loaders", "", "take the signed shim and GRUB for UEFI (Secure Boot) from this folder instead of the installed packages")
}

// installSignedLoaders copies the signed shim and GRUB into the TFTP root as bootx64.efi and
// grubx64.efi, from -efi-loaders or the host's packages. Without them UEFI clients cannot
// boot; that is an error only when the proxyDHCP would send them there.
func (b *bootFlags) installSignedLoaders(e *env, tftpRoot, sysroot string, required bool) error {
	l, err := pxecfg.FindSignedLoader("x64", &pxecfg.SignedOptions{Dir: b.efiDir, Root: sysroot})
	if err == nil {
		var copied []string
		copied, err = pxecfg.InstallBootFiles(tftpRoot, l.Files())
		if err == nil {
			e.log.Info("installed UEFI boot loaders", "from", l.Distro, "shim", l.Shim.Source, "grub", l.GRUB.Source, "files", copied, "grub_config", l.GRUBConfig)
			if l.GRUBConfig != "" && l.GRUBConfig != pxecfg.DefaultGRUBConfig {
				e.log.Warn("this GRUB reads its configuration elsewhere than grub/grub.cfg", "grub_config", l.GRUBConfig)
			}
			return nil
		}
	}
	if required {
		return fmt.Errorf("%w (or pass -efi-loaders DIR)", err)
	}
	e.log.Warn("signed UEFI boot loaders missing: UEFI clients cannot boot from this TFTP root", "err", err)
	return nil
}

// services returns the HTTP and DHCP servers serve runs, as the flags ask.
func (b *bootFlags) services(e *env, serverIP netip.Addr, tftpRoot string) (*bootserver.HTTPServer, *bootserver.DHCPService, error) {
	mode := bootserver.DHCPOff
	if b.dhcp != "" {
		m, err := bootserver.ParseDHCPMode(b.dhcp)
		if err != nil {
			return nil, nil, usageError{err}
		}
		mode = m
	}
	httpAddr := b.httpAddr
	if httpAddr == "" && mode != bootserver.DHCPOff {
		httpAddr = ":80"
	}
	var hs *bootserver.HTTPServer
	httpURL := ""
	if httpAddr != "" {
		port, err := parsePort("-http-addr", httpAddr)
		if err != nil {
			return nil, nil, err
		}
		hs = &bootserver.HTTPServer{Root: tftpRoot, Addr: httpAddr, Logger: e.log.With("proto", "http")}
		if serverIP.IsValid() {
			httpURL = "http://" + serverIP.String()
			if port != 80 {
				httpURL = "http://" + net.JoinHostPort(serverIP.String(), strconv.Itoa(port))
			}
		}
	}
	if mode == bootserver.DHCPOff {
		return hs, nil, nil
	}
	if !serverIP.IsValid() {
		return nil, nil, usageError{errors.New("-dhcp needs -server-ip: clients load their boot files from it")}
	}
	loader, ok := dhcp.ParseLoader(b.loader)
	if !ok {
		return nil, nil, usageError{fmt.Errorf("-dhcp-loader %q: want auto, pxelinux, shim, ipxe or none", b.loader)}
	}
	o := bootserver.DHCPOptions{
		Mode: mode, Interface: b.dhcpIface, ServerIP: serverIP, HTTPURL: httpURL, Loader: loader,
		Logger: e.log.With("proto", "dhcp"),
	}
	if mode == bootserver.DHCPServer {
		if b.dhcpRange == "" {
			return nil, nil, usageError{errors.New("-dhcp server needs -dhcp-range FIRST-LAST")}
		}
		first, last, err := bootserver.ParseRange(b.dhcpRange)
		if err != nil {
			return nil, nil, usageError{err}
		}
		subnet := netip.PrefixFrom(serverIP, 24).Masked()
		if b.dhcpNet != "" {
			if subnet, err = netip.ParsePrefix(b.dhcpNet); err != nil {
				return nil, nil, usageError{fmt.Errorf("-dhcp-subnet %q: %w", b.dhcpNet, err)}
			}
		}
		lab := &dhcp.Lab{Subnet: subnet, Start: first, End: last, LeaseTime: b.leaseTime, LeaseFile: b.leaseFile}
		if b.dhcpRtr != "" {
			if lab.Router, err = netip.ParseAddr(b.dhcpRtr); err != nil {
				return nil, nil, usageError{fmt.Errorf("-dhcp-router %q: %w", b.dhcpRtr, err)}
			}
		}
		o.Lab = lab
	}
	ds, err := bootserver.NewDHCPService(o)
	if err != nil {
		return nil, nil, err
	}
	return hs, ds, nil
}
