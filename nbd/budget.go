// budget: the weighted semaphore that bounds the bytes a connection (or the server) holds.

package nbd

import "sync"

// budget is a weighted semaphore bounding the bytes a connection holds.
type budget struct {
	mu    sync.Mutex
	cond  sync.Cond
	avail int64
	max   int64
}

func (b *budget) init(n int64) {
	b.avail, b.max = n, n
	b.cond.L = &b.mu
}

func (b *budget) acquire(n int64) int64 {
	n = min(n, b.max)
	b.mu.Lock()
	for b.avail < n {
		b.cond.Wait()
	}
	b.avail -= n
	b.mu.Unlock()
	return n
}

// tryAcquire is acquire that gives up instead of waiting.
func (b *budget) tryAcquire(n int64) (int64, bool) {
	n = min(n, b.max)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.avail < n {
		return 0, false
	}
	b.avail -= n
	return n, true
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	b.cond.Broadcast()
}
