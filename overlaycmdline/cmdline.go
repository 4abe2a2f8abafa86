package overlaycmdline

import (
	"errors"
	"fmt"
	"strings"
)

// Command line keys read by the kiwi-overlay module and by dracut on its behalf.
const (
	KeyRoot      = "root"
	KeyWrite     = "rd.root.overlay.write"
	KeyReadOnly  = "rd.root.overlay.readonly"
	KeySize      = "rd.root.overlay.size"
	KeyDebug     = "rd.kiwi.debug"
	KeyRootFlags = "rootflags"
	KeyDriverPre = "rd.driver.pre"
)

// Options are the overlay settings besides the root device. The zero value means the module's
// defaults: a tmpfs upper layer of 50% of RAM, no debug log, and the network driver preloaded.
type Options struct {
	// Write is rd.root.overlay.write: the device that keeps the overlay's writes across boots,
	// for network roots only (for local roots the module always writes to the root partition).
	// Empty means writes go to RAM.
	Write string
	// ReadOnly is rd.root.overlay.readonly: keep writes in RAM even when Write is set.
	ReadOnly bool
	// Size is rd.root.overlay.size, the size of the tmpfs under the overlay in tmpfs syntax
	// ("50%", "512m", "2G"). Empty means the module's default, 50%.
	Size string
	// Debug is rd.kiwi.debug: the module logs to /run/initramfs/log/boot.kiwi with set -x.
	Debug bool
	// RootFlags is rootflags=, extra mount options of the overlay mount.
	RootFlags string
	// NoDriverPreload leaves out rd.driver.pre=nbd (or =aoe) for network roots, for initrds
	// that load the driver themselves. Without the driver the boot waits forever for its device.
	NoDriverPreload bool
}

// Validate reports whether the module reads o back as o for a root of kind k.
func (o Options) Validate(k Kind) error {
	if o.Write != "" {
		if !k.Network() {
			return fmt.Errorf("overlaycmdline: %s=%s is ignored for a %v root: the module writes to the root partition itself", KeyWrite, o.Write, k)
		}
		if err := checkValue(KeyWrite, o.Write); err != nil {
			return err
		}
	}
	if o.Size != "" {
		if err := validateSize(o.Size); err != nil {
			return err
		}
	}
	if o.RootFlags != "" {
		if err := checkValue(KeyRootFlags, o.RootFlags); err != nil {
			return err
		}
	}
	return nil
}

// validateSize accepts tmpfs's size= syntax: a decimal number of bytes with an optional k, m, g,
// t, p or e suffix (either case), or a percentage of RAM.
func validateSize(s string) error {
	digits := strings.TrimRight(s, "kKmMgGtTpPeE%")
	if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return fmt.Errorf("overlaycmdline: %s=%q is not a tmpfs size (want a number with an optional k, m, g or %% suffix, such as 50%% or 2G)", KeySize, s)
	}
	if strings.HasSuffix(s, "%") && (len(digits) > 3 || digits == "0" || atoiSmall(digits) > 100) {
		return fmt.Errorf("overlaycmdline: %s=%q: a percentage of RAM must be between 1%% and 100%%", KeySize, s)
	}
	return nil
}

func atoiSmall(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

// Args returns the option arguments for a root of kind k, in a stable order.
func (o Options) Args(k Kind) []string {
	var args []string
	if d := k.Driver(); d != "" && !o.NoDriverPreload {
		args = append(args, KeyDriverPre+"="+d)
	}
	if o.Write != "" {
		args = append(args, KeyWrite+"="+o.Write)
	}
	if o.ReadOnly {
		args = append(args, KeyReadOnly)
	}
	if o.Size != "" {
		args = append(args, KeySize+"="+o.Size)
	}
	if o.RootFlags != "" {
		args = append(args, KeyRootFlags+"="+o.RootFlags)
	}
	if o.Debug {
		args = append(args, KeyDebug)
	}
	return args
}

// Cmdline is a kernel command line for the kiwi-overlay module: the root, its options, and
// every other argument.
type Cmdline struct {
	Root    Root
	Options Options
	// Extra holds the other arguments (console=, ip=, quiet, ...) as written, quotes included,
	// in their original order. They follow the overlay arguments when rendered.
	Extra []string
}

// Validate reports whether the module reads c back as c.
func (c *Cmdline) Validate() error {
	if err := c.Root.Validate(); err != nil {
		return err
	}
	if err := c.Options.Validate(c.Root.Kind); err != nil {
		return err
	}
	for _, f := range c.Extra {
		if a := SplitArg(f); overlayKeys[a.Key] || a.Key == KeyRoot {
			return fmt.Errorf("overlaycmdline: extra argument %q duplicates a key the model renders", f)
		}
		if strings.ContainsAny(f, "\r\n") {
			return fmt.Errorf("overlaycmdline: extra argument %q contains a line break", f)
		}
	}
	return nil
}

// Args returns the overlay arguments (root= first, then the options) without Extra.
func (c *Cmdline) Args() []string {
	return append([]string{KeyRoot + "=" + c.Root.String()}, c.Options.Args(c.Root.Kind)...)
}

// String renders the whole command line: root=, the options, then Extra. It does not validate.
func (c *Cmdline) String() string {
	return strings.Join(append(c.Args(), c.Extra...), " ")
}

// overlayKeys are the keys of Options (root= aside): Parse takes them out of Extra, and
// Validate refuses them there.
var overlayKeys = map[string]bool{
	KeyWrite: true, KeyReadOnly: true, KeySize: true, KeyDebug: true, KeyRootFlags: true,
}

// ErrNoRoot reports a command line without any root= argument.
var ErrNoRoot = errors.New("overlaycmdline: no root= argument")

// Parse reads a kernel command line the way the kernel and dracut do: whitespace separates
// arguments, double quotes group them, and of a repeated key the last one wins. It returns an
// error wrapping [ErrNoRoot] without root=, one wrapping [ErrNotOverlay] when the last root= is
// not root=overlay:…, and otherwise the error of [Cmdline.Validate], so that whatever Parse
// accepts the module reads as Parse does.
//
// Every root= and overlay option is taken out of Extra. rd.driver.pre=nbd (or aoe, matching the
// root) is taken out too and NoDriverPreload set when it is absent; other rd.driver.pre
// arguments stay in Extra.
func Parse(cmdline string) (*Cmdline, error) {
	c := &Cmdline{}
	var root *Arg
	for _, f := range Fields(cmdline) {
		a := SplitArg(f)
		switch a.Key {
		case KeyRoot:
			root = &a
		case KeyWrite:
			c.Options.Write = a.Value
		case KeySize:
			c.Options.Size = a.Value
		case KeyRootFlags:
			c.Options.RootFlags = a.Value
		case KeyReadOnly:
			c.Options.ReadOnly = argBool(a)
		case KeyDebug:
			c.Options.Debug = argBool(a)
		default:
			c.Extra = append(c.Extra, f)
		}
	}
	if root == nil {
		return nil, ErrNoRoot
	}
	r, err := ParseRoot(root.Value)
	if err != nil {
		return nil, err
	}
	c.Root = r
	if d := r.Kind.Driver(); d != "" {
		c.Options.NoDriverPreload = true
		for i, f := range c.Extra {
			if a := SplitArg(f); a.Key == KeyDriverPre && a.Value == d {
				c.Extra = append(c.Extra[:i], c.Extra[i+1:]...)
				if len(c.Extra) == 0 {
					c.Extra = nil
				}
				c.Options.NoDriverPreload = false
				break
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// argBool is dracut's getargbool with default false: a key without value is true, and the
// values 0, no and off are false.
func argBool(a Arg) bool {
	if !a.HasValue {
		return true
	}
	switch a.Value {
	case "0", "no", "off":
		return false
	}
	return true
}

// multiKeys are keys whose every occurrence counts (dracut's getargs, the kernel's console
// list); [Append] keeps their other values and only drops exact duplicates.
var multiKeys = map[string]bool{
	"console": true, "ip": true, "nameserver": true, "rd.break": true,
	KeyDriverPre: true, "rd.driver.post": true, "rd.driver.blacklist": true,
	"modprobe.blacklist": true, "module_blacklist": true,
	"rd.luks.uuid": true, "rd.lvm.lv": true, "rd.md.uuid": true,
	"systemd.wants": true, "systemd.mask": true,
}

// Append returns cmdline with args added at the end. An argument replaces every earlier
// argument with the same key (root=, rd.root.overlay.size=, quiet, ...), so merging KIWI's
// .append options with [Cmdline.Args] replaces KIWI's root=; for keys that may repeat (console=,
// ip=, rd.driver.pre=, ...) only an identical argument is replaced. Existing arguments keep
// their text and order, except that an argument with an unclosed quote moves to the end, where
// it cannot swallow the others; an added argument whose value holds whitespace is quoted.
func Append(cmdline string, args ...string) string {
	fields := Fields(cmdline)
	for _, arg := range args {
		arg = quoteArg(arg)
		na := SplitArg(arg)
		kept := fields[:0]
		for _, f := range fields {
			fa := SplitArg(f)
			same := fa.Key == na.Key
			if same && multiKeys[na.Key] {
				same = fa == na
			}
			if !same {
				kept = append(kept, f)
			}
		}
		fields = append(kept, arg)
	}
	// A field with an unclosed quote runs to the end of the line and would swallow whatever
	// follows it, so it must stay last.
	for i, f := range fields {
		if strings.Count(f, `"`)%2 == 1 {
			fields = append(append(fields[:i:i], fields[i+1:]...), f)
			break
		}
	}
	return strings.Join(fields, " ")
}
