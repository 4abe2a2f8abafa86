package nbd

import "github.com/netroot/netroot/backend"

// newOverlay returns a copy-on-write export's private overlay over its device.
func newOverlay(e *Export) (backend.Device, error) {
	if e.NewOverlay != nil {
		return e.NewOverlay(e.Device)
	}
	return backend.NewCopyOnWrite(e.Device, nil, nil)
}
