package bootserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// buildsCollector reports the builds a Server serves: netroot_image_info{image,build,version,state}
// = 1 and netroot_nbd_export_clients{export} = NBD connections attached to a build's export.
type buildsCollector struct{ s *Server }

var (
	imageDesc = prometheus.NewDesc("netroot_image_info",
		"Builds the server serves, one series per build; state is current (what new boots get) or retiring (kept while clients use it). The value is 1.",
		[]string{"image", "build", "version", "state"}, nil)
	exportClientsDesc = prometheus.NewDesc("netroot_nbd_export_clients",
		"NBD connections attached now to an export (one export per build).", []string{"export"}, nil)
)

func (c buildsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- imageDesc
	ch <- exportClientsDesc
}

func (c buildsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c.s.State().Builds {
		state := "retiring"
		if b.Current {
			state = "current"
		}
		ch <- prometheus.MustNewConstMetric(imageDesc, prometheus.GaugeValue, 1, b.ID.Name, b.ID.String(), b.ID.Version, state)
		ch <- prometheus.MustNewConstMetric(exportClientsDesc, prometheus.GaugeValue, float64(b.Clients), b.ID.String())
	}
}

// register adds the server's collectors to s.Registerer.
func (s *Server) register() error {
	cs := []prometheus.Collector{
		buildsCollector{s},
		TFTPCollector(s.tftp.Stats),
	}
	if s.nbd != nil {
		cs = append(cs, NBDCollector(s.nbd.Stats))
	}
	if s.aoe != nil {
		cs = append(cs, AoECollector(s.aoe.stats))
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
