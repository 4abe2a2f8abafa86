//go:build !linux

package kis

import (
	"errors"
	"os"
)

// reflink is Linux-only here; elsewhere staging copies.
func reflink(dst, src *os.File) error { return errors.ErrUnsupported }
