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
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/netroot/netroot/bootserver"
)

// serveMetrics serves Prometheus text format on addr until ctx ends: the given collectors
// (one protocol server's), the binary's build information and the Go and process collectors.
func serveMetrics(ctx context.Context, e *env, addr string, cs ...prometheus.Collector) error {
	reg := newRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-metrics-addr %q: %w", addr, err)
	}
	serveRegistry(ctx, e, ln, reg, nil)
	return nil
}

// newRegistry returns a registry with the collectors every command exports.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		bootserver.BuildInfoCollector(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// serveRegistry serves reg's metrics at /metrics on ln until ctx ends, and status, when not
// nil, at every other path (the status page at /, its JSON at /status.json).
func serveRegistry(ctx context.Context, e *env, ln net.Listener, reg *prometheus.Registry, status http.Handler) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if status != nil {
		mux.Handle("/", status)
	}
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
