package bootserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/internal/atomicfile"
	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/nbd"
)

// build is one opened build the server serves.
type build struct {
	id     BuildID
	img    *Image
	dir    string // staging folder, relative to the TFTP root: boot/ID
	kernel string // staged paths, relative to the TFTP root
	initrd string
	export *nbd.Export
	slot   int // AoE slot, or -1

	current   bool      // selected for new boots
	clients   int       // attached NBD connections
	idleSince time.Time // when it stopped being current
	lastLeft  time.Time // when its last client left
}

// BuildState describes one build a Server serves, for status pages.
type BuildState struct {
	ID BuildID
	// Current builds are what new boots get; the others stay while clients use them.
	Current bool
	// Clients counts the NBD connections attached to its export now.
	Clients int
	// Kernel and Initrd are the staged paths in the TFTP root.
	Kernel, Initrd string
	// AoE is the AoE device name (e0.1), when served over AoE.
	AoE string
}

// State is a snapshot of what a Server serves.
type State struct {
	Builds []BuildState
	// Default is the default image's current build.
	Default BuildID
	// Rejected are builds that failed to open, with why.
	Rejected map[BuildID]string
}

// State returns what the server serves now.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Rejected: map[BuildID]string{}}
	if b := s.selected[""]; b != nil {
		st.Default = b.id
	}
	for _, b := range s.builds {
		bs := BuildState{ID: b.id, Current: b.current, Clients: b.clients, Kernel: b.kernel, Initrd: b.initrd}
		if b.slot >= 0 {
			bs.AoE = aoe.DeviceAddr{Shelf: s.AoEShelf, Slot: uint8(b.slot)}.String()
		}
		st.Builds = append(st.Builds, bs)
	}
	slices.SortFunc(st.Builds, func(a, b BuildState) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	for id, why := range s.rejectedWhy {
		st.Rejected[id] = why
	}
	return st
}

func (s *Server) currentIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, b := range s.builds {
		if b.current {
			ids = append(ids, b.id.String())
		}
	}
	slices.Sort(ids)
	return ids
}

// selector is what chooses m's build: its Image, or the default image's.
func (s *Server) selector(m Machine) string {
	if m.Image == "" {
		return s.Image
	}
	return m.Image
}

type reloadKind int

const (
	reloadInitial reloadKind = iota
	reloadExplicit
	reloadWatch
)

// Reload looks for new builds and rolls forward to them: each new build is opened (verified,
// unpacked), staged under boot/ID/, exported as ID, and the boot configs are rewritten to
// name it, so new boots get it. Builds that fail to open never replace what is served; their
// errors are returned. Clients attached to an older build keep it; it is removed after the
// last one left and the grace period passed. Reload may be called while Run runs.
func (s *Server) Reload(ctx context.Context) error {
	s.mu.Lock()
	running := s.state == stateRunning
	s.mu.Unlock()
	if !running {
		return errors.New("bootserver: Reload: the server is not running")
	}
	return s.reload(ctx, reloadExplicit)
}

// loggedError is an error that reload has logged already (a rejected build). Reload still
// returns it; Unlogged leaves it out of what a caller logs.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// Unlogged returns what of an error from Reload the Server has not logged itself (it logs each
// rejected build as it rejects it), or nil when that is all: what a caller that logs Reload's
// errors should log, so that one failure makes one line.
func Unlogged(err error) error {
	switch e := err.(type) {
	case nil, loggedError:
		return nil
	case interface{ Unwrap() []error }:
		var rest []error
		for _, x := range e.Unwrap() {
			if x = Unlogged(x); x != nil {
				rest = append(rest, x)
			}
		}
		return errors.Join(rest...)
	}
	return err
}

func (s *Server) reload(ctx context.Context, kind reloadKind) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	infos, err := s.Source.Builds(ctx)
	if err != nil {
		if len(infos) == 0 {
			return sourceError("listing builds", err)
		}
		s.log().Warn("some builds are unusable", "err", err)
	}
	arch := s.Arch
	if arch == "" {
		arch = HostArch()
	}
	// What each selector wants now.
	selectors := []string{s.Image}
	for _, m := range s.Machines {
		if sel := s.selector(m); !slices.Contains(selectors, sel) {
			selectors = append(selectors, sel)
		}
	}
	want := map[string]BuildInfo{}
	var errs []error
	for _, sel := range selectors {
		info, err := Choose(infos, sel, arch)
		if err != nil {
			if kind == reloadInitial {
				return err
			}
			errs = append(errs, err)
			continue
		}
		want[sel] = info
	}

	// Open the builds not served yet.
	var added []*build
	next := map[string]*build{}
	for _, sel := range selectors {
		info, ok := want[sel]
		if !ok {
			continue
		}
		s.mu.Lock()
		b := s.builds[info.ID]
		stamp, wasRejected := s.rejected[info.ID]
		s.mu.Unlock()
		if b == nil {
			for _, a := range added {
				if a.id == info.ID {
					b = a
				}
			}
		}
		if b == nil && wasRejected && kind == reloadWatch && stamp == info.Stamp {
			continue // failed before and unchanged since
		}
		if b == nil {
			nb, err := s.open(ctx, info)
			if err != nil {
				s.mu.Lock()
				s.rejected[info.ID] = info.Stamp
				s.rejectedWhy[info.ID] = err.Error()
				s.mu.Unlock()
				s.emit(Event{Kind: BuildRejected, Build: info.ID, Err: err})
				if kind == reloadInitial {
					// Nothing is served yet: Run fails with err, and its caller reports it.
					s.release(added, false)
					return err
				}
				s.log().Error("build rejected: still serving the previous one", "build", info.ID.String(), "err", err)
				errs = append(errs, loggedError{err})
				continue
			}
			added = append(added, nb)
			b = nb
		}
		next[sel] = b
	}
	// Selectors whose build could not be had keep what they had.
	s.mu.Lock()
	for _, sel := range selectors {
		if next[sel] == nil && s.selected[sel] != nil {
			next[sel] = s.selected[sel]
		}
	}
	s.mu.Unlock()
	if next[s.Image] == nil {
		s.release(added, false)
		return errors.Join(append(errs, errors.New("bootserver: no build for the default image"))...)
	}

	// Publish: exports first, then configs, so a client never gets a config naming an export
	// that does not exist yet.
	s.mu.Lock()
	for _, b := range added {
		s.builds[b.id] = b
		delete(s.rejected, b.id)
		delete(s.rejectedWhy, b.id)
		if b.export != nil {
			s.exports.add(b.export)
		}
	}
	s.mu.Unlock()
	if len(added) > 0 && s.aoe != nil {
		if err := s.aoe.restart(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.writeConfigs(ctx, next); err != nil {
		if kind == reloadInitial {
			return err
		}
		errs = append(errs, err)
		return errors.Join(errs...)
	}
	now := time.Now()
	s.mu.Lock()
	s.selected = next
	s.exports.setDefault(next[s.Image].id.String())
	var became, left []*build
	for _, b := range s.builds {
		cur := false
		for _, nb := range next {
			cur = cur || nb == b
		}
		if cur && !b.current {
			became = append(became, b)
		}
		if !cur && b.current {
			b.idleSince = now
			left = append(left, b)
		}
		b.current = cur
	}
	s.mu.Unlock()
	for _, b := range added {
		s.emit(Event{Kind: BuildReady, Build: b.id})
	}
	for _, b := range became {
		s.log().Info("serving build", "build", b.id.String(), "kernel", b.kernel, "export", exportName(b))
		s.emit(Event{Kind: BuildCurrent, Build: b.id})
	}
	for _, b := range left {
		s.log().Info("build replaced: kept while clients use it", "build", b.id.String(), "clients", b.clients, "grace", s.grace())
	}
	return errors.Join(errs...)
}

func exportName(b *build) string {
	if b.export == nil {
		return ""
	}
	return b.export.Name
}

// Choose picks the build image asks for among infos, as Server.Image does: a build ID
// NAME.ARCH-VERSION, the newest build of an image name for arch, or ("") the newest build of
// the only image name for arch; when there are several names, the error lists them. Empty arch
// means HostArch.
func Choose(infos []BuildInfo, image, arch string) (BuildInfo, error) {
	if arch == "" {
		arch = HostArch()
	}
	sel := image
	if sel != "" && strings.Contains(sel, "-") {
		if id, err := ParseBuildID(sel); err == nil {
			for _, in := range infos {
				if in.ID == id {
					return in, nil
				}
			}
			if nameExists(infos, sel) {
				// An image name with a dash that also parses as an ID.
				return newest(infos, sel, arch)
			}
			return BuildInfo{}, fmt.Errorf("bootserver: build %s not found; builds: %s", sel, list(infos))
		}
	}
	if sel != "" {
		return newest(infos, sel, arch)
	}
	var names []string
	for _, in := range infos {
		if in.ID.Arch == arch && !slices.Contains(names, in.ID.Name) {
			names = append(names, in.ID.Name)
		}
	}
	slices.Sort(names)
	switch len(names) {
	case 0:
		return BuildInfo{}, fmt.Errorf("bootserver: no build for architecture %s; builds: %s", arch, list(infos))
	case 1:
		return newest(infos, names[0], arch)
	}
	return BuildInfo{}, fmt.Errorf("bootserver: several images for %s: %s; choose one by name or build ID", arch, strings.Join(names, ", "))
}

func nameExists(infos []BuildInfo, name string) bool {
	return slices.ContainsFunc(infos, func(in BuildInfo) bool { return in.ID.Name == name })
}

func newest(infos []BuildInfo, name, arch string) (BuildInfo, error) {
	best := -1
	for i, in := range infos {
		if in.ID.Name != name || in.ID.Arch != arch {
			continue
		}
		if best < 0 || kis.CompareVersions(in.ID.Version, infos[best].ID.Version) > 0 {
			best = i
		}
	}
	if best < 0 {
		return BuildInfo{}, fmt.Errorf("bootserver: no build of image %q for architecture %s; builds: %s", name, arch, list(infos))
	}
	return infos[best], nil
}

func list(infos []BuildInfo) string {
	if len(infos) == 0 {
		return "none"
	}
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID.String())
	}
	slices.Sort(ids)
	return strings.Join(ids, ", ")
}

// open opens, stages and prepares the export of one build.
func (s *Server) open(ctx context.Context, info BuildInfo) (*build, error) {
	start := time.Now()
	img, err := s.Source.Open(ctx, info)
	if err != nil {
		return nil, sourceError("opening "+info.ID.String(), err)
	}
	if img.Root == nil {
		closeImage(img)
		return nil, fmt.Errorf("bootserver: build %s has no root device", info.ID)
	}
	b := &build{id: info.ID, img: img, dir: "boot/" + info.ID.String(), slot: -1}
	b.kernel, b.initrd = b.dir+"/linux", b.dir+"/initrd"
	if err := s.stage(ctx, img.Kernel, b.kernel); err != nil {
		closeImage(img)
		return nil, fmt.Errorf("bootserver: staging the kernel of %s: %w", info.ID, err)
	}
	if err := s.stage(ctx, img.Initrd, b.initrd); err != nil {
		closeImage(img)
		return nil, fmt.Errorf("bootserver: staging the initrd of %s: %w", info.ID, err)
	}
	if !s.DisableNBD {
		b.export = &nbd.Export{Name: info.ID.String(), Description: info.ID.String() + " root image", Device: img.Root}
		if s.CopyOnWrite {
			b.export.CopyOnWrite = nbd.CopyOnWritePerConnection
			if s.OverlayDir != "" {
				dir := s.OverlayDir
				b.export.NewOverlay = func(base backend.Device) (backend.Device, error) {
					return backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: dir})
				}
			}
		}
	}
	if s.AoEInterface != "" {
		s.mu.Lock()
		for slot := int(s.AoESlot); slot < 255; slot++ {
			if _, used := s.aoeSlots[uint8(slot)]; !used {
				b.slot = slot
				s.aoeSlots[uint8(slot)] = b.id
				break
			}
		}
		s.mu.Unlock()
		if b.slot < 0 {
			closeImage(img)
			return nil, fmt.Errorf("bootserver: no free AoE slot on shelf %d for %s", s.AoEShelf, info.ID)
		}
	}
	s.log().Info("build ready", "build", info.ID.String(), "kernel_version", img.KernelVersion,
		"size", img.Root.Size(), "took", time.Since(start).Round(time.Millisecond))
	return b, nil
}

// stage puts c at rel in the TFTP root.
func (s *Server) stage(ctx context.Context, c Content, rel string) error {
	dst := filepath.Join(s.TFTPRoot, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if c.Path != "" {
		// A fresh folder per build: a hard link when the TFTP root shares the build's file
		// system, else a copy (copy_file_range, which some file systems turn into a clone).
		if a, err := os.Stat(c.Path); err == nil {
			if b, err := os.Stat(dst); err == nil && os.SameFile(a, b) {
				return nil
			}
		}
		if atomicfile.Link(c.Path, dst) == nil {
			return nil
		}
		in, err := os.Open(c.Path)
		if err != nil {
			return err
		}
		defer in.Close()
		fi, err := in.Stat()
		if err != nil {
			return err
		}
		c = Content{R: in, Size: fi.Size()}
	}
	if c.R == nil {
		return errors.New("no content")
	}
	f, err := atomicfile.Create(dst, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.ReadFrom(&ctxReader{ctx, io.NewSectionReader(c.R, 0, c.Size)}); err != nil {
		return err
	}
	return f.Commit()
}

// sweep retires old builds nobody uses any more (all of them when final).
func (s *Server) sweep(final bool) {
	// Not while a reload publishes builds that are not current yet.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	now := time.Now()
	var gone []*build
	s.mu.Lock()
	if s.upgrade.noRetire && !final {
		s.mu.Unlock()
		return
	}
	for id, b := range s.builds {
		if !final && (b.current || b.clients > 0 || now.Sub(b.idleSince) < s.grace() || now.Sub(b.lastLeft) < s.grace() ||
			b.export != nil && now.Sub(s.exports.lookedUp(b.export.Name)) < s.grace()) {
			continue
		}
		delete(s.builds, id)
		if b.slot >= 0 {
			delete(s.aoeSlots, uint8(b.slot))
		}
		gone = append(gone, b)
	}
	s.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	for _, b := range gone {
		if b.export != nil {
			s.exports.remove(b.export.Name)
		}
	}
	if !final && s.aoe != nil {
		if err := s.aoe.restart(); err != nil {
			s.log().Error("aoe restart", "err", err)
		}
	}
	s.release(gone, !final)
}

// release closes the builds' images; retired builds also lose their staged files and what
// their source unpacked.
func (s *Server) release(bs []*build, retired bool) {
	for _, b := range bs {
		closeImage(b.img)
		if !retired {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.TFTPRoot, filepath.FromSlash(b.dir))); err != nil {
			s.log().Warn("removing staged files", "build", b.id.String(), "err", err)
		}
		if b.img.Discard != nil {
			if err := b.img.Discard(); err != nil {
				s.log().Warn("discarding unpacked files", "build", b.id.String(), "err", err)
			}
		}
		s.log().Info("build retired", "build", b.id.String())
		s.emit(Event{Kind: BuildRetired, Build: b.id})
	}
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func closeImage(img *Image) {
	if img != nil && img.Close != nil {
		_ = img.Close()
	}
}

// closeBuilds closes every build at the end of Run; their files stay for the next start.
func (s *Server) closeBuilds() {
	s.sweep(true)
}
