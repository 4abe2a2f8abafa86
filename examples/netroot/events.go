package main

import (
	"errors"
	"net"
	"time"

	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// The servers' hooks, turned into one log line per boot-relevant event.

func logTFTPTransfer(e *env) func(tftp.TransferInfo) {
	return func(ti tftp.TransferInfo) {
		switch {
		case errors.Is(ti.Err, tftp.ErrFileNotFound):
			// pxelinux asks for pxelinux.cfg/<uuid>, <mac>, <hex ip>... before default.
			e.log.Debug("tftp file not found", "client", ti.Remote, "file", ti.Filename)
		case ti.Err != nil:
			e.log.Warn("tftp transfer failed", "client", ti.Remote, "file", ti.Filename, "bytes", ti.Bytes, "err", ti.Err)
		case ti.Op == tftp.OpWRQ:
			e.log.Info("client uploaded", "client", ti.Remote.Addr(), "file", ti.Filename, "bytes", ti.Bytes,
				"blksize", ti.BlockSize, "windowsize", ti.WindowSize, "took", ti.Duration.Round(time.Millisecond))
		default:
			e.log.Info("client fetched", "client", ti.Remote.Addr(), "file", ti.Filename, "bytes", ti.Bytes,
				"blksize", ti.BlockSize, "windowsize", ti.WindowSize, "took", ti.Duration.Round(time.Millisecond))
		}
	}
}

func logNBDAttach(e *env) func(*nbd.Export, net.Addr) {
	return func(x *nbd.Export, remote net.Addr) {
		e.log.Info("nbd client attached", "client", remote.String(), "export", x.Name)
	}
}
