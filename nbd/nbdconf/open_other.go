//go:build !linux

package nbdconf

import "github.com/netroot/netroot/backend"

// defaultOpen is nil: backend.File, which OpenConfigExport opens, exists on Linux only.
var defaultOpen func(*ConfigExport) (backend.Device, error)
