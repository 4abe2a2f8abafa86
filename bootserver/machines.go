package bootserver

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Machine gives one machine, or a group of machines by MAC prefix, its own image and kernel
// options. Machines get boot configs of their own for pxelinux, GRUB and iPXE; every other
// machine gets the default image.
type Machine struct {
	// MAC is the machine's hardware address (6 bytes), or its first 1 to 5 bytes for every
	// machine whose address starts with them (52:54:00 for QEMU guests). The longest match
	// wins.
	MAC net.HardwareAddr
	// Image is an image name or build ID, as Server.Image; "" means the default image.
	Image string
	// Append are extra kernel options, after BootOptions.Append.
	Append string
	// Name is a note for people (logs, menu title).
	Name string
	// Loader is the boot loader a DHCP service offers the machine: "" or "auto" (by its
	// firmware), "pxelinux", "shim", "ipxe" or "none". The boot configs do not depend on it.
	Loader string
}

// Prefix reports whether m names a group of machines rather than one.
func (m Machine) Prefix() bool { return len(m.MAC) < 6 }

// Matches reports whether the machine with hardware address mac is m (or in m's group).
func (m Machine) Matches(mac net.HardwareAddr) bool {
	return len(m.MAC) > 0 && len(mac) == 6 && bytes.HasPrefix(mac, m.MAC)
}

func (m Machine) validate() error {
	if len(m.MAC) == 0 || len(m.MAC) > 6 {
		return fmt.Errorf("MAC %q: want 1 to 6 bytes", m.MAC.String())
	}
	return nil
}

// dashed renders the address as pxelinux names files: 52-54-00-12-34-56.
func dashed(mac net.HardwareAddr) string {
	return strings.ReplaceAll(mac.String(), ":", "-")
}

// machinesFile is the TOML form.
type machinesFile struct {
	Machine []struct {
		MAC    string `toml:"mac"`
		Image  string `toml:"image"`
		Append string `toml:"append"`
		Name   string `toml:"name"`
		Loader string `toml:"loader"`
	} `toml:"machine"`
}

// ParseMachines reads a machines file (TOML):
//
//	[[machine]]
//	mac = "52:54:00:12:34:56"     # one machine
//	image = "leap-diskless"       # image name or build ID; default image when left out
//	append = "console=ttyS1"
//	loader = "ipxe"               # for a DHCP service: auto, pxelinux, shim, ipxe, none
//
//	[[machine]]
//	mac = "52:54:00"              # every machine whose MAC starts so
//	image = "leap-diskless.x86_64-1.15.3"
func ParseMachines(data []byte) ([]Machine, error) {
	var f machinesFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("bootserver: machines: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("bootserver: machines: unknown setting %q (want mac, image, append, loader, name)", und[0].String())
	}
	var out []Machine
	seen := map[string]int{}
	for i, m := range f.Machine {
		mac, err := parseMACPrefix(m.MAC)
		if err != nil {
			return nil, fmt.Errorf("bootserver: machines: machine %d: %w", i+1, err)
		}
		if j, dup := seen[mac.String()]; dup {
			return nil, fmt.Errorf("bootserver: machines: machines %d and %d both have MAC %s", j+1, i+1, mac)
		}
		seen[mac.String()] = i
		switch m.Loader {
		case "", "auto", "pxelinux", "shim", "ipxe", "none":
		default:
			return nil, fmt.Errorf("bootserver: machines: machine %d (%s): loader %q: want auto, pxelinux, shim, ipxe or none", i+1, mac, m.Loader)
		}
		out = append(out, Machine{MAC: mac, Image: m.Image, Append: m.Append, Name: m.Name, Loader: m.Loader})
	}
	return out, nil
}

// LoadMachines reads the machines file at path with ParseMachines.
func LoadMachines(path string) ([]Machine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootserver: %w", err)
	}
	ms, err := ParseMachines(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return ms, nil
}

// parseMACPrefix parses a MAC address or its first bytes, separated by ':' or '-'.
func parseMACPrefix(s string) (net.HardwareAddr, error) {
	parts := strings.FieldsFunc(strings.TrimSpace(s), func(r rune) bool { return r == ':' || r == '-' })
	if len(parts) == 0 || len(parts) > 6 {
		return nil, fmt.Errorf("mac %q: want a MAC address or its first 1 to 5 bytes, such as 52:54:00", s)
	}
	mac := make(net.HardwareAddr, len(parts))
	for i, p := range parts {
		b, err := hex.DecodeString(p)
		if len(p) != 2 || err != nil {
			return nil, fmt.Errorf("mac %q: %q is not a hex byte", s, p)
		}
		mac[i] = b[0]
	}
	return mac, nil
}
