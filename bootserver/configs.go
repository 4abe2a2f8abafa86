package bootserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/netroot/netroot/internal/atomicfile"
	"github.com/netroot/netroot/overlaycmdline"
	"github.com/netroot/netroot/pxecfg"
	"github.com/netroot/netroot/tftp"
)

// Marker starts the comment line netroot puts into every boot config it writes. A config
// without it was written by someone else and is not overwritten unless Server.Force is set;
// remove the line from a file to keep it.
const Marker = "# Written by netroot"

const markerLine = Marker + "; it rewrites this file when the builds change. Remove this line to keep the file as it is.\n"

// Where the configs go in the TFTP root.
const (
	pxelinuxDir       = pxecfg.ConfigDir
	grubConfig        = pxecfg.DefaultGRUBConfig
	grubMachineConfig = "grub/grub.cfg-01-" // + the machine's MAC address
	ipxeScript        = pxecfg.DefaultIPXEScript
)

// KernelCmdline composes the kernel command line of a boot entry: the build's suggested
// options (KIWI's .append without its root=), then the overlay root and options, then extra
// options; later arguments replace earlier ones with the same key. The result is checked the
// way kiwi-overlay will read it: extra options may not undo the root.
func KernelCmdline(root overlaycmdline.Root, opts overlaycmdline.Options, buildOptions []string, extra string) (string, error) {
	c := overlaycmdline.Cmdline{Root: root, Options: opts}
	if err := c.Validate(); err != nil {
		return "", err
	}
	line := overlaycmdline.Append(strings.Join(buildOptions, " "), c.Args()...)
	if extra != "" {
		line = overlaycmdline.Append(line, overlaycmdline.Fields(extra)...)
	}
	if _, err := overlaycmdline.Parse(line); err != nil {
		return "", fmt.Errorf("bootserver: kernel command line %q: %w", line, err)
	}
	return line, nil
}

// nbdHost is the NBD server the configs of the machine with hardware address mac name:
// NBDHost's choice, or ServerIP.
func (s *Server) nbdHost(mac net.HardwareAddr) netip.Addr {
	if s.NBDHost != nil && len(mac) == 6 {
		if a := s.NBDHost(mac); a.IsValid() {
			return a.Unmap()
		}
	}
	return s.ServerIP.Unmap()
}

// menu returns the boot menu for build b with extra kernel options, its NBD root on host.
func (s *Server) menu(b *build, extra string, host netip.Addr) (*pxecfg.Config, error) {
	var roots []overlaycmdline.Root
	if b.export != nil {
		roots = append(roots, overlaycmdline.NBD(host.String(), b.export.Name))
	}
	if b.slot >= 0 {
		r := overlaycmdline.AoE(s.AoEShelf, uint8(b.slot))
		if s.DefaultRoot == overlaycmdline.KindAoE {
			roots = append([]overlaycmdline.Root{r}, roots...)
		} else {
			roots = append(roots, r)
		}
	}
	label := s.Boot.Label
	if label == "" {
		label = DefaultLabel
	}
	all := strings.TrimSpace(s.Boot.Append + " " + extra)
	cfg := &pxecfg.Config{Serial: s.Boot.Serial, Timeout: s.Boot.Timeout}
	for _, root := range roots {
		line, err := KernelCmdline(root, s.Boot.Overlay, b.img.Options, all)
		if err != nil {
			return nil, err
		}
		e := pxecfg.NetbootEntry(label+"-"+root.Kind.String(), b.kernel, []string{b.initrd}, line)
		e.MenuLabel = fmt.Sprintf("%s over %s", b.id, strings.ToUpper(root.Kind.String()))
		cfg.Entries = append(cfg.Entries, e)
	}
	cfg.Default = cfg.Entries[0].Label
	return cfg, nil
}

// render writes cfg in one format with the marker line, and extra lines (dispatch to
// per-machine files) before the menu.
func render(format pxecfg.Format, cfg *pxecfg.Config, extra string) ([]byte, error) {
	var body bytes.Buffer
	var err error
	switch format {
	case pxecfg.FormatPXELinux:
		err = pxecfg.WritePXELinux(&body, cfg)
	case pxecfg.FormatGRUB:
		err = pxecfg.WriteGRUB(&body, cfg)
	case pxecfg.FormatIPXE:
		err = pxecfg.WriteIPXE(&body, cfg)
	}
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	rest := body.Bytes()
	if format == pxecfg.FormatIPXE {
		// iPXE needs its signature on the first line.
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		out.Write(line)
		out.WriteByte('\n')
		rest = after
	}
	out.WriteString(markerLine)
	out.WriteString(extra)
	out.Write(rest)
	return out.Bytes(), nil
}

// hasMarker reports whether the file at p was written by netroot (or does not exist).
func hasMarker(p string) (exists, marked bool, err error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4096))
	for i := 0; i < 3 && sc.Scan(); i++ {
		if strings.HasPrefix(sc.Text(), Marker) {
			return true, true, nil
		}
	}
	return true, false, nil
}

// dynamicConfigs are the per-machine configs rendered when a machine asks for them by the
// name pxelinux, GRUB or iPXE derive from its MAC address: for machines in a MAC-prefix group,
// and for every machine when NBDHost places machines on NBD servers.
type dynamicConfigs struct {
	mu sync.RWMutex
	prefixConfigs
}

type prefixConfigs struct {
	prefixes []prefixConfig // longest prefix first
	any      *prefixConfig  // every other machine, or nil
}

type prefixConfig struct {
	mac   net.HardwareAddr
	b     *build
	extra string
}

// writeConfigs writes every boot config for the builds next selects and removes the ones a
// previous run wrote that are no longer wanted.
func (s *Server) writeConfigs(ctx context.Context, next map[string]*build) error {
	formats := s.Boot.Formats
	if formats == 0 {
		formats = pxecfg.FormatAll
	}
	def := next[s.Image]
	defMenu, err := s.menu(def, "", s.ServerIP.Unmap())
	if err != nil {
		return err
	}
	files := map[string][]byte{}
	var order []string
	put := func(name string, data []byte) {
		if _, ok := files[name]; !ok {
			order = append(order, name)
		}
		files[name] = data
	}
	// Machines, most specific first: exact addresses, then longer prefixes.
	ms := slices.Clone(s.Machines)
	slices.SortStableFunc(ms, func(a, b Machine) int { return len(b.MAC) - len(a.MAC) })
	type machineMenu struct {
		m   Machine
		cfg *pxecfg.Config
	}
	var menus []machineMenu
	var dyn prefixConfigs
	for _, m := range ms {
		b := next[s.selector(m)]
		if b == nil {
			continue
		}
		if m.Prefix() {
			// Rendered when a machine of the group asks (its NBD host may depend on its MAC).
			dyn.prefixes = append(dyn.prefixes, prefixConfig{m.MAC, b, m.Append})
			continue
		}
		cfg, err := s.menu(b, m.Append, s.nbdHost(m.MAC))
		if err != nil {
			return fmt.Errorf("%w (machine %s)", err, m.MAC)
		}
		menus = append(menus, machineMenu{m, cfg})
	}
	if s.NBDHost != nil {
		// Every other machine gets the default menu with its own NBD host, rendered on request.
		dyn.any = &prefixConfig{b: def}
	}
	if formats&pxecfg.FormatPXELinux != 0 {
		data, err := render(pxecfg.FormatPXELinux, defMenu, "")
		if err != nil {
			return err
		}
		put(pxelinuxDir+"/default", data)
		for _, c := range s.Boot.Clients {
			name, err := c.ConfigName()
			if err != nil {
				return err
			}
			put(name, data)
		}
		for _, mm := range menus {
			data, err := render(pxecfg.FormatPXELinux, mm.cfg, "")
			if err != nil {
				return err
			}
			put(pxelinuxDir+"/01-"+dashed(mm.m.MAC), data)
		}
	}
	if formats&pxecfg.FormatGRUB != 0 {
		var dispatch strings.Builder
		for _, mm := range menus {
			name := grubMachineConfig + dashed(mm.m.MAC)
			fmt.Fprintf(&dispatch, "if [ \"$net_default_mac\" = %s ]; then configfile %s; fi\n", mm.m.MAC, "/"+name)
			data, err := render(pxecfg.FormatGRUB, mm.cfg, "")
			if err != nil {
				return err
			}
			put(name, data)
		}
		if dyn.any != nil {
			// Served by name for any machine (GRUB's variable has colons; the TFTP handler
			// takes both spellings).
			fmt.Fprintf(&dispatch, "configfile /%s$net_default_mac\n", grubMachineConfig)
		} else {
			for _, pc := range dyn.prefixes {
				fmt.Fprintf(&dispatch, "if regexp %s \"$net_default_mac\"; then configfile /%s$net_default_mac; fi\n",
					pxecfg.GRUBQuote("^"+pc.mac.String()+":"), grubMachineConfig)
			}
		}
		data, err := render(pxecfg.FormatGRUB, defMenu, dispatch.String())
		if err != nil {
			return err
		}
		put(grubConfig, data)
	}
	if formats&pxecfg.FormatIPXE != 0 {
		dispatch := ""
		if len(menus) > 0 || len(dyn.prefixes) > 0 || dyn.any != nil {
			// A machine with a script of its own (or in a group) gets it; others fall through.
			dispatch = "chain --autofree boot-01-${netX/mac:hexhyp}.ipxe ||\n"
		}
		data, err := render(pxecfg.FormatIPXE, defMenu, dispatch)
		if err != nil {
			return err
		}
		put(ipxeScript, data)
		for _, mm := range menus {
			data, err := render(pxecfg.FormatIPXE, mm.cfg, "")
			if err != nil {
				return err
			}
			put("boot-01-"+dashed(mm.m.MAC)+".ipxe", data)
		}
	}

	// Never overwrite a config someone else wrote, unless forced: check them all first.
	for _, name := range order {
		exists, marked, err := hasMarker(s.path(name))
		if err != nil {
			return fmt.Errorf("bootserver: %w", err)
		}
		if exists && !marked && !s.Force {
			return fmt.Errorf("bootserver: %s was not written by netroot (no %q line); move it away or force overwriting it", s.path(name), Marker)
		}
	}
	if s.Boot.Bootloader {
		if err := s.installBootloader(defMenu); err != nil {
			return err
		}
	}
	for _, name := range order {
		if old, err := os.ReadFile(s.path(name)); err == nil && bytes.Equal(old, files[name]) {
			continue // unchanged: a watch tick rewrites nothing
		}
		if err := os.MkdirAll(filepath.Dir(s.path(name)), 0o755); err != nil {
			return fmt.Errorf("bootserver: %w", err)
		}
		if err := atomicfile.WriteFile(s.path(name), files[name], 0o644); err != nil {
			return fmt.Errorf("bootserver: writing %s: %w", name, err)
		}
		s.log().Info("wrote boot config", "path", name)
		s.emit(Event{Kind: ConfigWritten, File: name})
	}
	s.dynamic.set(dyn)
	if s.Boot.Kernel != "" || s.Boot.Initrd != "" {
		for _, f := range [][2]string{{s.Boot.Kernel, def.kernel}, {s.Boot.Initrd, def.initrd}} {
			if f[0] == "" {
				continue
			}
			if err := s.stage(ctx, Content{Path: s.path(f[1])}, f[0]); err != nil {
				return fmt.Errorf("bootserver: placing %s: %w", f[0], err)
			}
		}
	}
	s.removeStale(files)
	return nil
}

func (s *Server) path(rel string) string {
	return filepath.Join(s.TFTPRoot, filepath.FromSlash(rel))
}

// removeStale removes the per-machine configs netroot wrote before that are not wanted now,
// and reports per-client files that someone else wrote, which pxelinux (or GRUB) prefers to
// the default.
func (s *Server) removeStale(keep map[string][]byte) {
	var candidates []string
	add := func(dir, pattern string) {
		m, _ := filepath.Glob(filepath.Join(s.TFTPRoot, filepath.FromSlash(dir), pattern))
		for _, p := range m {
			rel, err := filepath.Rel(s.TFTPRoot, p)
			if err == nil {
				candidates = append(candidates, filepath.ToSlash(rel))
			}
		}
	}
	add(pxelinuxDir, "*")
	add(path.Dir(grubConfig), "grub.cfg-*")
	add(".", "boot-01-*.ipxe")
	var shadow []string
	for _, rel := range candidates {
		if _, ok := keep[rel]; ok || strings.HasPrefix(path.Base(rel), ".") {
			continue
		}
		if fi, err := os.Stat(s.path(rel)); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		_, marked, err := hasMarker(s.path(rel))
		if err != nil {
			continue
		}
		if !marked {
			if rel != pxelinuxDir+"/default" {
				shadow = append(shadow, rel)
			}
			continue
		}
		if err := os.Remove(s.path(rel)); err == nil {
			s.log().Info("removed stale boot config", "path", rel)
		}
	}
	if len(shadow) > 0 {
		s.log().Warn("per-client boot configs netroot did not write take precedence over its own for their clients", "files", shadow)
	}
}

// installBootloader copies pxelinux.0 and its modules from the host's packages.
func (s *Server) installBootloader(cfg *pxecfg.Config) error {
	files, err := pxecfg.BootFiles(pxecfg.BIOS, cfg)
	if err != nil {
		return err
	}
	if r := s.Boot.BootloaderSysroot; r != "" && r != "/" {
		for i := range files {
			files[i].Source = filepath.Join(r, files[i].Source)
		}
	}
	copied, err := pxecfg.InstallBootFiles(s.TFTPRoot, files)
	for _, c := range copied {
		s.log().Debug("installed boot loader file", "path", c)
	}
	if err != nil {
		if s.Boot.RequireBootloader {
			return fmt.Errorf("%w (install the packages named, or do without the boot loader if the TFTP root already has it)", err)
		}
		s.log().Warn("boot loader files missing: BIOS clients cannot boot from this TFTP root", "err", err)
	}
	return nil
}

func (d *dynamicConfigs) set(n prefixConfigs) {
	d.mu.Lock()
	d.prefixConfigs = n
	d.mu.Unlock()
}

// dynamicConfig renders the config a per-MAC file name asks for, if a machine group (or
// NBDHost) covers that MAC.
func (s *Server) dynamicConfig(name string) ([]byte, bool) {
	var format pxecfg.Format
	var mac string
	switch {
	case strings.HasPrefix(name, pxelinuxDir+"/01-"):
		format, mac = pxecfg.FormatPXELinux, strings.TrimPrefix(name, pxelinuxDir+"/01-")
	case strings.HasPrefix(name, "boot-01-") && strings.HasSuffix(name, ".ipxe"):
		format, mac = pxecfg.FormatIPXE, strings.TrimSuffix(strings.TrimPrefix(name, "boot-01-"), ".ipxe")
	case strings.HasPrefix(name, grubMachineConfig):
		format, mac = pxecfg.FormatGRUB, strings.TrimPrefix(name, grubMachineConfig)
	default:
		return nil, false
	}
	hw, err := net.ParseMAC(strings.ReplaceAll(mac, "-", ":"))
	if err != nil || len(hw) != 6 {
		return nil, false
	}
	d := s.dynamic
	d.mu.RLock()
	pc := d.any
	for i := range d.prefixes {
		if bytes.HasPrefix(hw, d.prefixes[i].mac) {
			pc = &d.prefixes[i]
			break
		}
	}
	d.mu.RUnlock()
	if pc == nil {
		return nil, false
	}
	cfg, err := s.menu(pc.b, pc.extra, s.nbdHost(hw))
	if err != nil {
		s.log().Warn("rendering a machine's boot config", "file", name, "err", err)
		return nil, false
	}
	data, err := render(format, cfg, "")
	if err != nil {
		s.log().Warn("rendering a machine's boot config", "file", name, "err", err)
		return nil, false
	}
	return data, true
}

// tftpHandler serves the TFTP root, and the configs of machines in prefix groups.
func (s *Server) tftpHandler() tftp.Handler {
	files := tftp.NewFileServer(s.TFTPRoot, &tftp.FileServerConfig{Remap: tftp.SlashPath})
	return tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		name := strings.ToLower(tftp.SlashPath(r.Filename))
		if _, err := os.Stat(s.path(name)); err != nil {
			if data, ok := s.dynamicConfig(name); ok {
				_ = w.ServeContent(bytes.NewReader(data), int64(len(data)))
				return
			}
		}
		files.ServeTFTP(w, r)
	})
}
