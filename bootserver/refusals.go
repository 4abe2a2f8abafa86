package bootserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/netroot/netroot/nbd"
)

// RefusalLogger logs refused NBD clients: a WARN line naming the client, the export it asked for
// and the exports there are, so that a typo in a machine's root= is found at a glance; at most
// ten lines a second, the rest counted in one line (a flood of forged clients cannot flood the
// log). Its Log method is an nbd.Server's OnRefuse; the zero value logs nothing.
type RefusalLogger struct {
	Logger  *slog.Logger
	Exports nbd.ExportLookup // names the exports there are; nil leaves them out
	limit   LogLimit
}

// Log logs r.
func (l *RefusalLogger) Log(r nbd.Refusal) {
	if l.Logger == nil {
		return
	}
	ok, suppressed := l.limit.Allow(time.Now())
	if suppressed > 0 {
		l.Logger.Warn("nbd clients refused (not logged one by one)", "count", suppressed)
	}
	if !ok {
		return
	}
	args := []any{"client", addrString(r.Remote), "reason", r.Reason.String()}
	if r.Reason != nbd.RefusedServerFull && r.Reason != nbd.RefusedHandshakeLimit {
		export := r.Export
		if export == "" {
			export = "(default)"
		}
		var names []string
		if l.Exports != nil {
			if xs, err := l.Exports.ListExports(context.Background()); err == nil {
				for _, x := range xs {
					names = append(names, x.Name)
				}
			}
		}
		args = append(args, "export", export, "exports", names)
	}
	if r.Detail != "" {
		args = append(args, "detail", r.Detail)
	}
	l.Logger.Warn("nbd client refused", args...)
}

// refused is the NBD server's OnRefuse: the WARN line, and the refusal on the client's timeline.
func (t *connTracker) refused(r nbd.Refusal) {
	s := t.s
	t.refusals.Log(r)
	why := r.Reason.String()
	if r.Detail != "" {
		why += ": " + r.Detail
	}
	s.emit(Event{Kind: NBDRefused, Client: addrHost(r.Remote), File: r.Export, Err: errors.New(why)})
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
