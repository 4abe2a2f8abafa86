package kis

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/netroot/netroot/internal/cmdline"
)

// maxAppendSize bounds the .append file read; a kernel command line is at most a few KiB.
const maxAppendSize = 64 << 10

// ParseAppend splits the kernel options of a .append file the way the kernel splits its
// command line: at white space (space, tab, newline, vertical tab, form feed, carriage return)
// outside double quotes. It returns the root= value KIWI put there (root=UUID=... for the
// image's filesystem) separately from the other options, which keep their quotes so that
// strings.Join(options, " ") is a valid command line again. A network root replaces root=, so a
// boot entry should carry only options.
func ParseAppend(s string) (root string, options []string, err error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", nil, fmt.Errorf("kis: append options %q hold a NUL byte", clip(s))
	}
	if cmdline.Unterminated(s) {
		return "", nil, fmt.Errorf("kis: append options %q have an unterminated quote", clip(s))
	}
	for _, f := range cmdline.Split(s) {
		// The kernel also reads "root=x" (quote first) as root=x.
		if a := cmdline.SplitArg(f); a.Key == "root" && a.HasValue {
			root = a.Value
			continue
		}
		options = append(options, f)
	}
	return root, options, nil
}

// ReadAppend reads the build's .append file with ParseAppend. A build without one has no
// options and no root: "", nil, nil.
func ReadAppend(b Build) (root string, options []string, err error) {
	if b.Append == "" {
		return "", nil, nil
	}
	f, err := os.Open(b.Append)
	if err != nil {
		return "", nil, fmt.Errorf("kis: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxAppendSize+1))
	if err != nil {
		return "", nil, fmt.Errorf("kis: %w", err)
	}
	if len(data) > maxAppendSize {
		return "", nil, fmt.Errorf("kis: append file %s is longer than %d bytes", b.Append, maxAppendSize)
	}
	root, options, err = ParseAppend(string(data))
	if err != nil {
		return "", nil, fmt.Errorf("%w (in %s)", err, b.Append)
	}
	return root, options, nil
}
