package overlaycmdline

import "github.com/netroot/netroot/internal/cmdline"

// Fields splits a kernel command line into its arguments the way the kernel's next_arg
// (lib/cmdline.c) and dracut's getarg do: white space (space, tab, newline, vertical tab, form
// feed, carriage return) separates arguments, and a double quote toggles a quoted section in
// which white space does not. Each argument is returned as written, quotes included, so that
// joining the fields with single spaces preserves every argument.
func Fields(line string) []string { return cmdline.Split(line) }

// Arg is one kernel command line argument split into its key and value the way the kernel and
// dracut split it: the key runs to the first '=' after its first byte, and one pair of double
// quotes around the value (or around the whole argument) is removed.
type Arg struct {
	Key      string
	Value    string
	HasValue bool // whether the argument has an '=' at all ("rd.kiwi.debug" has none)
}

// SplitArg splits one field returned by [Fields] into key and value.
func SplitArg(field string) Arg {
	a := cmdline.SplitArg(field)
	return Arg{Key: a.Key, Value: a.Value, HasValue: a.HasValue}
}

// quoteArg renders key=value, quoting the value when it holds white space so the kernel keeps
// it in one argument. Values that contain a double quote cannot be represented and are left as
// is.
func quoteArg(arg string) string { return cmdline.Quote(arg) }
