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

// BootFile is a boot loader file a TFTP root needs and where Debian installs it.
type BootFile struct {
	Name    string // path under the boot loader's folder in the TFTP root, '/'-separated
	Source  string // absolute path of the installed file
	Package string // Debian package that installs Source
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
			BootFile{"pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"},
			BootFile{"ldlinux.c32", modDir + "/ldlinux.c32", pkgCommon})
	case UEFI64:
		modDir = syslinuxModules + "/efi64"
		files = append(files,
			BootFile{"syslinux.efi", "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi", "syslinux-efi"},
			BootFile{"ldlinux.e64", modDir + "/ldlinux.e64", pkgCommon})
	case UEFI64GRUB:
		return []BootFile{
			{"bootx64.efi", "/usr/lib/shim/shimx64.efi.signed", "shim-signed"},
			{"grubx64.efi", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub-efi-amd64-signed"},
		}, nil
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
		f := BootFile{name, modDir + "/" + path.Base(name), pkgCommon}
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

// Packages returns the Debian packages to install, each once.
func (e *MissingError) Packages() []string {
	var pkgs []string
	for _, f := range e.Files {
		if !slices.Contains(pkgs, f.Package) {
			pkgs = append(pkgs, f.Package)
		}
	}
	return pkgs
}

func (e *MissingError) Error() string {
	parts := make([]string, len(e.Files))
	for i, f := range e.Files {
		parts[i] = fmt.Sprintf("%s (for %s, Debian package %s)", f.Source, f.Name, f.Package)
	}
	return "pxecfg: missing boot loader files: " + strings.Join(parts, "; ") +
		"; install with: apt-get install " + strings.Join(e.Packages(), " ")
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
				queue = append(queue, BootFile{d, filepath.Join(filepath.Dir(f.Source), d), f.Package})
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
