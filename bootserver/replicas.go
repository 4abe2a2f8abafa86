package bootserver

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netroot/netroot/store"
)

// ReplicaSet places machines on the healthy ones of a set of replicas that serve the same
// builds (netroot serve -store on several hosts): give NBDHost to Server.NBDHost and run Run
// beside the server. Each replica probes all of them (store.Health), so every replica writes
// the same configs, in which a machine's root=overlay:nbd= names the replica rendezvous hashing
// picks for its MAC among the healthy ones. When the healthy set changes the server's configs
// are rewritten (Server.Reload), so machines booting later go to a healthy replica while
// every machine whose replica stayed up keeps it. Replicas are IPv4 addresses.
//
// It is a prometheus.Collector: netroot_replica_up{replica} (1 or 0) and
// netroot_replica_probes_total / netroot_replica_probe_failures_total{replica}.
type ReplicaSet struct {
	health  *store.Health
	log     *slog.Logger
	changed chan struct{}
}

// NewReplicaSet returns a ReplicaSet over cfg; cfg.OnChange is taken by the ReplicaSet, and
// cfg.Logger also receives failed config rewrites.
func NewReplicaSet(cfg store.HealthConfig) *ReplicaSet {
	r := &ReplicaSet{log: cfg.Logger, changed: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	cfg.OnChange = func([]string) {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
	r.health = store.NewHealth(cfg)
	return r
}

// Health returns the health checker (for SetReplicas and Status).
func (r *ReplicaSet) Health() *store.Health { return r.health }

// NBDHost is the Server.NBDHost that names the machine's healthy replica.
func (r *ReplicaSet) NBDHost(mac net.HardwareAddr) netip.Addr {
	a, err := netip.ParseAddr(r.health.Pick(mac))
	if err != nil {
		return netip.Addr{} // ServerIP
	}
	return a
}

// Run probes until ctx ends and rewrites s's configs after each change of the healthy set; a
// rewrite that fails (the server not running yet, the store unreachable) is tried again every
// second until it succeeds. It returns ctx's error.
func (r *ReplicaSet) Run(ctx context.Context, s *Server) error {
	go r.health.Run(ctx)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return ctx.Err()
		case <-r.changed:
		case <-retry.C:
			if !pending {
				continue
			}
		}
		pending = true
		if err := s.Reload(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Warn("replicas: rewriting the boot configs after a change of the healthy replicas failed; trying again",
				"healthy", r.health.Healthy(), "err", err)
			retry.Reset(time.Second)
			continue
		}
		pending = false
		r.log.Info("replicas: boot configs rewritten", "healthy", r.health.Healthy())
	}
}

var (
	replicaUpDesc = prometheus.NewDesc("netroot_replica_up",
		"Whether a replica answers the health probe (1) or was marked down (0), as this replica sees it.", []string{"replica"}, nil)
	replicaProbesDesc = prometheus.NewDesc("netroot_replica_probes_total",
		"Health probes sent to a replica.", []string{"replica"}, nil)
	replicaProbeFailuresDesc = prometheus.NewDesc("netroot_replica_probe_failures_total",
		"Health probes to a replica that failed.", []string{"replica"}, nil)
)

// Describe implements prometheus.Collector.
func (r *ReplicaSet) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicaUpDesc
	ch <- replicaProbesDesc
	ch <- replicaProbeFailuresDesc
}

// Collect implements prometheus.Collector.
func (r *ReplicaSet) Collect(ch chan<- prometheus.Metric) {
	for _, st := range r.health.Status() {
		up := 0.0
		if st.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(replicaUpDesc, prometheus.GaugeValue, up, st.Replica)
		ch <- prometheus.MustNewConstMetric(replicaProbesDesc, prometheus.CounterValue, float64(st.Probes), st.Replica)
		ch <- prometheus.MustNewConstMetric(replicaProbeFailuresDesc, prometheus.CounterValue, float64(st.Failed), st.Replica)
	}
}
