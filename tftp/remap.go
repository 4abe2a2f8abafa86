package tftp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strings"
	"unicode"
)

// MapRules are file name remapping rules in the format of tftpd-hpa's map files (in.tftpd
// --map-file, see tftpd(8)): each rule rewrites the requested name with a regular expression,
// or refuses the request. Use [ParseMapRules] to read a file and [MapRules.Handler] to apply
// them in front of a Handler. A MapRules is safe for concurrent use.
//
// Each non-comment line holds an operation, an extended regular expression and, optionally, a
// replacement; fields are separated by white space, "#" starts a comment, and a backslash
// escapes white space or "#". The operation is any combination of:
//
//	r  replace the part of the name that the expression matches by the replacement
//	g  repeat the rule until it no longer matches (with r)
//	i  match case-insensitively
//	e  end rule processing after this rule when it matched
//	s  start over from the first rule after this rule when it matched
//	a  refuse the request with an access violation; a replacement is the message, and as in
//	   tftpd-hpa it replaces only the match ("^private/.*$" to replace the whole name)
//	G  only for read requests;  P  only for write requests
//	4  only for IPv4 clients;   6  only for IPv6 clients
//	~  apply the rule when the expression does not match (not with r)
//
// In the replacement, \0 is the whole match, \1 to \9 the parenthesized subexpressions, \i the
// client's IP address (192.0.2.169, 2001:db8::1), \x the address in hexadecimal (C00002A9), \U
// and \L turn the letters that follow to upper or lower case and \E ends that; a backslash
// before any other character stands for that character.
//
// Expressions are Go regular expressions matched leftmost-longest as POSIX egrep does; the
// POSIX features Go lacks (back-references in the expression) are reported by ParseMapRules.
// The flags of newer tftpd-hpa versions that check the file system (E, and gg) are refused, as
// the served tree is not known here. Rule processing stops, refusing the request, after
// MaxMapSteps matches or when the name grows beyond MaxMappedName bytes, so no rule set can
// make a request loop or grow without bound.
type MapRules struct {
	rules []mapRule
}

// Bounds of rule processing for one name.
const (
	// MaxMapSteps is how many rule matches one name may take, as tftpd-hpa's deadman counter.
	MaxMapSteps = 4096
	// MaxMappedName is the longest name rules may produce.
	MaxMappedName = 4096
)

type mapRule struct {
	line                        int
	re                          *regexp.Regexp
	repl                        string
	rewrite, global, end, again bool
	abort, invert               bool
	onlyOp                      Opcode // 0: both
	onlyV4, onlyV6              bool
}

// maxMapLine is the longest line of a map file, as tftpd-hpa's MAXLINE.
const maxMapLine = 16384

// ParseMapRules reads a tftpd-hpa map file. An error names the line and what is wrong with it.
func ParseMapRules(r io.Reader) (*MapRules, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxMapLine)
	m := &MapRules{}
	for n := 1; sc.Scan(); n++ {
		rule, ok, err := parseMapLine(sc.Text(), n)
		if err != nil {
			return nil, err
		}
		if ok {
			m.rules = append(m.rules, rule)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("tftp: map file: a line is longer than %d bytes", maxMapLine)
		}
		return nil, fmt.Errorf("tftp: map file: %w", err)
	}
	return m, nil
}

// Len returns the number of rules.
func (m *MapRules) Len() int { return len(m.rules) }

// mapFields splits a line into at most three fields as tftpd-hpa does: white space separates
// them, an unescaped "#" ends the line, and escapes are kept for the regular expression and
// the replacement to interpret.
func mapFields(line string) []string {
	var fields []string
	i := 0
	for len(fields) < 3 {
		for i < len(line) && isMapSpace(line[i]) {
			i++
		}
		if i == len(line) || line[i] == '#' {
			break
		}
		start := i
		for esc := false; i < len(line); i++ {
			c := line[i]
			if !esc && (isMapSpace(c) || c == '#') {
				break
			}
			esc = !esc && c == '\\'
		}
		fields = append(fields, line[start:i])
	}
	return fields
}

func isMapSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

func parseMapLine(line string, n int) (mapRule, bool, error) {
	f := mapFields(line)
	if len(f) == 0 {
		return mapRule{}, false, nil
	}
	r := mapRule{line: n}
	icase := false
	for _, c := range f[0] {
		switch c {
		case 'r':
			r.rewrite = true
		case 'g':
			if r.global {
				return r, false, fmt.Errorf("tftp: map file line %d: operation %q: gg (sed-style global) is not supported", n, f[0])
			}
			r.global = true
		case 'e':
			r.end = true
		case 's':
			r.again = true
		case 'a':
			r.abort = true
		case 'i':
			icase = true
		case '~':
			r.invert = true
		case '4':
			r.onlyV4 = true
		case '6':
			r.onlyV6 = true
		case 'G':
			r.onlyOp = OpRRQ
		case 'P':
			r.onlyOp = OpWRQ
		case 'E':
			return r, false, fmt.Errorf("tftp: map file line %d: operation %q: E (rewrite only to existing files) is not supported", n, f[0])
		default:
			return r, false, fmt.Errorf("tftp: map file line %d: operation %q has an unknown letter %q", n, f[0], c)
		}
	}
	if r.rewrite && r.invert {
		return r, false, fmt.Errorf("tftp: map file line %d: r rules cannot be inverted with ~", n)
	}
	if !r.rewrite {
		r.global = false
	}
	if len(f) < 2 {
		return r, false, fmt.Errorf("tftp: map file line %d: no regular expression", n)
	}
	expr := f[1]
	if hasBackReference(expr) {
		return r, false, fmt.Errorf("tftp: map file line %d: regular expression %q: back-references are not supported", n, expr)
	}
	if icase {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return r, false, fmt.Errorf("tftp: map file line %d: regular expression %q: %w", n, f[1], err)
	}
	re.Longest()
	r.re = re
	if len(f) > 2 {
		r.repl = f[2]
	}
	return r, true, nil
}

// hasBackReference reports whether a POSIX expression uses \1 to \9, which Go's regular
// expressions do not have (Go would read them as octal escapes).
func hasBackReference(expr string) bool {
	for i := 0; i+1 < len(expr); i++ {
		if expr[i] == '\\' {
			if expr[i+1] >= '1' && expr[i+1] <= '9' {
				return true
			}
			i++
		}
	}
	return false
}

// errMapFailure is the message tftpd-hpa sends when its rules do not terminate.
const errMapFailure = "Remap table failure"

// Map applies the rules to name, requested with op by client, and returns the new name. A rule
// with a (refuse) or rules that do not finish within the bounds return an *ErrorPacket with
// ErrAccessViolation and the message for the client.
func (m *MapRules) Map(name string, op Opcode, client netip.Addr) (string, error) {
	client = client.Unmap()
	cur := name
	steps := MaxMapSteps
	var loc []int
	for i := 0; i < len(m.rules); i++ {
		r := &m.rules[i]
		if (r.onlyOp != 0 && r.onlyOp != op) || (r.onlyV4 && !client.Is4()) || (r.onlyV6 && !client.Is6()) {
			continue
		}
		matched := false
		for {
			if steps--; steps < 0 {
				return "", &ErrorPacket{Code: ErrAccessViolation, Message: errMapFailure}
			}
			loc = r.re.FindStringSubmatchIndex(cur)
			if (loc != nil) == r.invert {
				break
			}
			if r.invert {
				loc = nil
			}
			matched = true
			if r.abort {
				msg := ""
				if r.repl != "" {
					msg = expandMap(r.repl, cur, loc, client)
				}
				return "", &ErrorPacket{Code: ErrAccessViolation, Message: msg}
			}
			if r.rewrite {
				cur = expandMap(r.repl, cur, loc, client)
				if len(cur) > MaxMappedName {
					return "", &ErrorPacket{Code: ErrAccessViolation, Message: errMapFailure}
				}
			}
			if !r.global {
				break
			}
		}
		if !matched {
			continue
		}
		if r.end {
			return cur, nil
		}
		if r.again {
			i = -1
		}
	}
	return cur, nil
}

// expandMap returns cur with its match loc replaced by the expansion of repl; with no match
// (an inverted rule) only the expansion, with empty subexpressions.
func expandMap(repl, cur string, loc []int, client netip.Addr) string {
	var b strings.Builder
	if loc != nil {
		b.WriteString(cur[:loc[0]])
	}
	xform := func(r rune) rune { return r }
	emit := func(s string) {
		for _, c := range s {
			b.WriteRune(xform(c))
		}
	}
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c != '\\' || i+1 == len(repl) {
			emit(repl[i : i+1])
			continue
		}
		i++
		switch m := repl[i]; {
		case m >= '0' && m <= '9':
			k := int(m - '0')
			if loc != nil && 2*k+1 < len(loc) && loc[2*k] >= 0 {
				emit(cur[loc[2*k]:loc[2*k+1]])
			}
		case m == 'L':
			xform = unicode.ToLower
		case m == 'U':
			xform = unicode.ToUpper
		case m == 'E':
			xform = func(r rune) rune { return r }
		case m == 'i':
			if client.IsValid() {
				emit(client.WithZone("").String())
			}
		case m == 'x':
			if client.IsValid() {
				emit(fmt.Sprintf("%X", client.AsSlice()))
			}
		default:
			emit(repl[i : i+1])
		}
	}
	if loc != nil {
		b.WriteString(cur[loc[1]:])
	}
	return b.String()
}

// Handler returns a Handler that maps each request's file name by the rules before next sees
// it, and answers a request that the rules refuse with an access violation. Leading slashes of
// the mapped name are dropped: tftpd-hpa with --secure resolves "/x" inside its root, and next
// (FileServer, say) serves names relative to its root and still refuses any that would leave it.
func (m *MapRules) Handler(next Handler) Handler {
	return HandlerFunc(func(w ResponseWriter, r *Request) {
		name, err := m.Map(r.Filename, r.Op, r.RemoteAddr.Addr())
		if err != nil {
			var ep *ErrorPacket
			if errors.As(err, &ep) {
				w.Error(ep.Code, ep.Message)
			} else {
				w.Error(ErrAccessViolation, "")
			}
			return
		}
		mapped := *r
		mapped.Filename = strings.TrimLeft(name, "/")
		next.ServeTFTP(w, &mapped)
	})
}
