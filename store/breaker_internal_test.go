package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBreakerStates(t *testing.T) {
	now := time.Unix(1000, 0)
	b := &breaker{limit: 3, coolDown: 10 * time.Second, now: func() time.Time { return now }}
	type step struct {
		do        string // "fail", "ok": a fetch allowed and its outcome; "refused": allow says no; "wait": 10 s pass
		wantState BreakerState
	}
	steps := []step{
		{"fail", BreakerClosed}, {"fail", BreakerClosed}, {"ok", BreakerClosed}, // a success resets the count
		{"fail", BreakerClosed}, {"fail", BreakerClosed}, {"fail", BreakerOpen},
		{"refused", BreakerOpen}, {"refused", BreakerOpen},
		{"wait", BreakerOpen},
		{"probe-fail", BreakerOpen}, // the probe failed: another cool-down
		{"refused", BreakerOpen},
		{"wait", BreakerOpen},
		{"probe-ok", BreakerClosed},
		{"fail", BreakerClosed},
	}
	for i, s := range steps {
		switch s.do {
		case "wait":
			now = now.Add(10 * time.Second)
		case "refused":
			ok, _ := b.allow()
			assert.False(t, ok, "step %d", i)
		case "probe-fail", "probe-ok":
			ok, probe := b.allow()
			assert.True(t, ok && probe, "step %d: the first fetch after the cool-down is the probe", i)
			again, _ := b.allow()
			assert.False(t, again, "step %d: only one probe at a time", i)
			assert.Equal(t, BreakerHalfOpen, b.state, "step %d", i)
			b.done(true, s.do == "probe-fail")
		default:
			ok, probe := b.allow()
			assert.True(t, ok, "step %d", i)
			assert.False(t, probe, "step %d", i)
			b.done(false, s.do == "fail")
		}
		assert.Equal(t, s.wantState, b.state, "step %d (%s)", i, s.do)
	}
	state, trips, rejected := b.stats()
	assert.Equal(t, BreakerClosed, state)
	assert.Equal(t, int64(2), trips)
	assert.Equal(t, int64(5), rejected)
	assert.Equal(t, "half-open", BreakerHalfOpen.String())

	off := &breaker{now: time.Now}
	for range 10 {
		off.done(false, true)
	}
	ok, _ := off.allow()
	assert.True(t, ok, "limit 0: never opens")
}
