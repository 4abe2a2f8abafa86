package bootserver

import (
	"errors"
	"sync"
	"time"

	"github.com/netroot/netroot/nbd"
)

// refusalLogLimit is how many refusals a second are logged one by one; past it they are
// counted and summed up in one line, so that a flood of refused connections cannot flood the
// log. Every refusal is still counted in the metrics and put on its machine's timeline.
const refusalLogLimit = 10

// refusalLog rate-limits the WARN lines of refused NBD clients.
type refusalLog struct {
	mu         sync.Mutex
	second     time.Time
	logged     int
	suppressed int
}

// allow reports whether a refusal at now gets its own line, and how many earlier ones were
// suppressed and not yet reported.
func (l *refusalLog) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sec := now.Truncate(time.Second)
	if !sec.Equal(l.second) {
		suppressed, l.suppressed = l.suppressed, 0
		l.second, l.logged = sec, 0
	}
	if l.logged >= refusalLogLimit {
		l.suppressed++
		return false, suppressed
	}
	l.logged++
	return true, suppressed
}

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
