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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/overlaycmdline"
	"github.com/netroot/netroot/pxecfg"
	"github.com/netroot/netroot/tftp"
)

// serveConfig is everything `netroot serve` (and the demo) needs.
type serveConfig struct {
	kis   kisFlags
	stage stageFlags
	root  rootFlags
	pxe   pxeFlags
	boot  bootFlags

	serverIP        string
	tftpAddr        string
	nbd             bool
	nbdAddr         string
	export          string
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
	shutdownTimeout time.Duration

	// demo relaxes the checks that protect real clients (loopback server IP, any NBD port,
	// no boot loader files) and prints how to try the servers.
	demo bool
}

func (c *serveConfig) register(fs *flag.FlagSet) {
	c.kis.register(fs)
	c.stage.register(fs, "/srv/tftpboot")
	c.root.register(fs, false)
	c.pxe.register(fs)
	c.boot.register(fs)
	fs.StringVar(&c.serverIP, "server-ip", "", "IPv4 address of this server as clients reach it (required with NBD; must be on a local interface)")
	fs.StringVar(&c.tftpAddr, "tftp-addr", ":69", "TFTP listen address (port 69 needs root or CAP_NET_BIND_SERVICE)")
	fs.BoolVar(&c.nbd, "nbd", true, "serve the root image over NBD")
	fs.StringVar(&c.nbdAddr, "nbd-addr", ":10809", "NBD listen address; kiwi-overlay clients always use port 10809")
	fs.StringVar(&c.export, "export", "", "NBD export name (default: the build's NAME.ARCH-VERSION)")
	fs.BoolVar(&c.copyOnWrite, "copy-on-write", false, "give each NBD connection a private writable overlay (in memory unless -cow-dir); the image is never modified. AoE always exports read-only")
	fs.StringVar(&c.cowDir, "cow-dir", "", "with -copy-on-write: keep each connection's overlay in a temporary file here instead of memory")
	fs.BoolVar(&c.mmap, "mmap", false, "serve the root image through a memory mapping instead of pread")
	fs.StringVar(&c.aoeIface, "aoe-iface", "", "also serve the root image over AoE on this interface (needs CAP_NET_RAW)")
	fs.UintVar(&c.aoeShelf, "aoe-shelf", 0, "AoE shelf (major) number")
	fs.UintVar(&c.aoeSlot, "aoe-slot", 1, "AoE slot (minor) number")
	fs.DurationVar(&c.aoeAnnounce, "aoe-announce", aoe.DefaultAnnounceInterval, "how often the AoE target announces itself (booting clients find it sooner)")
	fs.StringVar(&c.defaultRoot, "default", "", "root the default boot entry uses when both NBD and AoE are served: nbd or aoe (default nbd)")
	fs.StringVar(&c.extraAppend, "append", "", "extra kernel options for the boot entries, such as \"console=ttyS0,115200\"")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, such as :9100")
	fs.BoolVar(&c.noBootloader, "no-bootloader", false, "do not copy pxelinux.0 and ldlinux.c32 into the TFTP root (it has them already)")
	fs.StringVar(&c.sysroot, "bootloader-sysroot", "/", "system root to take pxelinux.0 and ldlinux.c32 from (Debian packages pxelinux, syslinux-common)")
	fs.BoolVar(&c.anyNBDPort, "allow-nonstandard-nbd-port", false, "allow -nbd-addr with a port other than 10809 (kiwi-overlay clients cannot use it)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long running transfers may finish after SIGINT/SIGTERM")
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
	}
	if c.aoeIface != "" {
		if _, err := net.InterfaceByName(c.aoeIface); err != nil {
			return serverIP, fmt.Errorf("-aoe-iface %q: no such network interface (%v)", c.aoeIface, err)
		}
	}
	return serverIP, nil
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

// serve runs the whole boot server until ctx ends. started, when not nil, is called once the
// servers listen.
func serve(ctx context.Context, e *env, c *serveConfig, started func(*running)) error {
	serverIP, err := c.check()
	if err != nil {
		return err
	}
	httpSrv, dhcpSvc, err := c.boot.services(e, serverIP, c.stage.tftpRoot)
	if err != nil {
		return err
	}
	b, err := c.kis.load(ctx, e)
	if err != nil {
		return err
	}
	st, err := c.stage.stage(ctx, e, b)
	if err != nil {
		return err
	}
	_, kiwiOptions, err := kis.ReadAppend(b)
	if err != nil {
		return err
	}
	export := c.export
	if export == "" {
		export = b.ID()
	}

	// Boot entries: one per served protocol, the default first.
	var roots []overlaycmdline.Root
	if c.nbd {
		roots = append(roots, overlaycmdline.NBD(serverIP.String(), export))
	}
	if c.aoeIface != "" {
		aoeRoot := overlaycmdline.AoE(uint16(c.aoeShelf), uint8(c.aoeSlot))
		if c.defaultRoot == "aoe" {
			roots = append([]overlaycmdline.Root{aoeRoot}, roots...)
		} else {
			roots = append(roots, aoeRoot)
		}
	}
	cfg := &pxecfg.Config{Serial: c.pxe.serial, Timeout: c.pxe.timeout}
	for _, root := range roots {
		line, err := kernelCmdline(root, c.root.options(), kiwiOptions, c.extraAppend)
		if err != nil {
			return err
		}
		label := c.pxe.label + "-" + root.Kind.String()
		entry := pxecfg.NetbootEntry(label, st.Kernel.Path, []string{st.Initrd.Path}, line)
		entry.MenuLabel = fmt.Sprintf("%s over %s", b.ID(), strings.ToUpper(root.Kind.String()))
		cfg.Entries = append(cfg.Entries, entry)
	}
	cfg.Default = cfg.Entries[0].Label
	if !c.noBootloader {
		if err := installBootloaders(e, c.stage.tftpRoot, c.sysroot, cfg, !c.demo); err != nil {
			return err
		}
		if err := c.boot.installSignedLoaders(e, c.stage.tftpRoot, c.sysroot, false); err != nil {
			return err
		}
	}
	dirOpts, err := c.pxe.dirOptions()
	if err != nil {
		return err
	}
	if err := writeConfigs(e, c.stage.tftpRoot, cfg, dirOpts); err != nil {
		return err
	}

	dev, err := openImage(b.Image, c.mmap)
	if err != nil {
		return err
	}
	defer closeQuietly(dev)

	act := socketActivation(e)
	g := &group{}
	run := &running{export: export}
	stats := map[string]func() any{}

	// TFTP
	tsrv := &tftp.Server{
		// GRUB asks for "/boot/linux": names are relative to the TFTP root, as with
		// tftpd-hpa --secure.
		Handler:        tftp.NewFileServer(c.stage.tftpRoot, &tftp.FileServerConfig{Remap: tftp.SlashPath}),
		Logger:         e.protoLog("tftp"),
		OnTransferDone: logTFTPTransfer(e),
	}
	pc := act.packetConn("tftp")
	if pc == nil {
		if pc, err = net.ListenPacket("udp", c.tftpAddr); err != nil {
			return privilegeHint("-tftp-addr "+c.tftpAddr, err, "CAP_NET_BIND_SERVICE")
		}
	}
	run.tftpAddr = pc.LocalAddr().String()
	e.log.Info("tftp listening", "addr", run.tftpAddr, "root", c.stage.tftpRoot)
	g.add("tftp", func() error { return tsrv.Serve(pc) }, tsrv.Shutdown, tsrv.Close, tftp.ErrServerClosed)
	stats["tftp"] = func() any { return tsrv.Stats() }

	// NBD
	if c.nbd {
		ex := &nbd.Export{Name: export, Description: b.ID() + " root image (KIWI KIS)", Device: dev}
		if c.copyOnWrite {
			ex.CopyOnWrite, ex.NewOverlay = nbd.CopyOnWritePerConnection, overlayIn(c.cowDir)
		}
		set, err := nbd.NewExportSet(ex)
		if err != nil {
			return err
		}
		nsrv := &nbd.Server{
			Exports:  set,
			Logger:   e.protoLog("nbd"),
			OnAttach: logNBDAttach(e),
		}
		ln := act.listener("nbd")
		if ln == nil {
			if ln, err = net.Listen("tcp", c.nbdAddr); err != nil {
				g.closeAll()
				return privilegeHint("-nbd-addr "+c.nbdAddr, err, "CAP_NET_BIND_SERVICE")
			}
		}
		run.nbdAddr = ln.Addr().String()
		e.log.Info("nbd listening", "addr", run.nbdAddr, "export", export, "size", dev.Size(), "copy_on_write", c.copyOnWrite)
		g.add("nbd", func() error { return nsrv.Serve(ln) }, nsrv.Shutdown, nsrv.Close, nbd.ErrServerClosed)
		stats["nbd"] = func() any { return nsrv.Stats() }
	}

	// AoE
	if c.aoeIface != "" {
		conn, err := aoe.Listen(c.aoeIface)
		if err != nil {
			g.closeAll()
			return privilegeHint("-aoe-iface "+c.aoeIface, err, "CAP_NET_RAW")
		}
		d := &aoe.Device{Shelf: uint16(c.aoeShelf), Slot: uint8(c.aoeSlot), Backend: dev, ReadOnly: true}
		tgt := &aoe.Target{
			Devices:          []*aoe.Device{d},
			Logger:           e.protoLog("aoe"),
			AnnounceInterval: c.aoeAnnounce,
			OnDiscover:       logAoEDiscover(e),
		}
		e.log.Info("aoe serving", "iface", c.aoeIface, "device", aoeName(uint16(c.aoeShelf), uint8(c.aoeSlot)), "mac", conn.HardwareAddr().String(), "size", dev.Size())
		g.add("aoe", func() error { return tgt.Serve(conn) }, tgt.Shutdown, tgt.Close, aoe.ErrServerClosed)
		stats["aoe"] = func() any { return tgt.Stats() }
	}

	// HTTP and DHCP for UEFI, HTTP boot and iPXE clients.
	if httpSrv != nil {
		g.add("http", func() error { return httpSrv.Serve(ctx) }, httpSrv.Shutdown, httpSrv.Close, nil)
		stats["http"] = func() any { return httpSrv.Stats() }
	}
	if dhcpSvc != nil {
		g.add("dhcp", func() error { return dhcpSvc.Serve(ctx) }, dhcpSvc.Shutdown, dhcpSvc.Close, nil)
		stats["dhcp"] = func() any { return dhcpSvc.Server().Stats() }
	}

	if c.metricsAddr != "" {
		if err := serveMetrics(ctx, e, c.metricsAddr, stats); err != nil {
			g.closeAll()
			return err
		}
	}
	if started != nil {
		started(run)
	}
	notifyReady(e)
	e.log.Info("ready", "build", b.ID(), "default_entry", cfg.Default)
	return g.wait(ctx, e, c.shutdownTimeout)
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

// openImage opens the raw root image read-only.
func openImage(p string, mmap bool) (backend.Device, error) {
	if mmap {
		return backend.OpenMmap(p, &backend.MmapOptions{ReadOnly: true})
	}
	return backend.OpenFile(p, &backend.FileOptions{ReadOnly: true})
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

// group runs servers and shuts them all down together.
type group struct {
	mu      sync.Mutex
	servers []*member
	errc    chan error
}

type member struct {
	name     string
	shutdown func(context.Context) error
	close    func() error
}

func (g *group) add(name string, serve func() error, shutdown func(context.Context) error, closeNow func() error, closed error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.errc == nil {
		g.errc = make(chan error, 8)
	}
	g.servers = append(g.servers, &member{name: name, shutdown: shutdown, close: closeNow})
	go func() {
		err := serve()
		if errors.Is(err, closed) {
			err = nil
		} else if err != nil {
			err = fmt.Errorf("%s server: %w", name, err)
		}
		g.errc <- err
	}()
}

func (g *group) closeAll() {
	for _, m := range g.servers {
		_ = m.close()
	}
}

// wait returns when ctx ends (then shuts every server down gracefully) or when one server
// fails (then stops the others).
func (g *group) wait(ctx context.Context, e *env, timeout time.Duration) error {
	var first error
	select {
	case <-ctx.Done():
		e.log.Info("shutting down: letting running transfers finish", "timeout", timeout)
	case first = <-g.errc:
		e.log.Error("server stopped", "err", first)
		g.errc <- nil // counted below with the others
	}
	notifyStopping()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range g.servers {
		wg.Go(func() {
			if err := m.shutdown(sctx); err != nil {
				e.log.Warn("forced shutdown", "server", m.name, "err", err)
				_ = m.close()
			}
		})
	}
	wg.Wait()
	for range g.servers {
		if err := <-g.errc; err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		e.log.Info("stopped")
	}
	return first
}
