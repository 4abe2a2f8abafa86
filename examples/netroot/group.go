package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// group runs servers and shuts them all down together.
type group struct {
	mu      sync.Mutex
	servers []*member
	errc    chan error
}

type member struct {
	name     string
	shutdown func(context.Context) error
	close    func() error
}

func (g *group) add(name string, serve func() error, shutdown func(context.Context) error, closeNow func() error, closed error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.errc == nil {
		g.errc = make(chan error, 8)
	}
	g.servers = append(g.servers, &member{name: name, shutdown: shutdown, close: closeNow})
	go func() {
		err := serve()
		if errors.Is(err, closed) {
			err = nil
		} else if err != nil {
			err = fmt.Errorf("%s server: %w", name, err)
		}
		g.errc <- err
	}()
}

// wait returns when ctx ends (then shuts every server down gracefully) or when one server
// fails (then stops the others).
func (g *group) wait(ctx context.Context, e *env, timeout time.Duration) error {
	var first error
	select {
	case <-ctx.Done():
		e.log.Info("shutting down: letting running transfers finish", "timeout", timeout)
	case first = <-g.errc:
		e.log.Error("server stopped", "err", first)
		g.errc <- nil // counted below with the others
	}
	notifyStopping()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range g.servers {
		wg.Go(func() {
			if err := m.shutdown(sctx); err != nil {
				e.log.Warn("forced shutdown", "server", m.name, "err", err)
				_ = m.close()
			}
		})
	}
	wg.Wait()
	for range g.servers {
		if err := <-g.errc; err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		e.log.Info("stopped")
	}
	return first
}
