package aoe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mdlayher/packet"

	"github.com/netroot/netroot/backend"
)

// Defaults for zero Target fields.
const (
	// DefaultAnnounceInterval is how often a Target broadcasts its Query Config response.
	DefaultAnnounceInterval = 5 * time.Second
	// DefaultBufferCount is the buffer count a Target advertises.
	DefaultBufferCount = 64
	// DefaultMTU is the MTU assumed when the PacketConn does not report one.
	DefaultMTU = 1500
	// DefaultFirmwareVersion is the firmware version a Target reports.
	DefaultFirmwareVersion = 0x0100
	// MaxMaskList is the longest MAC mask list a Target keeps.
	MaxMaskList = 32
)

// ErrServerClosed is returned by Target.Serve after Shutdown or Close.
var ErrServerClosed = errors.New("aoe: target closed")

// Broadcast is the Ethernet broadcast address.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Device is one exported block device, seen by initiators as e<Shelf>.<Slot>.
type Device struct {
	Shelf uint16
	Slot  uint8
	// Backend holds the data. Writes need a backend.WriterDevice; FLUSH CACHE calls its Sync
	// when it is a backend.Syncer.
	Backend backend.Device
	// ReadOnly refuses writes even to a writable Backend (vblade -r).
	ReadOnly bool
	// Offset and Length select a window of Backend in bytes, both multiples of SectorSize
	// (vblade -o and -l count sectors). Length 0 means to the end of Backend.
	Offset, Length int64
	// Model, Serial and Firmware are reported by IDENTIFY DEVICE. Empty Model means
	// "netroot AoE target", empty Serial "<shelf>.<slot>:<hostname>" as vblade reports,
	// empty Firmware "netroot".
	Model, Serial, Firmware string
	// Config is the initial config string, at most MaxConfigLen bytes.
	Config []byte
	// Mask is the initial MAC mask list (vblade -m): when it is not empty, only these hosts
	// are answered.
	Mask []net.HardwareAddr
}

// Stats are a Target's counters since it started serving.
type Stats struct {
	FramesIn, FramesOut uint64
	// Ignored counts frames not answered: responses, other devices, masked hosts, malformed,
	// and those counted in GroupSource.
	Ignored uint64
	// GroupSource counts frames dropped because their Ethernet source is a group (broadcast
	// or multicast) address: no station sends from one, and answering would send the
	// response, sector data included, to every station of the group.
	GroupSource uint64
	// ErrorsOut counts responses with the E flag or an ATA error status.
	ErrorsOut                   uint64
	SectorsRead, SectorsWritten uint64
}

// Target exports Devices over AoE, the role of vblade. Its exported fields are its
// configuration and must not change once Serve is called.
type Target struct {
	// Devices are the exported devices; shelf.slot pairs must be unique.
	Devices []*Device
	// Logger receives connection-level events; nil means silent.
	Logger *slog.Logger
	// AnnounceInterval is how often each device's Query Config response is broadcast after
	// the one sent when Serve starts. Zero means DefaultAnnounceInterval; negative announces
	// only at start.
	AnnounceInterval time.Duration
	// MTU sets the sectors per frame (MTU-22)/512, capped at 255. Zero means the PacketConn's
	// MTU when it has an MTU() int method (Listen's does), else DefaultMTU.
	MTU int
	// BufferCount is the number of requests an initiator may keep in flight, advertised in
	// Query Config. Zero means DefaultBufferCount.
	BufferCount int
	// Workers is the number of goroutines that take turns receiving batches of frames and
	// then execute their ATA commands concurrently with each other. Zero means 2 per CPU:
	// more only pay off with backends that block, such as O_DIRECT files on slow disks.
	Workers int
	// FirmwareVersion is reported in Query Config. Zero means DefaultFirmwareVersion.
	FirmwareVersion uint16
	// OnDiscover, when not nil, is called when an initiator not seen before reads a device's
	// config (the discovery step of the Linux aoe driver and of Client.Discover). Source
	// addresses are easily forged, so it may be called for every frame of a flood: it must
	// bound whatever it does per call. The Target itself logs the first 16 discoveries of
	// each minute, and with the next line it logs, one counting those it held back.
	OnDiscover func(d *Device, initiator net.HardwareAddr)

	mu       sync.Mutex
	pc       net.PacketConn
	serving  bool
	closed   atomic.Bool
	shutdown atomic.Bool
	stop     chan struct{}
	rxMu     sync.Mutex
	slow     atomic.Bool   // recent ATA requests were slow: execute without the receive lock
	avgExec  atomic.Int64  // moving average of the execution time per ATA request, in ns
	served   chan struct{} // closed when Serve's workers have stopped
	devs     []*device
	mac      net.HardwareAddr
	maxSect  int
	bufSize  int
	stats    struct{ in, out, ignored, group, errs, rd, wr atomic.Uint64 }
	discLog  logLimit // bounds the discovery log lines
}

// device is a Device's serving state.
type device struct {
	*Device
	sectors  uint64
	writable bool
	ident    Identify

	mu      sync.Mutex // guards config, mask, reserve, seen
	config  []byte
	mask    []net.HardwareAddr
	reserve []net.HardwareAddr
	seen    map[[6]byte]struct{}

	omu sync.Mutex // guards ops
	ops []*request // ATA reads and writes queued or running, in arrival order
}

// request is one received frame; for ATA reads and writes, also its place in the device's
// ordering list.
type request struct {
	buf   []byte // whole buffer; the response is built in place
	n     int
	addr  [6]byte
	src   packet.Addr // addr as the net.Addr replies go to
	dev   *device
	lba   uint64
	count uint64
	write bool
	waits []chan struct{} // earlier overlapping requests to wait for
	done  chan struct{}   // made by a later overlapping request; closed when finished
}

// batchSize is how many frames a worker receives at once.
const batchSize = 32

// Stats returns a snapshot of the counters.
func (t *Target) Stats() Stats {
	return Stats{
		FramesIn: t.stats.in.Load(), FramesOut: t.stats.out.Load(), Ignored: t.stats.ignored.Load(),
		GroupSource: t.stats.group.Load(),
		ErrorsOut:   t.stats.errs.Load(), SectorsRead: t.stats.rd.Load(), SectorsWritten: t.stats.wr.Load(),
	}
}

func (t *Target) logger() *slog.Logger {
	if t.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Logger
}

// prepare validates the configuration and builds the serving state.
func (t *Target) prepare(pc net.PacketConn) error {
	if len(t.Devices) == 0 {
		return errors.New("aoe: target has no devices")
	}
	mtu := t.MTU
	if mtu == 0 {
		mtu = DefaultMTU
		if m, ok := pc.(interface{ MTU() int }); ok && m.MTU() > 0 {
			mtu = m.MTU()
		}
	}
	t.maxSect = min(255, (mtu-HeaderLen-ATAArgLen)/SectorSize)
	if t.maxSect < 1 {
		return fmt.Errorf("aoe: MTU %d too small for one sector", mtu)
	}
	t.bufSize = max(mtu, HeaderLen+ATAArgLen+t.maxSect*SectorSize, MinPayload)
	if a, ok := pc.LocalAddr().(*packet.Addr); ok {
		t.mac = a.HardwareAddr
	}
	host, _ := os.Hostname()
	seen := map[[2]int]bool{}
	t.devs = t.devs[:0]
	for _, d := range t.Devices {
		if d == nil || d.Backend == nil {
			return errors.New("aoe: device without a backend")
		}
		name := fmt.Sprintf("e%d.%d", d.Shelf, d.Slot)
		if d.Shelf == BroadcastShelf || d.Slot == BroadcastSlot {
			return fmt.Errorf("aoe: device %s uses a broadcast address", name)
		}
		if seen[[2]int{int(d.Shelf), int(d.Slot)}] {
			return fmt.Errorf("aoe: device %s configured twice", name)
		}
		seen[[2]int{int(d.Shelf), int(d.Slot)}] = true
		size := d.Backend.Size()
		if d.Offset < 0 || d.Offset%SectorSize != 0 || d.Length < 0 || d.Length%SectorSize != 0 {
			return fmt.Errorf("aoe: device %s: offset %d and length %d must be non-negative multiples of %d",
				name, d.Offset, d.Length, SectorSize)
		}
		length := d.Length
		if length == 0 {
			length = size - d.Offset
		}
		if err := backend.CheckRange("export", d.Offset, length, size); err != nil || length < SectorSize {
			return fmt.Errorf("aoe: device %s: window %d+%d does not fit backend size %d", name, d.Offset, length, size)
		}
		if len(d.Config) > MaxConfigLen {
			return fmt.Errorf("aoe: device %s: config string of %d bytes exceeds %d", name, len(d.Config), MaxConfigLen)
		}
		if len(d.Mask) > MaxMaskList {
			return fmt.Errorf("aoe: device %s: %d mask entries exceed %d", name, len(d.Mask), MaxMaskList)
		}
		dv := &device{
			Device:   d,
			sectors:  uint64(length / SectorSize),
			writable: !d.ReadOnly && backend.IsWritable(d.Backend),
			config:   slices.Clone(d.Config),
			seen:     map[[6]byte]struct{}{},
		}
		for _, m := range d.Mask {
			if len(m) != 6 {
				return fmt.Errorf("aoe: device %s: mask address %q is not a MAC", name, m)
			}
			dv.mask = append(dv.mask, slices.Clone(m))
		}
		dv.ident = Identify{Serial: d.Serial, Firmware: d.Firmware, Model: d.Model, Sectors: dv.sectors}
		if dv.ident.Serial == "" {
			dv.ident.Serial = fmt.Sprintf("%d.%d:%s", d.Shelf, d.Slot, host)
		}
		if dv.ident.Firmware == "" {
			dv.ident.Firmware = "netroot"
		}
		if dv.ident.Model == "" {
			dv.ident.Model = "netroot AoE target"
		}
		t.devs = append(t.devs, dv)
	}
	return nil
}

// Serve answers AoE messages on pc until Shutdown or Close, then returns ErrServerClosed.
// pc's addresses are *packet.Addr and its payloads start at the AoE header.
func (t *Target) Serve(pc net.PacketConn) error {
	t.mu.Lock()
	if t.closed.Load() || t.shutdown.Load() {
		t.mu.Unlock()
		return ErrServerClosed
	}
	if t.serving {
		t.mu.Unlock()
		return errors.New("aoe: target is already serving")
	}
	if err := t.prepare(pc); err != nil {
		t.mu.Unlock()
		return err
	}
	t.serving, t.pc, t.stop, t.served = true, pc, make(chan struct{}), make(chan struct{})
	workers := t.Workers
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	t.mu.Unlock()

	log := t.logger()
	for _, d := range t.devs {
		log.Info("aoe: serving device", "device", fmt.Sprintf("e%d.%d", d.Shelf, d.Slot),
			"sectors", d.sectors, "writable", d.writable, "sectors_per_frame", t.maxSect, "mac", t.mac.String())
	}
	var announcer sync.WaitGroup
	announcer.Go(t.announceLoop)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { errs <- t.worker(pc) })
	}
	wg.Wait()
	close(t.served)
	close(t.stop)
	announcer.Wait()
	close(errs)
	err := ErrServerClosed
	for e := range errs {
		if !errors.Is(e, ErrServerClosed) {
			err = e
		}
	}
	return err
}

func (t *Target) bufferCount() int {
	if t.BufferCount > 0 {
		return min(t.BufferCount, 0xFFFF)
	}
	return DefaultBufferCount
}

// slowRequest is the average execution time per ATA request above which a worker lets the
// next worker receive while it executes. Below it (page-cache reads and writes), one worker
// keeps receiving and executing, which saves waking another goroutine for every batch.
const slowRequest = 25 * time.Microsecond

// worker receives a batch of frames, one worker at a time so that requests are registered in
// arrival order, and executes the batch's ATA commands. While the backend is fast it keeps the
// receive lock; once requests turn slow it releases the lock before executing, so that other
// workers receive and execute concurrently.
func (t *Target) worker(pc net.PacketConn) error {
	fio := newFrameIO(pc)
	rx := make([]frame, batchSize)
	for i := range rx {
		rx[i].buf = dataAligned(t.bufSize)
	}
	reqs := make([]request, batchSize)
	todo := make([]*request, 0, batchSize)
	tx := make([]frame, 0, batchSize)
	holding := false
	for {
		if !holding {
			t.rxMu.Lock()
		}
		n, err := fio.recv(rx)
		if err != nil {
			t.rxMu.Unlock()
			holding = false
			if t.closed.Load() || t.shutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("aoe: read: %w", err)
		}
		todo = todo[:0]
		for i := range n {
			t.stats.in.Add(1)
			r := &reqs[i]
			r.buf, r.n, r.addr = rx[i].buf, rx[i].n, rx[i].addr
			if t.dispatch(r) {
				todo = append(todo, r)
			}
		}
		holding = len(todo) == 0 || !t.slow.Load()
		if !holding {
			t.rxMu.Unlock()
		}
		start := time.Now()
		tx = tx[:0]
		for _, r := range todo {
			tx = append(tx, frame{buf: t.execute(r), addr: r.addr})
			if len(tx) == cap(tx)/2 {
				t.sendBatch(fio, tx)
				tx = tx[:0]
			}
		}
		t.sendBatch(fio, tx)
		if len(todo) > 0 {
			t.observe(time.Since(start) / time.Duration(len(todo)))
		}
	}
}

// observe folds the execution time per request of a batch into a moving average and switches
// between keeping and releasing the receive lock, with hysteresis so that a worker preempted
// on a busy machine does not flip it.
func (t *Target) observe(per time.Duration) {
	avg := time.Duration(t.avgExec.Load())
	avg += (per - avg) / 8
	t.avgExec.Store(int64(avg))
	switch slow := t.slow.Load(); {
	case !slow && avg > slowRequest:
		t.slow.Store(true)
	case slow && avg < slowRequest/2:
		t.slow.Store(false)
	}
}

// pageSize is the alignment of the sector data in receive buffers.
const pageSize = 4096

// dataAligned returns a buffer of n bytes whose sector data (after the AoE and ATA headers)
// starts on a page boundary, as vblade arranges too, so that O_DIRECT backends read and write
// it in place instead of through bounce buffers.
func dataAligned(n int) []byte {
	raw := make([]byte, n+pageSize)
	addr := uintptr(unsafe.Pointer(&raw[0])) + HeaderLen + ATAArgLen
	off := int((pageSize - addr%pageSize) % pageSize)
	return raw[off : off+n : off+n]
}

func (t *Target) sendBatch(fio frameIO, tx []frame) {
	if len(tx) == 0 {
		return
	}
	if err := fio.send(tx); err != nil {
		if !t.closed.Load() {
			t.logger().Warn("aoe: write failed", "err", err)
		}
		return
	}
	t.stats.out.Add(uint64(len(tx)))
}

// dispatch handles one received frame; it reports whether r is an ATA command to execute.
func (t *Target) dispatch(r *request) bool {
	b := r.buf[:r.n]
	var h Header
	// Kept in r rather than allocated for every frame.
	r.src = packet.Addr{HardwareAddr: r.addr[:]}
	src := &r.src
	if r.addr[0]&1 != 0 {
		// The group bit of a source address: see Stats.GroupSource.
		t.stats.group.Add(1)
		t.stats.ignored.Add(1)
		return false
	}
	if h.UnmarshalBinary(b) != nil || h.Response() {
		t.stats.ignored.Add(1)
		return false
	}
	broadcast := h.Major == BroadcastShelf || h.Minor == BroadcastSlot
	answered := false
	for _, d := range t.devs {
		if (h.Major != d.Shelf && h.Major != BroadcastShelf) || (h.Minor != d.Slot && h.Minor != BroadcastSlot) {
			continue
		}
		if !d.allowed(src.HardwareAddr) {
			continue
		}
		if h.Version != Version {
			// Only Query Config gets an answer from every device on a broadcast; anything else
			// in an unknown version is answered once, by the addressed device.
			if broadcast && h.Command != CommandQueryConfig {
				continue
			}
			answered = t.replyError(d, src, b, ErrUnsupportedVersion) || answered
			continue
		}
		switch h.Command {
		case CommandATA:
			if broadcast {
				continue
			}
			return t.queueATA(d, r, src)
		case CommandQueryConfig:
			answered = t.queryConfig(d, src, &h, b) || answered
		case CommandMACMaskList:
			answered = t.maskList(d, src, &h, b) || answered
		case CommandReserveRelease:
			answered = t.reserveRelease(d, src, &h, b) || answered
		default:
			answered = t.replyError(d, src, b, ErrUnrecognizedCommand) || answered
		}
	}
	if !answered {
		t.stats.ignored.Add(1)
	}
	return false
}

// allowed applies the MAC mask list.
func (d *device) allowed(mac net.HardwareAddr) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.mask) == 0 || containsMAC(d.mask, mac)
}

func containsMAC(list []net.HardwareAddr, mac net.HardwareAddr) bool {
	return slices.ContainsFunc(list, func(m net.HardwareAddr) bool { return bytes.Equal(m, mac) })
}

// response completes the header of a response built in b (header first) for device d and
// pads it.
func (t *Target) response(d *device, b []byte) []byte {
	b[0] = Version<<4 | b[0]&0xF | uint8(FlagResponse)
	b[2], b[3], b[4] = byte(d.Shelf>>8), byte(d.Shelf), d.Slot
	if b[0]&uint8(FlagError) != 0 {
		t.stats.errs.Add(1)
	}
	return pad(b)
}

// send writes a response built in b from device d to dst.
func (t *Target) send(d *device, dst net.Addr, b []byte) bool {
	b = t.response(d, b)
	if _, err := t.pc.WriteTo(b, dst); err != nil {
		if !t.closed.Load() {
			t.logger().Warn("aoe: write failed", "to", dst.String(), "err", err)
		}
		return false
	}
	t.stats.out.Add(1)
	return true
}

// replyError echoes the request with the E flag and code e.
func (t *Target) replyError(d *device, dst net.Addr, req []byte, e Error) bool {
	b := slices.Clone(req)
	b[0] |= uint8(FlagError)
	b[1] = uint8(e)
	return t.send(d, dst, b)
}

func (t *Target) reply(d *device, dst net.Addr, h *Header, arg Arg) bool {
	b, err := (&Message{Header: *h, Arg: arg}).AppendBinary(make([]byte, 0, 64))
	if err != nil {
		t.logger().Error("aoe: encoding response", "err", err)
		return false
	}
	return t.send(d, dst, b)
}

func (t *Target) configArg(d *device, cmd ConfigCommand) *ConfigArg {
	return &ConfigArg{
		BufferCount:     uint16(t.bufferCount()),
		FirmwareVersion: orDefault(t.FirmwareVersion, DefaultFirmwareVersion),
		SectorCount:     uint8(t.maxSect),
		Version:         Version,
		Command:         cmd,
		String:          slices.Clone(d.config),
	}
}

func orDefault(v, def uint16) uint16 {
	if v == 0 {
		return def
	}
	return v
}

func (t *Target) queryConfig(d *device, src *packet.Addr, h *Header, b []byte) bool {
	var req ConfigArg
	if req.UnmarshalBinary(b[HeaderLen:]) != nil {
		return false
	}
	d.mu.Lock()
	var rh = *h
	switch req.Command {
	case ConfigRead:
		t.discovered(d, src.HardwareAddr)
	case ConfigTest:
		if !bytes.Equal(req.String, d.config) {
			d.mu.Unlock()
			return false
		}
	case ConfigTestPrefix:
		if !bytes.HasPrefix(d.config, req.String) {
			d.mu.Unlock()
			return false
		}
	case ConfigSet:
		if len(d.config) != 0 && !bytes.Equal(d.config, req.String) {
			rh.Flags |= FlagError
			rh.Error = ErrConfigStringPresent
			break
		}
		d.config = slices.Clone(req.String)
	case ConfigForceSet:
		d.config = slices.Clone(req.String)
	default:
		rh.Flags |= FlagError
		rh.Error = ErrBadArgument
	}
	arg := t.configArg(d, req.Command)
	d.mu.Unlock()
	return t.reply(d, src, &rh, arg)
}

// discovered logs and reports the first config read from an initiator; d.mu is held.
func (t *Target) discovered(d *device, mac net.HardwareAddr) {
	var k [6]byte
	copy(k[:], mac)
	if _, ok := d.seen[k]; ok {
		return
	}
	if len(d.seen) >= 4096 {
		clear(d.seen)
	}
	d.seen[k] = struct{}{}
	if ok, held := t.discLog.take(time.Now()); ok {
		log := t.logger()
		if held > 0 {
			log.Info("aoe: initiator discoveries not logged", "count", held, "limit", discoverLogBurst,
				"per", discoverLogWindow)
		}
		log.Info("aoe: initiator discovered device", "device", fmt.Sprintf("e%d.%d", d.Shelf, d.Slot),
			"initiator", mac.String())
	}
	if t.OnDiscover != nil {
		t.OnDiscover(d.Device, slices.Clone(mac))
	}
}

func (t *Target) maskList(d *device, src *packet.Addr, h *Header, b []byte) bool {
	var req MaskArg
	if req.UnmarshalBinary(b[HeaderLen:]) != nil {
		return false
	}
	rh := *h
	resp := &MaskArg{Command: req.Command}
	d.mu.Lock()
	switch req.Command {
	case MaskEdit:
		for i, dir := range req.Directives {
			switch dir.Command {
			case DirectiveNone:
			case DirectiveAdd:
				if containsMAC(d.mask, dir.MAC) {
					continue
				}
				if len(d.mask) >= MaxMaskList {
					resp.Error = MaskErrListFull
				} else {
					d.mask = append(d.mask, dir.MAC)
				}
			case DirectiveDelete:
				d.mask = slices.DeleteFunc(d.mask, func(m net.HardwareAddr) bool { return bytes.Equal(m, dir.MAC) })
			default:
				resp.Error = MaskErrBadDirective
			}
			if resp.Error != 0 {
				// The directives before the failing one stay applied; the response's
				// directive count names the failing one.
				resp.Directives = req.Directives[:i]
				break
			}
		}
		if resp.Error != 0 {
			break
		}
		fallthrough
	case MaskRead:
		for _, m := range d.mask {
			resp.Directives = append(resp.Directives, Directive{Command: DirectiveNone, MAC: m})
		}
	default:
		rh.Flags |= FlagError
		rh.Error = ErrBadArgument
	}
	d.mu.Unlock()
	return t.reply(d, src, &rh, resp)
}

func (t *Target) reserveRelease(d *device, src *packet.Addr, h *Header, b []byte) bool {
	var req ReserveArg
	rh := *h
	if req.UnmarshalBinary(b[HeaderLen:]) != nil {
		return t.replyError(d, src, b, ErrBadArgument)
	}
	d.mu.Lock()
	switch req.Command {
	case ReserveRead:
	case ReserveSet:
		if len(d.reserve) != 0 && !containsMAC(d.reserve, src.HardwareAddr) {
			rh.Flags |= FlagError
			rh.Error = ErrTargetReserved
			break
		}
		d.reserve = req.MACs
	case ReserveForceSet:
		d.reserve = req.MACs
	default:
		rh.Flags |= FlagError
		rh.Error = ErrBadArgument
	}
	resp := &ReserveArg{Command: req.Command, MACs: slices.Clone(d.reserve)}
	d.mu.Unlock()
	return t.reply(d, src, &rh, resp)
}

// queueATA checks an ATA request and registers it to run after earlier requests that touch
// the same sectors when either of them writes.
func (t *Target) queueATA(d *device, r *request, src *packet.Addr) bool {
	b := r.buf[:r.n]
	if len(b) < HeaderLen+ATAArgLen {
		t.stats.ignored.Add(1)
		return false
	}
	cmdCode := b[HeaderLen+3]
	if cmdCode != ATAIdentifyDevice {
		d.mu.Lock()
		reserved := len(d.reserve) != 0 && !containsMAC(d.reserve, src.HardwareAddr)
		d.mu.Unlock()
		if reserved {
			t.replyError(d, src, b[:HeaderLen+ATAArgLen], ErrTargetReserved)
			return false
		}
	}
	r.dev, r.waits, r.done, r.count = d, r.waits[:0], nil, 0
	switch cmdCode {
	case ATAReadSectors, ATAReadSectorsExt, ATAWriteSectors, ATAWriteSectorsExt:
		var a ATAArg
		_ = a.UnmarshalBinary(b[HeaderLen:])
		r.lba, r.count = ataLBA(cmdCode, a.LBA), uint64(a.SectorCount)
		r.write = cmdCode == ATAWriteSectors || cmdCode == ATAWriteSectorsExt
	}
	if r.count > 0 {
		d.omu.Lock()
		for _, o := range d.ops {
			if (o.write || r.write) && o.lba < r.lba+r.count && r.lba < o.lba+o.count {
				if o.done == nil {
					o.done = make(chan struct{})
				}
				r.waits = append(r.waits, o.done)
			}
		}
		d.ops = append(d.ops, r)
		d.omu.Unlock()
	}
	return true
}

func ataLBA(cmd uint8, lba uint64) uint64 {
	if cmd == ATAReadSectors || cmd == ATAWriteSectors {
		return lba & maxLBA28
	}
	return lba & maxLBA48
}

// execute runs one ATA command and returns its response, built in place in r.buf.
func (t *Target) execute(r *request) []byte {
	for _, w := range r.waits {
		<-w
	}
	d := r.dev
	b := r.buf
	arg := b[HeaderLen : HeaderLen+ATAArgLen]
	cmdCode, reqCount := arg[3], int(arg[2])
	data := b[HeaderLen+ATAArgLen : r.n]
	status, errReg, count := uint8(ATAStatusReady), uint8(0), uint8(0)
	outData := 0
	aoeErr := Error(0)
	switch cmdCode {
	case ATAReadSectors, ATAReadSectorsExt, ATAWriteSectors, ATAWriteSectorsExt:
		write := r.write
		switch {
		case reqCount > t.maxSect || (write && len(data) < reqCount*SectorSize):
			aoeErr = ErrBadArgument
		case r.lba+r.count > d.sectors:
			status, errReg = ATAStatusReady|ATAStatusError, ATAErrorIDNotFound
		case write && !d.writable:
			status, errReg = ATAStatusReady|ATAStatusError, ATAErrorAbort
		default:
			off := d.Offset + int64(r.lba)*SectorSize
			n := reqCount * SectorSize
			var err error
			if write {
				_, err = d.Backend.(io.WriterAt).WriteAt(data[:n], off)
				t.stats.wr.Add(uint64(reqCount))
			} else {
				p := b[HeaderLen+ATAArgLen : HeaderLen+ATAArgLen+n]
				var m int
				m, err = d.Backend.ReadAt(p, off)
				if m == n && err == io.EOF {
					err = nil
				}
				outData = n
				t.stats.rd.Add(uint64(reqCount))
			}
			if err != nil {
				t.logger().Error("aoe: backend I/O failed", "device", fmt.Sprintf("e%d.%d", d.Shelf, d.Slot),
					"lba", r.lba, "sectors", reqCount, "write", write, "err", err)
				status, errReg, outData = ATAStatusReady|ATAStatusError, ATAErrorAbort, 0
				if !write {
					errReg = ATAErrorUncorrectable
				}
			}
		}
	case ATAIdentifyDevice:
		if t.maxSect < 1 {
			aoeErr = ErrBadArgument
			break
		}
		identifyData(b[HeaderLen+ATAArgLen:], &d.ident)
		outData = SectorSize
	case ATACheckPowerMode:
		count = 0xFF // active or idle
	case ATAFlushCache, ATAFlushCacheExt:
		if s, ok := d.Backend.(backend.Syncer); ok && d.writable {
			if err := s.Sync(); err != nil {
				t.logger().Error("aoe: flush failed", "device", fmt.Sprintf("e%d.%d", d.Shelf, d.Slot), "err", err)
				status, errReg = ATAStatusReady|ATAStatusError, ATAErrorAbort
			}
		}
	default:
		status, errReg = ATAStatusReady|ATAStatusError, ATAErrorAbort
	}
	t.finish(r)
	if aoeErr != 0 {
		b[0] |= uint8(FlagError)
		b[1] = uint8(aoeErr)
	} else {
		arg[1], arg[2], arg[3] = errReg, count, status
		if status&ATAStatusError != 0 {
			t.stats.errs.Add(1)
		}
	}
	return t.response(d, b[:HeaderLen+ATAArgLen+outData])
}

// finish removes r from its device's ordering list and releases requests waiting on it.
func (t *Target) finish(r *request) {
	if r.count == 0 {
		return
	}
	d := r.dev
	d.omu.Lock()
	if i := slices.Index(d.ops, r); i >= 0 {
		d.ops = slices.Delete(d.ops, i, i+1)
	}
	if r.done != nil {
		close(r.done)
	}
	d.omu.Unlock()
}

func (t *Target) announceLoop() {
	t.announce()
	iv := t.AnnounceInterval
	if iv == 0 {
		iv = DefaultAnnounceInterval
	}
	if iv < 0 {
		return
	}
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.announce()
		}
	}
}

// announce broadcasts each device's Query Config response, or sends it to each masked host
// when the device has a mask list.
func (t *Target) announce() {
	for _, d := range t.devs {
		d.mu.Lock()
		arg := t.configArg(d, ConfigRead)
		dsts := []net.HardwareAddr{Broadcast}
		if len(d.mask) > 0 {
			dsts = slices.Clone(d.mask)
		}
		d.mu.Unlock()
		h := Header{Version: Version, Flags: FlagResponse, Major: d.Shelf, Minor: d.Slot, Command: CommandQueryConfig}
		for _, dst := range dsts {
			t.reply(d, &packet.Addr{HardwareAddr: dst}, &h, arg)
		}
	}
}

// Shutdown stops reading new frames, waits for the ATA commands already received to be
// answered or for ctx to end, and closes the PacketConn. Serve returns ErrServerClosed.
func (t *Target) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	t.shutdown.Store(true)
	pc, served := t.pc, t.served
	t.mu.Unlock()
	if pc == nil {
		t.closed.Store(true)
		return nil
	}
	_ = pc.SetReadDeadline(time.Now())
	var err error
	select {
	case <-served:
	case <-ctx.Done():
		err = ctx.Err()
	}
	t.closed.Store(true)
	if cerr := pc.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = fmt.Errorf("aoe: close: %w", cerr)
	}
	return err
}

// Close closes the PacketConn at once; Serve returns ErrServerClosed and queued ATA commands
// go unanswered.
func (t *Target) Close() error {
	t.mu.Lock()
	t.closed.Store(true)
	pc := t.pc
	t.mu.Unlock()
	if pc == nil {
		return nil
	}
	if err := pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("aoe: close: %w", err)
	}
	return nil
}

// Bounds of the "initiator discovered device" log lines: a flood of frames from forged source
// addresses would otherwise log one line per address.
const (
	discoverLogBurst  = 16
	discoverLogWindow = time.Minute
)

// logLimit allows discoverLogBurst log lines per discoverLogWindow and counts the others.
type logLimit struct {
	mu    sync.Mutex
	start time.Time
	n     int // lines logged in the window that began at start
	held  int // lines held back since the last one logged
}

// take reports whether a line may be logged now and, when it may, how many were held back
// before it.
func (l *logLimit) take(now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= discoverLogWindow {
		l.start, l.n = now, 0
	}
	if l.n >= discoverLogBurst {
		l.held++
		return false, 0
	}
	l.n++
	held, l.held = l.held, 0
	return true, held
}
