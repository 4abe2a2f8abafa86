package nbd

import "time"

// SetSlowInline sets how long a request may take and still count as fast for the inline rules;
// the function returned restores it.
func SetSlowInline(d time.Duration) (restore func()) {
	old := slowInline.Swap(int64(d))
	return func() { slowInline.Store(old) }
}
