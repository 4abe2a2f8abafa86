package pxecfg

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Firmware is a kind of PXE client.
type Firmware int

// The firmwares BootFiles knows.
const (
	// BIOS clients load pxelinux.0, which loads ldlinux.c32 and its COM32 modules.
	BIOS Firmware = iota + 1
	// UEFI64 clients (x86-64, Secure Boot off) load syslinux.efi, which loads ldlinux.e64 and
	// the efi64 builds of the modules. Its modules share names with the BIOS ones, so BIOS and
	// UEFI64 need separate folders.
	UEFI64
	// UEFI64GRUB clients (x86-64, Secure Boot on or off) load Debian's signed shim as
	// bootx64.efi, which loads the signed GRUB network image as grubx64.efi, which reads
	// grub/grub.cfg.
	UEFI64GRUB
)

func (f Firmware) String() string {
	switch f {
	case BIOS:
		return "BIOS"
	case UEFI64:
		return "UEFI64"
	case UEFI64GRUB:
		return "UEFI64GRUB"
	}
	return "Firmware(" + strconv.Itoa(int(f)) + ")"
}

// BootFile is a boot loader file a TFTP root needs and where a distribution installs it.
type BootFile struct {
	Name    string // path under the boot loader's folder in the TFTP root, '/'-separated
	Source  string // absolute path of the installed file
	Package string // package that installs Source
	Install string // command that installs Package ("zypper install", "dnf install"); "" means apt-get install
}

// Where Debian 12 installs the boot loaders.
const (
	syslinuxModules = "/usr/lib/syslinux/modules"
	pkgCommon       = "syslinux-common"
)

// BootFiles returns the files a client of firmware fw needs to boot c: the boot loader, its
// core module, and for syslinux the UI module and any COM32 module c names. Modules' own
// library dependencies are found when [InstallBootFiles] reads them.
func BootFiles(fw Firmware, c *Config) ([]BootFile, error) {
	var files []BootFile
	var modDir string
	switch fw {
	case BIOS:
		modDir = syslinuxModules + "/bios"
		files = append(files,
			BootFile{Name: "pxelinux.0", Source: "/usr/lib/PXELINUX/pxelinux.0", Package: "pxelinux"},
			BootFile{Name: "ldlinux.c32", Source: modDir + "/ldlinux.c32", Package: pkgCommon})
	case UEFI64:
		modDir = syslinuxModules + "/efi64"
		files = append(files,
			BootFile{Name: "syslinux.efi", Source: "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi", Package: "syslinux-efi"},
			BootFile{Name: "ldlinux.e64", Source: modDir + "/ldlinux.e64", Package: pkgCommon})
	case UEFI64GRUB:
		// Debian's; [FindSignedLoader] looks up other distributions' and a folder.
		return SignedLoaders("x64")[0].Files(), nil
	default:
		return nil, fmt.Errorf("pxecfg: unknown firmware %v", fw)
	}
	if c == nil {
		return files, nil
	}
	add := func(name string) error {
		if !strings.HasSuffix(strings.ToLower(name), ".c32") {
			return nil
		}
		name = strings.TrimPrefix(name, "/")
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return fmt.Errorf("pxecfg: module %q leaves the TFTP root", name)
		}
		f := BootFile{Name: name, Source: modDir + "/" + path.Base(name), Package: pkgCommon}
		if !slices.Contains(files, f) {
			files = append(files, f)
		}
		return nil
	}
	def, _, _ := strings.Cut(c.Default, " ")
	names := []string{c.UI, def}
	for _, e := range c.Entries {
		names = append(names, e.Kernel)
	}
	for _, n := range names {
		if err := add(n); err != nil {
			return nil, err
		}
	}
	return files, nil
}

var _ error = (*MissingError)(nil)

// MissingError lists boot loader files that are not installed.
type MissingError struct {
	Files []BootFile
}

// Packages returns the packages to install, each once.
func (e *MissingError) Packages() []string {
	var pkgs []string
	for _, f := range e.Files {
		if !slices.Contains(pkgs, f.Package) {
			pkgs = append(pkgs, f.Package)
		}
	}
	return pkgs
}

// Commands returns the commands that install the missing packages, one per package manager.
func (e *MissingError) Commands() []string {
	var order []string
	pkgs := map[string][]string{}
	for _, f := range e.Files {
		in := f.Install
		if in == "" {
			in = installApt
		}
		if !slices.Contains(order, in) {
			order = append(order, in)
		}
		if !slices.Contains(pkgs[in], f.Package) {
			pkgs[in] = append(pkgs[in], f.Package)
		}
	}
	cmds := make([]string, len(order))
	for i, in := range order {
		cmds[i] = in + " " + strings.Join(pkgs[in], " ")
	}
	return cmds
}

func (e *MissingError) Error() string {
	parts := make([]string, len(e.Files))
	for i, f := range e.Files {
		kind := "Debian package"
		switch f.Install {
		case installZypper:
			kind = "SUSE package"
		case installDnf:
			kind = "Fedora/RHEL package"
		}
		parts[i] = fmt.Sprintf("%s (for %s, %s %s)", f.Source, f.Name, kind, f.Package)
	}
	return "pxecfg: missing boot loader files: " + strings.Join(parts, "; ") +
		"; install with: " + strings.Join(e.Commands(), "; ")
}

// InstallBootFiles copies files into dir, atomically each, and also the library modules that
// the COM32 modules among them link against (read from their ELF headers, such as libutil.c32
// for menu.c32). It copies every file it finds; if some are missing it returns a *MissingError
// naming them with their packages. It returns the names copied.
func InstallBootFiles(dir string, files []BootFile) ([]string, error) {
	var (
		copied  []string
		missing MissingError
		errs    []error
		seen    = map[string]bool{}
	)
	queue := slices.Clone(files)
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		if seen[f.Name] {
			continue
		}
		seen[f.Name] = true
		data, err := os.ReadFile(f.Source)
		if errors.Is(err, os.ErrNotExist) {
			missing.Files = append(missing.Files, f)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pxecfg: %w", err))
			continue
		}
		if err := writeFileAtomic(dir, f.Name, data, 0o644); err != nil {
			errs = append(errs, err)
			continue
		}
		copied = append(copied, f.Name)
		if isModule(f.Name) {
			deps, err := moduleDeps(f.Source)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, d := range deps {
				// Libraries are looked up in the folder of ldlinux, which is dir's top.
				queue = append(queue, BootFile{Name: d, Source: filepath.Join(filepath.Dir(f.Source), d), Package: f.Package, Install: f.Install})
			}
		}
	}
	if len(missing.Files) > 0 {
		errs = append(errs, &missing)
	}
	return copied, errors.Join(errs...)
}

func isModule(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".c32") || strings.HasSuffix(n, ".e64")
}

// moduleDeps returns the DT_NEEDED libraries of a syslinux module.
func moduleDeps(file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("pxecfg: module %s: %w", file, err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("pxecfg: module %s: %w", file, err)
	}
	return libs, nil
}
