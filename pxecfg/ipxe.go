package pxecfg

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// checkIPXEWord rejects a word iPXE would not pass through unchanged: iPXE splits lines on
// whitespace with no quoting, expands ${…} with no escape, starts a comment at a word beginning
// with '#', and treats the words ||, && and ; as command separators.
func checkIPXEWord(what, w string) error {
	if i := strings.Index(w, "${"); i >= 0 && strings.Contains(w[i:], "}") {
		return fmt.Errorf("pxecfg: ipxe: %s %q contains ${…}, which iPXE expands and cannot escape", what, w)
	}
	if strings.HasPrefix(w, "#") || w == "||" || w == "&&" || w == ";" {
		return fmt.Errorf("pxecfg: ipxe: %s %q would be read by iPXE as a comment or command separator", what, w)
	}
	if strings.ContainsAny(w, " \t\r\n\v\f") {
		return fmt.Errorf("pxecfg: ipxe: %s %q contains whitespace, which iPXE cannot quote", what, w)
	}
	return nil
}

func checkIPXEText(what, s string) error {
	for _, w := range strings.Fields(s) {
		if err := checkIPXEWord(what, w); err != nil {
			return err
		}
	}
	return nil
}

// WriteIPXE writes c as an iPXE script. A single entry boots directly; several make an iPXE
// menu whose choose command falls back to the default entry when the timeout expires. The
// initrd is named "initrd" (several are initrd0, initrd1, ...) and passed to the kernel as
// initrd=<name>, which the kernel's EFI stub needs. Kernel arguments keep their quotes, but iPXE
// collapses runs of whitespace inside them. IPAPPEND 2 becomes BOOTIF=01-${netX/mac:hexhyp} and IPAPPEND 1
// ip=${netX/ip}:${next-server}:${netX/gateway}:${netX/netmask}, so iPXE fills in what pxelinux
// would. Paths are relative to the script's own URI. Entries with only LOCALBOOT exit iPXE;
// other entries without a kernel are left out.
func WriteIPXE(w io.Writer, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	type item struct {
		e     *Entry
		title string
	}
	var items []item
	for i := range c.Entries {
		e := &c.Entries[i]
		if e.Kernel == "" && !hasDirective(e, "LOCALBOOT") {
			continue
		}
		switch strings.ToUpper(e.KernelKeyword) {
		case "", "LINUX", "KERNEL":
		default:
			return fmt.Errorf("pxecfg: ipxe: label %s uses %s, which only pxelinux runs", e.Label, e.KernelKeyword)
		}
		title := menuTitle(e)
		if err := checkIPXEWord("label", e.Label); err != nil {
			return err
		}
		if err := checkIPXEText("menu label", title); err != nil {
			return err
		}
		items = append(items, item{e, title})
	}
	if len(items) == 0 {
		return fmt.Errorf("pxecfg: ipxe: no entry to boot")
	}
	var b bytes.Buffer
	b.WriteString("#!ipxe\n")
	if len(items) > 1 {
		def := items[0].e.Label
		for _, it := range items {
			if it.e.Label == c.Default || (it.e.MenuDefault && c.Default == "") {
				def = it.e.Label
			}
		}
		title := c.Title
		if title == "" {
			title = "Boot menu"
		}
		if err := checkIPXEText("menu title", title); err != nil {
			return err
		}
		fmt.Fprintf(&b, "menu %s\n", strings.Join(strings.Fields(title), " "))
		for _, it := range items {
			fmt.Fprintf(&b, "item %s %s\n", it.e.Label, strings.Join(strings.Fields(it.title), " "))
		}
		timeout := ""
		if c.Timeout > 0 {
			timeout = " --timeout " + ipxeTimeout(c.Timeout)
		}
		fmt.Fprintf(&b, "choose --default %s%s target || set target %s\ngoto ${target}\n", def, timeout, def)
	}
	for _, it := range items {
		e := it.e
		b.WriteString("\n:" + e.Label + "\n")
		if e.Kernel == "" {
			b.WriteString("exit\n")
			continue
		}
		initrds, words := c.bootInitrds(e, strings.Fields(c.EffectiveAppend(e)))
		for _, p := range append([]string{e.Kernel}, initrds...) {
			if err := checkIPXEWord("path", p); err != nil {
				return err
			}
		}
		args := []string{"kernel", "--name", "kernel", e.Kernel}
		names := initrdNames(len(initrds))
		for _, n := range names {
			args = append(args, "initrd="+n)
		}
		// iPXE splits on whitespace and joins the words back with single spaces, so quoted
		// kernel arguments pass through as written.
		for _, a := range words {
			if err := checkIPXEWord("kernel argument", a); err != nil {
				return fmt.Errorf("pxecfg: label %s: %w", e.Label, err)
			}
			args = append(args, a)
		}
		ip := c.EffectiveIPAppend(e)
		if ip&IPAppendIP != 0 {
			args = append(args, "ip=${netX/ip}:${next-server}:${netX/gateway}:${netX/netmask}")
		}
		if ip&IPAppendBootIF != 0 {
			args = append(args, "BOOTIF=01-${netX/mac:hexhyp}")
		}
		b.WriteString(strings.Join(args, " ") + "\n")
		for i, p := range initrds {
			fmt.Fprintf(&b, "initrd --name %s %s\n", names[i], p)
		}
		b.WriteString("boot\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

func initrdNames(n int) []string {
	if n == 1 {
		return []string{"initrd"}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("initrd%d", i)
	}
	return names
}

// ipxeTimeout is the timeout in milliseconds for iPXE's choose command.
func ipxeTimeout(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
