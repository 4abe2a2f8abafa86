package store

import (
	"errors"
	"sync"
	"time"
)

// Defaults for CacheConfig's breaker fields.
const (
	DefaultBreakAfter = 5
	DefaultBreakFor   = 10 * time.Second
)

// ErrUnavailable is wrapped by the error of a read that needed the store while the cache's
// circuit breaker was open (the store failed BreakAfter fetches in a row): the read fails at
// once instead of waiting for a store that is not answering.
var ErrUnavailable = errors.New("store: unavailable (circuit breaker open)")

// BreakerState is the state of a Cache's circuit breaker.
type BreakerState int

// The breaker's states: closed (fetches go to the store), open (misses fail at once until the
// cool-down ends) and half-open (one fetch is trying the store; others fail at once).
const (
	BreakerClosed BreakerState = iota
	BreakerOpen
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "closed"
}

// breaker counts consecutive failed fetches from the store. After limit of them it opens: no
// fetch goes to the store for the cool-down, then one (the probe) may; its success closes the
// breaker, its failure opens it for another cool-down.
type breaker struct {
	limit    int // 0: never opens
	coolDown time.Duration
	now      func() time.Time

	mu       sync.Mutex
	state    BreakerState
	failures int
	until    time.Time // end of the cool-down while open
	trips    int64     // times opened
	rejected int64     // fetches refused while open or half-open
}

// allow reports whether a fetch may go to the store now, and whether it is the probe.
func (b *breaker) allow() (ok, probe bool) {
	if b.limit <= 0 {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerOpen:
		if b.now().Before(b.until) {
			b.rejected++
			return false, false
		}
		b.state = BreakerHalfOpen
		return true, true
	case BreakerHalfOpen:
		b.rejected++
		return false, false
	}
	return true, false
}

// done records a fetch's outcome (failed says whether it counts against the store) and
// returns the state change it caused, if any.
func (b *breaker) done(probe, failed bool) (from, to BreakerState) {
	if b.limit <= 0 {
		return BreakerClosed, BreakerClosed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	from = b.state
	switch {
	case !failed:
		b.failures = 0
		if probe || b.state == BreakerHalfOpen {
			b.state = BreakerClosed
		}
	case probe:
		b.open()
	default:
		b.failures++
		if b.state == BreakerClosed && b.failures >= b.limit {
			b.open()
		}
	}
	return from, b.state
}

func (b *breaker) open() {
	b.state = BreakerOpen
	b.until = b.now().Add(b.coolDown)
	b.trips++
}

func (b *breaker) stats() (BreakerState, int64, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.trips, b.rejected
}
