package store

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/netroot/netroot/nbd"
)

// Defaults for HealthConfig's zero fields.
const (
	DefaultProbeInterval = 2 * time.Second
	DefaultProbeTimeout  = time.Second
	DefaultDownAfter     = 3
	DefaultUpAfter       = 2
	DefaultNBDPort       = 10809
)

// ProbeFunc checks one replica; nil means healthy. It must return by ctx's deadline.
type ProbeFunc func(ctx context.Context, replica string) error

// NBDProbe returns a ProbeFunc that does what a booting machine's nbd-client does first: it
// connects to the replica's NBD port and completes the fixed-newstyle handshake, then ends the
// session with NBD_OPT_ABORT. A replica whose process is gone, whose listener hangs or that does
// not speak NBD fails it. port 0 means DefaultNBDPort.
func NBDProbe(port int) ProbeFunc {
	if port == 0 {
		port = DefaultNBDPort
	}
	return func(ctx context.Context, replica string) error {
		c, err := nbd.Dial(ctx, "tcp", net.JoinHostPort(replica, strconv.Itoa(port)), &nbd.DialOptions{NoStructuredReplies: true})
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// HealthConfig configures a Health.
type HealthConfig struct {
	// Replicas are the replicas' addresses (as Probe and PickReplica take them), this one
	// included.
	Replicas []string
	// Probe checks one replica; nil means NBDProbe(0).
	Probe ProbeFunc
	// Interval between rounds of probes; 0 means DefaultProbeInterval.
	Interval time.Duration
	// Timeout bounds each probe; 0 means DefaultProbeTimeout.
	Timeout time.Duration
	// DownAfter consecutive failed probes mark an up replica down, and UpAfter consecutive
	// good ones mark a down replica up; 0 means DefaultDownAfter and DefaultUpAfter. A replica
	// starts up (so replicas starting together do not mark each other down while their
	// listeners open): one that is down at the start is marked down after DownAfter probes.
	DownAfter, UpAfter int
	// OnChange, when not nil, is called (from Run's goroutine) with the healthy replicas each
	// time the set changes (before the first round, all replicas count as healthy).
	OnChange func(healthy []string)
	// Logger receives state changes: WARN when a replica goes down, INFO when it comes up;
	// nil means silent.
	Logger *slog.Logger
}

// ReplicaHealth is one replica's state as a Health sees it.
type ReplicaHealth struct {
	Replica string
	Up      bool
	Since   time.Time // of the last change (or of joining the set)
	// Failures and Successes count the probes since the last result of the other kind.
	Failures, Successes int
	LastError           string // of the last failed probe
	Probes, Failed      int64  // totals
}

// Health probes a set of replicas at an interval and keeps which of them are up, with
// hysteresis, so that every replica places machines over the same healthy set
// (PickReplica(mac, h.Healthy())): a machine keeps its replica while that one is up, and
// machines booting while one is down go to the one rendezvous hashing ranks next. A replica
// not probed yet (before the first rounds, or just added by SetReplicas) counts as up, so
// placement starts as the static list's. It is safe for concurrent use.
type Health struct {
	cfg  HealthConfig
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	state   map[string]*ReplicaHealth
	order   []string
	healthy []string // as last reported to OnChange
}

// NewHealth returns a Health for cfg; Run probes.
func NewHealth(cfg HealthConfig) *Health {
	if cfg.Probe == nil {
		cfg.Probe = NBDProbe(0)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultProbeInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultProbeTimeout
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = DefaultDownAfter
	}
	if cfg.UpAfter <= 0 {
		cfg.UpAfter = DefaultUpAfter
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Health{cfg: cfg, log: log, kick: make(chan struct{}, 1), state: map[string]*ReplicaHealth{}}
	h.setReplicas(cfg.Replicas)
	h.healthy = slices.Clone(h.order) // what placement assumes before the first round
	return h
}

// SetReplicas replaces the replica set (a re-read replica file, say). Replicas kept keep their
// state; new ones count as up until DownAfter probes failed (the first comes at once).
func (h *Health) SetReplicas(replicas []string) {
	h.mu.Lock()
	changed := h.setReplicas(replicas)
	h.mu.Unlock()
	if changed {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

func (h *Health) setReplicas(replicas []string) bool {
	var order []string
	for _, r := range replicas {
		if !slices.Contains(order, r) {
			order = append(order, r)
		}
	}
	if slices.Equal(order, h.order) {
		return false
	}
	next := map[string]*ReplicaHealth{}
	for _, r := range order {
		if st, ok := h.state[r]; ok {
			next[r] = st
		} else {
			next[r] = &ReplicaHealth{Replica: r, Up: true, Since: time.Now()}
		}
	}
	h.state, h.order = next, order
	return true
}

// Healthy returns the replicas that are up, in the order given.
func (h *Health) Healthy() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthyLocked()
}

func (h *Health) healthyLocked() []string {
	var out []string
	for _, r := range h.order {
		if h.state[r].Up {
			out = append(out, r)
		}
	}
	return out
}

// Pick returns the replica for the machine with hardware address mac: PickReplica over the
// healthy ones, or over all of them when none is up (a machine must be told some server).
func (h *Health) Pick(mac net.HardwareAddr) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if up := h.healthyLocked(); len(up) > 0 {
		return PickReplica(mac, up)
	}
	return PickReplica(mac, h.order)
}

// Status returns every replica's state, in the order given.
func (h *Health) Status() []ReplicaHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ReplicaHealth, 0, len(h.order))
	for _, r := range h.order {
		out = append(out, *h.state[r])
	}
	return out
}

// Run probes every Interval until ctx ends and returns ctx's error.
func (h *Health) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		h.Round(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-h.kick:
		}
	}
}

// Round probes every replica once, concurrently, applies the results and calls OnChange if
// the healthy set changed. Run calls it; tests may call it instead of Run.
func (h *Health) Round(ctx context.Context) {
	h.mu.Lock()
	replicas := slices.Clone(h.order)
	h.mu.Unlock()
	errs := make([]error, len(replicas))
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
			defer cancel()
			errs[i] = h.cfg.Probe(pctx, r)
			if errs[i] == nil && pctx.Err() != nil {
				errs[i] = pctx.Err()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // results cut short by the end of the run say nothing of the replicas
	}

	h.mu.Lock()
	now := time.Now()
	for i, r := range replicas {
		st := h.state[r]
		if st == nil {
			continue // removed meanwhile
		}
		st.Probes++
		if errs[i] != nil {
			st.Failed++
			st.Failures++
			st.Successes = 0
			st.LastError = errs[i].Error()
			if st.Up && st.Failures >= h.cfg.DownAfter {
				st.Up, st.Since = false, now
				h.log.Warn("store: replica down: machines booting now go to the next replica", "replica", r,
					"failed_probes", st.Failures, "err", errs[i])
			}
			continue
		}
		st.Successes++
		st.Failures = 0
		if !st.Up && st.Successes >= h.cfg.UpAfter {
			st.Up, st.Since = true, now
			h.log.Info("store: replica up", "replica", r, "good_probes", st.Successes)
		}
	}
	healthy := h.healthyLocked()
	changed := !slices.Equal(healthy, h.healthy)
	h.healthy = healthy
	h.mu.Unlock()
	if changed && h.cfg.OnChange != nil {
		h.cfg.OnChange(slices.Clone(healthy))
	}
}

// String describes the state in one line, for logs.
func (r ReplicaHealth) String() string {
	s := "up"
	if !r.Up {
		s = "down"
	}
	return fmt.Sprintf("%s %s since %s", r.Replica, s, r.Since.Format(time.RFC3339))
}
