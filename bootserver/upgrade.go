package bootserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/netroot/netroot/handoff"
	"github.com/netroot/netroot/nbd"
)

// Names of the descriptors a Server hands to the process that replaces it. The listeners use
// the FileDescriptorName= of the example systemd socket units, so an inherited socket and a
// socket-activated one look the same.
const (
	FileTFTP    = "tftp"     // the TFTP server's UDP socket
	FileNBD     = "nbd"      // the NBD listener
	FileNBDConn = "nbd-conn" // an NBD connection in transmission; its state is an nbd.ConnState
)

// Timeouts of the connection handover.
const (
	// DefaultUpgradeReadyTimeout is how long Upgrade waits for the new process to open the
	// builds and listen when the handoff.Upgrade has no ReadyTimeout: opening verifies and may
	// unpack images.
	DefaultUpgradeReadyTimeout = 5 * time.Minute
	// handoverTimeout bounds the wait for NBD requests in flight and for the new process to
	// confirm that it owns the connections.
	handoverTimeout = 30 * time.Second
)

// upgradeState is a Server's part in a handover, guarded by Server.mu.
type upgradeState struct {
	// noRetire is set once connections went (or are going) to another process: this one
	// then retires no build, whose files the other process serves.
	noRetire bool
	// handover is open while NBD connections are being handed over, and closed when the group
	// stops: the NBD server's Serve returns at Handoff, but the server goes on (draining
	// connections, or serving them again if the handover fails), so its group member must not
	// end and stop the group.
	handover chan struct{}
}

// beginHandover marks the start of a handover; it reports false when one already happened.
func (s *Server) beginHandover() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateRunning || s.upgrade.noRetire {
		return false
	}
	s.upgrade.noRetire = true
	s.upgrade.handover = make(chan struct{})
	return true
}

// nbdServed is what the NBD server's Serve returned; during a handover it waits until the
// group stops.
func (s *Server) nbdServed(err error) error {
	s.mu.Lock()
	h := s.upgrade.handover
	s.mu.Unlock()
	if h != nil && err == nil {
		<-h
	}
	return err
}

// endHandover lets nbdServed return; the group is stopping.
func (s *Server) endHandover() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.upgrade.handover; h != nil {
		close(h)
		s.upgrade.handover = nil
	}
}

// Upgrade replaces this process with a new one, usually a new netroot binary (SIGUSR2, as nginx
// does it), without dropping a client. u says what to start (nil: this program again, with the
// same arguments); extra are more listeners to pass on, such as an HTTP or metrics listener
// (the new process finds them by name with Server.Inherited).
//
// The new process gets the TFTP and NBD sockets, opens the builds and starts its servers
// (Server.Inherited set from handoff.Inherit); once it reports ready, this one stops reading
// NBD requests, finishes those in flight and hands each NBD connection over with its
// negotiated state (nbd.Server.Handoff); the new process resumes them, opening any older
// build a client is still attached to. TLS connections and copy-on-write exports cannot move
// (their session keys and overlays live in this process): they drain instead, and their count
// is logged. This process then stops like Shutdown: running TFTP transfers finish, and Run
// returns ErrServerClosed. AoE has no connections: the new process opens its own raw socket
// and announces its targets at once, so AoE clients carry on.
//
// If the new process cannot start, exits or is not ready in time, Upgrade returns why and this
// process goes on serving as before. Should the handover itself fail, this process resumes the
// connections it took back (new NBD clients then wait for the next upgrade or a restart, since
// its NBD listener is closed). No connection is ever served by both.
func (s *Server) Upgrade(ctx context.Context, u *handoff.Upgrade, extra ...handoff.File) error {
	// One upgrade or reload at a time.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	state, handed, nsrv, act := s.state, s.upgrade.noRetire, s.nbd, s.active
	s.mu.Unlock()
	if state != stateRunning {
		return errors.New("bootserver: Upgrade: the server is not running")
	}
	if handed {
		return errors.New("bootserver: Upgrade: this process already handed its connections over (or tried to)")
	}
	listeners, err := activeFiles(act)
	if err != nil {
		return err
	}
	defer handoff.CloseFiles(listeners)
	var up handoff.Upgrade
	if u != nil {
		up = *u
	}
	if up.ReadyTimeout == 0 {
		up.ReadyTimeout = DefaultUpgradeReadyTimeout
	}
	if up.Logger == nil {
		up.Logger = s.log()
	}
	succ, err := up.Start(ctx, append(listeners, extra...))
	if err != nil {
		return fmt.Errorf("bootserver: upgrade: %w", err)
	}
	// From here the new process serves new clients too. This one retires no build any more:
	// the builds' files are the new process's now.
	if !s.beginHandover() {
		return fmt.Errorf("bootserver: upgrade: %w", succ.Abort(errors.New("the server stopped")))
	}

	var res *nbd.HandoffResult
	if nsrv != nil {
		hctx, cancel := context.WithTimeout(ctx, handoverTimeout)
		res, err = nsrv.Handoff(hctx)
		cancel()
		if res == nil {
			_ = succ.Abort(err)
			return fmt.Errorf("bootserver: upgrade: %w", err)
		}
		if err != nil {
			s.log().Warn("upgrade: NBD connections still negotiating were closed", "closed", res.Closed, "err", err)
		}
	} else {
		res = &nbd.HandoffResult{}
	}
	conns := make([]handoff.File, 0, len(res.Conns))
	var local []nbd.HandedConn // connections that cannot be sent: resumed here
	for _, hc := range res.Conns {
		f, err := connFile(hc)
		if err != nil {
			s.log().Warn("upgrade: keeping an NBD connection", "client", hc.State.Remote, "err", err)
			local = append(local, hc)
			continue
		}
		conns = append(conns, f)
	}
	resume := func(hcs []nbd.HandedConn) {
		for _, hc := range hcs {
			go func() { _ = nsrv.Resume(context.Background(), hc.Conn, hc.State) }()
		}
	}
	resume(local)
	err = succ.Send(conns)
	if err != nil {
		err = succ.Abort(err)
	} else {
		err = succ.Finish(handoverTimeout)
	}
	handoff.CloseFiles(conns)
	if err != nil {
		// The new process is gone. This one serves on, without its NBD listener (Handoff
		// closed it), until it is restarted.
		var sent []nbd.HandedConn
		for _, hc := range res.Conns {
			if !containsConn(local, hc) {
				sent = append(sent, hc)
			}
		}
		if errors.Is(err, handoff.ErrUnconfirmed) {
			// The new process may have begun to serve them: they must not be served twice.
			for _, hc := range sent {
				_ = hc.Conn.Close()
			}
			s.log().Error("upgrade: the new process did not confirm the handover; its NBD connections are closed; new NBD clients are refused until a restart", "closed", len(sent), "err", err)
		} else {
			resume(sent)
			s.log().Error("upgrade failed during the handover: serving the NBD connections here again; new NBD clients are refused until a restart", "resumed", len(sent), "err", err)
		}
		return fmt.Errorf("bootserver: upgrade: %w", err)
	}
	for _, hc := range res.Conns {
		if !containsConn(local, hc) {
			_ = hc.Conn.Close() // the new process has its own copy
		}
	}
	s.log().Info("upgrade: handed over; stopping", "new_pid", succ.PID(), "nbd_connections", len(conns),
		"nbd_draining", res.Kept+len(local), "nbd_closed", res.Closed)
	if res.Kept > 0 {
		s.log().Warn("upgrade: TLS and copy-on-write NBD connections cannot be handed over: they finish their requests and close", "clients", res.Kept)
	}
	s.stop(false)
	return nil
}

func containsConn(hcs []nbd.HandedConn, hc nbd.HandedConn) bool {
	for _, h := range hcs {
		if h.Conn == hc.Conn {
			return true
		}
	}
	return false
}

// connFile returns the descriptor and encoded state of a handed-over NBD connection.
func connFile(hc nbd.HandedConn) (handoff.File, error) {
	sc, ok := hc.Conn.(syscall.Conn)
	if !ok {
		return handoff.File{}, fmt.Errorf("bootserver: NBD connection of type %T has no descriptor", hc.Conn)
	}
	state, err := hc.State.MarshalBinary()
	if err != nil {
		return handoff.File{}, err
	}
	f, err := handoff.FileOf(sc)
	if err != nil {
		return handoff.File{}, err
	}
	return handoff.File{Name: FileNBDConn, State: state, File: f}, nil
}

// activeFiles returns duplicates of the TFTP and NBD sockets in use.
func activeFiles(act Listeners) ([]handoff.File, error) {
	var files []handoff.File
	add := func(name string, c any) error {
		sc, ok := c.(syscall.Conn)
		if !ok {
			return fmt.Errorf("bootserver: %s socket of type %T has no descriptor", name, c)
		}
		f, err := handoff.FileOf(sc)
		if err != nil {
			return err
		}
		files = append(files, handoff.File{Name: name, File: f})
		return nil
	}
	if act.TFTP != nil {
		if err := add(FileTFTP, act.TFTP); err != nil {
			return nil, err
		}
	}
	if act.NBD != nil {
		if err := add(FileNBD, act.NBD); err != nil {
			handoff.CloseFiles(files)
			return nil, err
		}
	}
	return files, nil
}

// StoreForRestart prepares a restart by systemd (SIGTERM while $FDSTORE is set, see
// handoff.FDStoreEnabled): the NBD connections stop as in Upgrade and go, with the TFTP and
// NBD sockets and extra, into systemd's file descriptor store; the next process of the
// service resumes them (Server.Inherited from handoff.Inherit). Then this process stops like
// Shutdown. A `systemctl stop` that follows instead of a start closes them.
func (s *Server) StoreForRestart(ctx context.Context, extra ...handoff.File) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	nsrv, act := s.nbd, s.active
	s.mu.Unlock()
	if !s.beginHandover() {
		return errors.New("bootserver: StoreForRestart: the server is not running, or handed its connections over already")
	}
	defer s.stop(false)
	listeners, err := activeFiles(act)
	if err != nil {
		return err
	}
	defer handoff.CloseFiles(listeners)
	var res nbd.HandoffResult
	if nsrv != nil {
		hctx, cancel := context.WithTimeout(ctx, handoverTimeout)
		r, err := nsrv.Handoff(hctx)
		cancel()
		if r != nil {
			res = *r
		} else if err != nil {
			return fmt.Errorf("bootserver: store for restart: %w", err)
		}
	}
	var conns []handoff.File
	for _, hc := range res.Conns {
		f, err := connFile(hc)
		_ = hc.Conn.Close()
		if err != nil {
			s.log().Warn("restart: closing an NBD connection", "client", hc.State.Remote, "err", err)
			continue
		}
		conns = append(conns, f)
	}
	defer handoff.CloseFiles(conns)
	if err := handoff.Store(append(listeners, extra...), conns); err != nil {
		return fmt.Errorf("bootserver: store for restart: %w", err)
	}
	s.log().Info("restart: connections stored with systemd", "nbd_connections", len(conns), "nbd_draining", res.Kept, "nbd_closed", res.Closed)
	return nil
}

// useInherited takes the inherited sockets for the servers Listeners leaves without one.
func (s *Server) useInherited() {
	if s.Inherited == nil {
		return
	}
	if s.Listeners.TFTP == nil {
		pc, err := s.Inherited.PacketConn(FileTFTP)
		if err != nil {
			s.log().Warn("upgrade: inherited TFTP socket unusable; opening one", "err", err)
		}
		s.Listeners.TFTP = pc
	}
	if s.Listeners.NBD == nil && !s.DisableNBD {
		ln, err := s.Inherited.Listener(FileNBD)
		if err != nil {
			s.log().Warn("upgrade: inherited NBD listener unusable; opening one", "err", err)
		}
		s.Listeners.NBD = ln
	}
}

// takeOver tells the process this one replaces that it serves, and resumes the NBD
// connections it hands over.
func (s *Server) takeOver(ctx context.Context) error {
	if s.Inherited == nil {
		return nil
	}
	conns, err := s.Inherited.Ready(ctx, 2*handoverTimeout)
	if err != nil {
		return err
	}
	nsrv := s.NBDServer()
	resumed := 0
	for _, f := range conns {
		if err := s.resume(ctx, nsrv, f); err != nil {
			s.log().Error("upgrade: an NBD connection could not be resumed", "err", err)
			continue
		}
		resumed++
	}
	if len(conns) > 0 || len(s.Inherited.Names()) > 0 {
		s.log().Info("upgrade: took over", "nbd_connections", resumed, "failed", len(conns)-resumed)
	}
	return nil
}

// resume serves one handed-over NBD connection, opening the build it is attached to when this
// process does not serve it yet.
func (s *Server) resume(ctx context.Context, nsrv *nbd.Server, f handoff.File) error {
	defer f.Close()
	if f.Name != FileNBDConn {
		return fmt.Errorf("bootserver: unknown handed-over descriptor %q", f.Name)
	}
	if nsrv == nil {
		return errors.New("bootserver: NBD connection handed over, but NBD is disabled")
	}
	var st nbd.ConnState
	if err := st.UnmarshalBinary(f.State); err != nil {
		return err
	}
	if err := s.ensureBuild(ctx, st.Export); err != nil {
		return fmt.Errorf("bootserver: client %s: %w", st.Remote, err)
	}
	c, err := net.FileConn(f.File)
	if err != nil {
		return fmt.Errorf("bootserver: client %s: %w", st.Remote, err)
	}
	go func() { _ = nsrv.Resume(context.Background(), c, st) }()
	return nil
}

// ensureBuild makes sure the build exported as name is served, opening it (not as the current
// build) when a resumed client is attached to a build this process did not open.
func (s *Server) ensureBuild(ctx context.Context, name string) error {
	id, err := ParseBuildID(name)
	if err != nil {
		return fmt.Errorf("export %q: %w", name, err)
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	b := s.builds[id]
	s.mu.Unlock()
	if b != nil {
		return nil
	}
	infos, err := s.Source.Builds(ctx)
	var info *BuildInfo
	for i := range infos {
		if infos[i].ID == id {
			info = &infos[i]
		}
	}
	if info == nil {
		return errors.Join(fmt.Errorf("build %s (export %q) is gone from the source", id, name), err)
	}
	b, err = s.open(ctx, *info)
	if err != nil {
		return err
	}
	s.mu.Lock()
	b.idleSince = time.Now()
	s.builds[id] = b
	if b.export != nil {
		s.exports.add(b.export)
	}
	s.mu.Unlock()
	if s.aoe != nil {
		if err := s.aoe.restart(); err != nil {
			s.log().Warn("aoe restart", "err", err)
		}
	}
	s.log().Info("upgrade: opened a build a resumed client is attached to", "build", id.String())
	s.emit(Event{Kind: BuildReady, Build: id})
	return nil
}
