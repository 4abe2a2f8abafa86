package pxecfg

import (
	"fmt"
	"strings"
)

// kernelArgs splits a kernel command line into its arguments by the kernel's rules (whitespace
// separates, double quotes group) and removes the quotes the kernel removes, returning what the
// kernel will see as each argument: `a="b c"` becomes `a=b c`.
func kernelArgs(cmdline string) []string {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' }
	var out []string
	i := 0
	for {
		for i < len(cmdline) && isSpace(cmdline[i]) {
			i++
		}
		if i == len(cmdline) {
			return out
		}
		start, inQuote := i, false
		for ; i < len(cmdline) && (inQuote || !isSpace(cmdline[i])); i++ {
			if cmdline[i] == '"' {
				inQuote = !inQuote
			}
		}
		out = append(out, unquoteArg(cmdline[start:i]))
	}
}

// unquoteArg removes one pair of quotes around a value or a whole argument, as the kernel's
// next_arg does.
func unquoteArg(s string) string {
	quoted := strings.HasPrefix(s, `"`)
	if quoted {
		s = s[1:]
	}
	key, val, ok := strings.Cut(s, "=")
	strip := quoted
	if ok && strings.HasPrefix(val, `"`) {
		val, strip = val[1:], true
	}
	if ok {
		if strip {
			val = strings.TrimSuffix(val, `"`)
		}
		return key + "=" + val
	}
	if strip {
		key = strings.TrimSuffix(key, `"`)
	}
	return key
}

// checkKernelArg rejects an argument that a loader passing arguments word by word (GRUB, iPXE)
// cannot hand to the kernel unchanged.
func checkKernelArg(loader, arg string) error {
	if strings.ContainsAny(arg, `"'\`) {
		return fmt.Errorf("pxecfg: %s: kernel argument %q contains a quote or backslash, which %s escapes and the kernel does not unescape", loader, arg, loader)
	}
	return nil
}
