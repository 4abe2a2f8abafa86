package overlaycmdline

import "strings"

// isSpace is C's isspace in the C locale, which dracut's getarg (dracut-util, a copy of the
// kernel's next_arg) uses to split /proc/cmdline. The kernel's own table also counts 0xA0 as a
// space; [Root.Validate] and [Options.Validate] reject non-ASCII values, so the two never
// disagree on a command line this package renders.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// Fields splits a kernel command line into its arguments the way the kernel's next_arg
// (lib/cmdline.c) and dracut's getarg do: whitespace separates arguments, and a double quote toggles a quoted section
// in which whitespace does not. Each argument is returned as written, quotes included, so that
// joining the fields with single spaces preserves every argument.
func Fields(cmdline string) []string {
	var out []string
	i := 0
	for {
		for i < len(cmdline) && isSpace(cmdline[i]) {
			i++
		}
		if i == len(cmdline) {
			return out
		}
		start := i
		inQuote := false
		for ; i < len(cmdline); i++ {
			c := cmdline[i]
			if isSpace(c) && !inQuote {
				break
			}
			if c == '"' {
				inQuote = !inQuote
			}
		}
		out = append(out, cmdline[start:i])
	}
}

// Arg is one kernel command line argument split into its key and value the way the kernel and
// dracut split it: the key runs to the first '=', and one pair of double quotes around the value
// (or around the whole argument) is removed.
type Arg struct {
	Key      string
	Value    string
	HasValue bool // whether the argument has an '=' at all ("rd.kiwi.debug" has none)
}

// SplitArg splits one field returned by [Fields] into key and value.
func SplitArg(field string) Arg {
	s := field
	quoted := false
	if strings.HasPrefix(s, `"`) {
		s = s[1:]
		quoted = true
	}
	// The kernel removes a trailing quote once when the value or the whole argument was
	// quoted; both cases remove the same byte, so strip it at most once.
	stripTail := quoted
	key, val, ok := strings.Cut(s, "=")
	if ok && strings.HasPrefix(val, `"`) {
		val = val[1:]
		stripTail = true
	}
	if stripTail {
		if ok && strings.HasSuffix(val, `"`) {
			val = val[:len(val)-1]
		} else if !ok && strings.HasSuffix(key, `"`) {
			key = key[:len(key)-1]
		}
	}
	return Arg{Key: key, Value: val, HasValue: ok}
}

// quoteArg renders key=value, quoting the value when it holds whitespace so the kernel keeps it
// in one argument. Values that contain a double quote cannot be represented and are left as is.
func quoteArg(arg string) string {
	if !strings.ContainsFunc(arg, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) }) || strings.Contains(arg, `"`) {
		return arg
	}
	if key, val, ok := strings.Cut(arg, "="); ok {
		return key + `="` + val + `"`
	}
	return `"` + arg + `"`
}
