package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/handoff"
)

// Names of the sockets an upgrade passes on besides bootserver's: the metrics listener, and
// with -user the HTTP listener and DHCP sockets (the new process cannot open them itself).
const (
	fileMetrics = "metrics"
	fileHTTP    = "http"
	fileDHCP    = "dhcp-" // + port
)

// runUpgradable runs srv until ctx ends (SIGINT, SIGTERM) and upgrades it on SIGUSR2: the
// binary at the path netroot was started as is started again with the same arguments, gets the
// sockets and the NBD connections, and this process exits once it handed them over (see
// bootserver.Server.Upgrade). Under systemd with a file descriptor store ($FDSTORE), ending
// puts the NBD connections into the store instead of closing them, so `systemctl restart`
// keeps every client. extra returns more listeners to pass on (the metrics listener); their
// duplicates are closed here afterwards.
func runUpgradable(ctx context.Context, e *env, srv *bootserver.Server, extra func() []handoff.File) error {
	// Before anything: an unhandled SIGUSR2 is ignored, and an operator may send it early.
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	// Run stops when this process decides, not when ctx ends.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(runCtx) }()
	done := ctx.Done()
	for {
		select {
		case err := <-errc:
			if errors.Is(err, bootserver.ErrServerClosed) {
				return nil // upgraded, or stored for a restart
			}
			return err
		case <-usr2:
			e.log.Info("SIGUSR2: upgrading the binary")
			files := extra()
			if err := srv.Upgrade(ctx, &handoff.Upgrade{Logger: e.log}, files...); err != nil {
				e.log.Error("upgrade failed; still serving", "err", err)
			}
			handoff.CloseFiles(files)
		case <-done:
			done = nil
			if handoff.FDStoreEnabled() {
				files := extra()
				err := srv.StoreForRestart(context.Background(), files...)
				handoff.CloseFiles(files)
				if err == nil {
					continue // Run returns ErrServerClosed
				}
				e.log.Error("storing connections with systemd failed; stopping", "err", err)
			}
			stop()
		}
	}
}

// inheritedListener returns the listener an upgrade passed as name, or listens on addr.
func inheritedListener(inh *handoff.Inherited, name, addr string) (net.Listener, error) {
	if l, err := inh.Listener(name); l != nil || err != nil {
		return l, err
	}
	return net.Listen("tcp", addr)
}

// listenerFiles returns duplicates of ls's descriptors, named by their keys, for an upgrade.
func listenerFiles(e *env, ls map[string]syscall.Conn) []handoff.File {
	var files []handoff.File
	for name, sc := range ls {
		f, err := handoff.FileOf(sc)
		if err != nil {
			e.log.Warn("upgrade: not passing a listener on", "name", name, "err", err)
			continue
		}
		files = append(files, handoff.File{Name: name, File: f})
	}
	return files
}
