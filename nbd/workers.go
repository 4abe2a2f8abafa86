package nbd

import "sync/atomic"

// job is a request handed by the request-reading goroutine to a worker, with what dispatch
// acquired for it.
type job struct {
	r    Request
	buf  *[]byte
	held hold
}

// workers keeps the goroutines that serve a connection's requests alive between requests. A
// goroutine per request pays for its creation, its exit and the copies of its stack as it grows
// past the initial size on every request (fio's 4 KiB random reads at queue depth 32: about a
// sixth of the server's CPU time); a parked worker keeps its grown stack. A request is never
// queued behind another: it goes to a worker that is idle, or to a new one.
type workers struct {
	jobs chan job
	// idle counts the workers parked on jobs that no job has claimed yet.
	idle atomic.Int32
}

// maxIdleWorkers bounds the workers a connection keeps parked; more exit when they finish.
const maxIdleWorkers = 4

// startWorkers prepares c's workers; stopWorkers, once no request is in flight, ends them.
func (c *conn) startWorkers() { c.workers.jobs = make(chan job, maxIdleWorkers) }

func (c *conn) stopWorkers() { close(c.workers.jobs) }

// start has j served by an idle worker, or by a new goroutine if none is idle.
func (c *conn) start(j job) {
	w := &c.workers
	for {
		n := w.idle.Load()
		if n <= 0 {
			break
		}
		if w.idle.CompareAndSwap(n, n-1) {
			// The claimed worker is parked on jobs or about to be; jobs holds at most as many
			// as there are claimed workers, so this does not block.
			w.jobs <- j
			return
		}
	}
	go c.work(w.jobs, j)
}

// work serves j, then the jobs given to it on jobs while it is idle.
func (c *conn) work(jobs <-chan job, j job) {
	w := &c.workers
	for {
		c.run(j.r, j.buf, j.held)
		for {
			n := w.idle.Load()
			if n >= maxIdleWorkers {
				return
			}
			if w.idle.CompareAndSwap(n, n+1) {
				break
			}
		}
		var ok bool
		if j, ok = <-jobs; !ok {
			return
		}
	}
}
