package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/store"
)

// fakeProbes is an in-memory network: a replica answers unless marked down.
type fakeProbes struct {
	mu   sync.Mutex
	down map[string]bool
}

func (f *fakeProbes) set(r string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down == nil {
		f.down = map[string]bool{}
	}
	f.down[r] = down
}

func (f *fakeProbes) probe(_ context.Context, r string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[r] {
		return errors.New("connection refused")
	}
	return nil
}

func TestHealthHysteresis(t *testing.T) {
	var lan fakeProbes
	var changes [][]string
	var logs bytes.Buffer
	h := store.NewHealth(store.HealthConfig{
		Replicas: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"},
		Probe:    lan.probe, DownAfter: 3, UpAfter: 2,
		OnChange: func(healthy []string) { changes = append(changes, healthy) },
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx := context.Background()
	all := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	assert.Equal(t, all, h.Healthy(), "before any probe every replica counts")

	h.Round(ctx)
	assert.Empty(t, changes, "all up as assumed: no change")

	lan.set("192.0.2.2", true)
	h.Round(ctx)
	h.Round(ctx)
	assert.Equal(t, all, h.Healthy(), "two failures are not enough")
	assert.Empty(t, changes)
	h.Round(ctx)
	assert.Equal(t, []string{"192.0.2.1", "192.0.2.3"}, h.Healthy(), "the third failure marks it down")
	require.Len(t, changes, 1)
	assert.Equal(t, []string{"192.0.2.1", "192.0.2.3"}, changes[0])
	h.Round(ctx)
	assert.Len(t, changes, 1, "staying down is no change")

	// A flapping replica: one good probe, then a failure, stays down.
	lan.set("192.0.2.2", false)
	h.Round(ctx)
	lan.set("192.0.2.2", true)
	h.Round(ctx)
	lan.set("192.0.2.2", false)
	h.Round(ctx)
	assert.Len(t, changes, 1, "one good probe is not enough")
	h.Round(ctx)
	assert.Equal(t, all, h.Healthy(), "the second good probe in a row marks it up")
	require.Len(t, changes, 2)
	assert.Equal(t, all, changes[1])

	st := h.Status()
	require.Len(t, st, 3)
	assert.Equal(t, "192.0.2.2", st[1].Replica)
	assert.True(t, st[1].Up)
	assert.Equal(t, int64(9), st[1].Probes)
	assert.Equal(t, int64(5), st[1].Failed)
	assert.Equal(t, "connection refused", st[1].LastError)

	// Each transition is logged once: WARN down, INFO up.
	out := logs.String()
	assert.Equal(t, 1, strings.Count(out, "level=WARN msg=\"store: replica down"), out)
	assert.Equal(t, 1, strings.Count(out, "level=INFO msg=\"store: replica up"), out)
	assert.Contains(t, out, "replica=192.0.2.2")
}

func TestHealthStartsUp(t *testing.T) {
	var lan fakeProbes
	lan.set("192.0.2.3", true)
	var changes [][]string
	h := store.NewHealth(store.HealthConfig{
		Replicas: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}, Probe: lan.probe, DownAfter: 2,
		OnChange: func(healthy []string) { changes = append(changes, healthy) },
	})
	h.Round(context.Background())
	assert.Equal(t, []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}, h.Healthy(), "up until DownAfter probes failed, from the start too")
	assert.Empty(t, changes)
	h.Round(context.Background())
	assert.Equal(t, []string{"192.0.2.1", "192.0.2.2"}, h.Healthy())
	assert.Equal(t, [][]string{{"192.0.2.1", "192.0.2.2"}}, changes)
}

// TestHealthPlacement: machines keep their replica while it is up; only the down replica's
// machines move, to the replica rendezvous hashing ranks next for them; all come back.
func TestHealthPlacement(t *testing.T) {
	var lan fakeProbes
	replicas := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	h := store.NewHealth(store.HealthConfig{Replicas: replicas, Probe: lan.probe, DownAfter: 1, UpAfter: 1})
	ctx := context.Background()
	h.Round(ctx)
	macs := make([]net.HardwareAddr, 300)
	before := map[string]string{}
	for i := range macs {
		macs[i] = net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		before[macs[i].String()] = h.Pick(macs[i])
		assert.Equal(t, store.PickReplica(macs[i], replicas), before[macs[i].String()])
	}
	lan.set("192.0.2.2", true)
	h.Round(ctx)
	moved := 0
	for _, mac := range macs {
		got, was := h.Pick(mac), before[mac.String()]
		assert.NotEqual(t, "192.0.2.2", got)
		if was == "192.0.2.2" {
			moved++
			assert.Equal(t, store.Rendezvous(mac, replicas)[1], got, "to its second choice")
		} else {
			assert.Equal(t, was, got, "machines of healthy replicas stay")
		}
	}
	assert.Greater(t, moved, 50, "about a third of 300 machines were on the replica that went down")
	lan.set("192.0.2.2", false)
	h.Round(ctx)
	for _, mac := range macs {
		assert.Equal(t, before[mac.String()], h.Pick(mac), "back where they were")
	}

	// With every replica down, a machine is still told its first choice.
	for _, r := range replicas {
		lan.set(r, true)
	}
	h.Round(ctx)
	assert.Empty(t, h.Healthy())
	assert.Equal(t, before[macs[0].String()], h.Pick(macs[0]))
}

func TestHealthSetReplicas(t *testing.T) {
	var lan fakeProbes
	lan.set("192.0.2.2", true)
	var changes [][]string
	h := store.NewHealth(store.HealthConfig{
		Replicas: []string{"192.0.2.1", "192.0.2.2"}, Probe: lan.probe, DownAfter: 1,
		OnChange: func(healthy []string) { changes = append(changes, healthy) },
	})
	ctx := context.Background()
	h.Round(ctx)
	assert.Equal(t, []string{"192.0.2.1"}, h.Healthy())
	h.SetReplicas([]string{"192.0.2.1", "192.0.2.2", "192.0.2.4", "192.0.2.4"})
	assert.Equal(t, []string{"192.0.2.1", "192.0.2.4"}, h.Healthy(), "kept state for .2, .4 assumed up, duplicates dropped")
	lan.set("192.0.2.4", true)
	h.Round(ctx)
	assert.Equal(t, []string{"192.0.2.1"}, h.Healthy(), "the new replica is probed like the others")
	h.SetReplicas([]string{"192.0.2.1"})
	assert.Len(t, h.Status(), 1)
	h.Round(ctx)
	assert.Equal(t, [][]string{{"192.0.2.1"}}, changes, "the healthy set reported never changed after the first round")
	h.SetReplicas([]string{"192.0.2.1", "192.0.2.5"})
	h.Round(ctx)
	assert.Equal(t, [][]string{{"192.0.2.1"}, {"192.0.2.1", "192.0.2.5"}}, changes, "a new replica that answers is a change")
}

func TestHealthRunProbesUntilCancelled(t *testing.T) {
	var lan fakeProbes
	got := make(chan []string, 4)
	h := store.NewHealth(store.HealthConfig{
		Replicas: []string{"192.0.2.1", "192.0.2.2"}, Probe: lan.probe, Interval: 5 * time.Millisecond,
		DownAfter: 2, UpAfter: 2,
		OnChange: func(healthy []string) { got <- healthy },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	lan.set("192.0.2.1", true)
	select {
	case healthy := <-got:
		assert.Equal(t, []string{"192.0.2.2"}, healthy)
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
	}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

// TestHealthProbeTimeout: a probe that hangs counts as failed after Timeout.
func TestHealthProbeTimeout(t *testing.T) {
	h := store.NewHealth(store.HealthConfig{
		Replicas: []string{"192.0.2.9"}, Timeout: 20 * time.Millisecond, DownAfter: 1,
		Probe: func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() },
	})
	start := time.Now()
	h.Round(context.Background())
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Empty(t, h.Healthy())
	assert.Contains(t, h.Status()[0].LastError, "deadline")
}

// TestNBDProbe drives the probe against netroot's NBD server and a listener that accepts but
// never greets.
func TestNBDProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	exports, err := nbd.NewExportSet(&nbd.Export{Name: "x", Device: backend.NewMemory(4096)})
	require.NoError(t, err)
	srv := &nbd.Server{Exports: exports}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, store.NBDProbe(port)(ctx, "127.0.0.1"))

	mute, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer mute.Close()
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	sctx, scancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer scancel()
	assert.Error(t, store.NBDProbe(mute.Addr().(*net.TCPAddr).Port)(sctx, "127.0.0.1"), "no greeting")

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cport := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	assert.Error(t, store.NBDProbe(cport)(ctx, "127.0.0.1"), "nothing listening")
}
