package bootserver_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

// replica is one `netroot serve -store` of TestReplicasFollowHealth.
type replica struct {
	srv  *bootserver.Server
	set  *bootserver.ReplicaSet
	reg  *prometheus.Registry
	stop func()
}

// TestReplicasFollowHealth runs three replicas of one store on 127.0.0.11-13 (one NBD port),
// each probing all three over NBD: when one stops, the configs the two others write stop
// naming it (only its machines move), and name it again when it is back.
func TestReplicasFollowHealth(t *testing.T) {
	s3 := storetest.NewServer(t)
	st := s3.Store(t, "images", "site")
	pushBuild(t, st, "leap", "1.0.0", 1, nil)
	const id = "leap.x86_64-1.0.0"

	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.11-13 on the loopback device, which only Linux gives without setup")
	}
	ln, err := net.Listen("tcp", "127.0.0.11:0")
	require.NoError(t, err) // Linux routes all of 127.0.0.0/8 to lo
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addrs := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

	// Machines with their own configs (files), at least two on each replica.
	var machines []bootserver.Machine
	per := map[string]int{}
	for i := 0; len(machines) < 40 && (per[addrs[0]] < 2 || per[addrs[1]] < 2 || per[addrs[2]] < 2); i++ {
		hw := mac(fmt.Sprintf("52:54:00:19:00:%02x", i))
		per[store.PickReplica(hw, addrs)]++
		machines = append(machines, bootserver.Machine{MAC: hw})
	}
	require.GreaterOrEqual(t, per[addrs[1]], 2)

	start := func(addr string) *replica {
		cache, err := store.NewCache(st, &store.CacheConfig{FetchTimeout: 5 * time.Second})
		require.NoError(t, err)
		reg := prometheus.NewRegistry()
		set := bootserver.NewReplicaSet(store.HealthConfig{
			Replicas: addrs, Probe: store.NBDProbe(port),
			Interval: 50 * time.Millisecond, Timeout: time.Second, DownAfter: 2, UpAfter: 2,
		})
		reg.MustRegister(set)
		srv := &bootserver.Server{
			Registerer: reg,
			Source:     &bootserver.StoreSource{Cache: cache},
			Arch:       "x86_64",
			Machines:   machines,
			TFTPRoot:   t.TempDir(),
			ServerIP:   netip.MustParseAddr(addr),
			NBDHost:    set.NBDHost,
			TFTPAddr:   addr + ":0",
			NBDAddr:    fmt.Sprintf("%s:%d", addr, port),
			Grace:      300 * time.Millisecond,
		}
		ctx, cancel := context.WithCancel(context.Background())
		runErr := make(chan error, 1)
		go func() { runErr <- srv.Run(ctx) }()
		setErr := make(chan error, 1)
		go func() { setErr <- set.Run(ctx, srv) }()
		r := &replica{srv: srv, set: set, reg: reg}
		stopped := false
		r.stop = func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			assert.NoError(t, <-runErr)
			assert.ErrorIs(t, <-setErr, context.Canceled)
		}
		t.Cleanup(r.stop)
		require.Eventually(t, func() bool { return srv.State().Default.String() == id }, 20*time.Second, 10*time.Millisecond)
		return r
	}
	reps := []*replica{start(addrs[0]), start(addrs[1]), start(addrs[2])}

	// configsName reports whether every machine's config on r names the replica PickReplica
	// chooses among healthy.
	configsName := func(r *replica, healthy []string) bool {
		for _, m := range machines {
			cfg, err := readConfig(r.srv, m.MAC)
			want := "root=overlay:nbd=" + store.PickReplica(m.MAC, healthy) + ":" + id
			if err != nil || !strings.Contains(cfg, want) {
				return false
			}
		}
		return true
	}
	for _, r := range reps {
		require.Eventually(t, func() bool { return configsName(r, addrs) }, 10*time.Second, 20*time.Millisecond)
	}
	before := map[string]string{}
	for _, m := range machines {
		before[m.MAC.String()] = store.PickReplica(m.MAC, addrs)
	}

	// Replica 2 stops; the others' configs move its machines, and only those.
	down := time.Now()
	reps[1].stop()
	rest := []string{addrs[0], addrs[2]}
	for _, r := range []*replica{reps[0], reps[2]} {
		require.Eventually(t, func() bool { return configsName(r, rest) }, 10*time.Second, 20*time.Millisecond)
		for _, m := range machines {
			cfg, err := readConfig(r.srv, m.MAC)
			require.NoError(t, err)
			assert.NotContains(t, cfg, "nbd="+addrs[1]+":")
			if b := before[m.MAC.String()]; b != addrs[1] {
				assert.Contains(t, cfg, "nbd="+b+":", "a machine whose replica stayed up keeps it")
			}
		}
		assert.Equal(t, rest, r.set.Health().Healthy())
		assert.Equal(t, 0.0, gather(t, r.reg)["netroot_replica_up{replica=127.0.0.12}"])
		assert.Equal(t, 1.0, gather(t, r.reg)["netroot_replica_up{replica=127.0.0.13}"])
	}
	t.Logf("configs moved off the stopped replica in %v", time.Since(down).Round(time.Millisecond))

	// It comes back on the same address: named again.
	back := time.Now()
	reps[1] = start(addrs[1])
	for _, r := range reps {
		require.Eventually(t, func() bool { return configsName(r, addrs) }, 10*time.Second, 20*time.Millisecond)
		assert.Equal(t, 1.0, gather(t, r.reg)["netroot_replica_up{replica=127.0.0.12}"])
	}
	t.Logf("configs named the returned replica again in %v", time.Since(back).Round(time.Millisecond))
	assert.True(t, slices.Equal(addrs, reps[0].set.Health().Healthy()))
}

// readConfig reads the pxelinux config written for hw.
func readConfig(srv *bootserver.Server, hw net.HardwareAddr) (string, error) {
	b, err := readFileErr(srv, "pxelinux.cfg/01-"+strings.ReplaceAll(hw.String(), ":", "-"))
	return string(b), err
}

func readFileErr(srv *bootserver.Server, rel string) ([]byte, error) {
	return os.ReadFile(filepath.Join(srv.TFTPRoot, rel))
}
