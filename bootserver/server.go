package bootserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/handoff"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/overlaycmdline"
	"github.com/netroot/netroot/pxecfg"
	"github.com/netroot/netroot/tftp"
)

// Defaults for the zero values of Server fields.
const (
	DefaultTFTPAddr        = ":69"
	DefaultNBDAddr         = ":10809"
	DefaultGrace           = 10 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultLabel           = "netroot"
)

// ErrServerClosed is returned by Run after Shutdown or Close.
var ErrServerClosed = errors.New("bootserver: server closed")

// Server boots diskless machines from the builds of a Source: it picks the build of each
// image, stages its kernel and initrd into the TFTP root, writes the boot menus (pxelinux,
// GRUB, iPXE) with the kiwi-overlay kernel command line, and serves TFTP, NBD and AoE as one
// group with Services added by the caller. Reload (or the watch) rolls forward to new builds
// while every NBD client stays on the build it attached to.
//
// Its exported fields are its configuration; set them before Run and do not change them
// afterwards. The zero value of each field means the documented default.
type Server struct {
	// Source lists and opens the builds; required (a *KISSource for KIWI output folders).
	Source Source
	// Image chooses the default image: an image name (the newest build of that name is
	// served and rolled forward) or a build ID NAME.ARCH-VERSION (that build, pinned). Empty
	// means the only image name of Arch the source holds; several are an error that lists
	// them.
	Image string
	// Arch is the architecture, as KIWI names it, builds are chosen for; empty means HostArch.
	Arch string
	// Machines give machines (by MAC address or prefix) their own image and kernel options.
	Machines []Machine

	// TFTPRoot is the folder served over TFTP; kernels, initrds and configs are written there.
	TFTPRoot string
	// ServerIP is this server's IPv4 address as clients reach it; it goes into
	// root=overlay:nbd=SERVER-IP:EXPORT and is required with NBD.
	ServerIP netip.Addr
	// NBDHost, when set, chooses the NBD server each machine's boot config names (one of
	// several replicas serving the same builds, such as store.PickReplica's choice); an
	// invalid Addr means ServerIP. Every machine then gets its configs by its MAC address:
	// Machines as files, all others rendered when pxelinux, GRUB or iPXE ask for them by name
	// (pxelinux.cfg/01-MAC, grub/grub.cfg-01-MAC, boot-01-MAC.ipxe). Nil means ServerIP for all.
	NBDHost func(mac net.HardwareAddr) netip.Addr
	// TFTPAddr is the UDP address TFTP listens on; "" means DefaultTFTPAddr. Ignored when
	// Listeners.TFTP is set.
	TFTPAddr string
	// DisableNBD turns NBD off (AoE only).
	DisableNBD bool
	// NBDAddr is the TCP address NBD listens on; "" means DefaultNBDAddr. Ignored when
	// Listeners.NBD is set.
	NBDAddr string
	// CopyOnWrite gives each NBD connection a private writable overlay (in memory, or in
	// temporary files in OverlayDir); the images are never modified.
	CopyOnWrite bool
	OverlayDir  string
	// AoEInterface, when set, also serves every build over AoE on this interface as
	// e<AoEShelf>.<slot>, slots counted up from AoESlot in the order builds arrive.
	AoEInterface string
	AoEShelf     uint16
	AoESlot      uint8
	// AoEAnnounce is how often the AoE target announces itself; 0 means aoe's default.
	AoEAnnounce time.Duration
	// DefaultRoot is the protocol of the first (default) boot entry when both are served:
	// overlaycmdline.KindNBD (the zero value's choice) or overlaycmdline.KindAoE.
	DefaultRoot overlaycmdline.Kind

	// Boot shapes the boot menus and kernel command lines.
	Boot BootOptions
	// Force lets the server overwrite boot configs it did not write (they carry no marker).
	Force bool

	// Grace is how long an old build stays after it stopped being current and its last NBD
	// client left, so that a machine that reboots still finds it; 0 means DefaultGrace.
	Grace time.Duration
	// WatchInterval, when positive, makes Run look for new builds this often (a Reload that
	// does not retry builds that failed unless their files changed).
	WatchInterval time.Duration
	// ShutdownTimeout bounds the graceful stop when Run's context ends; 0 means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Limits bound what clients may take of the server; the zero value means the protocol
	// packages' defaults.
	Limits Limits

	// OnListening, when set, is called once the TFTP and NBD sockets are open (new or
	// inherited), before the first build is prepared; an error ends Run before anything is
	// served. A program started as root drops its privileges here, so that preparing builds,
	// reloads and serving all run as its user.
	OnListening func() error

	// Listeners, when set, are used instead of listening on TFTPAddr and NBDAddr: sockets
	// from systemd socket activation, or handed over by a previous process.
	Listeners Listeners
	// Services are more protocol servers run in the group (proxyDHCP, HTTP).
	Services []Service
	// Inherited, when set, is what the process this one replaces passed (handoff.Inherit): Run
	// serves its "tftp" and "nbd" sockets where Listeners leaves them nil, and takes over the NBD
	// connections it hands over once the servers run. See Upgrade.
	Inherited *handoff.Inherited

	// Logger receives one line per boot-relevant event; nil means silent.
	Logger *slog.Logger
	// ProtocolLogger is given to the TFTP, NBD and AoE servers (with a "proto" attribute);
	// nil means they are silent.
	ProtocolLogger *slog.Logger
	// Registerer, when set, gets the servers' counters and the builds as Prometheus metrics.
	Registerer prometheus.Registerer
	// OnEvent, when set, is called for every Event. It runs on the server's goroutines and
	// must not block.
	OnEvent func(Event)

	mu          sync.Mutex // guards the fields below
	state       serverState
	stopc       chan struct{} // closed by Shutdown/Close
	stopOnce    sync.Once
	closeNow    bool
	done        chan struct{} // closed when Run returns
	reloadMu    sync.Mutex    // serializes reloads
	builds      map[BuildID]*build
	selected    map[string]*build  // by selector ("" for the default image, or Machine.Image)
	rejected    map[BuildID]string // stamp of the build that failed
	rejectedWhy map[BuildID]string
	exports     *exportTable
	tracker     *connTracker
	aoeSlots    map[uint8]BuildID
	tftp        *tftp.Server
	nbd         *nbd.Server
	aoe         *aoeRunner
	active      Listeners
	upgrade     upgradeState // see upgrade.go
	dynamic     *dynamicConfigs
	collectors  []prometheus.Collector
	// recorder keeps client events for Status; set by Run.
	recorder atomic.Pointer[recorder]
}

type serverState int

const (
	stateNew serverState = iota
	stateRunning
	stateStopped
)

// Listeners are sockets for the built-in servers.
type Listeners struct {
	NBD  net.Listener
	TFTP net.PacketConn
}

// BootOptions shape the boot menus and kernel command lines.
type BootOptions struct {
	// Label is the boot entries' label prefix ("netroot-nbd"); "" means DefaultLabel.
	Label string
	// Serial is the pxelinux SERIAL directive, such as "0 115200"; also sets GRUB's serial.
	Serial string
	// Timeout is the menu timeout; 0 boots the default entry at once.
	Timeout time.Duration
	// Formats selects the configs written; 0 means pxecfg.FormatAll.
	Formats pxecfg.Format
	// Overlay are the kiwi-overlay options (rd.root.overlay.*).
	Overlay overlaycmdline.Options
	// Append are extra kernel options for every entry, such as "console=ttyS0,115200".
	Append string
	// Clients get pxelinux files of their own (by IP address or prefix, UUID or MAC) with the
	// default image's menu, as `pxe -ip` writes them.
	Clients []pxecfg.Client
	// Kernel and Initrd, when set, are paths in the TFTP root where the default image's
	// current kernel and initrd are also placed (boot/linux), for configs written by hand.
	Kernel, Initrd string
	// Bootloader copies pxelinux.0 and its modules from the host's packages (found under
	// BootloaderSysroot, "" meaning /) into the TFTP root. RequireBootloader makes missing
	// files an error naming their packages instead of a warning.
	Bootloader        bool
	BootloaderSysroot string
	RequireBootloader bool
}

func (s *Server) grace() time.Duration {
	if s.Grace > 0 {
		return s.Grace
	}
	return DefaultGrace
}

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return discard
}

var discard = slog.New(slog.DiscardHandler)

func (s *Server) protoLog(proto string) *slog.Logger {
	if s.ProtocolLogger == nil {
		return nil
	}
	return s.ProtocolLogger.With("proto", proto)
}

// Emit reports e to OnEvent (Time set to now when zero); for Services that report their own
// events, such as HTTPRequest.
func (s *Server) Emit(e Event) { s.emit(e) }

func (s *Server) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if r := s.recorder.Load(); r != nil {
		r.record(e)
	}
	if s.OnEvent != nil {
		s.OnEvent(e)
	}
}

// check refuses configurations that cannot boot a kiwi-overlay client.
func (s *Server) check() error {
	if s.Source == nil {
		return errors.New("bootserver: no Source")
	}
	if s.TFTPRoot == "" {
		return errors.New("bootserver: no TFTPRoot")
	}
	if s.DisableNBD && s.AoEInterface == "" {
		return errors.New("bootserver: nothing to serve: NBD is disabled and there is no AoE interface")
	}
	if !s.DisableNBD && (!s.ServerIP.IsValid() || !s.ServerIP.Unmap().Is4()) {
		return fmt.Errorf("bootserver: server IP %v: want the IPv4 address clients reach (root=overlay:nbd=SERVER-IP:EXPORT)", s.ServerIP)
	}
	if s.AoEInterface != "" && s.AoEShelf > overlaycmdline.MaxShelf {
		return fmt.Errorf("bootserver: AoE shelf %d: at most %d", s.AoEShelf, overlaycmdline.MaxShelf)
	}
	switch s.DefaultRoot {
	case 0, overlaycmdline.KindNBD:
		if s.DefaultRoot == overlaycmdline.KindNBD && s.DisableNBD {
			return errors.New("bootserver: default root NBD, but NBD is disabled")
		}
	case overlaycmdline.KindAoE:
		if s.AoEInterface == "" {
			return errors.New("bootserver: default root AoE, but AoE is not served")
		}
	default:
		return fmt.Errorf("bootserver: default root %v: want NBD or AoE", s.DefaultRoot)
	}
	for i, m := range s.Machines {
		if err := m.validate(); err != nil {
			return fmt.Errorf("bootserver: machine %d: %w", i+1, err)
		}
	}
	return nil
}

// ErrShutdownTimeout is returned by Run when the shutdown timeout ran out before every running
// transfer finished, so the servers were closed with clients still served (TFTP clients get
// an ERROR packet, NBD clients lose their connection).
var ErrShutdownTimeout = errors.New("bootserver: shutdown timeout ran out: running transfers were cut off")

// Run prepares the builds, starts the servers and serves until ctx ends (then stops
// gracefully within ShutdownTimeout and returns nil, or ErrShutdownTimeout when it ran out),
// Shutdown or Close is called (then it returns ErrServerClosed), or a server of the group fails
// (then it stops the others and returns that error). Run may be called once; again only after it failed before serving.
func (s *Server) Run(ctx context.Context) (err error) {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.state != stateNew {
		s.mu.Unlock()
		return errors.New("bootserver: Run called twice")
	}
	s.state = stateRunning
	s.stopc = make(chan struct{})
	s.done = make(chan struct{})
	s.builds = map[BuildID]*build{}
	s.selected = map[string]*build{}
	s.rejected = map[BuildID]string{}
	s.rejectedWhy = map[BuildID]string{}
	s.aoeSlots = map[uint8]BuildID{}
	s.exports = &exportTable{}
	s.tracker = newConnTracker(s)
	s.dynamic = &dynamicConfigs{}
	s.mu.Unlock()
	s.recorder.Store(newRecorder())
	served := false
	defer func() {
		s.mu.Lock()
		s.state = stateStopped
		if !served {
			// Nothing was served: the configuration can be fixed and Run called again.
			s.state = stateNew
		}
		s.mu.Unlock()
		close(s.done)
	}()
	defer s.closeBuilds()

	// The sockets first: a busy or mistyped address fails in a second, before the first
	// build is verified and unpacked (minutes for a large image) and before any file is staged.
	s.useInherited()
	opened, err := s.openSockets()
	if err != nil {
		return err
	}
	defer func() {
		if !served {
			s.closeSockets(opened)
		}
	}()
	if s.OnListening != nil {
		if err := s.OnListening(); err != nil {
			return err
		}
	}
	if err := s.reload(ctx, reloadInitial); err != nil {
		return err
	}
	g := &group{log: s.log()}
	defer g.closeAll()
	if err := s.startServers(g); err != nil {
		return err
	}
	if s.Registerer != nil {
		if err := s.register(); err != nil {
			g.closeAll()
			return err
		}
		defer s.unregister()
	}
	for _, svc := range s.Services {
		if hs, ok := svc.(*HTTPServer); ok {
			hs.emit = s.emit
		}
		g.add(svc.Name(), svc.Serve, svc.Shutdown, svc.Close)
	}
	served = true
	if err := s.takeOver(ctx); err != nil {
		s.log().Error("upgrade: taking over connections", "err", err)
	}
	s.log().Info("ready", "builds", s.currentIDs())
	s.emit(Event{Kind: Ready})

	watch := make(<-chan time.Time)
	if s.WatchInterval > 0 {
		t := time.NewTicker(s.WatchInterval)
		defer t.Stop()
		watch = t.C
	}
	sweep := time.NewTicker(min(max(s.grace()/4, 10*time.Millisecond), time.Second))
	defer sweep.Stop()
	var failed error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-s.stopc:
			err = ErrServerClosed
			break loop
		case failed = <-g.errc:
			s.log().Error("server stopped", "err", failed)
			g.errc <- nil // counted below with the others
			break loop
		case <-watch:
			if err := Unlogged(s.reload(ctx, reloadWatch)); err != nil {
				s.log().Warn("watch", "err", err)
			}
		case <-sweep.C:
			s.sweep(false)
		}
	}

	timeout := s.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	s.mu.Lock()
	now := s.closeNow
	s.mu.Unlock()
	if now {
		g.closeAll()
	} else {
		s.log().Info("shutting down: letting running transfers finish", "timeout", timeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		if g.shutdown(sctx) && failed == nil {
			failed = fmt.Errorf("%w (%v)", ErrShutdownTimeout, timeout)
		}
		cancel()
	}
	if werr := g.wait(); failed == nil {
		failed = werr
	}
	s.aoe.stop()
	if failed != nil {
		return failed
	}
	s.log().Info("stopped")
	return err
}

// Shutdown stops the server gracefully: the servers stop accepting, running transfers and NBD
// requests finish, then Run returns ErrServerClosed. If ctx ends first, the servers are closed
// at once and Shutdown returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	done, ok := s.stop(false)
	if !ok {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if g := s.nbd; g != nil {
			_ = g.Close()
		}
		if t := s.tftp; t != nil {
			_ = t.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Close stops the server now, cutting running transfers and NBD connections.
func (s *Server) Close() error {
	done, ok := s.stop(true)
	if ok {
		<-done
	}
	return nil
}

func (s *Server) stop(now bool) (chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateRunning {
		return nil, false
	}
	if now {
		s.closeNow = true
	}
	s.stopOnce.Do(func() { close(s.stopc) })
	return s.done, true
}

// NBDServer returns the running NBD server, or nil before Run started it or with NBD off. Its
// connections can be handed over and given back with its ServeConn.
func (s *Server) NBDServer() *nbd.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nbd
}

// ActiveListeners returns the sockets the built-in servers serve, once Run started them:
// those of Listeners, or the ones Run opened.
func (s *Server) ActiveListeners() Listeners {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// startServers starts TFTP, NBD and AoE in g.
// Limits bound what clients may take of a Server: a few cheap packets from one broken or
// hostile client must not take the memory, descriptors or slots every other client needs. The
// zero value of each field means the protocol package's default (tftp.Server, nbd.Server); a
// negative one, where the package allows it, no limit.
type Limits struct {
	// TFTPMaxTransfers bounds transfers at once, TFTPMaxTransfersPerClient those of one client
	// address, TFTPMaxBufferBytes the memory all transfers hold for windows and read-ahead.
	TFTPMaxTransfers, TFTPMaxTransfersPerClient int
	TFTPMaxBufferBytes                          int64
	// NBDMaxConnections bounds connections at once, NBDMaxHandshakesPerSource those one client
	// address has negotiating, NBDMaxBufferBytes the memory all connections hold for payloads
	// and replies. NBDWriteTimeout disconnects a client that leaves replies untaken that long;
	// NBDIdleTimeout one that sends no request that long (0: never, as kiwi-overlay clients may
	// be idle for hours).
	NBDMaxConnections, NBDMaxHandshakesPerSource int
	NBDMaxBufferBytes                            int64
	NBDWriteTimeout, NBDIdleTimeout              time.Duration
}

// openSockets opens the TFTP and NBD sockets that Listeners (the caller's, inherited or
// socket-activated ones) leaves nil, into Listeners, and returns what it opened.
func (s *Server) openSockets() (opened Listeners, err error) {
	if s.Listeners.TFTP == nil {
		addr := cmp.Or(s.TFTPAddr, DefaultTFTPAddr)
		if opened.TFTP, err = net.ListenPacket("udp", addr); err != nil {
			return opened, &ListenError{Proto: "tftp", Addr: addr, Err: err}
		}
		s.Listeners.TFTP = opened.TFTP
	}
	if s.Listeners.NBD == nil && !s.DisableNBD {
		addr := cmp.Or(s.NBDAddr, DefaultNBDAddr)
		if opened.NBD, err = net.Listen("tcp", addr); err != nil {
			s.closeSockets(opened)
			return Listeners{}, &ListenError{Proto: "nbd", Addr: addr, Err: err}
		}
		s.Listeners.NBD = opened.NBD
	}
	return opened, nil
}

// closeSockets closes what openSockets opened and takes it out of Listeners again, so that
// Run can be called again after failing before it served.
func (s *Server) closeSockets(opened Listeners) {
	if opened.TFTP != nil {
		opened.TFTP.Close()
		s.Listeners.TFTP = nil
	}
	if opened.NBD != nil {
		opened.NBD.Close()
		s.Listeners.NBD = nil
	}
}

func (s *Server) startServers(g *group) error {
	// TFTP
	tsrv := &tftp.Server{
		// GRUB asks for "/boot/linux": names are relative to the TFTP root, as with
		// tftpd-hpa --secure.
		Handler:               s.tftpHandler(),
		Logger:                s.protoLog("tftp"),
		OnTransferDone:        s.onTransfer,
		MaxTransfers:          s.Limits.TFTPMaxTransfers,
		MaxTransfersPerClient: s.Limits.TFTPMaxTransfersPerClient,
		MaxBufferBytes:        s.Limits.TFTPMaxBufferBytes,
	}
	pc := s.Listeners.TFTP // opened by openSockets if the caller gave none
	s.mu.Lock()
	s.tftp, s.active.TFTP = tsrv, pc
	s.mu.Unlock()
	s.log().Info("tftp listening", "addr", pc.LocalAddr().String(), "root", s.TFTPRoot)
	g.add("tftp", func(context.Context) error { return ignore(tsrv.Serve(pc), tftp.ErrServerClosed) }, tsrv.Shutdown, tsrv.Close)

	// NBD
	if !s.DisableNBD {
		nsrv := &nbd.Server{
			Exports:  s.exports,
			Logger:   s.protoLog("nbd"),
			OnAttach: s.tracker.attached,
			OnDetach: s.tracker.detached,
			OnRefuse: s.tracker.refused,

			MaxConnections:         s.Limits.NBDMaxConnections,
			MaxHandshakesPerSource: s.Limits.NBDMaxHandshakesPerSource,
			MaxBufferBytes:         s.Limits.NBDMaxBufferBytes,
			WriteTimeout:           s.Limits.NBDWriteTimeout,
			IdleTimeout:            s.Limits.NBDIdleTimeout,
		}
		ln := s.Listeners.NBD // opened by openSockets if the caller gave none
		s.mu.Lock()
		s.nbd, s.active.NBD = nsrv, ln
		s.mu.Unlock()
		s.log().Info("nbd listening", "addr", ln.Addr().String(), "exports", s.exports.names())
		g.add("nbd", func(context.Context) error { return s.nbdServed(ignore(nsrv.Serve(ln), nbd.ErrServerClosed)) },
			func(ctx context.Context) error { s.endHandover(); return nsrv.Shutdown(ctx) },
			func() error { s.endHandover(); return nsrv.Close() })
	}

	// AoE
	if s.AoEInterface != "" {
		s.aoe = &aoeRunner{s: s}
		if err := s.aoe.restart(); err != nil {
			return err
		}
	}
	return nil
}

func ignore(err, closed error) error {
	if errors.Is(err, closed) {
		return nil
	}
	return err
}

// ListenError is returned by Run when a server cannot open its socket.
type ListenError struct {
	Proto, Addr string
	Err         error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("bootserver: %s: listen on %s: %v", e.Proto, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

func (s *Server) onTransfer(ti tftp.TransferInfo) {
	switch {
	case ti.Err != nil && s.ProtocolLogger != nil:
		// The TFTP server has logged the failure (one line per failure).
	case errors.Is(ti.Err, tftp.ErrFileNotFound):
		// pxelinux asks for pxelinux.cfg/<uuid>, <mac>, <hex ip>... before default.
		s.log().Debug("tftp file not found", "client", ti.Remote, "file", ti.Filename)
	case ti.Err != nil:
		s.log().Warn("tftp transfer failed", "client", ti.Remote, "file", ti.Filename, "bytes", ti.Bytes, "err", ti.Err)
	default:
		s.log().Info("client fetched", "client", ti.Remote.Addr(), "file", ti.Filename, "bytes", ti.Bytes,
			"blksize", ti.BlockSize, "windowsize", ti.WindowSize, "took", ti.Duration.Round(time.Millisecond))
	}
	s.emit(Event{Kind: TFTPTransfer, Client: ti.Remote.Addr().String(), File: ti.Filename, Bytes: ti.Bytes, Err: ti.Err})
}

// group runs servers and stops them together.
type group struct {
	log     *slog.Logger
	members []*member
	errc    chan error
}

type member struct {
	name     string
	shutdown func(context.Context) error
	close    func() error
}

func (g *group) add(name string, serve func(context.Context) error, shutdown func(context.Context) error, closeNow func() error) {
	if g.errc == nil {
		g.errc = make(chan error, 64)
	}
	g.members = append(g.members, &member{name: name, shutdown: shutdown, close: closeNow})
	go func() {
		err := serve(context.Background())
		if err != nil {
			err = fmt.Errorf("bootserver: %s server: %w", name, err)
		}
		g.errc <- err
	}()
}

// closeAll closes every member now; calling it again does nothing harmful.
func (g *group) closeAll() {
	for _, m := range g.members {
		_ = m.close()
	}
}

// shutdown stops every member gracefully within ctx, closes those that did not finish, and
// reports whether any had to be closed.
func (g *group) shutdown(ctx context.Context) (forced bool) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, m := range g.members {
		wg.Go(func() {
			if err := m.shutdown(ctx); err != nil {
				g.log.Warn("forced shutdown", "server", m.name, "err", err)
				_ = m.close()
				mu.Lock()
				forced = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return forced
}

// wait collects every member's result and returns the first error.
func (g *group) wait() error {
	var first error
	for range g.members {
		if err := <-g.errc; err != nil && first == nil {
			first = err
		}
	}
	g.members = nil
	return first
}

// aoeRunner runs the AoE target; a target's devices are fixed, so a change of builds starts a
// new target on a new socket and stops the old one (AoE initiators retransmit what was lost).
type aoeRunner struct {
	s      *Server
	mu     sync.Mutex
	target *aoe.Target
	devs   []BuildID
	// discovered bounds the discovery log lines: the initiator's MAC is whatever a frame says.
	discovered LogLimit
}

func (a *aoeRunner) restart() error {
	if a == nil {
		return nil
	}
	s := a.s
	var devs []*aoe.Device
	var ids []BuildID
	s.mu.Lock()
	for slot, id := range s.aoeSlots {
		if b := s.builds[id]; b != nil {
			devs = append(devs, &aoe.Device{Shelf: s.AoEShelf, Slot: slot, Backend: b.img.Root, ReadOnly: true})
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	conn, err := aoe.Listen(s.AoEInterface)
	if err != nil {
		return &ListenError{Proto: "aoe", Addr: s.AoEInterface, Err: err}
	}
	tgt := &aoe.Target{
		Devices:          devs,
		Logger:           s.protoLog("aoe"),
		AnnounceInterval: s.AoEAnnounce,
		OnDiscover: func(d *aoe.Device, initiator net.HardwareAddr) {
			s.mu.Lock()
			id := s.aoeSlots[d.Slot]
			s.mu.Unlock()
			ok, held := a.discovered.Allow(time.Now())
			if held > 0 {
				s.log().Info("aoe initiator discoveries not logged one by one", "count", held)
			}
			if ok {
				s.log().Info("aoe initiator discovered target", "initiator", initiator.String(), "device", d.DeviceAddr(), "build", id.String())
			}
			s.emit(Event{Kind: AoEDiscover, Build: id, Client: initiator.String()})
		},
	}
	go func() {
		if err := tgt.Serve(conn); err != nil && !errors.Is(err, aoe.ErrServerClosed) {
			s.log().Error("aoe target stopped", "err", err)
		}
	}()
	a.mu.Lock()
	old := a.target
	a.target, a.devs = tgt, ids
	a.mu.Unlock()
	if old != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if old.Shutdown(ctx) != nil {
			_ = old.Close()
		}
		cancel()
	}
	s.log().Info("aoe serving", "iface", s.AoEInterface, "mac", conn.HardwareAddr().String(), "devices", len(devs))
	return nil
}

func (a *aoeRunner) stop() {
	if a == nil {
		return
	}
	a.mu.Lock()
	t := a.target
	a.target = nil
	a.mu.Unlock()
	if t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if t.Shutdown(ctx) != nil {
			_ = t.Close()
		}
		cancel()
	}
}

func (a *aoeRunner) stats() aoe.Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.target == nil {
		return aoe.Stats{}
	}
	return a.target.Stats()
}
