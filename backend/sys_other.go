//go:build !linux

package backend

import (
	"errors"
	"os"
)

var errNoFallocate = errors.New("backend: fallocate is not available on this system")

func punchHole(*os.File, int64, int64) error { return errNoFallocate }

func openAnonymous(string) (*os.File, error) { return nil, errors.ErrUnsupported }
