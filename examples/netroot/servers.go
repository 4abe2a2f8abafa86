package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdconf"
	"github.com/netroot/netroot/tftp"
)

// runTFTP is a drop-in for tftpd-hpa: serve a directory read-only (uploads optional).
func runTFTP(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "tftp", "[flags] [DIR]  (DIR as in.tftpd takes it, or -tftp-root DIR)")
	allowArgs(fs)
	root := fs.String("tftp-root", defaultTFTPRoot, "directory to serve (also -root, or DIR after the flags)")
	fs.StringVar(root, "root", defaultTFTPRoot, "the same as -tftp-root")
	addr := fs.String("addr", ":69", "UDP listen address (port 69 needs root or CAP_NET_BIND_SERVICE)")
	fs.StringVar(addr, "address", ":69", "the same as -addr (tftpd-hpa's --address)")
	secure := false
	fs.BoolVar(&secure, "s", false, "accepted for tftpd-hpa compatibility: the root is always sealed")
	fs.BoolVar(&secure, "secure", false, "the same as -s")
	timeout := fs.Duration("retransmit", 0, "wait this long for a client's packet before sending again, doubling each time (tftpd-hpa --retransmit; default 1s)")
	retries := fs.Int("retries", 0, "send a packet at most this many more times before giving up (default 5)")
	idle := fs.Duration("timeout", 0, "end a transfer after this long without a packet from the client, whatever timeout it asked for (default 1m)")
	portRange := fs.String("port-range", "", "UDP ports for transfers, LO:HI (tftpd-hpa --port-range, for firewalls); default any")
	mapFile := fs.String("map-file", "", "tftpd-hpa map file (-m): regular-expression rules that rewrite or refuse requested names")
	maxTransfers := fs.Int("max-transfers", 0, "transfers at once at most (default the package's)")
	perClient := fs.Int("max-transfers-per-client", 0, "transfers at once from one client address at most (default the package's)")
	maxBlk := fs.Int("max-blksize", 0, "largest blksize to negotiate (default: the package's maximum, capped by the path MTU)")
	remap := fs.String("remap", "slash", "rewrite requested names: slash (\"/boot/x\" and \"boot\\x\" mean boot/x, as tftpd-hpa --secure), fold (lower case), both as slash,fold, or none")
	uploadDir := fs.String("upload-dir", "", "accept uploads (write requests) into this directory; off when empty")
	uploadMax := fs.Int64("upload-max", 64<<20, "largest upload accepted, in bytes")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long running transfers may finish after SIGINT/SIGTERM")
	metrics := fs.String("metrics-addr", "", "serve Prometheus metrics on this address")
	config := fs.String("config", "", "TOML file of settings named like these flags; flags given here win")
	var priv privFlags
	priv.register(fs, true)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := applyConfigFile(fs, *config); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 1:
		return cmdUsage("tftp", fmt.Errorf("tftp: unexpected arguments %q: at most one DIR", fs.Args()[1:]))
	case fs.NArg() == 1:
		if flagGiven(fs, "tftp-root") || flagGiven(fs, "root") {
			return cmdUsage("tftp", fmt.Errorf("tftp: both -tftp-root %q and DIR %q: give one", *root, fs.Arg(0)))
		}
		*root = fs.Arg(0)
	}
	if fi, err := os.Stat(*root); err != nil || !fi.IsDir() {
		return fmt.Errorf("-tftp-root %q: not a directory", *root)
	}
	var pr tftp.PortRange
	if *portRange != "" {
		var err error
		if pr, err = tftp.ParsePortRange(*portRange); err != nil {
			return cmdUsage("tftp", fmt.Errorf("-port-range %q: %w", *portRange, err))
		}
	}
	rm, err := remapFunc(*remap)
	if err != nil {
		return err
	}
	dropPriv, err := priv.dropper(e, map[string]string{"-upload-dir": *uploadDir})
	if err != nil {
		return err
	}
	var h tftp.Handler = tftp.NewFileServer(*root, &tftp.FileServerConfig{Remap: rm})
	if *mapFile != "" {
		rules, err := readMapFile(*mapFile)
		if err != nil {
			return err
		}
		h = rules.Handler(h)
	}
	srv := &tftp.Server{
		Handler:               h,
		Logger:                e.protoLog("tftp"),
		MaxBlockSize:          *maxBlk,
		Timeout:               *timeout,
		Retries:               *retries,
		MaxIdle:               *idle,
		PortRange:             pr,
		MaxTransfers:          *maxTransfers,
		MaxTransfersPerClient: *perClient,
		OnTransferDone:        logTFTPTransfer(e),
	}
	if *uploadDir != "" {
		srv.WriteHandler = tftp.UploadServer(*uploadDir, &tftp.UploadConfig{MaxSize: *uploadMax, Remap: rm})
	}
	pc := socketActivation(e).packetConn("tftp")
	if pc == nil {
		if pc, err = net.ListenPacket("udp", *addr); err != nil {
			return privilegeHint("-addr "+*addr, err, "CAP_NET_BIND_SERVICE")
		}
	}
	e.log.Info("tftp listening", "addr", pc.LocalAddr().String(), "root", *root)
	if *metrics != "" {
		if err := serveMetrics(ctx, e, *metrics, bootserver.TFTPCollector(srv.Stats)); err != nil {
			return err
		}
	}
	if err := dropPriv(); err != nil {
		pc.Close()
		return err
	}
	g := &group{}
	g.add("tftp", func() error { return srv.Serve(pc) }, srv.Shutdown, srv.Close, tftp.ErrServerClosed)
	notifyReady(e)
	return g.wait(ctx, e, *shutdown)
}

func remapFunc(spec string) (func(string) string, error) {
	var fns []func(string) string
	for _, r := range strings.Split(spec, ",") {
		switch strings.TrimSpace(r) {
		case "", "none":
		case "fold":
			fns = append(fns, tftp.FoldCase)
		case "slash":
			fns = append(fns, tftp.SlashPath)
		default:
			return nil, usageError{fmt.Errorf("-remap %q: unknown rule %q (want slash, fold or none)", spec, r)}
		}
	}
	if len(fns) == 0 {
		return nil, nil
	}
	return func(name string) string {
		for _, f := range fns {
			name = f(name)
		}
		return name
	}, nil
}

// runNBD is a drop-in for nbd-server: exports from its config file or from -export flags.
func runNBD(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "nbd", "(-config FILE | -export NAME=IMAGE ...) [flags]")
	config := fs.String("config", "", "nbd-server configuration file, such as /etc/nbd-server/config")
	var exports stringList
	fs.Var(&exports, "export", "export IMAGE as NAME (repeatable): NAME=IMAGE")
	addr := fs.String("addr", "", "TCP listen address (default :10809, or the config file's port and listenaddr)")
	writable := fs.Bool("rw", false, "with -export: let clients write to the images")
	cow := fs.Bool("copy-on-write", false, "with -export: give each connection a private overlay; images are never modified")
	cowDir := fs.String("cow-dir", "", "with -copy-on-write: keep overlays in temporary files here instead of memory")
	mmap := fs.Bool("mmap", false, "read images through a memory mapping instead of pread")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long in-flight requests may finish after SIGINT/SIGTERM")
	metrics := fs.String("metrics-addr", "", "serve Prometheus metrics on this address")
	var priv privFlags
	priv.register(fs, false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*config == "") == (len(exports) == 0) {
		return usageError{errors.New("give either -config FILE or at least one -export NAME=IMAGE")}
	}
	onAttach := logNBDAttach(e)
	if *config != "" {
		cf, err := nbdconf.ReadConfigFile(*config)
		if err != nil {
			return err
		}
		if priv.user == "" && priv.group == "" && (cf.Generic.User != "" || cf.Generic.Group != "") {
			// nbd-server's user= and group=; -user and -group win.
			priv = privFlags{user: cf.Generic.User, group: cf.Generic.Group, from: "user= in " + *config}
		}
		dropPriv, err := priv.dropper(e, cowDirs(cf))
		if err != nil {
			return err
		}
		for _, w := range cf.Warnings {
			e.log.Warn("nbd config: ignored", "what", w.String())
		}
		open := nbdconf.OpenConfigExport
		if *mmap {
			open = func(x *nbdconf.ConfigExport) (backend.Device, error) {
				return backend.OpenMmap(x.Path, &backend.MmapOptions{ReadOnly: x.ReadOnly || x.CopyOnWrite, Length: x.Size})
			}
		}
		srv, closeDevices, err := cf.NewServer(open)
		if err != nil {
			return err
		}
		defer closeDevices()
		srv.Logger, srv.OnAttach = e.protoLog("nbd"), onAttach
		srv.OnRefuse, srv.OnDetach = (&bootserver.RefusalLogger{Logger: e.log, Exports: srv.Exports}).Log, logNBDDetach(e)
		return serveNBD(ctx, e, srv, cf.Generic.Addrs(), *addr, *metrics, *shutdown, dropPriv)
	}
	dropPriv, err := priv.dropper(e, map[string]string{"-cow-dir": *cowDir})
	if err != nil {
		return err
	}
	set := &nbd.ExportSet{}
	for _, spec := range exports {
		name, img, ok := strings.Cut(spec, "=")
		if !ok || img == "" {
			return usageError{fmt.Errorf("-export %q: want NAME=IMAGE", spec)}
		}
		dev, err := openDevice(img, !*writable || *cow, *mmap)
		if err != nil {
			return fmt.Errorf("-export %q: %w", spec, err)
		}
		defer closeQuietly(dev)
		ex := &nbd.Export{Name: name, Device: dev, Writable: *writable}
		if *cow {
			ex.CopyOnWrite, ex.NewOverlay = nbd.CopyOnWritePerConnection, overlayIn(*cowDir)
		}
		if err := set.Add(ex); err != nil {
			return err
		}
	}
	srv := &nbd.Server{Exports: set, Logger: e.protoLog("nbd"), OnAttach: onAttach,
		OnRefuse: (&bootserver.RefusalLogger{Logger: e.log, Exports: set}).Log, OnDetach: logNBDDetach(e)}
	return serveNBD(ctx, e, srv, []string{fmt.Sprintf(":%d", nbd.DefaultPort)}, *addr, *metrics, *shutdown, dropPriv)
}

// cowDirs are the directories the exports of cf write copy-on-write overlays into.
func cowDirs(cf *nbdconf.ConfigFile) map[string]string {
	dirs := map[string]string{}
	for _, x := range cf.Exports {
		switch {
		case x.CopyOnWrite && x.CowDir != "":
			dirs["cowdir of ["+x.Name+"]"] = x.CowDir
		case x.CopyOnWrite:
			dirs["the directory of ["+x.Name+"] (its overlays go next to the image)"] = filepath.Dir(x.Path)
		}
	}
	return dirs
}

// serveNBD serves srv on the activated socket, or on addr, or on listenAddrs. dropPriv runs
// once every socket is open, before the first request is served.
func serveNBD(ctx context.Context, e *env, srv *nbd.Server, listenAddrs []string, addr, metrics string, shutdown time.Duration, dropPriv func() error) error {
	if addr != "" {
		listenAddrs = []string{addr}
	}
	type named struct {
		name string
		ln   net.Listener
	}
	var lns []named
	closeAll := func() {
		for _, l := range lns {
			l.ln.Close()
		}
	}
	act := socketActivation(e)
	if ln := act.listener("nbd"); ln != nil {
		lns = append(lns, named{"nbd", ln})
	} else {
		for _, a := range listenAddrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				closeAll()
				return privilegeHint("listen "+a, err, "CAP_NET_BIND_SERVICE")
			}
			e.log.Info("nbd listening", "addr", ln.Addr().String())
			lns = append(lns, named{"nbd " + a, ln})
		}
	}
	if metrics != "" {
		if err := serveMetrics(ctx, e, metrics, bootserver.NBDCollector(srv.Stats)); err != nil {
			closeAll()
			return err
		}
	}
	if err := dropPriv(); err != nil {
		closeAll()
		return err
	}
	g := &group{}
	for i, l := range lns {
		// One Server serves every listener; shutting it down once stops them all.
		shut, cl := srv.Shutdown, srv.Close
		if i > 0 {
			shut, cl = func(context.Context) error { return nil }, func() error { return nil }
		}
		g.add(l.name, func() error { return srv.Serve(l.ln) }, shut, cl, nbd.ErrServerClosed)
	}
	notifyReady(e)
	return g.wait(ctx, e, shutdown)
}

func openDevice(p string, readOnly, mmap bool) (backend.Device, error) {
	if mmap {
		return backend.OpenMmap(p, &backend.MmapOptions{ReadOnly: readOnly})
	}
	return backend.OpenFile(p, &backend.FileOptions{ReadOnly: readOnly})
}

// runAoE is a drop-in for vblade: netroot aoe [-r -d -s -o N -l N -m MACS] SHELF SLOT IFACE FILE.
func runAoE(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "aoe", "[-r] [-d] [-s] [-b BUFCNT] [-o SECTORS] [-l SECTORS] [-m MAC[,MAC...]] SHELF SLOT IFACE FILE")
	ro := fs.Bool("r", false, "export read-only")
	direct := fs.Bool("d", false, "open FILE with O_DIRECT")
	syncw := fs.Bool("s", false, "open FILE with O_SYNC (writes are durable when acknowledged)")
	off := fs.Int64("o", 0, "offset into FILE, in 512-byte sectors")
	length := fs.Int64("l", 0, "length of the export, in 512-byte sectors (default: to the end of FILE)")
	macs := fs.String("m", "", "answer only these initiators: comma-separated MAC addresses")
	bufcnt := fs.Int("b", aoe.DefaultBufferCount, "requests an initiator may keep in flight, advertised in Query Config (1 to 65535)")
	announce := fs.Duration("announce", aoe.DefaultAnnounceInterval, "how often to broadcast the target's config (vblade: only at start)")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "how long in-flight commands may finish after SIGINT/SIGTERM")
	metrics := fs.String("metrics-addr", "", "serve Prometheus metrics on this address")
	var priv privFlags
	priv.register(fs, false)
	allowArgs(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dropPriv, err := priv.dropper(e, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 4 {
		fs.Usage()
		return usageError{fmt.Errorf("want SHELF SLOT IFACE FILE, got %d arguments", fs.NArg())}
	}
	a := fs.Args()
	shelf, err := strconv.ParseUint(a[0], 0, 16)
	if err != nil || shelf >= uint64(aoe.BroadcastShelf) {
		return usageError{fmt.Errorf("SHELF %q: want 0 to %d", a[0], aoe.BroadcastShelf-1)}
	}
	slot, err := strconv.ParseUint(a[1], 0, 8)
	if err != nil || slot >= 0xff {
		return usageError{fmt.Errorf("SLOT %q: want 0 to 254", a[1])}
	}
	if _, err := net.InterfaceByName(a[2]); err != nil {
		return fmt.Errorf("IFACE %q: no such network interface (%v)", a[2], err)
	}
	if *off < 0 || *length < 0 {
		return usageError{fmt.Errorf("-o %d -l %d: sector counts cannot be negative", *off, *length)}
	}
	if *bufcnt < 1 || *bufcnt > 0xFFFF {
		return usageError{fmt.Errorf("-b %d: want 1 to 65535", *bufcnt)}
	}
	var mask []net.HardwareAddr
	for _, m := range strings.Split(*macs, ",") {
		if m = strings.TrimSpace(m); m == "" {
			continue
		}
		hw, err := net.ParseMAC(m)
		if err != nil {
			return usageError{fmt.Errorf("-m %q: %w", m, err)}
		}
		mask = append(mask, hw)
	}
	dev, err := backend.OpenFile(a[3], &backend.FileOptions{
		ReadOnly: *ro, Direct: *direct, Sync: *syncw, Offset: *off * 512, Length: *length * 512,
	})
	if err != nil {
		return err
	}
	defer dev.Close()
	conn, err := aoe.Listen(a[2])
	if err != nil {
		return privilegeHint("IFACE "+a[2], err, "CAP_NET_RAW")
	}
	tgt := &aoe.Target{
		Devices: []*aoe.Device{{Shelf: uint16(shelf), Slot: uint8(slot), Backend: dev, ReadOnly: *ro, Mask: mask}},
		// The target logs discoveries itself, at most 16 lines a minute (the initiator's MAC
		// is whatever a frame says), and its faults as warnings and errors.
		Logger:           e.log,
		AnnounceInterval: *announce,
		BufferCount:      *bufcnt,
	}
	e.log.Info("aoe serving", "device", aoe.DeviceAddr{Shelf: uint16(shelf), Slot: uint8(slot)}, "iface", a[2], "mac", conn.HardwareAddr().String(), "file", a[3], "size", dev.Size(), "read_only", *ro)
	if *metrics != "" {
		if err := serveMetrics(ctx, e, *metrics, bootserver.AoECollector(tgt.Stats)); err != nil {
			return err
		}
	}
	// The raw socket and FILE are open: vblade's target keeps them for its whole life.
	if err := dropPriv(); err != nil {
		conn.Close()
		return err
	}
	g := &group{}
	g.add("aoe", func() error { return tgt.Serve(conn) }, tgt.Shutdown, tgt.Close, aoe.ErrServerClosed)
	notifyReady(e)
	return g.wait(ctx, e, *shutdown)
}

// flagGiven reports whether the flag name was given on fs's command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// readMapFile reads a tftpd-hpa map file.
func readMapFile(path string) (*tftp.MapRules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-map-file: %w", err)
	}
	defer f.Close()
	rules, err := tftp.ParseMapRules(f)
	if err != nil {
		return nil, fmt.Errorf("-map-file %s: %w", path, err)
	}
	return rules, nil
}
