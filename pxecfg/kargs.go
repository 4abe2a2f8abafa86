package pxecfg

import (
	"fmt"
	"strings"

	"github.com/netroot/netroot/internal/cmdline"
)

// kernelArgs splits a kernel command line into its arguments by the kernel's rules (white
// space separates, double quotes group) and removes the quotes the kernel removes, returning
// what the kernel will see as each argument: `a="b c"` becomes `a=b c`.
func kernelArgs(line string) []string {
	fields := cmdline.Split(line)
	for i, f := range fields {
		fields[i] = cmdline.Unquote(f)
	}
	return fields
}

// checkKernelArg rejects an argument that a loader passing arguments word by word (GRUB, iPXE)
// cannot hand to the kernel unchanged.
func checkKernelArg(loader, arg string) error {
	if strings.ContainsAny(arg, `"'\`) {
		return fmt.Errorf("pxecfg: %s: kernel argument %q contains a quote or backslash, which %s escapes and the kernel does not unescape", loader, arg, loader)
	}
	return nil
}
