package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/store"
)

// replicaFlags place each machine on one of several replicas serving the same builds.
type replicaFlags struct {
	list, file         string
	interval, timeout  time.Duration
	downAfter, upAfter int
	nbdPort            int // of -nbd-addr, set by apply
	fileData           []byte
	set                *bootserver.ReplicaSet
}

func (f *replicaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.list, "replicas", "", "IPv4 addresses of the replicas serving the same builds (comma-separated, this one included): each machine's root=overlay:nbd= names the healthy one its MAC address hashes to (rendezvous hashing), the same on every replica")
	fs.StringVar(&f.file, "replicas-file", "", "like -replicas, read from this file (one address a line, # comments); re-read every probe interval")
	fs.DurationVar(&f.interval, "replica-probe-interval", store.DefaultProbeInterval, "with -replicas: probe every replica's NBD port (a handshake) this often; 0 places over the whole list with no probes")
	fs.DurationVar(&f.timeout, "replica-probe-timeout", store.DefaultProbeTimeout, "with -replicas: a probe not answered in this time failed")
	fs.IntVar(&f.downAfter, "replica-down-after", store.DefaultDownAfter, "with -replicas: this many failed probes in a row mark a replica down")
	fs.IntVar(&f.upAfter, "replica-up-after", store.DefaultUpAfter, "with -replicas: this many good probes in a row mark a down replica up")
}

// parseReplicas reads a replica list: addresses separated by commas, spaces or new lines,
// with # comments.
func parseReplicas(flagName, text string) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		for _, r := range strings.FieldsFunc(line, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' }) {
			ip, err := netip.ParseAddr(r)
			if err != nil || !ip.Is4() {
				return nil, usageError{fmt.Errorf("%s: %q is not an IPv4 address (kiwi-overlay's root=overlay:nbd= takes one)", flagName, r)}
			}
			out = append(out, ip.String())
		}
	}
	if len(out) == 0 {
		return nil, usageError{fmt.Errorf("%s: no replica addresses", flagName)}
	}
	return out, nil
}

// apply sets srv.NBDHost when -replicas or -replicas-file is given; start then runs the
// probes.
func (f *replicaFlags) apply(e *env, srv *bootserver.Server, nbdAddr string) error {
	if f.list == "" && f.file == "" {
		return nil
	}
	if f.list != "" && f.file != "" {
		return usageError{errors.New("-replicas and -replicas-file exclude each other")}
	}
	var replicas []string
	var err error
	if f.file != "" {
		if f.fileData, err = os.ReadFile(f.file); err != nil {
			return usageError{fmt.Errorf("-replicas-file: %w", err)}
		}
		replicas, err = parseReplicas("-replicas-file "+f.file, string(f.fileData))
	} else {
		replicas, err = parseReplicas("-replicas", f.list)
	}
	if err != nil {
		return err
	}
	if f.interval <= 0 {
		srv.NBDHost = func(mac net.HardwareAddr) netip.Addr {
			return netip.MustParseAddr(store.PickReplica(mac, replicas))
		}
		return nil
	}
	if f.nbdPort, err = parsePort("-nbd-addr", nbdAddr); err != nil {
		return err
	}
	if f.nbdPort == 0 {
		return usageError{errors.New("-replicas with probes needs a fixed -nbd-addr port (the one every replica listens on)")}
	}
	f.set = bootserver.NewReplicaSet(store.HealthConfig{
		Replicas: replicas, Probe: store.NBDProbe(f.nbdPort), Interval: f.interval, Timeout: f.timeout,
		DownAfter: f.downAfter, UpAfter: f.upAfter, Logger: e.log,
	})
	srv.NBDHost = f.set.NBDHost
	e.log.Info("replicas: probing", "replicas", replicas, "port", f.nbdPort, "interval", f.interval,
		"down_after", f.downAfter, "up_after", f.upAfter)
	return nil
}

// start runs the probes (and re-reads -replicas-file) until ctx ends, and adds the replica
// metrics to srv's registerer; nothing without probes.
func (f *replicaFlags) start(ctx context.Context, e *env, srv *bootserver.Server) {
	if f.set == nil {
		return
	}
	if srv.Registerer != nil {
		if err := srv.Registerer.Register(f.set); err != nil {
			e.log.Warn("replicas: metrics", "err", err)
		}
	}
	go f.set.Run(ctx, srv)
	if f.file == "" {
		return
	}
	go func() {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			data, err := os.ReadFile(f.file)
			if err != nil || bytes.Equal(data, f.fileData) {
				continue // a file being replaced; the set stays as it was
			}
			replicas, err := parseReplicas("-replicas-file "+f.file, string(data))
			if err != nil {
				e.log.Warn("replicas: file not taken; keeping the replicas", "err", err)
				f.fileData = data
				continue
			}
			f.fileData = data
			e.log.Info("replicas: file changed", "replicas", replicas)
			f.set.Health().SetReplicas(replicas)
		}
	}()
}
