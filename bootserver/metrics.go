package bootserver

import (
	"fmt"
	"reflect"
	"strings"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
)

// StatsCollector exports a server's counter snapshot (a struct of integer fields, as the
// protocol packages' Stats methods return) as Prometheus metrics named
// netroot_<proto>_<field>_total; fields named Active… or …Active are gauges without _total.
func StatsCollector(proto string, snapshot func() any) prometheus.Collector {
	return statsCollector{proto: proto, snapshot: snapshot}
}

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

// buildsCollector reports the builds a Server serves: netroot_builds{image,build,state} = 1
// and netroot_build_clients{build} = attached NBD connections.
type buildsCollector struct{ s *Server }

var (
	buildsDesc  = prometheus.NewDesc("netroot_build_info", "builds served: state is current or retiring", []string{"image", "build", "state"}, nil)
	clientsDesc = prometheus.NewDesc("netroot_build_nbd_clients", "NBD connections attached to a build's export", []string{"build"}, nil)
)

func (c buildsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- buildsDesc
	ch <- clientsDesc
}

func (c buildsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.s.State().Builds {
		state := "retiring"
		if b.Current {
			state = "current"
		}
		ch <- prometheus.MustNewConstMetric(buildsDesc, prometheus.GaugeValue, 1, b.ID.Name, b.ID.String(), state)
		ch <- prometheus.MustNewConstMetric(clientsDesc, prometheus.GaugeValue, float64(b.Clients), b.ID.String())
	}
}

// register adds the server's collectors to s.Registerer.
func (s *Server) register() error {
	cs := []prometheus.Collector{
		buildsCollector{s},
		StatsCollector("tftp", func() any { return s.tftp.Stats() }),
	}
	if s.nbd != nil {
		cs = append(cs, StatsCollector("nbd", func() any { return s.nbd.Stats() }))
	}
	if s.aoe != nil {
		cs = append(cs, StatsCollector("aoe", func() any { return s.aoe.stats() }))
	}
	if c, ok := s.Source.(prometheus.Collector); ok { // StoreSource's chunk cache
		cs = append(cs, c)
	}
	for i, c := range cs {
		if err := s.Registerer.Register(c); err != nil {
			for _, d := range cs[:i] {
				s.Registerer.Unregister(d)
			}
			return fmt.Errorf("bootserver: metrics: %w", err)
		}
	}
	s.collectors = cs
	return nil
}

func (s *Server) unregister() {
	for _, c := range s.collectors {
		s.Registerer.Unregister(c)
	}
}
