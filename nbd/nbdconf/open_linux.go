package nbdconf

import (
	"fmt"

	"github.com/netroot/netroot/backend"
)

// OpenConfigExport opens the file of an export section the way nbd-server uses it: read-only
// for readonly and copyonwrite exports (copy-on-write never modifies the file), with O_SYNC for
// sync, and limited to filesize bytes when that is set.
func OpenConfigExport(x *ConfigExport) (backend.Device, error) {
	dev, err := backend.OpenFile(x.Path, &backend.FileOptions{
		ReadOnly: x.ReadOnly || x.CopyOnWrite, Sync: x.Sync, Length: x.Size,
	})
	if err != nil {
		return nil, fmt.Errorf("nbdconf: config %s:%d: export %q: %w", x.File, x.Line, x.Name, err)
	}
	return dev, nil
}

var defaultOpen = OpenConfigExport
