package bootserver

import (
	"sync"
	"time"
)

// logLimitLimit is how many refusals a second are logged one by one; past it they are
// counted and summed up in one line, so that a flood of refused connections cannot flood the
// log. Every refusal is still counted in the metrics and put on its machine's timeline.
const logLimitLimit = 10

// logLimit rate-limits the WARN lines of refused NBD clients.
type logLimit struct {
	mu         sync.Mutex
	second     time.Time
	logged     int
	suppressed int
}

// allow reports whether an event at now gets its own line, and how many earlier ones were
// suppressed and not yet reported.
func (l *logLimit) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sec := now.Truncate(time.Second)
	if !sec.Equal(l.second) {
		suppressed, l.suppressed = l.suppressed, 0
		l.second, l.logged = sec, 0
	}
	if l.logged >= logLimitLimit {
		l.suppressed++
		return false, suppressed
	}
	l.logged++
	return true, suppressed
}
