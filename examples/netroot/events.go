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
		case ti.Err != nil:
			// The TFTP server's own logger (protoLog) has logged the failure: a WARN line, or
			// with -v an INFO line for a file not found (pxelinux asks for
			// pxelinux.cfg/<uuid>, <mac>, <hex ip>... before default).
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

// logNBDDetach is the nbd command's OnDetach: what the client read and wrote, and for how long.
func logNBDDetach(e *env) func(nbd.Detach) {
	return func(d nbd.Detach) {
		args := []any{"client", d.Remote.String(), "export", d.Export.Name, "bytes_read", d.BytesRead,
			"bytes_written", d.BytesWritten, "requests", d.Requests, "took", d.Duration.Round(time.Millisecond)}
		if d.Err != nil && !errors.Is(d.Err, nbd.ErrServerClosed) {
			args = append(args, "err", d.Err)
		}
		e.log.Info("nbd client detached", args...)
	}
}
