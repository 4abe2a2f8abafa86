package pxecfg

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/netroot/netroot/internal/atomicfile"
)

// Format selects the files [WriteDir] writes.
type Format uint

// The formats; FormatAll is all of them.
const (
	FormatPXELinux Format = 1 << iota // pxelinux.cfg/… for pxelinux.0 and syslinux.efi
	FormatGRUB                        // grub/grub.cfg for GRUB's network image
	FormatIPXE                        // boot.ipxe
	FormatAll      = FormatPXELinux | FormatGRUB | FormatIPXE
)

// Default file names under the TFTP root.
const (
	DefaultGRUBConfig = "grub/grub.cfg"
	DefaultIPXEScript = "boot.ipxe"
)

// DirOptions configures [WriteDir]. A nil *DirOptions means the zero value.
type DirOptions struct {
	// Formats selects what to write; zero means FormatAll without Clients and FormatPXELinux
	// with them.
	Formats Format
	// Clients, when set, makes WriteDir write one pxelinux file per client (named by
	// [Client.ConfigName]) instead of pxelinux.cfg/default. GRUB and iPXE have no per-client
	// file here, so Formats may then only hold FormatPXELinux.
	Clients []Client
	// GRUBConfig and IPXEScript are the paths under root; empty means DefaultGRUBConfig and
	// DefaultIPXEScript.
	GRUBConfig string
	IPXEScript string
	// Mode is the files' permission; zero means 0644 (TFTP servers read as another user).
	Mode fs.FileMode
}

// defaultPaths fills in the config paths and the file mode left empty.
func (o *DirOptions) defaultPaths() {
	if o.GRUBConfig == "" {
		o.GRUBConfig = DefaultGRUBConfig
	}
	if o.IPXEScript == "" {
		o.IPXEScript = DefaultIPXEScript
	}
	if o.Mode == 0 {
		o.Mode = 0o644
	}
}

// WriteDir writes the boot configurations for c under root, the TFTP root (or the directory
// of pxelinux.0 when it is not at the root), and returns the paths written, relative to root.
// Every file is rendered and validated before any is written, and each is written to a
// temporary file in its folder, synced and renamed into place, so a client never reads half a
// file and an invalid Config changes nothing.
func WriteDir(root string, c *Config, opts *DirOptions) ([]string, error) {
	var o DirOptions
	if opts != nil {
		o = *opts
	}
	if o.Formats == 0 {
		o.Formats = FormatAll
		if len(o.Clients) > 0 {
			o.Formats = FormatPXELinux
		}
	}
	if len(o.Clients) > 0 && o.Formats != FormatPXELinux {
		return nil, fmt.Errorf("pxecfg: per-client files are pxelinux only, but formats %#x were asked for", o.Formats)
	}
	o.defaultPaths()
	type file struct {
		name string
		data []byte
	}
	var files []file
	render := func(name string, write func(io.Writer, *Config) error) error {
		var b bytes.Buffer
		if err := write(&b, c); err != nil {
			return err
		}
		files = append(files, file{name, b.Bytes()})
		return nil
	}
	if o.Formats&FormatPXELinux != 0 {
		names := []string{ConfigDir + "/default"}
		if len(o.Clients) > 0 {
			names = names[:0]
			for _, cl := range o.Clients {
				n, err := cl.ConfigName()
				if err != nil {
					return nil, err
				}
				names = append(names, n)
			}
		}
		for _, n := range names {
			if err := render(n, WritePXELinux); err != nil {
				return nil, err
			}
		}
	}
	if o.Formats&FormatGRUB != 0 {
		if err := render(o.GRUBConfig, WriteGRUB); err != nil {
			return nil, err
		}
	}
	if o.Formats&FormatIPXE != 0 {
		if err := render(o.IPXEScript, WriteIPXE); err != nil {
			return nil, err
		}
	}
	var written []string
	for _, f := range files {
		if err := writeFileAtomic(root, f.name, f.data, o.Mode); err != nil {
			return written, err
		}
		written = append(written, f.name)
	}
	return written, nil
}

// writeFileAtomic writes data to root/name through a temporary file in the same folder, a
// sync and a rename, which replaces the old file in one step.
func writeFileAtomic(root, name string, data []byte, mode fs.FileMode) error {
	if !filepath.IsLocal(filepath.FromSlash(name)) {
		return fmt.Errorf("pxecfg: file name %q leaves the root", name)
	}
	dst := filepath.Join(root, filepath.FromSlash(name))
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pxecfg: %w", err)
	}
	if err := atomicfile.WriteFile(dst, data, mode); err != nil {
		return fmt.Errorf("pxecfg: %w", err)
	}
	return nil
}
