package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/handoff"
	"github.com/netroot/netroot/overlaycmdline"
)

// serveConfig is everything `netroot serve` (and the demo) needs.
type serveConfig struct {
	kis   kisFlags
	store storeServeFlags // -store: serve from S3-compatible storage instead of -kis (image.go)
	stage stageFlags
	root  rootFlags
	pxe   pxeFlags
	boot  bootFlags

	serverIP        string
	tftpAddr        string
	nbd             bool
	nbdAddr         string
	machines        string
	force           bool
	grace           time.Duration
	watch           time.Duration
	copyOnWrite     bool
	cowDir          string
	mmap            bool
	aoeIface        string
	aoeShelf        uint
	aoeSlot         uint
	aoeAnnounce     time.Duration
	defaultRoot     string
	extraAppend     string
	metricsAddr     string
	noBootloader    bool
	sysroot         string
	anyNBDPort      bool
	allowLoopback   bool
	shutdownTimeout time.Duration
	limits          bootserver.Limits
	replicas        replicaFlags
	priv            privFlags

	// demo relaxes the checks that protect real clients (loopback server IP, any NBD port,
	// no boot loader files) and prints how to try the servers.
	demo bool
}

func (c *serveConfig) register(fs *flag.FlagSet) {
	c.kis.register(fs)
	c.store.register(fs)
	c.stage.register(fs, defaultTFTPRoot)
	c.root.register(fs, false)
	c.pxe.register(fs)
	c.boot.register(fs)
	fs.StringVar(&c.serverIP, "server-ip", "", "IPv4 address of this server as clients reach it (required with NBD; must be on a local interface)")
	fs.StringVar(&c.tftpAddr, "tftp-addr", ":69", "TFTP listen address (port 69 needs root or CAP_NET_BIND_SERVICE)")
	fs.BoolVar(&c.nbd, "nbd", true, "serve the root image over NBD")
	fs.StringVar(&c.nbdAddr, "nbd-addr", ":10809", "NBD listen address; kiwi-overlay clients always use port 10809")
	fs.StringVar(&c.machines, "machines", "", "TOML file giving machines (by MAC or MAC prefix) their own image and kernel options")
	fs.BoolVar(&c.force, "force", false, "overwrite boot configs that netroot did not write (they lack its marker line)")
	fs.DurationVar(&c.grace, "grace", bootserver.DefaultGrace, "how long a replaced build stays after its last NBD client left (a rebooting machine still finds it)")
	fs.DurationVar(&c.watch, "watch", 0, "look for new builds this often (0: only on SIGHUP)")
	fs.BoolVar(&c.copyOnWrite, "copy-on-write", false, "give each NBD connection a private writable overlay (in memory unless -cow-dir); the image is never modified. AoE always exports read-only")
	fs.StringVar(&c.cowDir, "cow-dir", "", "with -copy-on-write: keep each connection's overlay in a temporary file here instead of memory")
	fs.BoolVar(&c.mmap, "mmap", false, "serve the root image through a memory mapping instead of pread")
	fs.StringVar(&c.aoeIface, "aoe-iface", "", "also serve the root image over AoE on this interface (needs CAP_NET_RAW)")
	fs.UintVar(&c.aoeShelf, "aoe-shelf", 0, "AoE shelf (major) number")
	fs.UintVar(&c.aoeSlot, "aoe-slot", 1, "AoE slot (minor) number")
	fs.DurationVar(&c.aoeAnnounce, "aoe-announce", aoe.DefaultAnnounceInterval, "how often the AoE target announces itself (booting clients find it sooner)")
	fs.StringVar(&c.defaultRoot, "default", "", "root the default boot entry uses when both NBD and AoE are served: nbd or aoe (default nbd)")
	fs.StringVar(&c.extraAppend, "append", "", "extra kernel options for the boot entries, such as \"console=ttyS0,115200\"")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, such as :9469 (not 9100, which node_exporter uses)")
	fs.BoolVar(&c.noBootloader, "no-bootloader", false, "do not copy pxelinux.0 and ldlinux.c32 into the TFTP root (it has them already)")
	fs.StringVar(&c.sysroot, "bootloader-sysroot", "/", "system root to take pxelinux.0 and ldlinux.c32 from (Debian packages pxelinux, syslinux-common)")
	fs.BoolVar(&c.allowLoopback, "allow-loopback", false, "allow a loopback -server-ip (only clients on this host, such as tests, can reach it)")
	fs.BoolVar(&c.anyNBDPort, "allow-nonstandard-nbd-port", false, "allow -nbd-addr with a port other than 10809 (kiwi-overlay clients cannot use it)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long running transfers may finish after SIGINT/SIGTERM")
	c.replicas.register(fs)
	c.priv.register(fs, false)
	l := &c.limits
	fs.IntVar(&l.TFTPMaxTransfers, "tftp-max-transfers", 0, "TFTP transfers at once (default 512)")
	fs.IntVar(&l.TFTPMaxTransfersPerClient, "tftp-max-transfers-per-client", 0, "TFTP transfers at once from one client address (default 32)")
	fs.Int64Var(&l.TFTPMaxBufferBytes, "tftp-max-buffer-bytes", 0, "memory all TFTP transfers may hold for windows and read-ahead (default 64 MiB)")
	fs.IntVar(&l.NBDMaxConnections, "nbd-max-connections", 0, "NBD connections at once (default 1024)")
	fs.IntVar(&l.NBDMaxHandshakesPerSource, "nbd-max-handshakes-per-client", 0, "NBD connections one client address may have negotiating at once (default 32)")
	fs.Int64Var(&l.NBDMaxBufferBytes, "nbd-max-buffer-bytes", 0, "memory all NBD connections may hold for request payloads and replies (default 256 MiB)")
	fs.DurationVar(&l.NBDWriteTimeout, "nbd-write-timeout", 0, "disconnect an NBD client that leaves replies untaken this long (default 1m)")
	fs.DurationVar(&l.NBDIdleTimeout, "nbd-idle-timeout", 0, "disconnect an NBD client that sends no request this long (default never: a diskless root may be idle for hours)")
}

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", "-kis DIR -server-ip IP [flags]")
	var c serveConfig
	c.register(fs)
	config := fs.String("config", "", "TOML file of settings named like these flags (tftp-root = \"/srv/tftpboot\"); flags given here win")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := applyConfigFile(fs, *config); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	return serve(ctx, e, &c, nil)
}

// running is what serve started, for the demo's printout.
type running struct {
	tftpAddr, nbdAddr, export string
	// metricsAddr is where the metrics and the status page listen ("" without -metrics-addr).
	metricsAddr string
}

// check refuses setups that cannot boot a kiwi-overlay client, naming the reason.
func (c *serveConfig) check() (serverIP netip.Addr, err error) {
	if !c.nbd && c.aoeIface == "" {
		return serverIP, usageError{errors.New("nothing to serve: enable -nbd or give -aoe-iface")}
	}
	if c.aoeShelf > overlaycmdline.MaxShelf || c.aoeSlot > overlaycmdline.MaxSlot {
		return serverIP, usageError{fmt.Errorf("-aoe-shelf %d -aoe-slot %d: shelf must be at most %d and slot at most %d", c.aoeShelf, c.aoeSlot, overlaycmdline.MaxShelf, overlaycmdline.MaxSlot)}
	}
	switch c.defaultRoot {
	case "", "nbd", "aoe":
	default:
		return serverIP, usageError{fmt.Errorf("-default %q: want nbd or aoe", c.defaultRoot)}
	}
	if c.defaultRoot == "aoe" && c.aoeIface == "" || c.defaultRoot == "nbd" && !c.nbd {
		return serverIP, usageError{fmt.Errorf("-default %s: that protocol is not served", c.defaultRoot)}
	}
	if c.nbd {
		if c.serverIP == "" {
			return serverIP, usageError{errors.New("-server-ip is required with NBD: it goes into root=overlay:nbd=SERVER-IP:EXPORT")}
		}
		port, err := parsePort("-nbd-addr", c.nbdAddr)
		if err != nil {
			return serverIP, err
		}
		if port != overlaycmdline.NBDPort && !c.anyNBDPort && !c.demo {
			return serverIP, fmt.Errorf("-nbd-addr %q: kiwi-overlay clients run nbd-client on port %d and cannot be told another; use port %d or -allow-nonstandard-nbd-port", c.nbdAddr, overlaycmdline.NBDPort, overlaycmdline.NBDPort)
		}
	}
	if c.serverIP != "" {
		serverIP, err = netip.ParseAddr(c.serverIP)
		if err != nil || !serverIP.Is4() {
			return serverIP, usageError{fmt.Errorf("-server-ip %q: want an IPv4 address (kiwi-overlay cannot use IPv6 literals or host:port)", c.serverIP)}
		}
		if err := localAddress(serverIP); err != nil {
			return serverIP, err
		}
		if serverIP.IsLoopback() && !c.demo && !c.allowLoopback {
			return serverIP, fmt.Errorf("-server-ip %s is a loopback address: a network-booted machine would look for its NBD server on itself; give the address of this server on the network the machines boot from (-allow-loopback for a test on this host only)", serverIP)
		}
		if c.nbd {
			if err := listenCovers("-nbd-addr", c.nbdAddr, serverIP); err != nil {
				return serverIP, err
			}
		}
	}
	if c.aoeIface != "" {
		if _, err := net.InterfaceByName(c.aoeIface); err != nil {
			return serverIP, fmt.Errorf("-aoe-iface %q: no such network interface (%v)", c.aoeIface, err)
		}
	}
	return serverIP, nil
}

// listenCovers reports an error when a listen address does not accept connections to ip:
// clients are told to connect to ip, and would find nothing there.
func listenCovers(flagName, listen string, ip netip.Addr) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return usageError{fmt.Errorf("%s %q: %w", flagName, listen, err)}
	}
	if host == "" {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return usageError{fmt.Errorf("%s %q: want an IP address and port, such as :10809 or %s:10809", flagName, listen, ip)}
	}
	if a.IsUnspecified() || a.Unmap() == ip {
		return nil
	}
	return fmt.Errorf("%s %q listens on %s only, but clients are told to connect to %s (-server-ip): their nbd-client would find no server there; listen on %s or on all addresses", flagName, listen, a, ip, ip)
}

// localAddress reports an error when no local interface has ip: clients would be sent to a
// server that is not this one.
func localAddress(ip netip.Addr) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("listing local addresses: %w", err)
	}
	var have []string
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			if pfx.Addr().Unmap() == ip {
				return nil
			}
			have = append(have, pfx.Addr().String())
		}
	}
	return fmt.Errorf("-server-ip %s: no local interface has this address (local addresses: %s)", ip, strings.Join(have, ", "))
}

// serve runs the whole boot server until ctx ends; SIGHUP rolls forward to new builds.
// started, when not nil, is called once the servers listen.
func serve(ctx context.Context, e *env, c *serveConfig, started func(*running)) error {
	serverIP, err := c.check()
	if err != nil {
		return err
	}
	if err := c.boot.check(); err != nil {
		return err
	}
	id, dropping, err := c.priv.lookup()
	if err != nil {
		return err
	}
	if dropping && c.aoeIface != "" {
		// The AoE target opens a new raw socket whenever the builds change.
		return usageError{errors.New("-user with -aoe-iface: the AoE target opens a new raw socket on every reload, which needs CAP_NET_RAW; run as an unprivileged user with that capability instead (systemd: User= or DynamicUser= with AmbientCapabilities=CAP_NET_RAW CAP_NET_BIND_SERVICE)")}
	}
	if dropping {
		// Directories that are not there yet are made for the user, as systemd's
		// StateDirectory= does; existing ones are the operator's and are only checked.
		if err := makeDirsFor(id, c.stage.tftpRoot, c.kis.cache, c.cowDir); err != nil {
			return err
		}
	}
	if len(c.kis.dirs) == 0 && c.store.url == "" {
		return usageError{errors.New("-kis DIR is required (or -store s3://BUCKET/PREFIX)")}
	}
	var machines []bootserver.Machine
	if c.machines != "" {
		if machines, err = bootserver.LoadMachines(c.machines); err != nil {
			return err
		}
	}
	for _, m := range c.pxe.macs {
		hw, err := net.ParseMAC(m)
		if err != nil {
			return usageError{fmt.Errorf("-mac %q: %w", m, err)}
		}
		machines = append(machines, bootserver.Machine{MAC: hw})
	}
	ipxe := ipxeInRoot(c.stage.tftpRoot) // with -no-bootloader, whatever the TFTP root holds
	if !c.noBootloader {
		// The signed shim and GRUB for UEFI clients (Secure Boot on or off), and iPXE.
		if err := c.boot.installSignedLoaders(e, c.stage.tftpRoot, c.sysroot, false, serverIP); err != nil {
			return err
		}
		if ipxe, err = c.boot.installIPXE(e, c.stage.tftpRoot, c.sysroot, c.boot.ipxeRequired()); err != nil {
			return err
		}
	}
	httpSrv, dhcpSvc, err := c.boot.services(e, serverIP, c.stage.tftpRoot, machines, ipxe)
	if err != nil {
		return err
	}
	formats, clients, err := c.pxe.formatsAndClients()
	if err != nil {
		return err
	}
	// Sockets (and NBD connections) from the process this one replaces (SIGUSR2), or from
	// systemd (socket units, the file descriptor store).
	inh, err := handoff.Inherit()
	if err != nil {
		return err
	}
	if inh != nil {
		from := "the process this one replaces"
		if inh.FromSystemd() {
			from = "systemd"
		}
		e.log.Info("using inherited sockets", "from", from, "names", strings.Join(inh.Names(), ","))
	}
	srv := &bootserver.Server{
		Source: &bootserver.KISSource{
			Dirs: c.kis.dirs, CacheDir: c.kis.cache, NoVerify: c.kis.noVerify, Mmap: c.mmap,
			Progress: progressFor(e), Logger: e.log,
		},
		Image:        c.kis.name,
		Arch:         c.kis.arch,
		Machines:     machines,
		TFTPRoot:     c.stage.tftpRoot,
		ServerIP:     serverIP,
		TFTPAddr:     c.tftpAddr,
		DisableNBD:   !c.nbd,
		NBDAddr:      c.nbdAddr,
		CopyOnWrite:  c.copyOnWrite,
		OverlayDir:   c.cowDir,
		AoEInterface: c.aoeIface,
		AoEShelf:     uint16(c.aoeShelf),
		AoESlot:      uint8(c.aoeSlot),
		AoEAnnounce:  c.aoeAnnounce,
		Boot: bootserver.BootOptions{
			Label: c.pxe.label, Serial: c.pxe.serial, Timeout: c.pxe.timeout, Formats: formats,
			Overlay: c.root.options(), Append: c.extraAppend, Clients: clients,
			Kernel: c.stage.kernel, Initrd: c.stage.initrd,
			Bootloader: !c.noBootloader, BootloaderSysroot: c.sysroot, RequireBootloader: !c.demo,
		},
		Force:           c.force,
		Limits:          c.limits,
		Grace:           c.grace,
		WatchInterval:   c.watch,
		ShutdownTimeout: c.shutdownTimeout,
		Inherited:       inh,
		Logger:          e.log,
		ProtocolLogger:  e.protoBase(),
	}
	if err := c.store.apply(e, srv, len(c.kis.dirs) > 0); err != nil {
		return err
	}
	if c.defaultRoot == "aoe" {
		srv.DefaultRoot = overlaycmdline.KindAoE
	}
	if err := c.replicas.apply(e, srv, c.nbdAddr); err != nil {
		return err
	}
	passOn := map[string]syscall.Conn{} // more sockets an upgrade hands over
	// HTTP and DHCP for UEFI, HTTP boot and iPXE clients.
	if httpSrv != nil {
		if dropping {
			// Open now, so the socket exists before root is dropped; an upgrade passes it on.
			ln, err := inheritedListener(inh, fileHTTP, httpSrv.Addr)
			if err != nil {
				return privilegeHint("-http-addr "+httpSrv.Addr, err, "CAP_NET_BIND_SERVICE")
			}
			httpSrv.Listener = ln
			passOn[fileHTTP] = ln.(syscall.Conn)
		}
		srv.Services = append(srv.Services, httpSrv)
	}
	if dhcpSvc != nil {
		var svc bootserver.Service = dhcpSvc
		if dropping {
			if svc, err = openDHCP(e, inh, dhcpSvc, passOn); err != nil {
				return err
			}
		}
		srv.Services = append(srv.Services, svc)
	}
	if dropping {
		lease := ""
		if c.boot.leaseFile != "" {
			lease = filepath.Dir(c.boot.leaseFile)
		}
		writable := map[string]string{"-tftp-root": c.stage.tftpRoot, "-cache-dir": c.kis.cache, "-cow-dir": c.cowDir,
			"-dhcp-lease-file's directory": lease}
		srv.OnListening = func() error { return c.priv.drop(e, id, writable) }
	}
	if c.metricsAddr != "" {
		ln, err := inheritedListener(inh, fileMetrics, c.metricsAddr)
		if err != nil {
			return fmt.Errorf("-metrics-addr %q: %w", c.metricsAddr, err)
		}
		reg := newRegistry()
		serveRegistry(ctx, e, ln, reg, srv.StatusHandler())
		if httpSrv != nil {
			reg.MustRegister(bootserver.HTTPCollector(httpSrv.Stats))
		}
		if dhcpSvc != nil {
			reg.MustRegister(bootserver.DHCPCollector(dhcpSvc.Server().Stats))
		}
		srv.Registerer = reg
		passOn[fileMetrics] = ln.(syscall.Conn)
	}
	srv.OnEvent = func(ev bootserver.Event) {
		if ev.Kind != bootserver.Ready {
			return
		}
		notifyReady(e)
		if started != nil {
			st := srv.State()
			l := srv.ActiveListeners()
			r := &running{tftpAddr: l.TFTP.LocalAddr().String(), export: st.Default.String()}
			if ln, ok := passOn[fileMetrics].(net.Listener); ok {
				r.metricsAddr = ln.Addr().String()
			}
			if l.NBD != nil {
				r.nbdAddr = l.NBD.Addr().String()
			}
			go started(r)
		}
	}

	c.replicas.start(ctx, e, srv)
	// SIGHUP (systemctl reload) rolls forward to new builds.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				e.log.Info("SIGHUP: looking for new builds")
				// A rejected build is logged by srv already: one failure, one line.
				if err := bootserver.Unlogged(srv.Reload(ctx)); err != nil {
					e.log.Error("reload", "err", err)
				}
			}
		}
	}()
	stopping := context.AfterFunc(ctx, notifyStopping)
	defer stopping()
	// SIGUSR2 upgrades the binary; see runUpgradable.
	err = runUpgradable(ctx, e, srv, func() []handoff.File { return listenerFiles(e, passOn) })
	var le *bootserver.ListenError
	if errors.As(err, &le) {
		flagName := map[string]string{"tftp": "-tftp-addr ", "nbd": "-nbd-addr ", "aoe": "-aoe-iface "}[le.Proto]
		capability := "CAP_NET_BIND_SERVICE"
		if le.Proto == "aoe" {
			capability = "CAP_NET_RAW"
		}
		return privilegeHint(flagName+le.Addr, le.Err, capability)
	}
	return noVerifyHint(err)
}

// progressFor returns the KISSource progress callback: a bar or log lines per build and step.
func progressFor(e *env) func(bootserver.BuildID, string, int64, int64) {
	var mu sync.Mutex
	bars := map[string]*progress{}
	return func(id bootserver.BuildID, step string, done, total int64) {
		mu.Lock()
		p := bars[id.String()+step]
		if p == nil {
			p = newProgress(e, step)
			bars[id.String()+step] = p
		}
		mu.Unlock()
		p.update(done, total)
	}
}

// overlayIn returns overlays kept in temporary files in dir, or nil (memory) for "".
func overlayIn(dir string) func(backend.Device) (backend.Device, error) {
	if dir == "" {
		return nil
	}
	return func(base backend.Device) (backend.Device, error) {
		return backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: dir})
	}
}

func closeQuietly(v any) {
	if c, ok := v.(io.Closer); ok {
		_ = c.Close()
	}
}

// privilegeHint adds what to do when binding failed for lack of privilege.
func privilegeHint(what string, err error, capability string) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%s: %w (run as root or grant %s, e.g. setcap %s=ep on the binary or AmbientCapabilities= in its unit)", what, err, capability, strings.ToLower(capability))
	}
	return fmt.Errorf("%s: %w", what, err)
}
