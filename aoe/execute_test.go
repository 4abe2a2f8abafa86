package aoe

import (
	"bytes"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/mdlayher/packet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
)

// stubConn is the PacketConn prepare looks at: only its MTU and address matter.
type stubConn struct {
	net.PacketConn
	mtu int
}

func (s stubConn) MTU() int { return s.mtu }
func (s stubConn) LocalAddr() net.Addr {
	return &packet.Addr{HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}}
}

// captureIO records the frames sent, each as one payload.
type captureIO struct{ sent [][]byte }

func (c *captureIO) recv([]frame) (int, error) { return 0, net.ErrClosed }

func (c *captureIO) send(frames []frame) error {
	for _, f := range frames {
		c.sent = append(c.sent, append(bytes.Clone(f.buf), f.data...))
	}
	return nil
}

// TestExecuteBatchRuns executes batches that mix runs of READs of adjacent sectors (read
// together) with other requests, and checks every response against the same requests
// executed one at a time.
func TestExecuteBatchRuns(t *testing.T) {
	const sectors = 256
	img := make([]byte, sectors*SectorSize)
	for i := range img {
		img[i] = byte(rand.N(256))
	}
	for _, mtu := range []int{1500, 9000} {
		mem := backend.NewMemoryFrom(bytes.Clone(img), false)
		tgt := &Target{Devices: []*Device{{Shelf: 1, Slot: 2, Backend: mem}, {Shelf: 1, Slot: 3, Backend: backend.NewMemory(1 << 16)}}}
		require.NoError(t, tgt.prepare(stubConn{mtu: mtu}))
		ms := tgt.maxSect
		type req struct {
			slot  uint8
			cmd   uint8
			lba   uint64
			count int
		}
		rd := uint8(ATAReadSectorsExt)
		batch := []req{
			{2, rd, 0, ms}, {2, rd, uint64(ms), ms}, {2, rd, uint64(2 * ms), 1}, // a run
			{2, rd, 100, ms}, // not adjacent: a run of its own
			{2, ATAReadSectors, uint64(100 + ms), ms}, // LBA28, adjacent
			{3, rd, uint64(100 + 2*ms), 1},            // other device
			{2, rd, sectors - 1, 2},                   // beyond the end
			{2, ATAWriteSectorsExt, 50, 1},
			{2, rd, 50, 1}, {2, rd, 51, 1}, // after the write
			{2, rd, 60, 0},
			{2, ATAIdentifyDevice, 0, 0},
			{2, rd, 70, ms + 1}, // too many sectors
			{2, rd, 71 + uint64(ms), 1},
		}
		build := func() []*request {
			var rs []*request
			for i, q := range batch {
				a := &ATAArg{Extended: q.cmd != ATAReadSectors, SectorCount: uint8(q.count), CmdStatus: q.cmd, LBA: q.lba}
				if q.cmd == ATAWriteSectorsExt {
					a.Write, a.Data = true, bytes.Repeat([]byte{0xAB}, q.count*SectorSize)
				}
				m, err := (&Message{Header: Header{Version: Version, Major: 1, Minor: q.slot, Command: CommandATA, Tag: uint32(i)}, Arg: a}).MarshalBinary()
				require.NoError(t, err)
				r := &request{buf: aligned(tgt.bufSize, HeaderLen+ATAArgLen), addr: [6]byte{2, 0, 0, 0, 0, 1}}
				r.n = copy(r.buf, m)
				require.True(t, tgt.dispatch(r), "request %d is executed", i)
				rs = append(rs, r)
			}
			return rs
		}

		var io captureIO
		tgt.executeBatch(&io, build(), aligned(batchSize*ms*SectorSize, 0), nil)
		require.Len(t, io.sent, len(batch))
		batchRead := tgt.Stats().SectorsRead
		assert.Greater(t, batchRead, uint64(4*ms))

		copy(mem.Bytes(), img) // undo the write
		var want [][]byte
		for _, r := range build() {
			want = append(want, bytes.Clone(tgt.execute(r)))
		}
		assert.Equal(t, 2*batchRead, tgt.Stats().SectorsRead, "the batch and the reference read as many sectors")
		for i := range batch {
			assert.Equal(t, want[i], io.sent[i], "response %d (%+v) at MTU %d", i, batch[i], mtu)
		}
		// Spot checks that the reference itself is right.
		var m Message
		require.NoError(t, m.UnmarshalBinary(io.sent[1]))
		assert.Equal(t, img[ms*SectorSize:2*ms*SectorSize], m.Arg.(*ATAArg).Data)
		require.NoError(t, m.UnmarshalBinary(io.sent[8]))
		assert.Equal(t, bytes.Repeat([]byte{0xAB}, SectorSize), m.Arg.(*ATAArg).Data[:SectorSize])
	}
}
