package pxecfg

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// SignedLoader is a signed shim and the signed GRUB it loads, as one distribution installs
// them. Shim is signed by Microsoft's UEFI CA, so it boots with Secure Boot on (and off); it
// loads GRUB, signed by the distribution, from the folder it was loaded from under the name
// grubx64.efi (grubaa64.efi on arm64).
type SignedLoader struct {
	Distro string   // "debian", "suse", "fedora", "rhel", ... or "dir" for SignedOptions.Dir
	Arch   string   // "x64" or "aa64"
	Shim   BootFile // Name is bootx64.efi or bootaa64.efi
	GRUB   BootFile // Name is grubx64.efi or grubaa64.efi
	// GRUBConfig is where this GRUB reads its configuration when it is netbooted, relative to
	// the TFTP root; "" means beside the GRUB image. Debian's network image has the prefix
	// /grub on the TFTP server, so it reads grub/grub.cfg from the TFTP root (its built-in
	// config sources $prefix/x86_64-efi/grub.cfg if present, else $prefix/grub.cfg) whatever
	// folder shim and GRUB were loaded from.
	GRUBConfig string
}

// Files returns the shim and GRUB as BootFiles.
func (l SignedLoader) Files() []BootFile { return []BootFile{l.Shim, l.GRUB} }

// Install commands of the distributions' package managers.
const (
	installApt    = "apt-get install"
	installZypper = "zypper install"
	installDnf    = "dnf install"
)

// SignedLoaders returns where the distributions netroot knows install their signed shim and
// GRUB for arch ("x64" or "aa64"), Debian first.
func SignedLoaders(arch string) []SignedLoader {
	var (
		efiArch  string // UEFI's name: x64, aa64
		grubArch string // GRUB's platform: x86_64, arm64
		debArch  string // Debian's: amd64, arm64
		suseArch string // SUSE's folder: x86_64, aarch64
	)
	switch arch {
	case "x64":
		efiArch, grubArch, debArch, suseArch = "x64", "x86_64", "amd64", "x86_64"
	case "aa64":
		efiArch, grubArch, debArch, suseArch = "aa64", "arm64", "arm64", "aarch64"
	default:
		return nil
	}
	boot, grub := "boot"+efiArch+".efi", "grub"+efiArch+".efi"
	ls := []SignedLoader{{
		Distro:     "debian",
		Arch:       efiArch,
		Shim:       BootFile{boot, "/usr/lib/shim/shim" + efiArch + ".efi.signed", "shim-signed", installApt},
		GRUB:       BootFile{grub, "/usr/lib/grub/" + grubArch + "-efi-signed/grubnet" + efiArch + ".efi.signed", "grub-efi-" + debArch + "-signed", installApt},
		GRUBConfig: DefaultGRUBConfig,
	}}
	// SUSE: shim (signed by Microsoft) and grub.efi (signed by SUSE) from the packages shim
	// and grub2-<arch>-efi; older releases keep grub.efi under /usr/share/grub2.
	for _, g := range []string{"/usr/share/efi/" + suseArch + "/grub.efi", "/usr/share/grub2/" + grubArch + "-efi/grub.efi"} {
		ls = append(ls, SignedLoader{
			Distro: "suse",
			Arch:   efiArch,
			Shim:   BootFile{boot, "/usr/share/efi/" + suseArch + "/shim.efi", "shim", installZypper},
			GRUB:   BootFile{grub, g, "grub2-" + grubArch + "-efi", installZypper},
		})
	}
	// Fedora and the Red Hat family install shim-<arch> and grub2-efi-<arch> into the EFI
	// system partition under the vendor's folder.
	for _, v := range []struct{ distro, dir string }{
		{"fedora", "fedora"}, {"rhel", "redhat"}, {"centos", "centos"}, {"rocky", "rocky"}, {"almalinux", "almalinux"},
	} {
		ls = append(ls, SignedLoader{
			Distro: v.distro,
			Arch:   efiArch,
			Shim:   BootFile{boot, "/boot/efi/EFI/" + v.dir + "/shim" + efiArch + ".efi", "shim-" + efiArch, installDnf},
			GRUB:   BootFile{grub, "/boot/efi/EFI/" + v.dir + "/grub" + efiArch + ".efi", "grub2-efi-" + efiArch, installDnf},
		})
	}
	return ls
}

// SignedOptions configures [FindSignedLoader]. A nil *SignedOptions means the zero value.
type SignedOptions struct {
	// Dir, if set, is a folder holding the shim and GRUB to use instead of the installed ones,
	// under any of the names the distributions give them (shimx64.efi.signed, shimx64.efi,
	// shim.efi, bootx64.efi; grubnetx64.efi.signed, grubnetx64.efi, grubx64.efi.signed,
	// grubx64.efi, grub.efi).
	Dir string
	// Root is prepended to every installed path looked at, for a distribution's files
	// unpacked elsewhere (and tests); empty means "/".
	Root string
	// OSRelease is the os-release file naming the host distribution, whose package manager
	// the error for missing files names; empty means /etc/os-release under Root.
	OSRelease string
}

// FindSignedLoader returns the signed shim and GRUB for arch ("x64" or "aa64"): from
// opts.Dir when set, otherwise the first distribution's whose two files are both installed.
// When none is installed it returns a *MissingError naming the host distribution's packages
// and install command (apt-get, zypper or dnf).
func FindSignedLoader(arch string, opts *SignedOptions) (SignedLoader, error) {
	var o SignedOptions
	if opts != nil {
		o = *opts
	}
	known := SignedLoaders(arch)
	if known == nil {
		return SignedLoader{}, fmt.Errorf("pxecfg: unknown UEFI architecture %q (want x64 or aa64)", arch)
	}
	if o.Dir != "" {
		return signedFromDir(o.Dir, known[0])
	}
	root := func(p string) string { return filepath.Join("/", o.Root, p) }
	for _, l := range known {
		if exists(root(l.Shim.Source)) && exists(root(l.GRUB.Source)) {
			l.Shim.Source, l.GRUB.Source = root(l.Shim.Source), root(l.GRUB.Source)
			return l, nil
		}
	}
	rel := o.OSRelease
	if rel == "" {
		rel = root("/etc/os-release")
	}
	want := known[0]
	ids := osReleaseIDs(rel)
	for _, id := range ids {
		if i := slices.IndexFunc(known, func(l SignedLoader) bool {
			return l.Distro == id || id == "opensuse" && l.Distro == "suse" || id == "sles" && l.Distro == "suse"
		}); i >= 0 {
			want = known[i]
			break
		}
	}
	return want, &MissingError{Files: want.Files()}
}

// signedFromDir finds shim and GRUB in dir under the names the distributions use.
func signedFromDir(dir string, like SignedLoader) (SignedLoader, error) {
	a := like.Arch
	find := func(names ...string) (string, bool) {
		for _, n := range names {
			if p := filepath.Join(dir, n); exists(p) {
				return p, true
			}
		}
		return strings.Join(names, ", "), false
	}
	shim, okS := find("shim"+a+".efi.signed", "shim"+a+".efi", "shim.efi", "boot"+a+".efi")
	grub, okG := find("grubnet"+a+".efi.signed", "grubnet"+a+".efi", "grub"+a+".efi.signed", "grub"+a+".efi", "grub.efi")
	if !okS || !okG {
		var missing []string
		if !okS {
			missing = append(missing, "shim (one of "+shim+")")
		}
		if !okG {
			missing = append(missing, "GRUB (one of "+grub+")")
		}
		return SignedLoader{}, fmt.Errorf("pxecfg: boot loader folder %s has no %s", dir, strings.Join(missing, " and no "))
	}
	l := SignedLoader{Distro: "dir", Arch: a,
		Shim: BootFile{Name: like.Shim.Name, Source: shim},
		GRUB: BootFile{Name: like.GRUB.Name, Source: grub}}
	if strings.HasPrefix(filepath.Base(grub), "grubnet") {
		// Debian's and Ubuntu's network image.
		l.GRUBConfig = DefaultGRUBConfig
	}
	return l, nil
}

func exists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// osReleaseIDs returns ID and then ID_LIKE's words from an os-release file, or nothing.
func osReleaseIDs(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var id string
	var like []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "ID_LIKE":
			like = strings.Fields(v)
		}
	}
	if id != "" {
		return append([]string{id}, like...)
	}
	return like
}
