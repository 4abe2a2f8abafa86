// Package cmdline splits a Linux kernel command line into arguments the way the kernel does
// (next_arg in lib/cmdline.c, which dracut's getarg copies): arguments are separated by white
// space outside double quotes, a double quote toggles a quoted section, and one pair of quotes
// around the value or around the whole argument is removed. There is no escape character.
//
// White space is the kernel's isspace (include/linux/ctype.h, lib/ctype.c): space, '\t', '\n',
// '\v', '\f' and '\r'. The kernel's table also counts the Latin-1 byte 0xA0 as a space, but
// dracut's copy uses the C library's isspace in the C locale, which does not, and 0xA0 is a
// continuation byte of many UTF-8 characters; since the arguments that matter here are read by
// dracut, this package splits at the six ASCII bytes only. Callers that render command lines
// reject non-ASCII values, so the kernel and dracut never disagree on what they produce.
package cmdline

import "strings"

// IsSpace reports whether the kernel separates arguments at c (ASCII only; see the package
// comment for 0xA0).
func IsSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// ContainsSpace reports whether s holds a byte at which the kernel would split.
func ContainsSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if IsSpace(s[i]) {
			return true
		}
	}
	return false
}

// Split splits a kernel command line into its arguments. Each argument is returned as written,
// quotes included, so joining the arguments with single spaces gives a command line the kernel
// splits the same way.
func Split(s string) []string {
	var out []string
	i := 0
	for {
		for i < len(s) && IsSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return out
		}
		start, inQuote := i, false
		for ; i < len(s) && (inQuote || !IsSpace(s[i])); i++ {
			if s[i] == '"' {
				inQuote = !inQuote
			}
		}
		out = append(out, s[start:i])
	}
}

// Unterminated reports whether s ends inside a quoted section, which the kernel closes at the
// end of the line.
func Unterminated(s string) bool { return strings.Count(s, `"`)%2 == 1 }

// Arg is one argument split into key and value as next_arg splits it.
type Arg struct {
	Key      string
	Value    string
	HasValue bool // whether the argument has a value at all ("quiet" has none)
}

// SplitArg splits one argument returned by [Split] into key and value: the key runs to the
// first '=' after its first byte (as in the kernel, "=x" has no value and "==x" has key "="), a leading quote of
// the whole argument and a leading quote of the value are removed, and a trailing quote is
// removed once when either was.
func SplitArg(arg string) Arg {
	s := arg
	quoted := strings.HasPrefix(s, `"`)
	if quoted {
		s = s[1:]
	}
	// next_arg looks for the '=' from the second byte on: "==0" is "=" = "0".
	eq := -1
	if len(s) > 1 {
		if i := strings.IndexByte(s[1:], '='); i >= 0 {
			eq = i + 1
		}
	}
	if eq < 0 {
		if quoted {
			s = strings.TrimSuffix(s, `"`)
		}
		return Arg{Key: s}
	}
	key, val := s[:eq], s[eq+1:]
	strip := quoted
	if strings.HasPrefix(val, `"`) {
		val, strip = val[1:], true
	}
	if strip {
		val = strings.TrimSuffix(val, `"`)
	}
	return Arg{Key: key, Value: val, HasValue: true}
}

// String renders a as the kernel hands it on: key=value without quotes, or key alone.
func (a Arg) String() string {
	if !a.HasValue {
		return a.Key
	}
	return a.Key + "=" + a.Value
}

// Unquote returns what the kernel sees of one argument: `a="b c"` becomes `a=b c`.
func Unquote(arg string) string { return SplitArg(arg).String() }

// Quote renders key=value so that the kernel keeps it as one argument, quoting the value (or
// the whole argument when it has no '=') when it holds white space. An argument that contains a
// double quote cannot be quoted and is returned as is.
func Quote(arg string) string {
	if !ContainsSpace(arg) || strings.Contains(arg, `"`) {
		return arg
	}
	if a := SplitArg(arg); a.HasValue {
		return a.Key + `="` + a.Value + `"`
	}
	return `"` + arg + `"`
}
