package pxecfg

import (
	"fmt"
	"path/filepath"
	"slices"
)

// Names of the iPXE binaries in the TFTP root.
const (
	// IPXEEFIName is iPXE for x86-64 UEFI built to drive the network card through the
	// firmware's own driver (SNP), so it works on any card the firmware can boot from.
	IPXEEFIName = "snponly.efi"
	// IPXEBIOSName is iPXE for BIOS PXE ROMs, driving the card through the ROM's UNDI.
	IPXEBIOSName = "undionly.kpxe"
)

// IPXELoader is the iPXE binaries one distribution installs. They are not signed: UEFI with
// Secure Boot on refuses EFI.
type IPXELoader struct {
	Distro string   // "debian", "fedora", or "dir" for SignedOptions.Dir
	EFI    BootFile // x86-64 UEFI, named IPXEEFIName
	BIOS   BootFile // BIOS, named IPXEBIOSName
}

// Files returns the two binaries as BootFiles.
func (l IPXELoader) Files() []BootFile { return []BootFile{l.EFI, l.BIOS} }

// IPXELoaders returns where the distributions netroot knows install iPXE, Debian first.
func IPXELoaders() []IPXELoader {
	return []IPXELoader{{
		Distro: "debian",
		EFI:    BootFile{IPXEEFIName, "/usr/lib/ipxe/snponly.efi", "ipxe", installApt},
		BIOS:   BootFile{IPXEBIOSName, "/usr/lib/ipxe/undionly.kpxe", "ipxe", installApt},
	}, {
		Distro: "fedora",
		EFI:    BootFile{IPXEEFIName, "/usr/share/ipxe/ipxe-snponly-x86_64.efi", "ipxe-bootimgs-x86", installDnf},
		BIOS:   BootFile{IPXEBIOSName, "/usr/share/ipxe/undionly.kpxe", "ipxe-bootimgs-x86", installDnf},
	}}
}

// FindIPXE returns the iPXE binaries: from opts.Dir when set (snponly.efi, or ipxe.efi, and
// undionly.kpxe), otherwise the first distribution's that are installed. When none are it
// returns a *MissingError naming the host distribution's package and install command.
func FindIPXE(opts *SignedOptions) (IPXELoader, error) {
	var o SignedOptions
	if opts != nil {
		o = *opts
	}
	known := IPXELoaders()
	if o.Dir != "" {
		l := IPXELoader{Distro: "dir"}
		for _, n := range []string{"snponly.efi", "ipxe.efi"} {
			if p := filepath.Join(o.Dir, n); exists(p) {
				l.EFI = BootFile{Name: IPXEEFIName, Source: p}
				break
			}
		}
		if p := filepath.Join(o.Dir, "undionly.kpxe"); exists(p) {
			l.BIOS = BootFile{Name: IPXEBIOSName, Source: p}
		}
		if l.EFI.Source == "" || l.BIOS.Source == "" {
			return IPXELoader{}, fmt.Errorf("pxecfg: iPXE folder %s needs snponly.efi (or ipxe.efi) and undionly.kpxe", o.Dir)
		}
		return l, nil
	}
	root := func(p string) string { return filepath.Join("/", o.Root, p) }
	for _, l := range known {
		if exists(root(l.EFI.Source)) && exists(root(l.BIOS.Source)) {
			l.EFI.Source, l.BIOS.Source = root(l.EFI.Source), root(l.BIOS.Source)
			return l, nil
		}
	}
	rel := o.OSRelease
	if rel == "" {
		rel = root("/etc/os-release")
	}
	want := known[0]
	for _, id := range osReleaseIDs(rel) {
		if i := slices.IndexFunc(known, func(l IPXELoader) bool {
			return l.Distro == id || id == "rhel" && l.Distro == "fedora"
		}); i >= 0 {
			want = known[i]
			break
		}
	}
	return want, &MissingError{Files: want.Files()}
}
