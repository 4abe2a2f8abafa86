package pxecfg

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
)

// GRUBQuote quotes s as one word of GRUB's shell-like script language: words made only of
// characters GRUB treats literally are left alone, anything else is put in single quotes, inside
// which GRUB treats every character literally; a single quote itself closes the quotes, follows
// as a backslash-escaped quote, and reopens them.
func GRUBQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// grubPath makes a TFTP-root-relative path absolute, which GRUB resolves against (tftp).
func grubPath(p string) string { return "/" + strings.TrimPrefix(p, "/") }

// WriteGRUB writes c as a grub.cfg for GRUB's network image (grubnetx64.efi): one menuentry per
// entry, with the entry's label as --id, paths made absolute in the TFTP root, and every kernel
// argument quoted for GRUB so that the kernel receives it unchanged. GRUB's linux command
// rebuilds the command line from its words: it wraps a word holding a space in double quotes
// (which the kernel removes) but, in GRUB 2.06 as shipped by Debian 12, puts a backslash before
// every quote and backslash (which the kernel keeps), so arguments holding those are rejected. Timeout is rounded up to
// whole seconds; a zero Timeout waits forever when the config has a menu or prompt and boots at
// once otherwise, as pxelinux does. IPAPPEND 2 becomes BOOTIF=01-${net_default_mac}; IPAPPEND 1
// has no GRUB equivalent and is left out. A pxelinux-style initrd= argument becomes GRUB's
// initrd command. Entries with only a LOCALBOOT directive exit GRUB
// (the firmware then tries its next boot option); other entries without a kernel are left out.
func WriteGRUB(w io.Writer, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var b bytes.Buffer
	if c.Serial != "" {
		f := strings.Fields(c.Serial)
		unit := "--unit=" + f[0]
		if strings.HasPrefix(strings.ToLower(f[0]), "0x") {
			unit = "--port=" + f[0]
		}
		speed := ""
		if len(f) > 1 {
			speed = " --speed=" + f[1]
		}
		fmt.Fprintf(&b, "serial %s%s\nterminal_input serial console\nterminal_output serial console\n", GRUBQuote(unit), speed)
	}
	timeout := 0
	switch {
	case c.Timeout > 0:
		timeout = int((c.Timeout + time.Second - 1) / time.Second)
	case c.UI != "" || c.Prompt:
		timeout = -1
	}
	fmt.Fprintf(&b, "set timeout=%d\n", timeout)
	def := c.Default
	if _, ok := c.Lookup(def); !ok {
		def = ""
		for _, e := range c.Entries {
			if e.MenuDefault {
				def = e.Label
			}
		}
	}
	if def != "" {
		fmt.Fprintf(&b, "set default=%s\n", GRUBQuote(def))
	}
	for i := range c.Entries {
		e := &c.Entries[i]
		title := menuTitle(e)
		if e.Kernel == "" {
			if hasDirective(e, "LOCALBOOT") {
				fmt.Fprintf(&b, "\nmenuentry %s --id %s {\n\texit\n}\n", GRUBQuote(title), GRUBQuote(e.Label))
			}
			continue
		}
		switch strings.ToUpper(e.KernelKeyword) {
		case "", "LINUX", "KERNEL":
		default:
			return fmt.Errorf("pxecfg: grub: label %s uses %s, which only pxelinux runs", e.Label, e.KernelKeyword)
		}
		args := []string{"linux", GRUBQuote(grubPath(e.Kernel))}
		initrds, kargs := c.bootInitrds(e, kernelArgs(c.EffectiveAppend(e)))
		for _, a := range kargs {
			if err := checkKernelArg("grub", a); err != nil {
				return fmt.Errorf("pxecfg: grub: label %s: %w", e.Label, err)
			}
			args = append(args, GRUBQuote(a))
		}
		if c.EffectiveIPAppend(e)&IPAppendBootIF != 0 {
			args = append(args, "BOOTIF=01-${net_default_mac}")
		}
		fmt.Fprintf(&b, "\nmenuentry %s --id %s {\n\t%s\n", GRUBQuote(title), GRUBQuote(e.Label), strings.Join(args, " "))
		if len(initrds) > 0 {
			in := []string{"initrd"}
			for _, p := range initrds {
				in = append(in, GRUBQuote(grubPath(p)))
			}
			fmt.Fprintf(&b, "\t%s\n", strings.Join(in, " "))
		}
		b.WriteString("}\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

func hasDirective(e *Entry, kw string) bool {
	for _, d := range e.Directives {
		if strings.EqualFold(d.Keyword, kw) {
			return true
		}
	}
	return false
}
