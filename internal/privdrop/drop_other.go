//go:build !linux

package privdrop

import "errors"

var errUnsupported = errors.New("privdrop: dropping privileges is only implemented on Linux")

// Drop is only implemented on Linux.
func Drop(Identity) error { return errUnsupported }

// Check is only implemented on Linux.
func Check(Identity) error { return errUnsupported }
