package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// statsCollector exports a server's counter snapshot (a struct of integer fields, as the
// packages' Stats methods return) as Prometheus counters named netroot_<proto>_<field>_total.
type statsCollector struct {
	proto    string
	snapshot func() any
}

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	v := reflect.ValueOf(c.snapshot())
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		var val float64
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64:
			val = float64(fv.Int())
		case reflect.Uint, reflect.Uint32, reflect.Uint64:
			val = float64(fv.Uint())
		default:
			continue
		}
		name := "netroot_" + c.proto + "_" + snake(f.Name)
		typ := prometheus.CounterValue
		if strings.HasPrefix(f.Name, "Active") || strings.HasSuffix(f.Name, "Active") {
			typ = prometheus.GaugeValue
		} else {
			name += "_total"
		}
		desc := prometheus.NewDesc(name, fmt.Sprintf("%s: %s", c.proto, f.Name), nil, nil)
		ch <- prometheus.MustNewConstMetric(desc, typ, val)
	}
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 && !unicode.IsUpper(rune(s[i-1])) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// serveMetrics serves Prometheus text format on addr until ctx ends. sources maps a protocol
// name ("tftp", "nbd", "aoe") to its server's Stats method.
func serveMetrics(ctx context.Context, e *env, addr string, sources map[string]func() any) error {
	reg := prometheus.NewRegistry()
	for proto, fn := range sources {
		if err := reg.Register(statsCollector{proto: proto, snapshot: fn}); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-metrics-addr %q: %w", addr, err)
	}
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
	return nil
}
