package aoe

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/mdlayher/packet"
)

// ATAError is an ATA command that the target executed and that failed: the status register
// has ERR set.
type ATAError struct {
	Command uint8
	LBA     uint64
	Status  uint8
	Err     uint8
}

func (e *ATAError) Error() string {
	what := ""
	switch {
	case e.Err&ATAErrorIDNotFound != 0:
		what = " (IDNF: address not found)"
	case e.Err&ATAErrorAbort != 0:
		what = " (ABRT: aborted)"
	case e.Err&ATAErrorUncorrectable != 0:
		what = " (UNC: uncorrectable)"
	}
	return fmt.Sprintf("aoe: ATA command %#02x at LBA %d: status %#02x error %#02x%s", e.Command, e.LBA, e.Status, e.Err, what)
}

// Disk is a device on a target, opened by Client.Open. It implements io.ReaderAt and
// io.WriterAt for whole sectors, splitting large transfers into frames with many in flight.
type Disk struct {
	c *Client
	// Target is the device's address and Query Config response.
	Target TargetInfo
	// Identify is the device's decoded IDENTIFY DEVICE data.
	Identify Identify
	// SectorsPerFrame is the sectors carried per ATA frame: the least of the target's sector
	// count, the local MTU's and ClientConfig.MaxSectors.
	SectorsPerFrame int
	// InFlight is the most requests one transfer keeps outstanding.
	InFlight int
	dst      *packet.Addr
}

var (
	_ io.ReaderAt = (*Disk)(nil)
	_ io.WriterAt = (*Disk)(nil)
)

// Open finds device shelf.slot by broadcast discovery, reads its IDENTIFY data and returns it
// ready for I/O.
func (c *Client) Open(ctx context.Context, shelf uint16, slot uint8) (*Disk, error) {
	addr := DeviceAddr{Shelf: shelf, Slot: slot}
	if addr.Broadcast() {
		return nil, fmt.Errorf("aoe: open %s: a broadcast address names no single device", addr)
	}
	var found []TargetInfo
	var err error
	for try := 0; len(found) == 0; try++ {
		if try > c.cfg.Retries {
			return nil, fmt.Errorf("aoe: open %s: %w", addr, ErrNoResponse)
		}
		found, err = c.discover(ctx, shelf, slot, c.rto(try+1), true)
		if err != nil {
			return nil, err
		}
	}
	return c.OpenTarget(ctx, found[0])
}

// OpenTarget opens a device found by Discover.
func (c *Client) OpenTarget(ctx context.Context, ti TargetInfo) (*Disk, error) {
	d := &Disk{c: c, Target: ti, dst: &packet.Addr{HardwareAddr: slices.Clone(ti.Addr)}}
	d.SectorsPerFrame = max(1, min(int(ti.Config.SectorCount), (c.mtu-HeaderLen-ATAArgLen)/SectorSize))
	if c.cfg.MaxSectors > 0 {
		d.SectorsPerFrame = min(d.SectorsPerFrame, c.cfg.MaxSectors)
	}
	d.InFlight = c.cfg.MaxInFlight
	if ti.Config.BufferCount > 0 {
		d.InFlight = min(d.InFlight, int(ti.Config.BufferCount))
	}
	data := make([]byte, SectorSize)
	a, err := d.ATA(ctx, &ATAArg{CmdStatus: ATAIdentifyDevice, SectorCount: 1}, data)
	if err != nil {
		return nil, fmt.Errorf("aoe: open %s: identify: %w", ti, err)
	}
	if len(a.Data) < SectorSize {
		return nil, fmt.Errorf("aoe: open %s: identify returned %d bytes", ti, len(a.Data))
	}
	if d.Identify, err = ParseIdentify(a.Data); err != nil {
		return nil, fmt.Errorf("aoe: open %s: %w", ti, err)
	}
	return d, nil
}

// Size is the device size in bytes.
func (d *Disk) Size() int64 { return int64(d.Identify.Sectors) * SectorSize }

// ATA runs one ATA command and returns the target's answer. For writes, a.Data is sent; for
// other commands, response data is copied into data (which may be nil) and returned as the
// answer's Data. A response with FlagError returns the AoE Error; an ATA status with ERR set
// returns *ATAError along with the answer.
func (d *Disk) ATA(ctx context.Context, a *ATAArg, data []byte) (*ATAArg, error) {
	tag := d.c.nextTag()
	h := Header{Version: Version, Major: d.Target.Shelf, Minor: d.Target.Slot, Command: CommandATA, Tag: tag}
	frame, err := (&Message{Header: h, Arg: a}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	cl := &call{tag: tag, cmd: CommandATA, major: h.Major, minor: h.Minor, dst: d.dst, frame: frame,
		done: make(chan *call, 1), rbuf: data}
	if err := d.c.roundTrip(ctx, cl); err != nil {
		return nil, err
	}
	if cl.flags&FlagError != 0 {
		return nil, fmt.Errorf("aoe: ATA command %#02x on %s: %w", a.CmdStatus, d.Target, cl.aoeErr)
	}
	regs := ataRegs(cl.ata[:])
	r := &ATAArg{ErrFeature: regs.errFeature(), SectorCount: regs.count(), CmdStatus: regs.cmdStatus(), LBA: a.LBA,
		Data: data[:cl.gotData]}
	if r.CmdStatus&ATAStatusError != 0 {
		return r, &ATAError{Command: a.CmdStatus, LBA: a.LBA, Status: r.CmdStatus, Err: r.ErrFeature}
	}
	return r, nil
}

// Config runs a Query Config subcommand with config string str on the device and returns the
// target's answer. ConfigTest and ConfigTestPrefix get no answer when the string does not
// match: they fail with ErrNoResponse (or ctx's error). A conflicting ConfigSet returns
// ErrConfigStringPresent along with the answer, which holds the present string.
func (d *Disk) Config(ctx context.Context, cmd ConfigCommand, str []byte) (*ConfigArg, error) {
	r, err := d.c.Do(ctx, d.dst.HardwareAddr, &Message{
		Header: Header{Version: Version, Major: d.Target.Shelf, Minor: d.Target.Slot, Command: CommandQueryConfig},
		Arg:    &ConfigArg{Command: cmd, String: str},
	})
	if err != nil {
		return nil, err
	}
	a, _ := r.Arg.(*ConfigArg)
	if r.Flags&FlagError != 0 {
		return a, fmt.Errorf("aoe: Query Config on %s: %w", d.Target, r.Error)
	}
	if a == nil {
		return nil, fmt.Errorf("aoe: Query Config on %s: malformed response", d.Target)
	}
	return a, nil
}

// Flush asks the target to make completed writes durable, with FLUSH CACHE EXT when IDENTIFY
// advertises it and FLUSH CACHE otherwise.
func (d *Disk) Flush(ctx context.Context) error {
	a := &ATAArg{CmdStatus: ATAFlushCache}
	if d.Identify.FlushExt {
		a = &ATAArg{Extended: true, CmdStatus: ATAFlushCacheExt}
	}
	_, err := d.ATA(ctx, a, nil)
	return err
}

// ReadAt implements io.ReaderAt; off and len(p) must be multiples of SectorSize.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	return d.ReadAtContext(context.Background(), p, off)
}

// WriteAt implements io.WriterAt; off and len(p) must be multiples of SectorSize.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	return d.WriteAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes at off. Reads past the end return what lies before it and
// io.EOF.
func (d *Disk) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := d.check("read", p, off); err != nil {
		return 0, err
	}
	n := len(p)
	var eof error
	if size := d.Size(); off+int64(n) > size {
		n = int(max(0, size-off))
		eof = io.EOF
	}
	if err := d.transfer(ctx, p[:n], off, false); err != nil {
		return 0, err
	}
	return n, eof
}

// WriteAtContext writes p at off.
func (d *Disk) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := d.check("write", p, off); err != nil {
		return 0, err
	}
	if err := d.transfer(ctx, p, off, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *Disk) check(op string, p []byte, off int64) error {
	if off < 0 || off%SectorSize != 0 || len(p)%SectorSize != 0 {
		return fmt.Errorf("aoe: %s %d+%d on %s: not whole %d-byte sectors", op, off, len(p), d.Target, SectorSize)
	}
	return nil
}

// transfer moves p to or from the device at off with up to InFlight frames outstanding,
// retransmitting frames whose response is late.
func (d *Disk) transfer(ctx context.Context, p []byte, off int64, write bool) error {
	if len(p) == 0 {
		return nil
	}
	c := d.c
	spf := d.SectorsPerFrame
	frameBytes := spf * SectorSize
	nframes := (len(p) + frameBytes - 1) / frameBytes
	window := min(d.InFlight, nframes)
	done := make(chan *call, window)
	calls := make([]*call, 0, window) // in flight
	free := make([]*call, 0, window)  // finished, reusable
	lba0 := uint64(off / SectorSize)
	next := 0
	finished := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer func() {
		for _, cl := range calls {
			c.forget(cl)
		}
	}()
	cmd := uint8(ATAReadSectorsExt)
	if write {
		cmd = ATAWriteSectorsExt
	}
	var batch []*call
	for finished < nframes {
		batch = batch[:0]
		for len(calls) < window && next < nframes {
			var cl *call
			if k := len(free); k > 0 {
				cl, free = free[k-1], free[:k-1]
			} else {
				cl = &call{cmd: CommandATA, major: d.Target.Shelf, minor: d.Target.Slot, dst: d.dst, done: done}
				if write {
					// Sector data on a page boundary, for the kernel's aligned copy.
					cl.frame = aligned(HeaderLen+ATAArgLen+frameBytes, HeaderLen+ATAArgLen)[:0]
				} else {
					cl.frame = make([]byte, 0, MinPayload)
				}
			}
			start := next * frameBytes
			end := min(start+frameBytes, len(p))
			lba := lba0 + uint64(next*spf)
			cl.tag, cl.lba = c.nextTag(), lba
			a := ATAArg{Extended: true, Write: write, SectorCount: uint8((end - start) / SectorSize), CmdStatus: cmd, LBA: lba}
			if write {
				a.Data = p[start:end]
				cl.rbuf = nil
			} else {
				cl.rbuf = p[start:end]
			}
			h := Header{Version: Version, Major: d.Target.Shelf, Minor: d.Target.Slot, Command: CommandATA, Tag: cl.tag}
			cl.frame, _ = (&Message{Header: h, Arg: &a}).AppendBinary(cl.frame[:0])
			batch = append(batch, cl)
			calls = append(calls, cl)
			next++
		}
		if err := c.sendAll(batch); err != nil {
			return err
		}
		// Wait for the earliest retransmit deadline among the calls in flight. Only this
		// goroutine sends them, so it reads their tries and send times without c.mu.
		now := time.Now()
		base := c.rtoBase()
		wait := time.Hour
		for _, cl := range calls {
			wait = min(wait, cl.sent.Add(backoff(base, cl.tries)).Sub(now))
		}
		if wait <= 0 {
			wait = time.Microsecond
		}
		timer.Reset(wait)
		select {
		case cl := <-done:
			for {
				if err := d.completed(cl, write); err != nil {
					return err
				}
				calls = slices.DeleteFunc(calls, func(x *call) bool { return x == cl })
				free = append(free, cl)
				finished++
				select {
				case cl = <-done:
					continue
				default:
				}
				break
			}
		case <-timer.C:
			now := time.Now()
			base := c.rtoBase()
			for _, cl := range calls {
				tries := cl.tries
				if now.Sub(cl.sent) < backoff(base, tries) {
					continue
				}
				if tries > c.cfg.Retries {
					return fmt.Errorf("aoe: %s LBA %d on %s after %d tries: %w",
						map[bool]string{false: "read", true: "write"}[write], cl.lba, d.Target, tries, ErrNoResponse)
				}
				c.logger().Debug("aoe: retransmit", "target", d.Target.String(), "lba", cl.lba, "tries", tries)
				if err := c.resend(cl); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("aoe: transfer on %s: %w", d.Target, ctx.Err())
		}
	}
	return nil
}

// completed checks one answered frame of a transfer.
func (d *Disk) completed(cl *call, write bool) error {
	if cl.flags&FlagResponse == 0 {
		return fmt.Errorf("aoe: client closed: %w", net.ErrClosed)
	}
	if cl.flags&FlagError != 0 {
		return fmt.Errorf("aoe: ATA at LBA %d on %s: %w", cl.lba, d.Target, cl.aoeErr)
	}
	if regs := ataRegs(cl.ata[:]); regs.cmdStatus()&ATAStatusError != 0 {
		cmd := uint8(ATAReadSectorsExt)
		if write {
			cmd = ATAWriteSectorsExt
		}
		return &ATAError{Command: cmd, LBA: cl.lba, Status: regs.cmdStatus(), Err: regs.errFeature()}
	}
	if !write && cl.gotData < len(cl.rbuf) {
		return fmt.Errorf("aoe: read LBA %d on %s: %d of %d bytes returned", cl.lba, d.Target, cl.gotData, len(cl.rbuf))
	}
	return nil
}
