package pxecfg

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"path"
	"strings"
)

// Machine is one machine's own boot configuration, chosen by its hardware address.
type Machine struct {
	MAC    net.HardwareAddr
	Config *Config
}

// GRUBMachineConfig returns the file, relative to the TFTP root, in which the GRUB dispatcher
// of [WriteGRUBDispatch] looks for the configuration of the machine with hardware address mac:
// beside grubCfg, in machines/, named as GRUB's ${net_default_mac} spells the address
// (lower-case hex and colons).
func GRUBMachineConfig(grubCfg string, mac net.HardwareAddr) string {
	return path.Join(path.Dir(grubCfg), "machines", mac.String()+".cfg")
}

// IPXEMachineScript returns the script, relative to the TFTP root, in which the iPXE
// dispatcher of [WriteIPXEDispatch] looks for the machine's own script: beside the dispatcher,
// in machines/, named as iPXE's ${mac:hexhyp} spells the address.
func IPXEMachineScript(script string, mac net.HardwareAddr) string {
	return path.Join(path.Dir(script), "machines", strings.ReplaceAll(mac.String(), ":", "-")+".ipxe")
}

// grubMachineVar is set by a machine's own GRUB configuration, so that the dispatcher skips the
// default entries after sourcing it.
const grubMachineVar = "netroot_machine"

// WriteGRUBDispatch writes a grub.cfg (to be stored at grubCfg, relative to the TFTP root)
// that first sources the booting machine's own configuration, if there is one, at
// [GRUBMachineConfig], and otherwise offers def. GRUB's network image reads only one
// configuration file, so this is how machines get their own menus.
func WriteGRUBDispatch(w io.Writer, grubCfg string, def *Config) error {
	var b bytes.Buffer
	if err := WriteGRUB(&b, def); err != nil {
		return err
	}
	dir := grubPath(path.Join(path.Dir(grubCfg), "machines"))
	var out bytes.Buffer
	fmt.Fprintf(&out, "# A machine's own configuration, if it has one, sets %s.\n", grubMachineVar)
	fmt.Fprintf(&out, "source %s/${net_default_mac}.cfg\n", dir)
	fmt.Fprintf(&out, "if [ -z \"${%s}\" ]; then\n", grubMachineVar)
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l != "" && l != "\n" {
			out.WriteString("\t")
		}
		out.WriteString(l)
	}
	out.WriteString("fi\n")
	_, err := w.Write(out.Bytes())
	return err
}

// WriteGRUBMachine writes c as one machine's GRUB configuration for [WriteGRUBDispatch].
func WriteGRUBMachine(w io.Writer, c *Config) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "set %s=1\n", grubMachineVar)
	if err := WriteGRUB(&b, c); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteIPXEDispatch writes an iPXE script that chains to the booting machine's own script at
// [IPXEMachineScript], relative to its own URI, and boots def when there is none.
func WriteIPXEDispatch(w io.Writer, script string, def *Config) error {
	var b bytes.Buffer
	if err := WriteIPXE(&b, def); err != nil {
		return err
	}
	body := strings.TrimPrefix(b.String(), "#!ipxe\n")
	rel := path.Join("machines", "${mac:hexhyp}.ipxe")
	_, err := fmt.Fprintf(w, "#!ipxe\n# A machine's own script, if it has one, boots it.\nchain --autofree %s || goto netroot_default\n:netroot_default\n%s", rel, body)
	return err
}

// WriteMachineDir writes def and each machine's own configuration under root in all three
// formats: pxelinux.cfg/default and pxelinux.cfg/01-<mac>; the GRUB dispatcher at
// opts.GRUBConfig and machines' files beside it; the iPXE dispatcher at opts.IPXEScript and
// machines' scripts beside it. opts.Formats and opts.Clients are ignored. Like [WriteDir] it
// renders and validates everything first and writes each file atomically.
func WriteMachineDir(root string, def *Config, machines []Machine, opts *DirOptions) ([]string, error) {
	var o DirOptions
	if opts != nil {
		o = *opts
	}
	o.defaultPaths()
	type file struct {
		name string
		data []byte
	}
	var files []file
	render := func(name string, write func(io.Writer) error) error {
		var b bytes.Buffer
		if err := write(&b); err != nil {
			return err
		}
		files = append(files, file{name, b.Bytes()})
		return nil
	}
	all := []error{
		render(ConfigDir+"/default", func(w io.Writer) error { return WritePXELinux(w, def) }),
		render(o.GRUBConfig, func(w io.Writer) error { return WriteGRUBDispatch(w, o.GRUBConfig, def) }),
		render(o.IPXEScript, func(w io.Writer) error { return WriteIPXEDispatch(w, o.IPXEScript, def) }),
	}
	for _, m := range machines {
		if len(m.MAC) != 6 {
			return nil, fmt.Errorf("pxecfg: machine hardware address %v is not 6 bytes", m.MAC)
		}
		name, err := Client{MAC: m.MAC}.ConfigName()
		if err != nil {
			return nil, err
		}
		c := m.Config
		all = append(all,
			render(name, func(w io.Writer) error { return WritePXELinux(w, c) }),
			render(GRUBMachineConfig(o.GRUBConfig, m.MAC), func(w io.Writer) error { return WriteGRUBMachine(w, c) }),
			render(IPXEMachineScript(o.IPXEScript, m.MAC), func(w io.Writer) error { return WriteIPXE(w, c) }))
	}
	for _, err := range all {
		if err != nil {
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
