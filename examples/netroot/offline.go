package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/overlaycmdline"
	"github.com/netroot/netroot/pxecfg"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// rootFlags are the flags that choose the network root and its overlay options, shared by
// serve, pxe and cmdline.
type rootFlags struct {
	nbd, aoe, root               string
	write, size, rootflags       string
	readonly, debug, noDriverPre bool
}

func (r *rootFlags) register(fs *flag.FlagSet, withTargets bool) {
	if withTargets {
		fs.StringVar(&r.nbd, "nbd", "", "NBD root as HOST:EXPORT (root=overlay:nbd=HOST:EXPORT; port is always 10809)")
		fs.StringVar(&r.aoe, "aoe", "", "AoE root as the device name e<shelf>.<slot>, such as e0.1")
		fs.StringVar(&r.root, "root", "", "any root=overlay:… value, such as overlay:LABEL=root")
	}
	fs.StringVar(&r.write, "overlay-write", "", "rd.root.overlay.write: device that keeps the overlay's writes")
	fs.BoolVar(&r.readonly, "overlay-readonly", false, "rd.root.overlay.readonly: keep writes in RAM even with -overlay-write")
	fs.StringVar(&r.size, "overlay-size", "", "rd.root.overlay.size: tmpfs size for writes (default 50%)")
	fs.BoolVar(&r.debug, "kiwi-debug", false, "rd.kiwi.debug: log the module's steps in the initrd")
	fs.StringVar(&r.rootflags, "rootflags", "", "rootflags: extra mount options of the overlay")
	fs.BoolVar(&r.noDriverPre, "no-driver-preload", false, "leave out rd.driver.pre=nbd|aoe (only for initrds that load the driver themselves)")
}

func (r *rootFlags) options() overlaycmdline.Options {
	return overlaycmdline.Options{
		Write: r.write, ReadOnly: r.readonly, Size: r.size, Debug: r.debug,
		RootFlags: r.rootflags, NoDriverPreload: r.noDriverPre,
	}
}

// parseRoot returns the root chosen by -nbd, -aoe or -root (exactly one).
func (r *rootFlags) parseRoot() (overlaycmdline.Root, error) {
	n := 0
	for _, v := range []string{r.nbd, r.aoe, r.root} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return overlaycmdline.Root{}, usageError{errors.New("give exactly one of -nbd HOST:EXPORT, -aoe eSHELF.SLOT or -root overlay:…")}
	}
	switch {
	case r.nbd != "":
		host, export, ok := strings.Cut(r.nbd, ":")
		if !ok {
			return overlaycmdline.Root{}, fmt.Errorf("-nbd %q: want HOST:EXPORT", r.nbd)
		}
		root := overlaycmdline.NBD(host, export)
		return root, root.Validate()
	case r.aoe != "":
		return overlaycmdline.ParseRoot("overlay:aoe=" + r.aoe)
	default:
		return overlaycmdline.ParseRoot(r.root)
	}
}

// cmdline is the kernel command line chosen by the root flags plus extra options.
func (r *rootFlags) cmdline(extra string) (string, error) {
	root, err := r.parseRoot()
	if err != nil {
		return "", err
	}
	return bootserver.KernelCmdline(root, r.options(), nil, extra)
}

func runCmdline(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "cmdline", "(-nbd HOST:EXPORT | -aoe eS.L | -root VALUE) [options] | -parse 'CMDLINE'")
	var rf rootFlags
	rf.register(fs, true)
	extra := fs.String("append", "", "extra kernel options, such as \"console=ttyS0\"")
	parse := fs.String("parse", "", "check an existing kernel command line the way kiwi-overlay reads it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *parse != "" {
		c, err := overlaycmdline.Parse(*parse)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "root\t%s\n", c.Root)
		fmt.Fprintf(w, "kind\t%s\n", c.Root.Kind)
		fmt.Fprintf(w, "device\t%s\n", c.Root.Device())
		if c.Root.Kind == overlaycmdline.KindNBD {
			fmt.Fprintf(w, "client runs\tnbd-client %s /dev/nbd0 -name %s (port %d)\n", c.Root.Host, c.Root.Export, overlaycmdline.NBDPort)
		}
		for _, a := range c.Options.Args(c.Root.Kind) {
			fmt.Fprintf(w, "option\t%s\n", a)
		}
		for _, a := range c.Extra {
			fmt.Fprintf(w, "other\t%s\n", a)
		}
		return w.Flush()
	}
	line, err := rf.cmdline(*extra)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, line)
	return nil
}

// kisFlags choose a build in a KIWI output directory.
type kisFlags struct {
	dirs              stringList
	name, arch, cache string
	noVerify          bool
}

func (k *kisFlags) register(fs *flag.FlagSet) {
	fs.Var(&k.dirs, "kis", "KIWI output directory holding the KIS builds (required; serve takes several)")
	fs.StringVar(&k.name, "name", "", "image to serve: an image name (its newest build) or a build ID NAME.ARCH-VERSION as inspect prints it; required when the directory holds several images")
	fs.StringVar(&k.arch, "arch", bootserver.HostArch(), "architecture to pick builds for, as KIWI names it (x86_64, aarch64, ...)")
	fs.StringVar(&k.cache, "cache-dir", "", "where to unpack compressed images and bundles (default: next to the build)")
	fs.BoolVar(&k.noVerify, "no-verify", false, "skip the md5 check of the root image, and serve a build that has no .md5 file (unverified, with a warning)")
}

// load finds, verifies and unpacks the newest build: what serve and stage start with.
func (k *kisFlags) load(ctx context.Context, e *env) (kis.Build, error) {
	if len(k.dirs) != 1 {
		return kis.Build{}, usageError{errors.New("-kis DIR is required, once")}
	}
	builds, err := kis.Find(k.dirs[0])
	if len(builds) == 0 {
		return kis.Build{}, err
	}
	if err != nil {
		e.log.Warn("some builds are unusable", "err", err)
	}
	var infos []bootserver.BuildInfo
	for _, b := range builds {
		infos = append(infos, bootserver.BuildInfo{ID: bootserver.BuildID{Name: b.Name, Arch: b.Arch, Version: b.Version}})
	}
	info, err := bootserver.Choose(infos, k.name, k.arch)
	if err != nil {
		return kis.Build{}, err
	}
	b := builds[slices.IndexFunc(builds, func(b kis.Build) bool { return b.ID() == info.ID.String() })]
	e.log.Info("found KIS build", "build", b.ID(), "kernel_version", b.KernelVersion, "dir", b.Dir)
	// Unpack checks the MD5 while it decompresses an .xz image (and remembers that it did), so
	// only an image that was not decompressed needs reading again.
	decompressed := b.CompressedImage != ""
	p := newProgress(e, "unpacking")
	if b, err = kis.Unpack(ctx, b, &kis.UnpackOptions{Dir: k.cache, Progress: p.update, NoVerify: k.noVerify, Logger: e.log}); err != nil {
		return kis.Build{}, noVerifyHint(err)
	}
	if !k.noVerify && !decompressed {
		// (Unpack refused a build without .md5 already.)
		start := time.Now()
		p := newProgress(e, "verifying")
		if err := kis.Verify(ctx, b, p.update); err != nil {
			return kis.Build{}, err
		}
		e.log.Info("root image matches its md5", "image", b.Image, "took", time.Since(start).Round(time.Millisecond))
	}
	return b, nil
}

// noVerifyHint adds to an error for a build without .md5 what serves it anyway.
func noVerifyHint(err error) error {
	if errors.Is(err, kis.ErrNoChecksum) {
		return fmt.Errorf("%w; -no-verify serves it unverified", err)
	}
	return err
}

// stageFlags say where kernel and initrd go in the TFTP root.
type stageFlags struct {
	tftpRoot, kernel, initrd string
	perBuild, noLink         bool
}

func (s *stageFlags) register(fs *flag.FlagSet, defaultRoot string) {
	fs.StringVar(&s.tftpRoot, "tftp-root", defaultRoot, "TFTP root directory to stage into")
	fs.StringVar(&s.kernel, "kernel-path", kis.DefaultKernelPath, "kernel path in the TFTP root")
	fs.StringVar(&s.initrd, "initrd-path", kis.DefaultInitrdPath, "initrd path in the TFTP root")
	fs.BoolVar(&s.perBuild, "per-build", false, "stage into boot/NAME.ARCH-VERSION/ so several builds can be served")
	fs.BoolVar(&s.noLink, "no-link", false, "copy (or reflink) instead of hard linking")
}

func (s *stageFlags) stage(ctx context.Context, e *env, b kis.Build) (kis.Staged, error) {
	st, err := kis.Stage(ctx, b, s.tftpRoot, &kis.StageOptions{
		Kernel: s.kernel, Initrd: s.initrd, PerBuild: s.perBuild, NoLink: s.noLink,
	})
	if err != nil {
		return st, err
	}
	for _, f := range []kis.StagedFile{st.Kernel, st.Initrd} {
		e.log.Info("staged", "path", f.Path, "size", f.Size, "method", string(f.Method), "from", f.Source)
	}
	return st, nil
}

func runStage(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "stage", "-kis DIR -tftp-root DIR [flags]")
	var kf kisFlags
	var sf stageFlags
	kf.register(fs)
	sf.register(fs, defaultTFTPRoot)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	b, err := kf.load(ctx, e)
	if err != nil {
		return err
	}
	st, err := sf.stage(ctx, e, b)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "build\t%s\n", st.Build)
	fmt.Fprintf(w, "kernel\t%s\t%s\t%s\n", st.Kernel.Path, humanBytes(st.Kernel.Size), st.Kernel.Method)
	fmt.Fprintf(w, "initrd\t%s\t%s\t%s\n", st.Initrd.Path, humanBytes(st.Initrd.Size), st.Initrd.Method)
	fmt.Fprintf(w, "root image\t%s\n", b.Image)
	return w.Flush()
}

func runInspect(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "inspect", "-kis DIR [-no-verify]")
	dir := fs.String("kis", "", "KIWI output directory (required)")
	noVerify := fs.Bool("no-verify", false, "do not check the md5 of the root images")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{errors.New("-kis DIR is required")}
	}
	builds, findErr := kis.Find(*dir)
	if len(builds) == 0 {
		return findErr
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	var bad []string // builds whose root image does not match its md5, or that have none
	for i, b := range builds {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "build\t%s\n", b.ID())
		fmt.Fprintf(w, "name\t%s\nversion\t%s\narch\t%s\nkernel version\t%s\n", b.Name, b.Version, b.Arch, b.KernelVersion)
		for _, f := range []struct{ what, path string }{
			{"kernel", b.Kernel}, {"initrd", b.Initrd}, {"image", b.Image},
			{"image.xz", b.CompressedImage}, {"md5", b.MD5}, {"append", b.Append}, {"bundle", b.Bundle},
		} {
			if f.path == "" {
				continue
			}
			size := "?"
			if fi, err := os.Stat(f.path); err == nil {
				size = humanBytes(fi.Size())
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", f.what, f.path, size)
		}
		if _, opts, err := kis.ReadAppend(b); err == nil && len(opts) > 0 {
			fmt.Fprintf(w, "kiwi options\t%s\n", strings.Join(opts, " "))
		}
		status := "not checked"
		switch {
		case b.MD5 == "" && b.Bundle == "" && *noVerify:
			status = "MISSING " + b.ID() + ".md5 (-no-verify serves it unverified)"
		case b.MD5 == "" && b.Bundle == "":
			status = "MISSING " + b.ID() + ".md5: serve and stage refuse this build (-no-verify serves it unverified)"
			bad = append(bad, b.ID())
		case *noVerify:
		case b.Image == "":
			status = "not checked (image is compressed or bundled; serve or stage unpacks it)"
		default:
			if err := kis.Verify(ctx, b, newProgress(e, "verifying").update); err != nil {
				status = "BAD: " + err.Error()
				bad = append(bad, b.ID())
			} else {
				status = "ok"
			}
		}
		fmt.Fprintf(w, "md5\t%s\n", status)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if findErr != nil {
		fmt.Fprintln(e.stdout, "\nunusable:", findErr)
	}
	// A failed check fails the command, so scripts can use inspect as a gate.
	switch {
	case len(bad) > 0 && findErr != nil:
		return fmt.Errorf("inspect: md5 check failed for %s, and unusable builds: %w", strings.Join(bad, ", "), findErr)
	case len(bad) > 0:
		return fmt.Errorf("inspect: md5 check failed for %s", strings.Join(bad, ", "))
	case findErr != nil:
		return fmt.Errorf("inspect: unusable builds: %w", findErr)
	}
	return nil
}

// pxeFlags describe the boot entry and where its configs go.
type pxeFlags struct {
	label, serial, formats string
	timeout                time.Duration
	macs, ips              stringList
}

func (p *pxeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.label, "label", "netroot", "boot entry label")
	fs.StringVar(&p.serial, "pxelinux-serial", "", "pxelinux SERIAL directive, such as \"0 115200\"")
	fs.StringVar(&p.formats, "formats", "pxelinux,grub,ipxe", "configs to write: pxelinux, grub, ipxe (comma-separated)")
	fs.DurationVar(&p.timeout, "timeout", 0, "menu timeout (0: boot the entry at once)")
	fs.Var(&p.macs, "mac", "write per-client configs for this MAC (repeatable; pxe: pxelinux only, instead of default)")
	fs.Var(&p.ips, "ip", "write a per-client pxelinux file for this IPv4 address or prefix (repeatable)")
}

// formatsAndClients returns the formats and the per-client (-ip) files serve writes; -mac
// machines are handled as bootserver Machines.
func (p *pxeFlags) formatsAndClients() (pxecfg.Format, []pxecfg.Client, error) {
	opts, err := p.parse(false)
	if err != nil {
		return 0, nil, err
	}
	return opts.Formats, opts.Clients, nil
}

func (p *pxeFlags) dirOptions() (*pxecfg.DirOptions, error) {
	opts, err := p.parse(true)
	if err != nil {
		return nil, err
	}
	if len(opts.Clients) > 0 {
		// Per-client files exist only for pxelinux.
		opts.Formats &= pxecfg.FormatPXELinux
	}
	return opts, nil
}

// parse reads -formats, -ip and (withMACs) -mac.
func (p *pxeFlags) parse(withMACs bool) (*pxecfg.DirOptions, error) {
	opts := &pxecfg.DirOptions{}
	for _, f := range strings.Split(p.formats, ",") {
		switch strings.TrimSpace(strings.ToLower(f)) {
		case "pxelinux":
			opts.Formats |= pxecfg.FormatPXELinux
		case "grub":
			opts.Formats |= pxecfg.FormatGRUB
		case "ipxe":
			opts.Formats |= pxecfg.FormatIPXE
		case "":
		default:
			return nil, usageError{fmt.Errorf("-formats: unknown format %q (want pxelinux, grub, ipxe)", f)}
		}
	}
	for _, m := range p.macs {
		if !withMACs {
			break
		}
		hw, err := net.ParseMAC(m)
		if err != nil {
			return nil, usageError{fmt.Errorf("-mac %q: %w", m, err)}
		}
		opts.Clients = append(opts.Clients, pxecfg.Client{MAC: hw})
	}
	for _, s := range p.ips {
		c := pxecfg.Client{}
		if pfx, err := netip.ParsePrefix(s); err == nil {
			c.IP, c.IPPrefix = pfx.Addr(), pfx.Bits()
		} else if a, err := netip.ParseAddr(s); err == nil {
			c.IP = a
		} else {
			return nil, usageError{fmt.Errorf("-ip %q: not an IPv4 address or prefix", s)}
		}
		opts.Clients = append(opts.Clients, c)
	}
	return opts, nil
}

// config returns the boot menu with one network-boot entry.
func (p *pxeFlags) config(kernel, initrd, cmdline string) *pxecfg.Config {
	entry := pxecfg.NetbootEntry(p.label, kernel, []string{initrd}, cmdline)
	entry.MenuLabel = "netroot: " + p.label
	return &pxecfg.Config{Serial: p.serial, Default: p.label, Timeout: p.timeout, Entries: []pxecfg.Entry{entry}}
}

func writeConfigs(e *env, tftpRoot string, cfg *pxecfg.Config, opts *pxecfg.DirOptions) error {
	written, err := pxecfg.WriteDir(tftpRoot, cfg, opts)
	if err != nil {
		return err
	}
	for _, w := range written {
		e.log.Info("wrote boot config", "path", w)
	}
	return nil
}

// installBootloaders copies pxelinux.0 and its modules from the host's packages into the
// TFTP root. required makes a missing BIOS loader an error naming its package.
// sysroot, when not "" or "/", is where the packages' files are looked up instead of /.
func installBootloaders(e *env, tftpRoot, sysroot string, cfg *pxecfg.Config, required bool) error {
	files, err := pxecfg.BootFiles(pxecfg.BIOS, cfg)
	if err != nil {
		return err
	}
	if sysroot != "" && sysroot != "/" {
		for i := range files {
			files[i].Source = filepath.Join(sysroot, files[i].Source)
		}
	}
	copied, err := pxecfg.InstallBootFiles(tftpRoot, files)
	for _, c := range copied {
		e.log.Debug("installed boot loader file", "path", c)
	}
	if err != nil {
		if required {
			return fmt.Errorf("%w (install the packages named, or pass -no-bootloader if the TFTP root already has them)", err)
		}
		e.log.Warn("boot loader files missing: BIOS clients cannot boot from this TFTP root", "err", err)
	}
	return nil
}

func runPXE(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "pxe", "-tftp-root DIR (-nbd HOST:EXPORT | -aoe eS.L | -root VALUE) [flags]")
	var rf rootFlags
	var pf pxeFlags
	rf.register(fs, true)
	pf.register(fs)
	tftpRoot := fs.String("tftp-root", defaultTFTPRoot, "TFTP root directory to write the configs into")
	kernel := fs.String("kernel-path", kis.DefaultKernelPath, "kernel path in the TFTP root")
	initrd := fs.String("initrd-path", kis.DefaultInitrdPath, "initrd path in the TFTP root")
	extra := fs.String("append", "", "extra kernel options, such as \"console=ttyS0,115200\"")
	bootloader := fs.Bool("bootloader", false, "also copy pxelinux.0 and ldlinux.c32 from the host's packages")
	sysroot := fs.String("bootloader-sysroot", "/", "system root to take the boot loader packages' files from")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	line, err := rf.cmdline(*extra)
	if err != nil {
		return err
	}
	opts, err := pf.dirOptions()
	if err != nil {
		return err
	}
	cfg := pf.config(*kernel, *initrd, line)
	if *bootloader {
		if err := installBootloaders(e, *tftpRoot, *sysroot, cfg, true); err != nil {
			return err
		}
	}
	return writeConfigs(e, *tftpRoot, cfg, opts)
}

// parsePort returns the port of a host:port address flag.
func parsePort(flagName, addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, usageError{fmt.Errorf("%s %q: %w", flagName, addr, err)}
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return 0, usageError{fmt.Errorf("%s %q: bad port %q", flagName, addr, p)}
	}
	return n, nil
}
