// Attaching an export to a connection: its device (or overlay), transmission flags, and
// which read and write paths the device allows.

package nbd

import (
	"fmt"
	"io"
	"time"

	"github.com/netroot/netroot/backend"
)

// exportFlags computes the transmission flags of e served from dev (nil: before the
// connection's device exists, for NBD_OPT_INFO).
func (c *conn) exportFlags(e *Export, dev backend.Device) TransmissionFlags {
	f := FlagHasFlags | FlagSendCache
	if dev == nil {
		dev = e.Device
	}
	cow := e.CopyOnWrite != CopyOnWriteOff
	if cow || (e.Writable && backend.IsWritable(e.Device)) {
		f |= FlagSendFlush | FlagSendFUA | FlagSendWriteZeroes | FlagSendFastZero
		if _, ok := dev.(backend.Trimmer); ok || cow {
			f |= FlagSendTrim
		}
	} else {
		f |= FlagReadOnly
	}
	if c.structured {
		f |= FlagSendDF
	}
	if canMultiConn(e) {
		f |= FlagCanMultiConn
	}
	return f
}

// canMultiConn reports whether e may advertise NBD_FLAG_CAN_MULTI_CONN: whether a client's
// connections see each other's completed writes, and a FLUSH on one makes the writes of all
// durable. That holds when every connection of the client uses the same device: a read-only
// export, a writable one (the server keeps no per-connection cache: writes go to the one
// device, a backend.File's one descriptor, whose FLUSH is an fsync of the whole file), and
// per-client overlays (one per client address). Per-connection overlays are private, so
// their writes are not seen by the client's other connections.
func canMultiConn(e *Export) bool {
	return e.CopyOnWrite != CopyOnWritePerConnection
}

// attach makes e this connection's export, creating its overlay if it has one.
func (c *conn) attach(e *Export, requested string) error {
	if !c.srv.acquireExport(e) {
		return fmt.Errorf("export %q: connection limit %d reached: %w", e.Name, e.MaxConnections, errExportFull)
	}
	if err := c.attachDevice(e, requested); err != nil {
		c.srv.releaseExport(e)
		return err
	}
	return nil
}

// attachDevice is attach after the export's connection count was taken.
func (c *conn) attachDevice(e *Export, requested string) error {
	dev := e.Device
	var err error
	switch e.CopyOnWrite {
	case CopyOnWritePerConnection:
		dev, err = newOverlay(e)
	case CopyOnWritePerClient:
		key := addrString(c.remote)
		if ip, ok := addrIP(c.remote); ok {
			key = ip.String()
		}
		dev, err = c.srv.clientOverlay(e, key)
	}
	if err == nil && e.CopyOnWrite != CopyOnWriteOff {
		if _, ok := dev.(io.WriterAt); !ok {
			err = fmt.Errorf("overlay %T cannot be written", dev)
		}
	}
	if err != nil {
		return fmt.Errorf("export %q: creating overlay: %w", e.Name, err)
	}
	c.export, c.requested, c.dev = e, requested, dev
	c.slicer, _ = dev.(slicer)
	if f, ok := dev.(fileRanger); ok {
		if _, _, err := f.FileRange(0, 0); err == nil && c.w.rc != nil {
			c.filer, c.sendfile = f, true
		}
	}
	c.size = uint64(dev.Size())
	c.flags = c.exportFlags(e, dev)
	c.blockCtx = c.structured && c.metaSelected && c.metaExport == requested
	c.mu.Lock()
	c.since = time.Now()
	c.transmitting = true
	if c.handing.Load() && c.handable() {
		// Entered transmission during a Handoff: hand over before reading any request.
		c.closing.Store(true)
	}
	c.mu.Unlock()
	return nil
}

func (c *conn) dropOverlay() {
	if c.export.CopyOnWrite != CopyOnWritePerConnection {
		return
	}
	if cl, ok := c.dev.(io.Closer); ok {
		cl.Close()
	}
}
