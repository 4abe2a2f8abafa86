package aoe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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

// DeviceAddr returns the device's shelf and slot.
func (d *Device) DeviceAddr() DeviceAddr { return DeviceAddr{Shelf: d.Shelf, Slot: d.Slot} }

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
	bufCount uint16 // BufferCount or its default
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
	pcMTU := 0
	if m, ok := pc.(interface{ MTU() int }); ok {
		pcMTU = max(m.MTU(), 0)
	}
	mtu := cmp.Or(t.MTU, pcMTU, DefaultMTU)
	t.bufCount = uint16(min(cmp.Or(max(t.BufferCount, 0), DefaultBufferCount), 0xFFFF))
	t.maxSect = min(255, (mtu-HeaderLen-ATAArgLen)/SectorSize)
	if t.maxSect < 1 {
		return fmt.Errorf("aoe: MTU %d too small for one sector", mtu)
	}
	t.bufSize = max(mtu, HeaderLen+ATAArgLen+t.maxSect*SectorSize, MinPayload)
	if a, ok := pc.LocalAddr().(*packet.Addr); ok {
		t.mac = a.HardwareAddr
	}
	host, _ := os.Hostname()
	seen := map[DeviceAddr]bool{}
	t.devs = t.devs[:0]
	for _, d := range t.Devices {
		if d == nil || d.Backend == nil {
			return errors.New("aoe: device without a backend")
		}
		name := d.DeviceAddr()
		if name.Broadcast() {
			return fmt.Errorf("aoe: device %s uses a broadcast address", name)
		}
		if seen[name] {
			return fmt.Errorf("aoe: device %s configured twice", name)
		}
		seen[name] = true
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
		log.Info("aoe: serving device", "device", d.DeviceAddr(),
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

func (t *Target) announceLoop() {
	t.announce()
	iv := cmp.Or(t.AnnounceInterval, DefaultAnnounceInterval)
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
