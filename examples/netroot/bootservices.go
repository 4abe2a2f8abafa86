package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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
	efiLoader string
	ipxeDir   string
}

func (b *bootFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.dhcp, "dhcp", "off", "answer DHCP: off (the site's DHCP server sends next-server and the boot file), proxy (proxyDHCP beside the site's DHCP server: PXE and HTTP boot clients only, no addresses), server (full DHCP server for an isolated lab: needs -dhcp-range)")
	fs.StringVar(&b.dhcpIface, "dhcp-iface", "", "interface to answer DHCP on (default: the only one with an IPv4 address)")
	fs.StringVar(&b.loader, "dhcp-loader", "auto", "boot loader the DHCP answers send machines to: auto (iPXE clients boot.ipxe over HTTP, BIOS pxelinux.0, UEFI PXE -efi-loader, UEFI HTTP boot iPXE), pxelinux, shim, ipxe or none; a machine's loader in -machines overrides it")
	fs.StringVar(&b.dhcpRange, "dhcp-range", "", "with -dhcp server: addresses to hand out, FIRST-LAST, such as 192.0.2.100-192.0.2.199")
	fs.StringVar(&b.dhcpNet, "dhcp-subnet", "", "with -dhcp server: the clients' subnet, such as 192.0.2.0/24 (default: -server-ip's /24)")
	fs.StringVar(&b.dhcpRtr, "dhcp-router", "", "with -dhcp server: default gateway sent to clients (default: none)")
	fs.StringVar(&b.leaseFile, "dhcp-lease-file", "", "with -dhcp server: file keeping the leases across restarts (default: memory only)")
	fs.DurationVar(&b.leaseTime, "dhcp-lease-time", dhcp.DefaultLeaseTime, "with -dhcp server: lease time")
	fs.StringVar(&b.httpAddr, "http-addr", "", "serve the TFTP root read-only over HTTP on this address, for iPXE and UEFI HTTP boot (default :80 when -dhcp is on, else off)")
	fs.StringVar(&b.efiDir, "efi-loaders", "", "take the signed shim and GRUB for UEFI (Secure Boot) from this folder instead of the installed packages")
	fs.StringVar(&b.efiLoader, "efi-loader", "shim", "boot loader -dhcp sends x86-64 UEFI PXE clients to: shim (signed shim, then GRUB: boots with Secure Boot on; but Debian's GRUB takes its TFTP server from the site DHCP server's next-server, not from -dhcp proxy, so with -dhcp proxy set next-server to -server-ip there) or ipxe (iPXE's snponly.efi: works with -dhcp proxy alone and loads everything over HTTP, but is unsigned, so Secure Boot must be off). UEFI HTTP boot clients get iPXE either way; a machine's loader in -machines overrides both")
	fs.StringVar(&b.ipxeDir, "ipxe-loaders", "", "take iPXE (snponly.efi or ipxe.efi, and undionly.kpxe) from this folder instead of the installed package (Debian ipxe)")
}

// installIPXE copies iPXE for UEFI and BIOS into the TFTP root as snponly.efi and
// undionly.kpxe, from -ipxe-loaders or the host's package. It reports whether it did; a
// missing iPXE is an error only when required.
func (b *bootFlags) installIPXE(e *env, tftpRoot, sysroot string, required bool) (bool, error) {
	l, err := pxecfg.FindIPXE(&pxecfg.SignedOptions{Dir: b.ipxeDir, Root: sysroot})
	if err == nil {
		var copied []string
		if copied, err = pxecfg.InstallBootFiles(tftpRoot, l.Files()); err == nil {
			e.log.Info("installed iPXE", "from", l.Distro, "efi", l.EFI.Source, "bios", l.BIOS.Source, "files", copied)
			return true, nil
		}
	}
	if required {
		return false, fmt.Errorf("%w (or pass -ipxe-loaders DIR)", err)
	}
	e.log.Debug("iPXE not installed: UEFI HTTP boot clients get shim", "err", err)
	return false, nil
}

// check reports a usage error in the mode and loader flags, before serve touches the TFTP root.
func (b *bootFlags) check() error {
	if b.dhcp != "" {
		if _, err := bootserver.ParseDHCPMode(b.dhcp); err != nil {
			return usageError{err}
		}
	}
	if _, ok := dhcp.ParseLoader(b.loader); !ok {
		return usageError{fmt.Errorf("-dhcp-loader %q: want auto, pxelinux, shim, ipxe or none", b.loader)}
	}
	switch b.efiLoader {
	case "", "shim", "ipxe":
	default:
		return usageError{fmt.Errorf("-efi-loader %q: want shim or ipxe", b.efiLoader)}
	}
	return nil
}

// ipxeInRoot reports whether the TFTP root holds iPXE for UEFI.
func ipxeInRoot(tftpRoot string) bool {
	fi, err := os.Stat(filepath.Join(tftpRoot, pxecfg.IPXEEFIName))
	return err == nil && fi.Mode().IsRegular()
}

// ipxeRequired reports whether the flags send some clients to iPXE binaries.
func (b *bootFlags) ipxeRequired() bool {
	return b.dhcp != "" && b.dhcp != "off" && (b.efiLoader == "ipxe" || b.loader == "ipxe")
}

// installSignedLoaders copies the signed shim and GRUB into the TFTP root as bootx64.efi and
// grubx64.efi, from -efi-loaders or the host's packages. Without them UEFI clients cannot
// boot; that is an error only when the proxyDHCP would send them there. With -dhcp proxy
// and -efi-loader shim it warns when the GRUB is Debian's, which ignores proxyDHCP.
func (b *bootFlags) installSignedLoaders(e *env, tftpRoot, sysroot string, required bool, serverIP netip.Addr) error {
	l, err := pxecfg.FindSignedLoader("x64", &pxecfg.SignedOptions{Dir: b.efiDir, Root: sysroot})
	if err == nil {
		var copied []string
		copied, err = pxecfg.InstallBootFiles(tftpRoot, l.Files())
		if err == nil {
			e.log.Info("installed UEFI boot loaders", "from", l.Distro, "shim", l.Shim.Source, "grub", l.GRUB.Source, "files", copied, "grub_config", l.GRUBConfig)
			if l.GRUBConfig != "" && l.GRUBConfig != pxecfg.DefaultGRUBConfig {
				e.log.Warn("this GRUB reads its configuration elsewhere than grub/grub.cfg", "grub_config", l.GRUBConfig)
			}
			if b.dhcp == "proxy" && b.efiLoader == "shim" && l.GRUBConfig == pxecfg.DefaultGRUBConfig {
				// GRUB bug #55636: Debian's GRUB 2.06 lacks Fedora's "efinet: Add DHCP
				// proxy support" patch.
				e.log.Warn("Debian's GRUB reads its configuration from the TFTP server the site's DHCP server names (next-server), not from this proxyDHCP: UEFI PXE clients boot only if the site's DHCP server sends next-server "+serverIP.String()+"; or use -efi-loader ipxe for machines with Secure Boot off", "grub", l.GRUB.Source)
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

// services returns the HTTP and DHCP servers serve runs, as the flags ask. machines are the
// -machines file's, whose loaders the DHCP server follows; ipxe says whether iPXE is in the
// TFTP root (installIPXE).
func (b *bootFlags) services(e *env, serverIP netip.Addr, tftpRoot string, machines []bootserver.Machine, ipxe bool) (*bootserver.HTTPServer, *bootserver.DHCPService, error) {
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
	var efiLoader dhcp.Loader
	switch b.efiLoader {
	case "", "shim":
		efiLoader = dhcp.LoaderShim
	case "ipxe":
		efiLoader = dhcp.LoaderIPXE
	default:
		return nil, nil, usageError{fmt.Errorf("-efi-loader %q: want shim or ipxe", b.efiLoader)}
	}
	dm, err := bootserver.DHCPMachines(machines)
	if err != nil {
		return nil, nil, err
	}
	o := bootserver.DHCPOptions{
		Mode: mode, Interface: b.dhcpIface, ServerIP: serverIP, HTTPURL: httpURL, Loader: loader,
		EFILoader: efiLoader, Machines: dm, Logger: e.log.With("proto", "dhcp"),
	}
	if ipxe {
		o.Loaders.IPXEX64, o.Loaders.IPXEBIOS = pxecfg.IPXEEFIName, pxecfg.IPXEBIOSName
	} else if efiLoader == dhcp.LoaderIPXE {
		return nil, nil, usageError{errors.New("-efi-loader ipxe needs iPXE in the TFTP root: install Debian's ipxe package or pass -ipxe-loaders DIR")}
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
