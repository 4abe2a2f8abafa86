package main

import (
	"fmt"
	"io"
	"log/slog"
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

// update is the callback for kis: done of total bytes so far.
func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	final := total > 0 && done >= total
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
		fmt.Fprintf(p.e.stdout, "\r%-10s [%s] %5.1f%% %s", p.what, bar, pct*100, humanBytes(done))
		if final {
			fmt.Fprintln(p.e.stdout)
		}
		return
	}
	if now.Sub(p.last) < 5*time.Second && !final {
		return
	}
	p.last = now
	p.e.log.Info(p.what, slog.Int64("done", done), slog.Int64("total", total),
		slog.Duration("elapsed", now.Sub(p.start).Round(time.Millisecond)))
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
