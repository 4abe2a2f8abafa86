package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/netroot/netroot/bootserver"
)

// serveMetrics serves Prometheus text format on addr until ctx ends. sources maps a protocol
// name ("tftp", "nbd", "aoe") to its server's Stats method.
func serveMetrics(ctx context.Context, e *env, addr string, sources map[string]func() any) error {
	reg := prometheus.NewRegistry()
	for proto, fn := range sources {
		if err := reg.Register(bootserver.StatsCollector(proto, fn)); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-metrics-addr %q: %w", addr, err)
	}
	serveRegistry(ctx, e, ln, reg)
	return nil
}

// serveRegistry serves reg's metrics on ln until ctx ends.
func serveRegistry(ctx context.Context, e *env, ln net.Listener, reg *prometheus.Registry) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	e.log.Info("metrics listening", slog.String("addr", ln.Addr().String()), slog.String("path", "/metrics"))
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("metrics server", slog.Any("err", err))
		}
	}()
}
