package nbdconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/netroot/netroot/nbd"
)

// This file reads the configuration file of the reference nbd-server (nbd-server(5), normally
// /etc/nbd-server/config), so an operator's existing file describes netroot's exports too, and
// the access files ("authfile") it points to.
//
// The file is a GLib key file: "[section]" headers, "key = value" lines and whole-line "#"
// comments. The first section is [generic]; every other section is one export, named by its
// section header.

// ConfigFile is a parsed nbd-server configuration file.
type ConfigFile struct {
	Generic ConfigGeneric
	// Exports are the export sections in the order they appear, those of IncludeDir's files
	// last.
	Exports []ConfigExport
	// Warnings lists what was read but is not applied: unknown keys, keys of nbd-server that
	// netroot does not support, repeated keys. The file is still usable.
	Warnings []ConfigWarning
}

// ConfigGeneric is the [generic] section: settings for the whole server.
type ConfigGeneric struct {
	// Port is the TCP port or service name to listen on ("port"); "" means nbd.DefaultPort.
	Port string
	// ListenAddrs are the local addresses to listen on ("listenaddr", comma-separated); empty
	// means all IPv6 and IPv4 addresses. See Addrs.
	ListenAddrs []string
	// AllowList lets clients list the exports with NBD_OPT_LIST ("allowlist").
	AllowList bool
	// CertFile, KeyFile and CACertFile are PEM files for TLS ("certfile", "keyfile",
	// "cacertfile"). A KeyFile without CertFile means the certificate is in KeyFile. A
	// CACertFile turns on verification of client certificates.
	CertFile, KeyFile, CACertFile string
	// ForceTLS refuses every option but STARTTLS until TLS is negotiated ("force_tls").
	ForceTLS bool
	// TLSPriority is GnuTLS's priority string ("tlsprio"). crypto/tls has no equivalent, so it is
	// recorded only.
	TLSPriority string
	// User and Group are the account to run as after opening the listeners ("user", "group").
	User, Group string
	// MaxThreads is nbd-server's worker count ("max_threads"); 0 means unset.
	MaxThreads int
	// IncludeDir is a directory whose *.conf files hold more export sections ("includedir").
	IncludeDir string
	// UnixSocket is a Unix socket path to listen on instead of TCP ("unixsock"), and DualListen
	// listens on both ("duallisten").
	UnixSocket string
	DualListen bool
	// Splice asks for splice(2) on reads and writes ("splice"). netroot chooses its own
	// zero-copy path, so it has no effect.
	Splice bool
}

// ConfigExport is one export section.
type ConfigExport struct {
	// Name is the section name: the export name clients ask for.
	Name string
	// File and Line locate the section header.
	File string
	Line int
	// Path is the exported file or block device ("exportname"), an absolute path.
	Path string
	// Size forces the export size in bytes instead of detecting it ("filesize"); 0 means detect.
	Size int64
	// ReadOnly refuses writes ("readonly").
	ReadOnly bool
	// CopyOnWrite sends writes to a private overlay that is dropped when the client disconnects
	// ("copyonwrite"); CowDir is where the overlay files go ("cowdir"), "" meaning next to Path.
	CopyOnWrite bool
	CowDir      string
	// SparseCOW keeps the overlay as a sparse file ("sparse_cow").
	SparseCOW bool
	// Flush, FUA and Trim advertise NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA and NBD_CMD_TRIM ("flush",
	// "fua", "trim"); Rotational advertises NBD_FLAG_ROTATIONAL ("rotational").
	Flush, FUA, Trim, Rotational bool
	// Sync makes every write durable before it is acknowledged ("sync").
	Sync bool
	// AuthFile is the access file ("authfile"); see ReadAuthFile. "" means everyone is allowed.
	AuthFile string
	// MaxConnections limits concurrent connections to the export ("maxconnections"); 0 means no
	// limit.
	MaxConnections int
	// IdleTimeout disconnects a client idle for longer ("timeout", in seconds); 0 means never.
	IdleTimeout time.Duration
	// ForceTLS hides the export from clients that did not negotiate TLS ("force_tls", also
	// spelt "tlsonly").
	ForceTLS bool
}

// ConfigWarning is something in a configuration file that was read but not applied.
type ConfigWarning struct {
	File    string
	Line    int
	Section string
	Key     string
	Reason  string
}

func (w ConfigWarning) String() string {
	return fmt.Sprintf("nbdconf: config %s:%d: [%s] %q: %s", w.File, w.Line, w.Section, w.Key, w.Reason)
}

// ConfigError reports a configuration file that cannot be used, with the place of the fault.
type ConfigError struct {
	File string
	// Line is the 1-based line of the fault, 0 when it concerns the whole file.
	Line int
	Err  error
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("nbdconf: config %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("nbdconf: config %s:%d: %v", e.File, e.Line, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// maxConfigLine bounds one line of a configuration or access file.
const maxConfigLine = 64 << 10

// ReadConfigFile reads the nbd-server configuration file at path, and the *.conf files of its
// includedir in name order. Those may hold export sections only.
func ReadConfigFile(path string) (*ConfigFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nbdconf: config: %w", err)
	}
	defer f.Close()
	c, err := ParseConfigFile(f, path)
	if err != nil {
		return nil, err
	}
	if c.Generic.IncludeDir == "" {
		return c, nil
	}
	names, err := filepath.Glob(filepath.Join(c.Generic.IncludeDir, "*.conf"))
	if err != nil {
		return nil, fmt.Errorf("nbdconf: config %s: includedir %q: %w", path, c.Generic.IncludeDir, err)
	}
	if _, err := os.Stat(c.Generic.IncludeDir); err != nil {
		return nil, fmt.Errorf("nbdconf: config %s: includedir: %w", path, err)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := c.readInclude(name); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *ConfigFile) readInclude(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("nbdconf: config: %w", err)
	}
	defer f.Close()
	p := configParser{file: name, c: c, include: true}
	return p.parse(f)
}

// ParseConfigFile parses an nbd-server configuration file read from r; name is used in errors
// and warnings. It does not read the includedir (ReadConfigFile does).
//
// Booleans are true, false, 1 or 0 as GLib accepts them; integers are decimal. Every export
// needs an absolute exportname. A malformed line, a bad value or a missing [generic] section is
// a *ConfigError naming the file and line.
func ParseConfigFile(r io.Reader, name string) (*ConfigFile, error) {
	c := &ConfigFile{}
	p := configParser{file: name, c: c}
	if err := p.parse(r); err != nil {
		return nil, err
	}
	if !p.sawGeneric {
		return nil, &ConfigError{File: name, Err: errors.New("no [generic] section")}
	}
	return c, nil
}

// Addrs returns the addresses to pass to net.Listen("tcp", ...), with nbd-server's defaults:
// port nbd.DefaultPort, and every IPv6 and IPv4 address, which Go serves with one dual-stack
// listener (":10809"); nbd-server's "::" and "0.0.0.0" would collide as two Go listeners.
func (g *ConfigGeneric) Addrs() []string {
	port := g.Port
	if port == "" {
		port = strconv.Itoa(nbd.DefaultPort)
	}
	if len(g.ListenAddrs) == 0 {
		return []string{":" + port}
	}
	addrs := make([]string, len(g.ListenAddrs))
	for i, h := range g.ListenAddrs {
		addrs[i] = net.JoinHostPort(h, port)
	}
	return addrs
}

// Export returns the export section called name, or nil.
func (c *ConfigFile) Export(name string) *ConfigExport {
	for i := range c.Exports {
		if c.Exports[i].Name == name {
			return &c.Exports[i]
		}
	}
	return nil
}

type configParser struct {
	file    string
	c       *ConfigFile
	include bool // an includedir file: no [generic]

	sawGeneric bool
	section    string
	export     *ConfigExport // nil while in [generic]
	seen       map[string]int
}

func (p *configParser) errorf(line int, format string, args ...any) error {
	return &ConfigError{File: p.file, Line: line, Err: fmt.Errorf(format, args...)}
}

func (p *configParser) warn(line int, key, reason string) {
	p.c.Warnings = append(p.c.Warnings, ConfigWarning{File: p.file, Line: line,
		Section: p.section, Key: key, Reason: reason})
}

func (p *configParser) parse(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxConfigLine)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		raw = bytes.TrimSuffix(raw, []byte("\r"))
		if !utf8.Valid(raw) {
			return p.errorf(line, "line is not valid UTF-8")
		}
		s := strings.TrimLeft(string(raw), " \t\f\v")
		switch {
		case s == "" || s[0] == '#':
			continue
		case s[0] == '[':
			if err := p.startSection(line, s); err != nil {
				return err
			}
		default:
			key, value, ok := strings.Cut(s, "=")
			key = strings.TrimRight(key, " \t\f\v")
			if !ok || key == "" {
				return p.errorf(line, "line %q is not a section header, key = value or comment",
					truncate(s))
			}
			if p.section == "" {
				return p.errorf(line, "key %q before the first section", key)
			}
			if prev, dup := p.seen[key]; dup {
				p.warn(line, key, fmt.Sprintf("repeats line %d; the last value wins", prev))
			}
			p.seen[key] = line
			if err := p.setKey(line, key, strings.TrimLeft(value, " \t\f\v")); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return p.errorf(line+1, "line longer than %d bytes", maxConfigLine)
		}
		return &ConfigError{File: p.file, Err: err}
	}
	return p.finishSection()
}

func (p *configParser) startSection(line int, s string) error {
	s = strings.TrimRight(s, " \t\f\v")
	if !strings.HasSuffix(s, "]") || len(s) < 2 {
		return p.errorf(line, "section header %q lacks its closing ]", truncate(s))
	}
	name := s[1 : len(s)-1]
	if name == "" {
		return p.errorf(line, "empty section name")
	}
	if strings.ContainsAny(name, "[]") || strings.ContainsFunc(name, isControl) {
		return p.errorf(line, "section name %q holds [, ] or a control character", truncate(name))
	}
	if len(name) > nbd.MaxStringLength {
		return p.errorf(line, "section name of %d bytes is longer than the protocol's %d",
			len(name), nbd.MaxStringLength)
	}
	if err := p.finishSection(); err != nil {
		return err
	}
	p.section = name
	p.seen = map[string]int{}
	if name == "generic" {
		if p.include {
			return p.errorf(line, "[generic] is not allowed in an includedir file")
		}
		if p.sawGeneric {
			return p.errorf(line, "second [generic] section")
		}
		p.sawGeneric = true
		p.export = nil
		return nil
	}
	if prev := p.c.Export(name); prev != nil {
		return p.errorf(line, "export section [%s] repeats %s:%d", name, prev.File, prev.Line)
	}
	p.export = &ConfigExport{Name: name, File: p.file, Line: line}
	return nil
}

// finishSection checks and stores the export section being read.
func (p *configParser) finishSection() error {
	e := p.export
	if e == nil {
		return nil
	}
	p.export = nil
	if e.Path == "" {
		return p.errorf(e.Line, "export [%s] has no exportname", e.Name)
	}
	if strings.Contains(e.Path, "%s") {
		p.warnAt(e, "exportname", "per-client file names (%s, virtstyle) are not supported; the path is used as written")
	}
	p.c.Exports = append(p.c.Exports, *e)
	return nil
}

func (p *configParser) warnAt(e *ConfigExport, key, reason string) {
	p.c.Warnings = append(p.c.Warnings, ConfigWarning{File: p.file, Line: p.seen[key],
		Section: e.Name, Key: key, Reason: reason})
}

// Keys of nbd-server that netroot reads but does not act on. A boolean among them set to false
// and a string set to "" are silently accepted.
var unsupportedGeneric = map[string]string{
	"oldstyle": "oldstyle negotiation is not supported (nor by nbd-server since 3.10)",
}

var unsupportedExport = map[string]string{
	"multifile":      "multi-file exports are not supported",
	"treefiles":      "tree-file exports are not supported",
	"temporary":      "temporary exports are not supported",
	"waitfile":       "waitfile migration is not supported",
	"virtstyle":      "per-client file names are not supported",
	"prerun":         "prerun commands are not run",
	"postrun":        "postrun commands are not run",
	"transactionlog": "transaction logs are not written",
	"sdp":            "SDP is not supported",
	"splice":         "splice has no effect; netroot chooses its own zero-copy path",
	"listenaddr":     "ignored in an export section, as by nbd-server",
	"port":           "per-export ports (oldstyle) are not supported",
	"datalog":        "data logs are not written",
}

func (p *configParser) setKey(line int, key, value string) error {
	if p.export == nil {
		return p.setGeneric(line, key, value)
	}
	return p.setExport(line, key, value)
}

func (p *configParser) setGeneric(line int, key, value string) error {
	g := &p.c.Generic
	var err error
	switch key {
	case "port":
		g.Port, err = p.port(line, key, value)
	case "listenaddr":
		g.ListenAddrs, err = p.hostList(line, key, value)
	case "allowlist":
		g.AllowList, err = p.boolean(line, key, value)
	case "certfile":
		g.CertFile, err = p.str(line, key, value)
	case "keyfile":
		g.KeyFile, err = p.str(line, key, value)
	case "cacertfile":
		g.CACertFile, err = p.str(line, key, value)
	case "force_tls", "tlsonly":
		g.ForceTLS, err = p.boolean(line, key, value)
	case "tlsprio":
		g.TLSPriority, err = p.str(line, key, value)
		if err == nil && g.TLSPriority != "" {
			p.warn(line, key, "GnuTLS priority strings do not apply to crypto/tls; ignored")
		}
	case "user":
		g.User, err = p.str(line, key, value)
	case "group":
		g.Group, err = p.str(line, key, value)
	case "max_threads":
		g.MaxThreads, err = p.integer(line, key, value, 0)
	case "includedir":
		g.IncludeDir, err = p.str(line, key, value)
	case "unixsock":
		g.UnixSocket, err = p.str(line, key, value)
	case "duallisten":
		g.DualListen, err = p.boolean(line, key, value)
	case "splice":
		g.Splice, err = p.boolean(line, key, value)
	case "oldstyle":
		var on bool
		if on, err = p.boolean(line, key, value); err == nil && on {
			return p.errorf(line, "%s", unsupportedGeneric[key])
		}
	default:
		p.warn(line, key, "unknown key; ignored")
	}
	return err
}

func (p *configParser) setExport(line int, key, value string) error {
	e := p.export
	var err error
	switch key {
	case "exportname":
		if e.Path, err = p.str(line, key, value); err == nil && !filepath.IsAbs(e.Path) {
			err = p.errorf(line, "exportname %q is not an absolute path", e.Path)
		}
	case "filesize":
		var n int
		n, err = p.integer(line, key, value, 0)
		e.Size = int64(n)
	case "readonly":
		e.ReadOnly, err = p.boolean(line, key, value)
	case "copyonwrite":
		e.CopyOnWrite, err = p.boolean(line, key, value)
	case "cowdir":
		e.CowDir, err = p.str(line, key, value)
	case "sparse_cow":
		e.SparseCOW, err = p.boolean(line, key, value)
	case "flush":
		e.Flush, err = p.boolean(line, key, value)
	case "fua":
		e.FUA, err = p.boolean(line, key, value)
	case "trim":
		e.Trim, err = p.boolean(line, key, value)
	case "rotational":
		e.Rotational, err = p.boolean(line, key, value)
	case "sync":
		e.Sync, err = p.boolean(line, key, value)
	case "authfile":
		e.AuthFile, err = p.str(line, key, value)
	case "maxconnections":
		e.MaxConnections, err = p.integer(line, key, value, 0)
	case "timeout":
		var n int
		n, err = p.integer(line, key, value, 0)
		if err == nil && n > int(time.Duration(1<<63-1)/time.Second) {
			err = p.errorf(line, "timeout %d seconds is too long", n)
		}
		e.IdleTimeout = time.Duration(n) * time.Second
	case "force_tls", "tlsonly":
		e.ForceTLS, err = p.boolean(line, key, value)
	default:
		reason, known := unsupportedExport[key]
		if !known {
			p.warn(line, key, "unknown key; ignored")
			return nil
		}
		// A feature switched off, or an empty command, asks for nothing netroot lacks.
		if on, berr := parseBool(value); (berr == nil && !on) || value == "" {
			return nil
		}
		p.warn(line, key, reason+"; ignored")
	}
	return err
}

// str unescapes a GLib key file string value: \s, \n, \t, \r and \\.
func (p *configParser) str(line int, key, value string) (string, error) {
	if !strings.Contains(value, `\`) {
		return value, nil
	}
	var b strings.Builder
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(value) {
			return "", p.errorf(line, "%s value %q ends with a lone backslash", key, truncate(value))
		}
		switch value[i] {
		case 's':
			b.WriteByte(' ')
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '\\':
			b.WriteByte('\\')
		default:
			return "", p.errorf(line, "%s value %q has an invalid escape \\%c", key, truncate(value), value[i])
		}
	}
	return b.String(), nil
}

func parseBool(value string) (bool, error) {
	switch strings.TrimRight(value, " \t\f\v") {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, errors.New("not true, false, 1 or 0")
}

func (p *configParser) boolean(line int, key, value string) (bool, error) {
	b, err := parseBool(value)
	if err != nil {
		return false, p.errorf(line, "%s value %q: %w", key, truncate(value), err)
	}
	return b, nil
}

func (p *configParser) integer(line int, key, value string, lo int) (int, error) {
	n, err := strconv.ParseInt(strings.TrimRight(value, " \t\f\v"), 10, 0)
	if err != nil {
		return 0, p.errorf(line, "%s value %q: %w", key, truncate(value), err)
	}
	if n < int64(lo) {
		return 0, p.errorf(line, "%s value %d is below %d", key, n, lo)
	}
	return int(n), nil
}

func (p *configParser) port(line int, key, value string) (string, error) {
	v := strings.TrimRight(value, " \t\f\v")
	if v == "" {
		return "", nil
	}
	if n, err := strconv.ParseUint(v, 10, 16); err == nil {
		return strconv.FormatUint(n, 10), nil
	}
	if isServiceName(v) {
		return v, nil
	}
	return "", p.errorf(line, "%s value %q is neither a port number (0-65535) nor a service name", key, truncate(value))
}

func (p *configParser) hostList(line int, key, value string) ([]string, error) {
	var hosts []string
	for h := range strings.SplitSeq(value, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			return nil, p.errorf(line, "%s value %q has an empty address", key, truncate(value))
		}
		if a, err := netip.ParseAddr(h); err == nil {
			hosts = append(hosts, a.String())
			continue
		}
		if !isHostName(h) {
			return nil, p.errorf(line, "%s value %q: %q is neither an IP address nor a host name", key, truncate(value), truncate(h))
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

func isServiceName(s string) bool {
	if len(s) > 64 || s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetter(s[i]) && !isDigit(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

func isHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if !isLetter(label[i]) && !isDigit(label[i]) && label[i] != '-' {
				return false
			}
		}
	}
	return true
}

func isLetter(c byte) bool  { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// truncate shortens s for an error message.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// ReadAuthFile reads an access file in nbd-server's authfile format: one IP address or
// CIDR prefix (address/length) per line, "#" starting a comment, blank lines skipped.
//
// nbd-server lets everyone connect when the file does not exist and no one when it holds no
// addresses; so a missing file is an error wrapping fs.ErrNotExist, and an empty file a
// non-nil empty list (AuthAllows then refuses everyone).
func ReadAuthFile(path string) ([]netip.Prefix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nbdconf: authfile: %w", err)
	}
	defer f.Close()
	return ParseAuthFile(f, path)
}

// ParseAuthFile parses an access file read from r (see ReadAuthFile); name is used in errors.
// Addresses become full-length prefixes, host bits after the prefix length are cleared (as
// nbd-server ignores them), and IPv4-mapped IPv6 entries become IPv4. A line that is neither an
// address nor a prefix is a *ConfigError with its line. The result is never nil on success.
func ParseAuthFile(r io.Reader, name string) ([]netip.Prefix, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxConfigLine)
	list := []netip.Prefix{}
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parseAuthEntry(s)
		if err != nil {
			return nil, &ConfigError{File: name, Line: line, Err: err}
		}
		if !slices.Contains(list, p) {
			list = append(list, p)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ConfigError{File: name, Line: line + 1, Err: fmt.Errorf("line longer than %d bytes", maxConfigLine)}
		}
		return nil, &ConfigError{File: name, Err: err}
	}
	return list, nil
}

func parseAuthEntry(s string) (netip.Prefix, error) {
	addrText, bitsText, hasBits := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("authfile entry %q is not an address or prefix: %w", truncate(s), err)
	}
	addr = addr.WithZone("")
	bits := addr.BitLen()
	if hasBits {
		n, err := strconv.ParseUint(bitsText, 10, 8)
		if err != nil || int(n) > addr.BitLen() {
			return netip.Prefix{}, fmt.Errorf("authfile entry %q has a bad prefix length %q for a %d-bit address",
				truncate(s), truncate(bitsText), addr.BitLen())
		}
		bits = int(n)
	}
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("authfile entry %q: %w", truncate(s), err)
	}
	return p, nil
}

// AuthAllows reports whether a client at addr may connect under the access list allow as read
// by ReadAuthFile: nil allows everyone (no authfile), an empty list no one. IPv4 clients seen on
// an IPv6 socket (::ffff:a.b.c.d) match IPv4 entries.
func AuthAllows(allow []netip.Prefix, addr netip.Addr) bool {
	if allow == nil {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
