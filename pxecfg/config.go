package pxecfg

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// IPAppend is pxelinux's IPAPPEND (SYSAPPEND) bit mask: what pxelinux adds to the kernel
// command line on its own.
type IPAppend uint

const (
	// IPAppendIP adds ip=<client>:<boot server>:<gateway>:<netmask>.
	IPAppendIP IPAppend = 1
	// IPAppendBootIF adds BOOTIF=01-<mac of the boot interface>, which dracut uses to bring up
	// the interface the client booted from.
	IPAppendBootIF IPAppend = 2
)

// Limits of pxelinux 6 and the Linux boot protocol.
const (
	// MaxCmdline is the size of the kernel command line buffer, terminating NUL included.
	MaxCmdline = 2048
	// MaxFilename is the longest file name pxelinux accepts, terminating NUL included.
	MaxFilename = 256
	// MaxTimeout is the longest TIMEOUT pxelinux accepts (35996 tenths of a second).
	MaxTimeout = 35996 * 100 * time.Millisecond
	// MaxIncludeDepth is how deeply INCLUDE may nest.
	MaxIncludeDepth = 16
)

// bootImagePrefix is what pxelinux puts before every command line, followed by the kernel name.
const bootImagePrefix = "BOOT_IMAGE="

// Directive is a configuration line this package does not model (SAY, ONTIMEOUT, LOCALBOOT,
// MENU COLOR, ...), kept so that a parsed file is written back without losing it.
type Directive struct {
	Keyword string // upper case, "MENU COLOR" for MENU sub-keywords
	Args    string
}

// Config is a boot menu. The zero value is an empty menu.
type Config struct {
	// Serial is SERIAL's argument, "port [baudrate [flowcontrol]]" such as "0 115200";
	// pxelinux requires it to be the first directive, and the writers put it first.
	Serial string
	// UI is the menu module ("menu.c32", "vesamenu.c32"); empty means the plain boot: prompt.
	UI string
	// Title is MENU TITLE.
	Title string
	// Default is the label booted when the timeout expires (pxelinux's DEFAULT, which may
	// also be a kernel command line).
	Default string
	// Prompt is PROMPT 1: show the boot: prompt even without a menu.
	Prompt bool
	// Timeout is how long the menu or prompt waits before booting Default, in steps of 100 ms;
	// zero means no TIMEOUT line (pxelinux then waits forever at a prompt or menu).
	Timeout time.Duration
	// Append is the global APPEND, used by entries without their own.
	Append string
	// IPAppend is the global IPAPPEND, used by entries without their own.
	IPAppend IPAppend
	// Directives are other global lines, written after the modelled ones.
	Directives []Directive
	// Entries are the menu entries (LABEL blocks) in order.
	Entries []Entry
}

// Entry is one LABEL block.
type Entry struct {
	// Label is the name typed at the boot: prompt and used by DEFAULT; it has no whitespace.
	Label string
	// MenuLabel is the text shown in the menu (MENU LABEL); empty means Label.
	MenuLabel string
	// MenuDefault marks the entry the menu highlights first (MENU DEFAULT).
	MenuDefault bool
	// KernelKeyword is how Kernel is loaded: "LINUX" (the default when empty), "KERNEL"
	// (pxelinux guesses the type from the file name), or "COM32", "CONFIG", "BOOT", ... which
	// only pxelinux understands.
	KernelKeyword string
	// Kernel is the kernel's path in the TFTP root, relative to pxelinux's directory.
	Kernel string
	// Initrds are the initrd paths, loaded in order (INITRD a,b).
	Initrds []string
	// Append is the kernel command line (APPEND). Empty means the global APPEND.
	Append string
	// NoGlobalAppend is APPEND -: no command line at all, not even the global one.
	NoGlobalAppend bool
	// IPAppend is IPAPPEND; zero means the global IPAPPEND. [NetbootEntry] sets
	// [IPAppendBootIF], which network roots need.
	IPAppend IPAppend
	// Help is the TEXT HELP block shown by the menu, lines separated by "\n".
	Help string
	// Directives are other lines of the block (LOCALBOOT, MENU HIDE, ...).
	Directives []Directive
}

// NetbootEntry returns an entry that boots kernel with initrds and the command line cmdline,
// with IPAPPEND 2 so that the kernel learns which interface the client booted from (dracut
// reads BOOTIF= to bring up that interface for a network root).
func NetbootEntry(label, kernel string, initrds []string, cmdline string) Entry {
	return Entry{Label: label, Kernel: kernel, Initrds: initrds, Append: cmdline, IPAppend: IPAppendBootIF}
}

// Lookup returns the entry labelled label, the last one if several are (as pxelinux does).
func (c *Config) Lookup(label string) (*Entry, bool) {
	for i := len(c.Entries) - 1; i >= 0; i-- {
		if c.Entries[i].Label == label {
			return &c.Entries[i], true
		}
	}
	return nil, false
}

// Add appends e, replacing an entry with the same label in place.
func (c *Config) Add(e Entry) {
	if old, ok := c.Lookup(e.Label); ok {
		*old = e
		return
	}
	c.Entries = append(c.Entries, e)
}

// EffectiveAppend returns the command line pxelinux passes for e in c, before what it adds
// itself: e's APPEND, or the global one.
func (c *Config) EffectiveAppend(e *Entry) string {
	switch {
	case e.NoGlobalAppend:
		return ""
	case e.Append != "":
		return e.Append
	}
	return c.Append
}

// EffectiveIPAppend returns e's IPAPPEND, or the global one.
func (c *Config) EffectiveIPAppend(e *Entry) IPAppend {
	if e.IPAppend != 0 {
		return e.IPAppend
	}
	return c.IPAppend
}

// Cmdline returns the longest kernel command line pxelinux may build for e: BOOT_IMAGE=, the
// initrd= list, the APPEND line and the IPAPPEND strings with their longest possible values.
func (c *Config) Cmdline(e *Entry) string {
	var b strings.Builder
	b.WriteString(bootImagePrefix + e.Kernel)
	app := c.EffectiveAppend(e)
	if len(e.Initrds) > 0 && !strings.Contains(app, "initrd=") {
		b.WriteString(" initrd=" + strings.Join(e.Initrds, ","))
	}
	if app != "" {
		b.WriteString(" " + app)
	}
	ip := c.EffectiveIPAppend(e)
	if ip&IPAppendIP != 0 {
		b.WriteString(" ip=255.255.255.255:255.255.255.255:255.255.255.255:255.255.255.255")
	}
	if ip&IPAppendBootIF != 0 {
		b.WriteString(" BOOTIF=01-ff-ff-ff-ff-ff-ff")
	}
	return b.String()
}

// checkLine rejects what cannot be written on one pxelinux configuration line: pxelinux has no
// quoting, drops leading and trailing whitespace, and ends the value at a line break.
func checkLine(what, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("pxecfg: %s %q contains a line break or NUL, which pxelinux cannot quote", what, v)
	}
	if strings.TrimSpace(v) != v {
		return fmt.Errorf("pxecfg: %s %q has leading or trailing whitespace, which pxelinux drops", what, v)
	}
	return nil
}

func checkWord(what, v string) error {
	if err := checkLine(what, v); err != nil {
		return err
	}
	if v == "" {
		return fmt.Errorf("pxecfg: empty %s", what)
	}
	if strings.ContainsAny(v, " \t\v\f") {
		return fmt.Errorf("pxecfg: %s %q contains whitespace, which ends it in pxelinux", what, v)
	}
	return nil
}

func checkFilename(what, v string) error {
	if err := checkWord(what, v); err != nil {
		return err
	}
	if len(v) >= MaxFilename {
		return fmt.Errorf("pxecfg: %s %q is %d bytes, pxelinux takes at most %d", what, v, len(v), MaxFilename-1)
	}
	return nil
}

func checkDirectives(where string, ds []Directive) error {
	for _, d := range ds {
		kw := strings.TrimPrefix(strings.ToUpper(d.Keyword), "MENU ")
		if err := checkWord(where+" directive keyword", kw); err != nil {
			return err
		}
		if err := checkLine(where+" "+d.Keyword+" argument", d.Args); err != nil {
			return err
		}
		switch strings.ToUpper(d.Keyword) {
		case "LABEL", "INCLUDE", "MENU INCLUDE", "TEXT", "ENDTEXT":
			return fmt.Errorf("pxecfg: %s directive %s cannot be kept verbatim: it changes the file's structure", where, d.Keyword)
		}
	}
	return nil
}

// Validate reports whether pxelinux reads c back as c and can boot every entry within its
// limits; each error names the value at fault.
func (c *Config) Validate() error {
	for _, f := range []struct{ what, v string }{
		{"SERIAL", c.Serial}, {"MENU TITLE", c.Title}, {"DEFAULT", c.Default}, {"global APPEND", c.Append},
	} {
		if err := checkLine(f.what, f.v); err != nil {
			return err
		}
	}
	if err := validateSerial(c.Serial); err != nil {
		return err
	}
	if c.UI != "" {
		if err := checkFilename("UI module", c.UI); err != nil {
			return err
		}
	}
	if c.Append == "-" {
		return fmt.Errorf("pxecfg: global APPEND %q means nothing outside a label", c.Append)
	}
	if c.Timeout < 0 || c.Timeout > MaxTimeout {
		return fmt.Errorf("pxecfg: timeout %v outside 0..%v", c.Timeout, MaxTimeout)
	}
	if c.Timeout%(100*time.Millisecond) != 0 {
		return fmt.Errorf("pxecfg: timeout %v is not a multiple of 100ms, the unit of TIMEOUT", c.Timeout)
	}
	if c.IPAppend&^(IPAppendIP|IPAppendBootIF) != 0 {
		return fmt.Errorf("pxecfg: global IPAPPEND %d has bits other than 1 (ip=) and 2 (BOOTIF=)", c.IPAppend)
	}
	if err := checkDirectives("global", c.Directives); err != nil {
		return err
	}
	if c.Default != "" && !strings.ContainsAny(c.Default, " /.") {
		if _, ok := c.Lookup(c.Default); !ok {
			return fmt.Errorf("pxecfg: DEFAULT %q names no label", c.Default)
		}
	}
	for i := range c.Entries {
		if err := c.validateEntry(&c.Entries[i]); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateEntry(e *Entry) error {
	if err := checkWord("label", e.Label); err != nil {
		return err
	}
	where := "label " + e.Label
	if err := checkLine(where+" MENU LABEL", e.MenuLabel); err != nil {
		return err
	}
	if err := checkLine(where+" APPEND", e.Append); err != nil {
		return err
	}
	if e.Append == "-" {
		return fmt.Errorf("pxecfg: %s: APPEND %q is spelled NoGlobalAppend in the model", where, e.Append)
	}
	if e.NoGlobalAppend && e.Append != "" {
		return fmt.Errorf("pxecfg: %s: both APPEND - and APPEND %q", where, e.Append)
	}
	if e.IPAppend&^(IPAppendIP|IPAppendBootIF) != 0 {
		return fmt.Errorf("pxecfg: %s: IPAPPEND %d has bits other than 1 (ip=) and 2 (BOOTIF=)", where, e.IPAppend)
	}
	for _, l := range strings.Split(e.Help, "\n") {
		if strings.EqualFold(strings.TrimSpace(l), "ENDTEXT") || strings.ContainsAny(l, "\r\x00") {
			return fmt.Errorf("pxecfg: %s: help line %q would end or break the TEXT HELP block", where, l)
		}
	}
	if err := checkDirectives(where, e.Directives); err != nil {
		return err
	}
	if e.KernelKeyword != "" {
		if err := checkWord(where+" kernel keyword", e.KernelKeyword); err != nil {
			return err
		}
	}
	if e.Kernel == "" {
		if len(e.Initrds) > 0 || e.Append != "" || e.KernelKeyword != "" {
			return fmt.Errorf("pxecfg: %s has a kernel keyword, initrds or APPEND but no kernel", where)
		}
		return nil
	}
	if err := checkFilename(where+" kernel", e.Kernel); err != nil {
		return err
	}
	for _, in := range e.Initrds {
		if err := checkFilename(where+" initrd", in); err != nil {
			return err
		}
		if strings.Contains(in, ",") {
			return fmt.Errorf("pxecfg: %s: initrd %q contains ',', which separates initrds", where, in)
		}
	}
	if n := len(c.Cmdline(e)); n >= MaxCmdline {
		return fmt.Errorf("pxecfg: %s: kernel command line of up to %d bytes (with what pxelinux adds) exceeds %d",
			where, n, MaxCmdline-1)
	}
	return nil
}

// bootInitrds returns the initrds of e and its kernel arguments for a loader that loads initrds
// itself (GRUB, iPXE): INITRD's list, or else the files of a pxelinux-style initrd= argument,
// which is then dropped from the arguments.
func (c *Config) bootInitrds(e *Entry, args []string) ([]string, []string) {
	initrds := e.Initrds
	var rest []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "initrd="); ok {
			if len(e.Initrds) == 0 && v != "" {
				initrds = append(initrds, strings.Split(v, ",")...)
			}
			continue
		}
		rest = append(rest, a)
	}
	return initrds, rest
}

// menuTitle is the entry's menu text for GRUB and iPXE: MENU LABEL without the '^' that marks
// syslinux's hotkey, or the label.
func menuTitle(e *Entry) string {
	if t := strings.ReplaceAll(e.MenuLabel, "^", ""); t != "" {
		return t
	}
	return e.Label
}

// validateSerial checks SERIAL's "port [baudrate [flowcontrol]]": a port number (0-3) or I/O
// address (0x…), and decimal or hex numbers for the rest.
func validateSerial(s string) error {
	if s == "" {
		return nil
	}
	f := strings.Fields(s)
	if len(f) > 3 {
		return fmt.Errorf("pxecfg: SERIAL %q has more than port, baud rate and flow control", s)
	}
	for i, v := range f {
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			return fmt.Errorf("pxecfg: SERIAL %q: %q is not a number", s, v)
		}
		if i == 0 && !strings.HasPrefix(strings.ToLower(v), "0x") && n > 3 {
			return fmt.Errorf("pxecfg: SERIAL %q: port %s is neither 0-3 nor an I/O address like 0x3f8", s, v)
		}
	}
	return nil
}
