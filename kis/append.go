package kis

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxAppendSize bounds the .append file read; a kernel command line is at most a few KiB.
const maxAppendSize = 64 << 10

// ParseAppend splits the kernel options of a .append file the way the kernel splits its
// command line: at white space outside double quotes. It returns the root= value KIWI put
// there (root=UUID=... for the image's filesystem) separately from the other options, which
// keep their quotes so that strings.Join(options, " ") is a valid command line again. A network
// root replaces root=, so a boot entry should carry only options.
func ParseAppend(s string) (root string, options []string, err error) {
	var (
		tok     strings.Builder
		inQuote bool
		inTok   bool
	)
	flush := func() {
		if !inTok {
			return
		}
		t := tok.String()
		tok.Reset()
		inTok = false
		// The kernel also reads "root=x" (quote first) as root=x.
		if v, ok := strings.CutPrefix(strings.TrimPrefix(t, `"`), "root="); ok {
			root = strings.Trim(v, `"`)
			return
		}
		options = append(options, t)
	}
	for _, c := range s {
		switch {
		case c == '"':
			inQuote = !inQuote
			inTok = true
			tok.WriteRune(c)
		case !inQuote && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			flush()
		case c == 0:
			return "", nil, fmt.Errorf("kis: append options %q hold a NUL byte", clip(s))
		default:
			inTok = true
			tok.WriteRune(c)
		}
	}
	if inQuote {
		return "", nil, fmt.Errorf("kis: append options %q have an unterminated quote", clip(s))
	}
	flush()
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
