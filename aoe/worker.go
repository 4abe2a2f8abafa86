package aoe

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"
)

// The worker pool.
//
// Every request arrives on the one socket, so the socket is where the pool is shaped. Workers
// take turns receiving, under rxMu: the worker that holds it receives a batch and registers the
// batch's ATA requests in their devices' ordering lists (execute.go) before any other worker
// receives, which fixes the arrival order that overlapping requests must keep while leaving
// their execution free to run in parallel.
//
// What costs most depends on the backend. With the page cache behind it, a request takes a
// few microseconds and waking another goroutine for every batch would cost more than the
// request: one worker keeps the receive lock and receives, executes and answers batch after
// batch, as vblade's single loop does. With a backend that blocks (O_DIRECT on a slow disk),
// one worker would serialise the I/O: a worker then hands the lock on before executing, so that
// several batches wait on the disk at once. observe chooses between the two from the measured
// execution time, with hysteresis. The frames themselves move through frameIO (transport.go).

// batchSize is how many frames a worker receives at once.
const batchSize = 32

// slowRequest is the average execution time per ATA request above which a worker lets the
// next worker receive while it executes. Below it (page-cache reads and writes), one worker
// keeps receiving and executing, which saves waking another goroutine for every batch.
const slowRequest = 25 * time.Microsecond

// worker receives a batch of frames, one worker at a time so that requests are registered in
// arrival order, and executes the batch's ATA commands. While the backend is fast it keeps the
// receive lock; once requests turn slow it releases the lock before executing, so that other
// workers receive and execute concurrently.
func (t *Target) worker(pc net.PacketConn) error {
	fio := newServeIO(pc)
	rx := make([]frame, batchSize)
	for i := range rx {
		rx[i].buf = aligned(t.bufSize, HeaderLen+ATAArgLen)
	}
	reqs := make([]request, batchSize)
	// run holds the sector data of READs of adjacent sectors, read together (execute.go).
	run := aligned(batchSize*t.maxSect*SectorSize, 0)
	todo := make([]*request, 0, batchSize)
	tx := make([]frame, 0, 2*batchSize)
	holding := false
	for {
		if !holding {
			t.rxMu.Lock()
		}
		if t.shutdown.Load() || t.closed.Load() {
			t.rxMu.Unlock()
			return ErrServerClosed
		}
		n, err := fio.recv(rx)
		if err != nil {
			t.rxMu.Unlock()
			holding = false
			if t.closed.Load() || t.shutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("aoe: read: %w", err)
		}
		if t.shutdown.Load() {
			// Frames that arrived after Shutdown are left unanswered, as they would have been
			// left unread (a receive outside the poller does not see the read deadline).
			t.rxMu.Unlock()
			return ErrServerClosed
		}
		todo = todo[:0]
		for i := range n {
			t.stats.in.Add(1)
			r := &reqs[i]
			r.buf, r.n, r.addr = rx[i].buf, rx[i].n, rx[i].addr
			if t.dispatch(r) {
				todo = append(todo, r)
			}
		}
		holding = len(todo) == 0 || !t.slow.Load()
		if !holding {
			t.rxMu.Unlock()
		}
		start := time.Now()
		tx = t.executeBatch(fio, todo, run, tx)
		if len(todo) > 0 {
			t.observe(time.Since(start) / time.Duration(len(todo)))
		}
	}
}

// executeBatch executes the ATA commands of a batch in order and sends their responses, in
// groups so that the first go out before the last are executed. READs of adjacent sectors are
// read together into run, which holds the data of a whole batch. It returns tx for reuse.
func (t *Target) executeBatch(fio frameIO, todo []*request, run []byte, tx []frame) []frame {
	tx = tx[:0]
	for i := 0; i < len(todo); {
		k := t.readRun(todo[i:], len(run))
		if k > 1 {
			tx, run = t.executeReads(todo[i:i+k], run, tx)
		} else {
			tx = append(tx, frame{buf: t.execute(todo[i]), addr: todo[i].addr})
			k = 1
		}
		i += k
		if len(tx) >= batchSize/2 {
			t.sendBatch(fio, tx)
			tx = tx[:0]
		}
	}
	t.sendBatch(fio, tx)
	return tx[:0]
}

// observe folds the execution time per request of a batch into a moving average and switches
// between keeping and releasing the receive lock, with hysteresis so that a worker preempted
// on a busy machine does not flip it.
func (t *Target) observe(per time.Duration) {
	avg := time.Duration(t.avgExec.Load())
	avg += (per - avg) / 8
	t.avgExec.Store(int64(avg))
	switch slow := t.slow.Load(); {
	case !slow && avg > slowRequest:
		t.slow.Store(true)
	case slow && avg < slowRequest/2:
		t.slow.Store(false)
	}
}

// pageSize is the alignment of the sector data in receive buffers.
const pageSize = 4096

// aligned returns a buffer of n bytes whose byte at is on a page boundary. Receive buffers
// have their sector data (after the AoE and ATA headers) aligned, as vblade arranges too, so
// that O_DIRECT backends read and write it in place instead of through bounce buffers.
func aligned(n, at int) []byte {
	raw := make([]byte, n+pageSize)
	addr := uintptr(unsafe.Pointer(&raw[0])) + uintptr(at)
	off := int((pageSize - addr%pageSize) % pageSize)
	return raw[off : off+n : off+n]
}

func (t *Target) sendBatch(fio frameIO, tx []frame) {
	if len(tx) == 0 {
		return
	}
	if err := fio.send(tx); err != nil {
		if !t.closed.Load() {
			t.logger().Warn("aoe: write failed", "err", err)
		}
		return
	}
	t.stats.out.Add(uint64(len(tx)))
}
