package aoe

import (
	"bytes"
	"cmp"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

// Dispatch of received frames and the commands other than ATA.
//
// dispatch reads the AoE header (AoEr11 section 2), picks the devices the frame addresses,
// applies each device's MAC mask list and answers Query Config (section 3.2), MAC Mask List
// (3.3) and Reserve/Release (3.4) at once. ATA commands (3.1) go on to queueATA (execute.go).

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
	return pad(t.respond(d, b))
}

// respond completes the header of a response for device d whose message starts b.
func (t *Target) respond(d *device, b []byte) []byte {
	b[0] = Version<<4 | b[0]&0xF | uint8(FlagResponse)
	b[2], b[3], b[4] = byte(d.Shelf>>8), byte(d.Shelf), d.Slot
	if b[0]&uint8(FlagError) != 0 {
		t.stats.errs.Add(1)
	}
	return b
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
		BufferCount:     t.bufCount,
		FirmwareVersion: cmp.Or(t.FirmwareVersion, DefaultFirmwareVersion),
		SectorCount:     uint8(t.maxSect),
		Version:         Version,
		Command:         cmd,
		String:          slices.Clone(d.config),
	}
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
		log.Info("aoe: initiator discovered device", "device", d.DeviceAddr(),
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
