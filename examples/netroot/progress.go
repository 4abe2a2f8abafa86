package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress reports a long step (verifying or unpacking an image): a redrawn bar on a terminal,
// a log line every few seconds otherwise.
type progress struct {
	e     *env
	what  string
	mu    sync.Mutex
	start time.Time
	last  time.Time
}

func newProgress(e *env, what string) *progress {
	now := time.Now()
	return &progress{e: e, what: what, start: now, last: now}
}

// update is the callback for kis: done of total bytes so far (total < 0: not known yet). kis
// ends each step with a call where done == total.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	final := total >= 0 && done >= total
	elapsed := now.Sub(p.start)
	rate := rateMBs(done, elapsed)
	eta, haveETA := remaining(done, total, elapsed)
	if p.e.isTerminal {
		if now.Sub(p.last) < 100*time.Millisecond && !final {
			return
		}
		p.last = now
		const width = 30
		filled := 0
		pct := 0.0
		if total > 0 {
			pct = float64(done) / float64(total)
			filled = int(pct * width)
		}
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < filled {
				bar[i] = '='
			}
		}
		line := fmt.Sprintf("\r%-10s [%s] %5.1f%% %s %.1f MB/s", p.what, bar, pct*100, humanBytes(done), rate)
		if haveETA && !final {
			line += " ETA " + eta.String()
		}
		fmt.Fprintf(p.e.stdout, "%-80s", line)
		if final {
			fmt.Fprintln(p.e.stdout)
		}
		return
	}
	if now.Sub(p.last) < 5*time.Second && !final {
		return
	}
	p.last = now
	attrs := []any{slog.Int64("done_bytes", done)}
	if total >= 0 {
		attrs = append(attrs, slog.Int64("total_bytes", total))
	}
	attrs = append(attrs, slog.Float64("mb_per_s", rate), slog.Duration("elapsed", elapsed.Round(time.Millisecond)))
	if haveETA && !final {
		attrs = append(attrs, slog.Duration("eta", eta))
	}
	p.e.log.Info(p.what, attrs...)
}

// rateMBs is done bytes over elapsed in MB/s (10^6 bytes), to 0.1.
func rateMBs(done int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return math.Round(float64(done)/1e6/elapsed.Seconds()*10) / 10
}

// remaining estimates the time left at the rate so far; false when the total is unknown or
// nothing is done yet.
func remaining(done, total int64, elapsed time.Duration) (time.Duration, bool) {
	if total < 0 || done <= 0 || elapsed <= 0 {
		return 0, false
	}
	left := time.Duration(float64(elapsed) * float64(total-done) / float64(done))
	return left.Round(time.Second), true
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
