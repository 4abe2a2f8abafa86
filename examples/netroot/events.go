package main

import (
	"context"
	"errors"
	"net"
	"sync"
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

// logNBDRefused is the nbd command's OnRefuse: a WARN line naming the client, the export it
// asked for and the exports there are (as serve logs them), at most ten a second.
func logNBDRefused(e *env, exports nbd.ExportLookup) func(nbd.Refusal) {
	var lim lineLimit
	return func(r nbd.Refusal) {
		ok, suppressed := lim.allow(time.Now())
		if suppressed > 0 {
			e.log.Warn("nbd clients refused (not logged one by one)", "count", suppressed)
		}
		if !ok {
			return
		}
		args := []any{"client", r.Remote.String(), "reason", r.Reason.String()}
		if r.Reason != nbd.RefusedServerFull && r.Reason != nbd.RefusedHandshakeLimit {
			export := r.Export
			if export == "" {
				export = "(default)"
			}
			var names []string
			if xs, err := exports.ListExports(context.Background()); err == nil {
				for _, x := range xs {
					names = append(names, x.Name)
				}
			}
			args = append(args, "export", export, "exports", names)
		}
		if r.Detail != "" {
			args = append(args, "detail", r.Detail)
		}
		e.log.Warn("nbd client refused", args...)
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

// lineLimit lets ten lines a second through; past that it counts them, so a flood of forged
// clients cannot flood the log.
type lineLimit struct {
	mu         sync.Mutex
	second     time.Time
	logged     int
	suppressed int
}

func (l *lineLimit) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Truncate(time.Second); !sec.Equal(l.second) {
		suppressed, l.suppressed = l.suppressed, 0
		l.second, l.logged = sec, 0
	}
	if l.logged >= 10 {
		l.suppressed++
		return false, suppressed
	}
	l.logged++
	return true, suppressed
}
