package bootserver

import (
	"sync"
	"time"
)

// logLimitPerSecond is how many lines a second a LogLimit lets through; past it events are
// counted, and the next line let through is preceded by one that says how many were held back,
// so that a flood of forged clients cannot flood the log. Every event is still counted in the
// metrics and put on its machine's timeline.
const logLimitPerSecond = 10

// LogLimit rate-limits log lines about clients (NBD refusals, AoE discoveries); the zero value
// is ready to use.
type LogLimit struct {
	mu         sync.Mutex
	second     time.Time
	logged     int
	suppressed int
}

// Allow reports whether an event at now gets its own line, and how many earlier ones were
// suppressed and not yet reported.
func (l *LogLimit) Allow(now time.Time) (ok bool, suppressed int) {
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
