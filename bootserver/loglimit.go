package bootserver

import (
	"sync"
	"time"
)

// logLimitPerSecond is how many lines a second a logLimit lets through; past it events are
// counted, and the next line let through is preceded by one that says how many were held back,
// so that a flood of forged clients cannot flood the log. Every event is still counted in the
// metrics and put on its machine's timeline.
const logLimitPerSecond = 10

// logLimit rate-limits log lines about clients (NBD refusals, AoE discoveries).
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
	if l.logged >= logLimitPerSecond {
		l.suppressed++
		return false, suppressed
	}
	l.logged++
	return true, suppressed
}
