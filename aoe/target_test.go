package aoe_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/backend"
)

// serve starts t on a new Conn of n and stops it when the test ends.
func serve(t *testing.T, n *aoetest.Network, tgt *aoe.Target) *aoetest.Conn {
	t.Helper()
	pc := n.Attach(nil)
	errc := make(chan error, 1)
	go func() { errc <- tgt.Serve(pc) }()
	t.Cleanup(func() {
		require.NoError(t, tgt.Close())
		select {
		case err := <-errc:
			require.ErrorIs(t, err, aoe.ErrServerClosed)
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return pc
}

func client(t *testing.T, n *aoetest.Network, cfg *aoe.ClientConfig) *aoe.Client {
	t.Helper()
	c := aoe.NewClient(n.Attach(nil), cfg)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestReadWriteInMemory(t *testing.T) {
	for _, mtu := range []int{1500, 9000} {
		t.Run("mtu="+strconv.Itoa(mtu), func(t *testing.T) {
			n := &aoetest.Network{MTU: mtu}
			data := randomBytes(1, 4<<20)
			mem := backend.NewMemoryFrom(bytes.Clone(data), false)
			serve(t, n, &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: mem}}})
			c := client(t, n, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d, err := c.Open(ctx, 0, 1)
			require.NoError(t, err)
			assert.Equal(t, int64(len(data)), d.Size())
			assert.Equal(t, map[int]int{1500: 2, 9000: 17}[mtu], d.SectorsPerFrame)

			got := make([]byte, len(data))
			nr, err := d.ReadAtContext(ctx, got, 0)
			require.NoError(t, err)
			require.Equal(t, len(data), nr)
			require.True(t, bytes.Equal(data, got), "read differs")

			w := randomBytes(2, 1<<20)
			_, err = d.WriteAtContext(ctx, w, 512*1001)
			require.NoError(t, err)
			copy(data[512*1001:], w)
			// Through ReadAt, which locks: a retransmitted copy of a write may still be executing.
			onDev := make([]byte, len(data))
			_, err = mem.ReadAt(onDev, 0)
			require.NoError(t, err)
			require.True(t, bytes.Equal(data, onDev), "backend differs after write")
			require.NoError(t, d.Flush(ctx))
		})
	}
}

func TestConformanceInMemory(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readOnly bool
		mtu      int
	}{{"writable", false, 1500}, {"read-only", true, 1500}, {"jumbo", false, 9000}} {
		t.Run(tc.name, func(t *testing.T) {
			n := &aoetest.Network{MTU: tc.mtu}
			mem := backend.NewMemory(1 << 20)
			serve(t, n, &aoe.Target{Devices: []*aoe.Device{
				{Shelf: 3, Slot: 7, Backend: mem, ReadOnly: tc.readOnly},
				{Shelf: 3, Slot: 8, Backend: backend.NewMemory(1 << 20)},
			}})
			aoetest.Run(t, aoe.DeviceAddr{Shelf: 3, Slot: 7}, &aoetest.Options{
				Client: client(t, n, nil), Other: client(t, n, nil), Writable: !tc.readOnly,
			})
		})
	}
}

// slowMemory delays each write by the duration its first byte names (in 100 µs), so that
// concurrent workers would finish writes out of order, and counts syncs.
type slowMemory struct {
	*backend.Memory
	syncs atomic.Int32
}

func (s *slowMemory) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(p[0]) * 100 * time.Microsecond)
	return s.Memory.WriteAt(p, off)
}

func (s *slowMemory) Sync() error {
	s.syncs.Add(1)
	return nil
}

// rawATA encodes an ATA write of count sectors filled with fill at lba.
func rawWrite(t *testing.T, tag uint32, lba uint64, count int, fill byte) []byte {
	t.Helper()
	b, err := (&aoe.Message{
		Header: aoe.Header{Version: 1, Major: 0, Minor: 1, Command: aoe.CommandATA, Tag: tag},
		Arg: &aoe.ATAArg{Extended: true, Write: true, SectorCount: uint8(count), CmdStatus: aoe.ATAWriteSectorsExt,
			LBA: lba, Data: bytes.Repeat([]byte{fill}, count*aoe.SectorSize)},
	}).MarshalBinary()
	require.NoError(t, err)
	return b
}

// TestWriteOrder sends overlapping writes back to back without waiting; earlier ones are
// slower, yet the device must hold what the last write to each sector wrote.
func TestWriteOrder(t *testing.T) {
	n := &aoetest.Network{}
	mem := &slowMemory{Memory: backend.NewMemory(64 * aoe.SectorSize)}
	tpc := serve(t, n, &aoe.Target{Workers: 16, Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: mem}}})
	raw := n.Attach(nil)
	dst := tpc.LocalAddr()
	// Sector 0..1 get fills 40, 39, ..., 1 alternately as 2-sector and 1-sector writes at
	// sectors 0 and 1: the last write to sector 0 has fill 2, to sector 1 fill 1.
	const writes = 40
	for i := range writes {
		fill := byte(writes - i)
		var frame []byte
		switch i % 3 {
		case 0:
			frame = rawWrite(t, uint32(i+1), 0, 2, fill)
		case 1:
			frame = rawWrite(t, uint32(i+1), 1, 1, fill)
		default:
			frame = rawWrite(t, uint32(i+1), 0, 1, fill)
		}
		_, err := raw.WriteTo(frame, dst)
		require.NoError(t, err)
	}
	// Collect all responses (and skip the target's announcement).
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 2000)
	for answered := 0; answered < writes; {
		n, _, err := raw.ReadFrom(buf)
		require.NoError(t, err)
		var m aoe.Message
		require.NoError(t, m.UnmarshalBinary(buf[:n]))
		if m.Command == aoe.CommandATA {
			require.Zero(t, m.Flags&aoe.FlagError)
			require.Equal(t, uint8(aoe.ATAStatusReady), m.Arg.(*aoe.ATAArg).CmdStatus)
			answered++
		}
	}
	// Expected: replay sequentially.
	want := make([]byte, 2*aoe.SectorSize)
	for i := range writes {
		fill := byte(writes - i)
		switch i % 3 {
		case 0:
			copy(want, bytes.Repeat([]byte{fill}, 2*aoe.SectorSize))
		case 1:
			copy(want[aoe.SectorSize:], bytes.Repeat([]byte{fill}, aoe.SectorSize))
		default:
			copy(want, bytes.Repeat([]byte{fill}, aoe.SectorSize))
		}
	}
	got := make([]byte, 2*aoe.SectorSize)
	_, err := mem.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestFlushSyncsBackend(t *testing.T) {
	n := &aoetest.Network{}
	mem := &slowMemory{Memory: backend.NewMemory(1 << 16)}
	serve(t, n, &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: mem}}})
	d, err := client(t, n, nil).Open(context.Background(), 0, 1)
	require.NoError(t, err)
	assert.True(t, d.Identify.FlushExt)
	require.NoError(t, d.Flush(context.Background()))
	_, err = d.ATA(context.Background(), &aoe.ATAArg{CmdStatus: aoe.ATAFlushCache}, nil)
	require.NoError(t, err)
	assert.Equal(t, int32(2), mem.syncs.Load())
}

func TestWindowAndReadOnly(t *testing.T) {
	n := &aoetest.Network{}
	data := randomBytes(5, 1<<16)
	orig := bytes.Clone(data)
	serve(t, n, &aoe.Target{Devices: []*aoe.Device{
		{Shelf: 0, Slot: 1, Backend: backend.NewMemoryFrom(data, false), Offset: 10 * aoe.SectorSize, Length: 50 * aoe.SectorSize, ReadOnly: true},
		{Shelf: 0, Slot: 2, Backend: backend.NewMemoryFrom(bytes.Clone(data), true)},
	}})
	c := client(t, n, nil)
	ctx := context.Background()
	d, err := c.Open(ctx, 0, 1)
	require.NoError(t, err)
	require.Equal(t, int64(50*aoe.SectorSize), d.Size())
	assert.Equal(t, uint16(50/(16*63)), d.Identify.Cylinders)
	got := make([]byte, 50*aoe.SectorSize)
	_, err = d.ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, data[10*aoe.SectorSize:60*aoe.SectorSize], got)

	// Past the end: the part inside and io.EOF.
	nr, err := d.ReadAt(make([]byte, 4*aoe.SectorSize), 48*aoe.SectorSize)
	assert.Equal(t, 2*aoe.SectorSize, nr)
	assert.ErrorIs(t, err, io.EOF)
	_, err = d.ReadAt(make([]byte, 100), 0)
	assert.ErrorContains(t, err, "not whole 512-byte sectors")

	for _, slot := range []uint8{1, 2} {
		d, err := c.Open(ctx, 0, slot)
		require.NoError(t, err)
		_, err = d.WriteAt(make([]byte, aoe.SectorSize), 0)
		var ae *aoe.ATAError
		require.ErrorAs(t, err, &ae, "slot %d", slot)
		assert.Equal(t, uint8(aoe.ATAErrorAbort), ae.Err)
	}
	assert.Equal(t, orig, data, "read-only device unchanged")
}

func TestAnnounceAndDiscoverHook(t *testing.T) {
	n := &aoetest.Network{}
	raw := n.Attach(nil)
	var found atomic.Int32
	var who atomic.Value
	tgt := &aoe.Target{AnnounceInterval: 30 * time.Millisecond,
		Devices: []*aoe.Device{{Shelf: 4, Slot: 2, Backend: backend.NewMemory(1 << 16), Config: []byte("cfg")}},
		OnDiscover: func(d *aoe.Device, initiator net.HardwareAddr) {
			found.Add(1)
			who.Store(initiator.String())
			assert.Equal(t, uint8(2), d.Slot)
		}}
	tpc := serve(t, n, tgt)

	// Announcements: broadcast Query Config responses, padded to the minimum frame.
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 1500)
	for range 3 {
		nr, from, err := raw.ReadFrom(buf)
		require.NoError(t, err)
		assert.Equal(t, tpc.LocalAddr().String(), from.String())
		assert.GreaterOrEqual(t, nr, aoe.MinPayload)
		var m aoe.Message
		require.NoError(t, m.UnmarshalBinary(buf[:nr]))
		assert.True(t, m.Response())
		assert.Equal(t, aoe.CommandQueryConfig, m.Command)
		assert.Equal(t, uint16(4), m.Major)
		assert.Equal(t, "cfg", string(m.Arg.(*aoe.ConfigArg).String))
	}

	c := client(t, n, nil)
	for range 2 {
		got, err := c.Discover(context.Background(), aoe.BroadcastShelf, aoe.BroadcastSlot, 100*time.Millisecond)
		require.NoError(t, err)
		require.Len(t, got, 1)
		assert.Equal(t, "e4.2 at "+tpc.HardwareAddr().String(), got[0].String())
	}
	assert.Equal(t, int32(1), found.Load(), "the hook runs once per initiator")
	assert.Equal(t, c.HardwareAddr().String(), who.Load())
}

func TestInitialMask(t *testing.T) {
	n := &aoetest.Network{}
	allowed := n.Attach(nil)
	serve(t, n, &aoe.Target{AnnounceInterval: -1, Devices: []*aoe.Device{{Shelf: 0, Slot: 1,
		Backend: backend.NewMemory(1 << 16), Mask: []net.HardwareAddr{allowed.HardwareAddr()}}}})
	ok := aoe.NewClient(allowed, nil)
	defer ok.Close()
	other := client(t, n, &aoe.ClientConfig{Retries: 1, RetransmitTimeout: 20 * time.Millisecond})
	got, err := ok.Discover(context.Background(), 0, 1, 100*time.Millisecond)
	require.NoError(t, err)
	assert.Len(t, got, 1)
	got, err = other.Discover(context.Background(), 0, 1, 100*time.Millisecond)
	require.NoError(t, err)
	assert.Empty(t, got)
	_, err = other.Open(context.Background(), 0, 1)
	assert.ErrorIs(t, err, aoe.ErrNoResponse)
}

func TestServeErrors(t *testing.T) {
	mem := backend.NewMemory(1 << 16)
	for _, tc := range []struct {
		name string
		devs []*aoe.Device
		want string
	}{
		{"none", nil, "no devices"},
		{"nil-backend", []*aoe.Device{{}}, "without a backend"},
		{"twice", []*aoe.Device{{Slot: 1, Backend: mem}, {Slot: 1, Backend: mem}}, "e0.1 configured twice"},
		{"broadcast", []*aoe.Device{{Slot: 255, Backend: mem}}, "broadcast"},
		{"offset", []*aoe.Device{{Backend: mem, Offset: 100}}, "multiples of 512"},
		{"window", []*aoe.Device{{Backend: mem, Offset: 512, Length: 1 << 16}}, "does not fit backend size 65536"},
		{"config", []*aoe.Device{{Backend: mem, Config: make([]byte, 2000)}}, "config string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := aoetest.Pipe()
			err := (&aoe.Target{Devices: tc.devs}).Serve(a)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "aoe: ")
		})
	}
	t.Run("mtu", func(t *testing.T) {
		a, _ := aoetest.Pipe()
		err := (&aoe.Target{MTU: 100, Devices: []*aoe.Device{{Backend: mem}}}).Serve(a)
		assert.ErrorContains(t, err, "MTU 100")
	})
	t.Run("closed", func(t *testing.T) {
		a, _ := aoetest.Pipe()
		tgt := &aoe.Target{Devices: []*aoe.Device{{Backend: mem}}}
		require.NoError(t, tgt.Close())
		assert.ErrorIs(t, tgt.Serve(a), aoe.ErrServerClosed)
	})
}

func TestShutdownDrains(t *testing.T) {
	n := &aoetest.Network{}
	mem := &slowMemory{Memory: backend.NewMemory(1 << 20)}
	const writes = 8
	tgt := &aoe.Target{Workers: writes, Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: mem}}}
	tpc := n.Attach(nil)
	errc := make(chan error, 1)
	go func() { errc <- tgt.Serve(tpc) }()
	raw := n.Attach(nil)
	// Slow writes (25 ms each) received but not yet answered when Shutdown starts are still
	// answered.
	for i := range writes {
		_, err := raw.WriteTo(rawWrite(t, uint32(i+1), uint64(2*i), 2, 250), tpc.LocalAddr())
		require.NoError(t, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tgt.Stats().FramesIn < writes {
		require.True(t, time.Now().Before(deadline), "the target did not receive the writes")
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tgt.Shutdown(ctx))
	require.ErrorIs(t, <-errc, aoe.ErrServerClosed)
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(time.Second)))
	buf := make([]byte, 1500)
	answered := 0
	for {
		n, _, err := raw.ReadFrom(buf)
		if err != nil {
			break
		}
		var m aoe.Message
		require.NoError(t, m.UnmarshalBinary(buf[:n]))
		if m.Command == aoe.CommandATA {
			answered++
		}
	}
	assert.Equal(t, writes, answered)
	st := tgt.Stats()
	assert.Equal(t, uint64(2*writes), st.SectorsWritten)
	assert.GreaterOrEqual(t, st.FramesIn, uint64(writes))
}

func TestClientNoTarget(t *testing.T) {
	n := &aoetest.Network{}
	c := client(t, n, &aoe.ClientConfig{Retries: 2, RetransmitTimeout: 10 * time.Millisecond})
	_, err := c.Do(context.Background(), aoe.Broadcast, &aoe.Message{
		Header: aoe.Header{Version: 1, Major: 1, Minor: 1, Command: aoe.CommandQueryConfig}, Arg: &aoe.ConfigArg{}})
	assert.ErrorIs(t, err, aoe.ErrNoResponse)
	_, err = c.Open(context.Background(), aoe.BroadcastShelf, 1)
	assert.ErrorContains(t, err, "broadcast")
	require.NoError(t, c.Close())
	_, err = c.Do(context.Background(), aoe.Broadcast, &aoe.Message{Header: aoe.Header{Version: 1, Command: aoe.CommandQueryConfig}})
	assert.ErrorIs(t, err, net.ErrClosed)
}

// FuzzTarget feeds an arbitrary frame to a fresh target and shuts it down once it has read the
// frame: handling it must not crash, and Shutdown must find its work finished.
func FuzzTarget(f *testing.F) {
	for _, tc := range wireCases {
		b, err := tc.msg.MarshalBinary()
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte{0x10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x40, 0, 200, 0x24, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x00, 0, 1, 0xec, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := &aoetest.Network{MTU: 9000}
		if len(b) > n.MTU {
			return
		}
		mem := backend.NewMemory(1 << 16)
		tgt := &aoe.Target{AnnounceInterval: -1, Workers: 2,
			Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: mem}, {Shelf: 0, Slot: 2, Backend: mem, ReadOnly: true}}}
		tpc := n.Attach(nil)
		errc := make(chan error, 1)
		go func() { errc <- tgt.Serve(tpc) }()
		raw := n.Attach(nil)
		_, err := raw.WriteTo(b, tpc.LocalAddr())
		require.NoError(t, err)
		deadline := time.Now().Add(5 * time.Second)
		for tgt.Stats().FramesIn == 0 {
			require.True(t, time.Now().Before(deadline), "the target did not read the frame")
			time.Sleep(50 * time.Microsecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, tgt.Shutdown(ctx))
		require.ErrorIs(t, <-errc, aoe.ErrServerClosed)
	})
}

func TestDiskConfig(t *testing.T) {
	n := &aoetest.Network{}
	serve(t, n, &aoe.Target{Devices: []*aoe.Device{{Shelf: 1, Slot: 1, Backend: backend.NewMemory(1 << 16), Config: []byte("boot")}}})
	ctx := context.Background()
	d, err := client(t, n, &aoe.ClientConfig{Retries: 2, RetransmitTimeout: 20 * time.Millisecond}).Open(ctx, 1, 1)
	require.NoError(t, err)
	assert.Equal(t, "boot", string(d.Target.Config.String))
	a, err := d.Config(ctx, aoe.ConfigSet, []byte("other"))
	require.ErrorIs(t, err, aoe.ErrConfigStringPresent)
	assert.Equal(t, "boot", string(a.String))
	_, err = d.Config(ctx, aoe.ConfigTest, []byte("other"))
	require.ErrorIs(t, err, aoe.ErrNoResponse)
	a, err = d.Config(ctx, aoe.ConfigForceSet, []byte("other"))
	require.NoError(t, err)
	assert.Equal(t, "other", string(a.String))
	a, err = d.Config(ctx, aoe.ConfigTestPrefix, []byte("oth"))
	require.NoError(t, err)
	assert.Equal(t, uint16(aoe.DefaultBufferCount), a.BufferCount)
}

// TestIgnored sends frames a target must not answer, then one it must, and checks that the
// only answer is to the last.
func TestIgnored(t *testing.T) {
	n := &aoetest.Network{}
	raw := n.Attach(nil)
	tgt := &aoe.Target{AnnounceInterval: -1, Devices: []*aoe.Device{{Shelf: 1, Slot: 1, Backend: backend.NewMemory(1 << 16)}}}
	tpc := serve(t, n, tgt)
	// Swallow the start-up announcement.
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 1500)
	_, _, err := raw.ReadFrom(buf)
	require.NoError(t, err)

	enc := func(m aoe.Message) []byte {
		b, err := m.MarshalBinary()
		require.NoError(t, err)
		return b
	}
	read := &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: 1}
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"response", enc(aoe.Message{Header: aoe.Header{Version: 1, Flags: aoe.FlagResponse, Major: 1, Minor: 1, Command: aoe.CommandQueryConfig}, Arg: &aoe.ConfigArg{}})},
		{"other-shelf", enc(aoe.Message{Header: aoe.Header{Version: 1, Major: 2, Minor: 1, Command: aoe.CommandATA}, Arg: read})},
		{"other-slot", enc(aoe.Message{Header: aoe.Header{Version: 1, Major: 1, Minor: 2, Command: aoe.CommandQueryConfig}, Arg: &aoe.ConfigArg{}})},
		{"ata-broadcast", enc(aoe.Message{Header: aoe.Header{Version: 1, Major: 0xffff, Minor: 0xff, Command: aoe.CommandATA}, Arg: read})},
		{"short-header", []byte{0x10, 0, 0, 1, 1}},
		{"short-ata", []byte{0x10, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0x40, 0, 1}},
		{"config-too-long", []byte{0x10, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x08, 0x00}},
	} {
		_, err := raw.WriteTo(tc.frame, tpc.LocalAddr())
		require.NoError(t, err, tc.name)
	}
	_, err = raw.WriteTo(enc(aoe.Message{Header: aoe.Header{Version: 1, Major: 1, Minor: 1, Command: aoe.CommandATA, Tag: 99}, Arg: read}), tpc.LocalAddr())
	require.NoError(t, err)
	nr, _, err := raw.ReadFrom(buf)
	require.NoError(t, err)
	var m aoe.Message
	require.NoError(t, m.UnmarshalBinary(buf[:nr]))
	assert.Equal(t, uint32(99), m.Tag, "the first answer is to the valid request")
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, _, err = raw.ReadFrom(buf)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Equal(t, uint64(7), tgt.Stats().Ignored)

	// A version 2 ATA command to the device is answered with the version error.
	_, err = raw.WriteTo(enc(aoe.Message{Header: aoe.Header{Version: 2, Major: 1, Minor: 1, Command: aoe.CommandATA, Tag: 5}, Arg: read}), tpc.LocalAddr())
	require.NoError(t, err)
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(5*time.Second)))
	nr, _, err = raw.ReadFrom(buf)
	require.NoError(t, err)
	require.NoError(t, m.UnmarshalBinary(buf[:nr]))
	assert.Equal(t, aoe.FlagResponse|aoe.FlagError, m.Flags)
	assert.Equal(t, aoe.ErrUnsupportedVersion, m.Error)
	assert.Equal(t, uint8(1), m.Version)
}

// TestDirectFile serves a file opened with O_DIRECT (vblade -d) and O_SYNC (vblade -s).
func TestDirectFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	data := randomBytes(9, 1<<20)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	f, err := backend.OpenFile(path, &backend.FileOptions{Direct: true, Sync: true})
	if err != nil {
		t.Skipf("O_DIRECT not available here: %v", err)
	}
	defer f.Close()
	n := &aoetest.Network{MTU: 9000}
	serve(t, n, &aoe.Target{Devices: []*aoe.Device{{Shelf: 0, Slot: 1, Backend: f}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := client(t, n, nil).Open(ctx, 0, 1)
	require.NoError(t, err)
	got := make([]byte, len(data))
	_, err = d.ReadAtContext(ctx, got, 0)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "read differs")
	w := randomBytes(10, 300*aoe.SectorSize)
	_, err = d.WriteAtContext(ctx, w, 33*aoe.SectorSize)
	require.NoError(t, err)
	require.NoError(t, d.Flush(ctx))
	copy(data[33*aoe.SectorSize:], w)
	onDisk, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, onDisk), "file differs after writes")
}

// TestGroupSourceDropped sends a READ and a Query Config from group (broadcast and multicast)
// source addresses: the target must not answer (the answer to a READ from the broadcast address
// would broadcast sector data) and counts the frames.
func TestGroupSourceDropped(t *testing.T) {
	n := &aoetest.Network{}
	tgt := &aoe.Target{AnnounceInterval: -1, Devices: []*aoe.Device{{Shelf: 1, Slot: 1, Backend: backend.NewMemory(1 << 16)}}}
	tpc := serve(t, n, tgt)
	observer := n.Attach(nil)
	read, err := (&aoe.Message{
		Header: aoe.Header{Version: 1, Major: 1, Minor: 1, Command: aoe.CommandATA, Tag: 7},
		Arg:    &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: 2},
	}).MarshalBinary()
	require.NoError(t, err)
	query, err := (&aoe.Message{
		Header: aoe.Header{Version: 1, Major: 1, Minor: 1, Command: aoe.CommandQueryConfig, Tag: 8},
		Arg:    &aoe.ConfigArg{},
	}).MarshalBinary()
	require.NoError(t, err)
	// Swallow the start-up announcement.
	buf := make([]byte, 1500)
	require.NoError(t, observer.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, _, err = observer.ReadFrom(buf)
	require.NoError(t, err)

	var senders []*aoetest.Conn
	for _, mac := range []string{"ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01"} {
		hw, err := net.ParseMAC(mac)
		require.NoError(t, err)
		s := n.Attach(hw)
		senders = append(senders, s)
		for _, f := range [][]byte{read, query} {
			_, err = s.WriteTo(f, tpc.LocalAddr())
			require.NoError(t, err, mac)
		}
	}
	for _, c := range append(senders, observer) {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
		nr, _, err := c.ReadFrom(buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded, "%s got a frame of %d bytes", c.HardwareAddr(), nr)
	}
	st := tgt.Stats()
	assert.Equal(t, uint64(6), st.GroupSource)
	assert.Equal(t, uint64(6), st.Ignored)
	assert.Equal(t, uint64(0), st.SectorsRead)
}

// TestDiscoveryLogBounded has many initiators (as a flood of forged source addresses would)
// discover the target: each reaches OnDiscover, but the log gets a bounded number of lines.
func TestDiscoveryLogBounded(t *testing.T) {
	n := &aoetest.Network{}
	var logBuf bytes.Buffer
	var mu sync.Mutex
	var discovered atomic.Int32
	tgt := &aoe.Target{
		AnnounceInterval: -1,
		Devices:          []*aoe.Device{{Shelf: 1, Slot: 1, Backend: backend.NewMemory(1 << 16)}},
		Logger:           slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logBuf}, nil)),
		OnDiscover:       func(*aoe.Device, net.HardwareAddr) { discovered.Add(1) },
	}
	tpc := serve(t, n, tgt)
	query, err := (&aoe.Message{
		Header: aoe.Header{Version: 1, Major: 1, Minor: 1, Command: aoe.CommandQueryConfig},
		Arg:    &aoe.ConfigArg{},
	}).MarshalBinary()
	require.NoError(t, err)
	const initiators = 200
	for i := range initiators {
		c := n.Attach(net.HardwareAddr{0x02, 0xaa, 0, 0, byte(i >> 8), byte(i)})
		_, err := c.WriteTo(query, tpc.LocalAddr())
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return discovered.Load() == initiators }, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	lines := strings.Count(logBuf.String(), "initiator discovered device")
	mu.Unlock()
	assert.Positive(t, lines)
	assert.LessOrEqual(t, lines, 16, "discovery log lines")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
