package overlaycmdline

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Kind says where the read-only root image comes from.
type Kind int

// The kinds of root the kiwi-overlay module understands. The zero Kind is invalid.
const (
	KindNBD      Kind = iota + 1 // root=overlay:nbd=HOST:EXPORT
	KindAoE                      // root=overlay:aoe=e<shelf>.<slot>
	KindUUID                     // root=overlay:UUID=<filesystem uuid>
	KindPARTUUID                 // root=overlay:PARTUUID=<partition uuid>
	KindLABEL                    // root=overlay:LABEL=<filesystem label>
)

var kindNames = map[Kind]string{
	KindNBD: "nbd", KindAoE: "aoe", KindUUID: "UUID", KindPARTUUID: "PARTUUID", KindLABEL: "LABEL",
}

// String returns the kind as it is spelled after "overlay:" on the command line.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Network reports whether the kind needs the network (NBD and AoE).
func (k Kind) Network() bool { return k == KindNBD || k == KindAoE }

// Driver returns the kernel module a network kind needs preloaded ("nbd" or "aoe"), or "".
func (k Kind) Driver() string {
	switch k {
	case KindNBD:
		return "nbd"
	case KindAoE:
		return "aoe"
	}
	return ""
}

// NBDPort is the TCP port the module's nbd-client always connects to; the command line has no
// way to name another.
const NBDPort = 10809

// Limits of AoE addresses: shelf 0xffff and slot 0xff are broadcast addresses, never a device.
const (
	MaxShelf = 65534
	MaxSlot  = 254
)

// Root is the value of root=overlay:…, the device the module mounts read-only under the overlay.
// Only the fields of its Kind are used.
type Root struct {
	Kind Kind

	// Host is the NBD server: an IPv4 address or a DNS host name, without port (the module
	// always uses port 10809) and never an IPv6 literal (the module splits on ':').
	Host string
	// Export is the NBD export name; it cannot contain ':'.
	Export string

	// Shelf and Slot address the AoE device /dev/etherd/e<Shelf>.<Slot>.
	Shelf uint16
	Slot  uint8

	// ID is the UUID, PARTUUID or LABEL of a local root partition.
	ID string
}

// NBD returns the root of an NBD export. host is an IPv4 address or host name.
func NBD(host, export string) Root { return Root{Kind: KindNBD, Host: host, Export: export} }

// NBDAddr returns the root of an NBD export on the IPv4 address addr.
func NBDAddr(addr netip.Addr, export string) Root {
	return Root{Kind: KindNBD, Host: addr.String(), Export: export}
}

// AoE returns the root of the AoE device e<shelf>.<slot>.
func AoE(shelf uint16, slot uint8) Root { return Root{Kind: KindAoE, Shelf: shelf, Slot: slot} }

// UUID returns the root of a local partition by filesystem UUID.
func UUID(id string) Root { return Root{Kind: KindUUID, ID: id} }

// PARTUUID returns the root of a local partition by partition UUID.
func PARTUUID(id string) Root { return Root{Kind: KindPARTUUID, ID: id} }

// Label returns the root of a local partition by filesystem label.
func Label(label string) Root { return Root{Kind: KindLABEL, ID: label} }

// AoEDevice returns the AoE device name, e<shelf>.<slot>, as it appears under /dev/etherd.
func (r Root) AoEDevice() string {
	return "e" + strconv.Itoa(int(r.Shelf)) + "." + strconv.Itoa(int(r.Slot))
}

// Device returns the block device the module reads the root image from: /dev/nbd0,
// /dev/etherd/e<shelf>.<slot> or /dev/disk/by-{uuid,partuuid,label}/<id>. The module escapes
// '/' in local ids as \x2f, and so does Device.
func (r Root) Device() string {
	id := strings.ReplaceAll(r.ID, "/", `\x2f`)
	switch r.Kind {
	case KindNBD:
		return "/dev/nbd0"
	case KindAoE:
		return "/dev/etherd/" + r.AoEDevice()
	case KindUUID:
		return "/dev/disk/by-uuid/" + id
	case KindPARTUUID:
		return "/dev/disk/by-partuuid/" + id
	case KindLABEL:
		return "/dev/disk/by-label/" + id
	}
	return ""
}

// String returns the value of the root= argument, such as "overlay:nbd=192.0.2.1:root".
// It does not validate; call [Root.Validate] first.
func (r Root) String() string {
	switch r.Kind {
	case KindNBD:
		return "overlay:nbd=" + r.Host + ":" + r.Export
	case KindAoE:
		return "overlay:aoe=" + r.AoEDevice()
	case KindUUID, KindPARTUUID, KindLABEL:
		return "overlay:" + r.Kind.String() + "=" + r.ID
	}
	return ""
}

// checkValue rejects what cannot travel through the kernel command line and the module's
// unquoted shell: anything but printable ASCII, whitespace and double quotes.
func checkValue(what, v string) error {
	if v == "" {
		return fmt.Errorf("overlaycmdline: empty %s", what)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			return fmt.Errorf("overlaycmdline: %s %q contains whitespace, which ends a kernel argument", what, v)
		case c == '"':
			return fmt.Errorf("overlaycmdline: %s %q contains a double quote, which the kernel strips", what, v)
		case c < 0x21 || c > 0x7e:
			return fmt.Errorf("overlaycmdline: %s %q contains byte %#02x outside printable ASCII", what, v, c)
		}
	}
	return nil
}

// Validate reports whether the module reads r back as r, and if not, why, naming the value.
func (r Root) Validate() error {
	switch r.Kind {
	case KindNBD:
		if err := validateHost(r.Host); err != nil {
			return err
		}
		if err := checkValue("NBD export name", r.Export); err != nil {
			return err
		}
		if strings.Contains(r.Export, ":") {
			return fmt.Errorf("overlaycmdline: NBD export name %q contains ':'; the module takes field 3 of root= split on ':' and would read %q",
				r.Export, strings.Split(r.Export, ":")[0])
		}
		if len(r.Export) > 4096 {
			return fmt.Errorf("overlaycmdline: NBD export name of %d bytes is longer than the protocol's 4096", len(r.Export))
		}
		return nil
	case KindAoE:
		if r.Shelf > MaxShelf {
			return fmt.Errorf("overlaycmdline: AoE shelf %d above %d (0xffff is the broadcast shelf)", r.Shelf, MaxShelf)
		}
		if r.Slot > MaxSlot {
			return fmt.Errorf("overlaycmdline: AoE slot %d above %d (0xff is the broadcast slot)", r.Slot, MaxSlot)
		}
		return nil
	case KindUUID, KindPARTUUID, KindLABEL:
		return checkValue(r.Kind.String()+" root", r.ID)
	}
	return fmt.Errorf("overlaycmdline: root kind %v is not one of nbd, aoe, UUID, PARTUUID, LABEL", r.Kind)
}

func validateHost(h string) error {
	if err := checkValue("NBD host", h); err != nil {
		return err
	}
	if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
		return fmt.Errorf("overlaycmdline: NBD host %q is an IPv6 literal; the module splits root= on ':' and cannot read one (use an IPv4 address or a host name)", h)
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		return fmt.Errorf("overlaycmdline: NBD host %q carries port %s; the module always connects to %s port %d", h, port, host, NBDPort)
	}
	if strings.Contains(h, ":") {
		return fmt.Errorf("overlaycmdline: NBD host %q contains ':'; the module splits root= on ':' and would read host %q", h, strings.Split(h, ":")[0])
	}
	if a, err := netip.ParseAddr(h); err == nil && a.Is4() {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("overlaycmdline: NBD host name of %d bytes is longer than 253", len(h))
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("overlaycmdline: NBD host %q is neither an IPv4 address nor a host name (bad label %q)", h, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("overlaycmdline: NBD host %q is neither an IPv4 address nor a host name (byte %q)", h, c)
			}
		}
	}
	return nil
}

// ErrNotOverlay reports a root= value (or a command line) that is not root=overlay:….
var ErrNotOverlay = errors.New("overlaycmdline: not an overlay root")

// ParseRoot parses the value of a root= argument, such as "overlay:aoe=e0.1", and validates it.
// A value that does not start with "overlay:" returns an error wrapping [ErrNotOverlay]. The
// module also accepts "overlay:" left out for UUID=, PARTUUID= and LABEL= only when another
// module put it there; ParseRoot requires the prefix.
func ParseRoot(value string) (Root, error) {
	rest, ok := strings.CutPrefix(value, "overlay:")
	if !ok {
		return Root{}, fmt.Errorf("%w: root=%q", ErrNotOverlay, value)
	}
	kind, arg, ok := strings.Cut(rest, "=")
	if !ok {
		return Root{}, fmt.Errorf("overlaycmdline: root=%q names no device (want nbd=, aoe=, UUID=, PARTUUID= or LABEL=)", value)
	}
	var r Root
	switch kind {
	case "nbd":
		if strings.HasPrefix(arg, "[") {
			return Root{}, fmt.Errorf("overlaycmdline: root=%q has an IPv6 literal as NBD host; the module splits root= on ':' and cannot read one", value)
		}
		host, export, ok := strings.Cut(arg, ":")
		if !ok {
			return Root{}, fmt.Errorf("overlaycmdline: root=%q has no export name (want overlay:nbd=HOST:EXPORT)", value)
		}
		r = NBD(host, export)
	case "aoe":
		var err error
		if r, err = parseAoE(arg); err != nil {
			return Root{}, err
		}
	case "UUID":
		r = UUID(arg)
	case "PARTUUID":
		r = PARTUUID(arg)
	case "LABEL":
		r = Label(arg)
	default:
		return Root{}, fmt.Errorf("overlaycmdline: root=%q: the module knows no device kind %q (want nbd, aoe, UUID, PARTUUID or LABEL, case-sensitive)", value, kind)
	}
	if err := r.Validate(); err != nil {
		return Root{}, err
	}
	return r, nil
}

func parseAoE(v string) (Root, error) {
	bad := func(why string) error {
		return fmt.Errorf("overlaycmdline: AoE target %q %s; the module mounts /dev/etherd/<value>, so give the device name e<shelf>.<slot> such as e0.1", v, why)
	}
	num, ok := strings.CutPrefix(v, "e")
	shelf, slot, ok2 := strings.Cut(num, ".")
	if !ok || !ok2 {
		return Root{}, bad("is not an AoE device name (it looks like a network interface name, which the module does not take)")
	}
	sh, err := parseDecimal(shelf, MaxShelf)
	if err != nil {
		return Root{}, bad("has shelf " + err.Error())
	}
	sl, err := parseDecimal(slot, MaxSlot)
	if err != nil {
		return Root{}, bad("has slot " + err.Error())
	}
	return AoE(uint16(sh), uint8(sl)), nil
}

// parseDecimal accepts the canonical decimal form the kernel's aoe driver uses in device names:
// no sign, no leading zeros.
func parseDecimal(s string, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s[0] == '+' || s[0] == '-' || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%q, not a decimal number", s)
	}
	if n > max {
		return 0, fmt.Errorf("%d above %d", n, max)
	}
	return n, nil
}
