// errnoOf: how a device's error becomes one of the protocol's error values.

package nbd

import (
	"errors"
	"os"
	"syscall"

	"github.com/netroot/netroot/backend"
)

// errnoOf maps a device error to the protocol's error values.
func errnoOf(err error) Errno {
	var e Errno
	if errors.As(err, &e) {
		if _, ok := errnoText[e]; ok && e != 0 {
			return e
		}
		return EIO // only the document's values may go on the wire
	}
	var re *backend.RangeError
	switch {
	case errors.Is(err, backend.ErrReadOnly):
		return EPERM
	case errors.As(err, &re):
		if re.Op == "write" || re.Op == "zero" {
			return ENOSPC
		}
		return EINVAL
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ENOSPC
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES),
		errors.Is(err, os.ErrPermission):
		return EPERM
	case errors.Is(err, syscall.ENOMEM):
		return ENOMEM
	case errors.Is(err, syscall.EINVAL):
		return EINVAL
	case errors.Is(err, errors.ErrUnsupported), errors.Is(err, syscall.EOPNOTSUPP):
		return ENOTSUP
	}
	return EIO
}
