package bootserver

import (
	"errors"
	"time"

	"github.com/netroot/netroot/nbd"
)

// refused is the NBD server's OnRefuse: a WARN line naming the client, the export it asked for
// and the exports there are, so that a typo in a machine's root= is found at a glance.
func (t *connTracker) refused(r nbd.Refusal) {
	s := t.s
	ok, suppressed := t.refusals.allow(time.Now())
	if suppressed > 0 {
		s.log().Warn("nbd clients refused (not logged one by one)", "count", suppressed)
	}
	if ok {
		args := []any{"client", addrString(r.Remote), "reason", r.Reason.String()}
		if r.Reason != nbd.RefusedServerFull && r.Reason != nbd.RefusedHandshakeLimit {
			export := r.Export
			if export == "" {
				export = "(default)"
			}
			args = append(args, "export", export, "exports", s.exports.names())
		}
		if r.Detail != "" {
			args = append(args, "detail", r.Detail)
		}
		s.log().Warn("nbd client refused", args...)
	}
	why := r.Reason.String()
	if r.Detail != "" {
		why += ": " + r.Detail
	}
	s.emit(Event{Kind: NBDRefused, Client: addrHost(r.Remote), File: r.Export, Err: errors.New(why)})
}
