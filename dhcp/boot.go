package dhcp

import (
	"net"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Loader is the boot loader a machine is sent to.
type Loader int

// The loaders. LoaderAuto picks by the client's firmware: iPXE clients get the iPXE script,
// BIOS clients pxelinux, x86-64 UEFI PXE clients shim (or iPXE: [Server.EFILoader]), x86-64
// UEFI HTTP boot clients iPXE when [Loaders.IPXEX64] is set (shim otherwise), arm64 UEFI
// clients shim.
const (
	LoaderAuto Loader = iota
	// LoaderNone answers the machine nothing, so another server (or its next boot option) boots it.
	LoaderNone
	// LoaderPXELinux sends BIOS clients to pxelinux.0. UEFI clients are not answered.
	LoaderPXELinux
	// LoaderShim sends UEFI clients to shim, which loads GRUB (Secure Boot on or off). BIOS
	// clients are not answered.
	LoaderShim
	// LoaderIPXE sends iPXE clients to the iPXE script over HTTP, and other clients to the iPXE
	// binary for their firmware ([Loaders.IPXEBIOS], [Loaders.IPXEX64]), which then asks again
	// as iPXE. The iPXE binaries are not signed: UEFI with Secure Boot on refuses them.
	LoaderIPXE
)

func (l Loader) String() string {
	switch l {
	case LoaderAuto:
		return "auto"
	case LoaderNone:
		return "none"
	case LoaderPXELinux:
		return "pxelinux"
	case LoaderShim:
		return "shim"
	case LoaderIPXE:
		return "ipxe"
	}
	return "Loader(" + strconv.Itoa(int(l)) + ")"
}

// ParseLoader parses a Loader's String form; the empty string is LoaderAuto.
func ParseLoader(s string) (Loader, bool) {
	if s == "" {
		return LoaderAuto, true
	}
	for l := LoaderAuto; l <= LoaderIPXE; l++ {
		if strings.EqualFold(s, l.String()) {
			return l, true
		}
	}
	return 0, false
}

// Loaders names the boot files, as paths in the TFTP root (which the HTTP server serves too).
// An empty field means its default; ARM64 and the iPXE binaries have none, and clients that
// would need them are not answered.
type Loaders struct {
	PXELinux   string // BIOS; default DefaultPXELinux
	ShimX64    string // x86-64 UEFI; default DefaultShimX64 (GRUB beside it as grubx64.efi)
	ShimARM64  string // arm64 UEFI, for example "bootaa64.efi"
	IPXEScript string // fetched by iPXE over HTTP; default DefaultIPXEScript
	IPXEBIOS   string // iPXE for BIOS PXE ROMs, for example "undionly.kpxe"
	IPXEX64    string // iPXE for x86-64 UEFI, for example "snponly.efi"
}

// Default boot file names.
const (
	DefaultPXELinux   = "pxelinux.0"
	DefaultShimX64    = "bootx64.efi"
	DefaultIPXEScript = "boot.ipxe"
)

func (l Loaders) withDefaults() Loaders {
	if l.PXELinux == "" {
		l.PXELinux = DefaultPXELinux
	}
	if l.ShimX64 == "" {
		l.ShimX64 = DefaultShimX64
	}
	if l.IPXEScript == "" {
		l.IPXEScript = DefaultIPXEScript
	}
	return l
}

// Client is what a boot request says about the machine that sent it.
type Client struct {
	MAC      net.HardwareAddr
	Arch     iana.Arch // client system architecture (option 93, or the vendor class)
	HasArch  bool      // whether the client named its architecture
	Firmware Firmware  // FirmwareOf(Arch), or FirmwareUnknown
	Class    string    // vendor class identifier (option 60)
	IPXE     bool      // user class (option 77) "iPXE"
	UUID     []byte    // client machine identifier (option 97), echoed in replies
}

// BootClient reports whether the class is a PXE or HTTP boot client's, the only clients a
// proxyDHCP answers.
func (c *Client) BootClient() bool {
	return strings.HasPrefix(c.Class, ClassPXE) || strings.HasPrefix(c.Class, ClassHTTP)
}

// HTTPClient reports whether the client is a UEFI HTTP boot client, which wants "HTTPClient"
// back in option 60 and a URL as its boot file.
func (c *Client) HTTPClient() bool { return strings.HasPrefix(c.Class, ClassHTTP) }

func clientOf(req *dhcpv4.DHCPv4) *Client {
	c := &Client{
		MAC:   req.ClientHWAddr,
		Class: req.ClassIdentifier(),
		UUID:  req.GetOneOption(dhcpv4.OptionClientMachineIdentifier),
	}
	if archs := req.ClientArch(); len(archs) > 0 {
		c.Arch, c.HasArch = archs[0], true
	} else if a, ok := archFromClass(c.Class); ok {
		c.Arch, c.HasArch = a, true
	}
	if c.HasArch {
		c.Firmware = FirmwareOf(c.Arch)
	}
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			c.IPXE = true
		}
	}
	return c
}

// bootFile returns the file field for client c booted with loader l: a path in the TFTP root,
// or a URL for HTTP clients and iPXE. efi is what LoaderAuto means for x86-64 UEFI PXE
// clients (LoaderShim or LoaderIPXE). It returns "" when l cannot boot c.
func bootFile(l Loader, c *Client, files Loaders, httpBase string, efi Loader) string {
	url := func(p string) string {
		if p == "" {
			return ""
		}
		return strings.TrimSuffix(httpBase, "/") + "/" + strings.TrimPrefix(p, "/")
	}
	if l == LoaderAuto {
		switch {
		case c.IPXE:
			l = LoaderIPXE
		case c.Firmware == FirmwareBIOS:
			l = LoaderPXELinux
		case c.Firmware == FirmwareEFIX64 && efi == LoaderIPXE:
			l = LoaderIPXE
		case c.Firmware == FirmwareEFIX64HTTP && files.IPXEX64 != "":
			// Shim over HTTP boot loads GRUB, but Debian's GRUB then looks for its
			// configuration over TFTP; iPXE fetches everything over HTTP.
			l = LoaderIPXE
		default:
			l = LoaderShim
		}
	}
	switch l {
	case LoaderPXELinux:
		if c.Firmware == FirmwareBIOS {
			return files.PXELinux
		}
	case LoaderShim:
		switch c.Firmware {
		case FirmwareEFIX64:
			return files.ShimX64
		case FirmwareEFIARM64:
			return files.ShimARM64
		case FirmwareEFIX64HTTP:
			return url(files.ShimX64)
		case FirmwareEFIARM64HTTP:
			return url(files.ShimARM64)
		}
	case LoaderIPXE:
		if c.IPXE {
			return url(files.IPXEScript)
		}
		switch c.Firmware {
		case FirmwareBIOS:
			return files.IPXEBIOS
		case FirmwareEFIX64:
			return files.IPXEX64
		case FirmwareEFIX64HTTP:
			return url(files.IPXEX64)
		}
	}
	return ""
}
