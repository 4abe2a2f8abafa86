package aoe

import (
	"io"
	"slices"

	"github.com/mdlayher/packet"

	"github.com/netroot/netroot/backend"
)

// Ordering and execution of ATA commands.
//
// AoE has no connection and no ordering: an initiator keeps up to BufferCount tagged requests
// in flight and the target may answer them in any order. One thing must still hold: a request
// that overlaps an earlier one where either writes sees the earlier one's effect, as it would
// on a disk that runs commands one at a time (an initiator may send a READ of sectors while
// its WRITE of them is still in flight). queueATA registers each READ and WRITE
// in its device's ordering list in arrival order, under the receive lock (worker.go), and
// records which earlier requests it must wait for; execute waits for those, runs the command
// against the backend and builds the response in the receive buffer; finish releases the
// requests that waited. Requests that touch different sectors, or only read, run in parallel.

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

// queueATA checks an ATA request and registers it to run after earlier requests that touch
// the same sectors when either of them writes.
func (t *Target) queueATA(d *device, r *request, src *packet.Addr) bool {
	b := r.buf[:r.n]
	if len(b) < HeaderLen+ATAArgLen {
		t.stats.ignored.Add(1)
		return false
	}
	regs := ataRegs(b[HeaderLen:])
	cmdCode := regs.cmdStatus()
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
		r.lba, r.count = ataLBA(cmdCode, regs.lba()), uint64(regs.count())
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
	regs := ataRegs(b[HeaderLen : HeaderLen+ATAArgLen])
	cmdCode, reqCount := regs.cmdStatus(), int(regs.count())
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
				t.logger().Error("aoe: backend I/O failed", "device", d.DeviceAddr(),
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
				t.logger().Error("aoe: flush failed", "device", d.DeviceAddr(), "err", err)
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
		regs.setResult(errReg, count, status)
		if status&ATAStatusError != 0 {
			t.stats.errs.Add(1)
		}
	}
	return t.response(d, b[:HeaderLen+ATAArgLen+outData])
}

// readRun returns how many requests at the start of rs are READs of adjacent sectors of one
// device, each valid (so that it would get its data, not an error), whose data fit in room
// bytes. A run of more than one is executed by executeReads.
func (t *Target) readRun(rs []*request, room int) int {
	k, end := 0, uint64(0)
	for _, r := range rs {
		if !t.plainRead(r) || r.dev != rs[0].dev || (k > 0 && r.lba != end) || int(r.count)*SectorSize > room {
			break
		}
		room -= int(r.count) * SectorSize
		end = r.lba + r.count
		k++
	}
	return k
}

// plainRead reports whether r is a READ that execute would answer with its data.
func (t *Target) plainRead(r *request) bool {
	cmd := ataRegs(r.buf[HeaderLen:]).cmdStatus()
	return (cmd == ATAReadSectors || cmd == ATAReadSectorsExt) &&
		r.count > 0 && r.count <= uint64(t.maxSect) && r.lba+r.count <= r.dev.sectors
}

// executeReads runs a run of READs of adjacent sectors (see readRun) with one backend read
// into the start of buf, appends their responses to tx, each frame's data a slice of buf
// after its headers in its receive buffer, and returns tx and the rest of buf. Initiators
// read ahead in runs of adjacent frames, so this is one read where vblade makes one per frame.
// When the read fails, each request is executed on its own, to get its own answer.
func (t *Target) executeReads(rs []*request, buf []byte, tx []frame) ([]frame, []byte) {
	for _, r := range rs {
		for _, w := range r.waits {
			<-w
		}
	}
	d := rs[0].dev
	n := 0
	for _, r := range rs {
		n += int(r.count) * SectorSize
	}
	off := d.Offset + int64(rs[0].lba)*SectorSize
	m, err := d.Backend.ReadAt(buf[:n], off)
	if m == n && err == io.EOF {
		err = nil
	}
	if err != nil {
		for _, r := range rs {
			tx = append(tx, frame{buf: t.execute(r), addr: r.addr})
		}
		return tx, buf
	}
	for _, r := range rs {
		t.finish(r)
		ataRegs(r.buf[HeaderLen:]).setResult(0, 0, ATAStatusReady)
		l := int(r.count) * SectorSize
		t.stats.rd.Add(r.count)
		tx = append(tx, frame{buf: t.respond(r.dev, r.buf[:HeaderLen+ATAArgLen]), data: buf[:l:l], addr: r.addr})
		buf = buf[l:]
	}
	return tx, buf
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
