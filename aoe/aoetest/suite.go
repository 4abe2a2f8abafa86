// Package aoetest helps test AoE targets and initiators: an in-memory Ethernet segment
// (Network, Pipe), a lossy PacketConn wrapper (Lossy), and Run, a conformance suite that checks
// any target's answers to every AoEr11 command and error case through an aoe.Client.
package aoetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/aoe"
)

// Options configure a conformance run.
type Options struct {
	// Client is the initiator that sends the checks.
	Client *aoe.Client
	// Other, when not nil, is a second initiator with another hardware address on the same
	// segment; it enables the MAC mask and reservation access checks.
	Other *aoe.Client
	// Writable runs the write checks: they overwrite the device's first and last sectors.
	// Otherwise the suite checks that writes are refused.
	Writable bool
	// Quiet is how long a check waits to be sure no response comes; zero means 300 ms.
	Quiet time.Duration
	// Expect states where the target departs from AoEr11.
	Expect Expect
}

// Expect describes the behaviour to check where a target knowingly departs from AoEr11, each
// field named after what the target does instead. The zero value is what the specification
// prescribes, which is what netroot's own Target does.
type Expect struct {
	// UnknownVersionServed: messages with an unknown AoE version are served as version 1
	// instead of answered with aoe.ErrUnsupportedVersion.
	UnknownVersionServed bool
	// BroadcastATAExecuted: ATA commands sent to the broadcast shelf and slot are executed.
	BroadcastATAExecuted bool
	// NoFlushExt: FLUSH CACHE EXT is aborted.
	NoFlushExt bool
	// MaskEditCorrupts: MAC mask list edits that add or delete addresses corrupt the list or
	// crash the target, so the suite only reads the list and sends edits that fail.
	MaskEditCorrupts bool
}

// Vblade is what to expect of vblade 25 (Debian's vblade package). Its mask list edits scan
// nmasks bytes where they mean nmasks 6-byte entries: adding an address already present
// appends a zero entry, and deleting one computes a negative memmove length, which Debian's
// _FORTIFY_SOURCE build aborts ("buffer overflow detected").
var Vblade = Expect{UnknownVersionServed: true, BroadcastATAExecuted: true, NoFlushExt: true, MaskEditCorrupts: true}

// Run checks the target device at addr with subtests of t. It restores the config string, mask
// list and reserve list it changes. opts must not be nil and opts.Client must be set.
func Run(t *testing.T, addr aoe.DeviceAddr, opts *Options) {
	s := &suite{Options: *opts}
	if s.Quiet == 0 {
		s.Quiet = 300 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	found, err := s.Client.Discover(ctx, addr.Shelf, addr.Slot, 500*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, found, 1, "discovery of %s", addr)
	s.target = found[0]
	s.me = s.Client.HardwareAddr()
	require.Len(t, s.me, 6, "the client's PacketConn must report its hardware address")
	disk, err := s.Client.OpenTarget(ctx, s.target)
	require.NoError(t, err)
	s.disk = disk

	t.Run("Discovery", s.discovery)
	t.Run("UnknownCommand", s.unknownCommand)
	t.Run("UnsupportedVersion", s.version)
	t.Run("QueryConfig", s.queryConfig)
	t.Run("Identify", s.identify)
	t.Run("CheckPowerMode", s.checkPower)
	t.Run("UnknownATA", s.unknownATA)
	t.Run("Read", s.read)
	t.Run("ReadBeyondEnd", s.readBeyondEnd)
	t.Run("TooManySectors", s.tooManySectors)
	t.Run("BroadcastATA", s.broadcastATA)
	t.Run("Write", s.write)
	t.Run("Flush", s.flush)
	t.Run("ManyTags", s.manyTags)
	t.Run("MaskList", s.maskList)
	t.Run("Reserve", s.reserve)
	if s.Other != nil {
		t.Run("MaskAccess", s.maskAccess)
		t.Run("ReserveAccess", s.reserveAccess)
	}
}

type suite struct {
	Options
	target aoe.TargetInfo
	me     net.HardwareAddr
	disk   *aoe.Disk
}

func (s *suite) header(cmd aoe.Command) aoe.Header {
	return aoe.Header{Version: aoe.Version, Major: s.target.Shelf, Minor: s.target.Slot, Command: cmd}
}

// do sends m from c to the target and requires a well-formed response.
func (s *suite) do(t *testing.T, c *aoe.Client, m *aoe.Message) *aoe.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Do(ctx, s.target.Addr, m)
	require.NoError(t, err)
	assert.True(t, r.Response(), "response has the R flag")
	assert.Equal(t, uint8(aoe.Version), r.Version, "response version")
	assert.Equal(t, m.Command, r.Command, "response command")
	assert.Equal(t, s.target.Shelf, r.Major, "response shelf")
	assert.Equal(t, s.target.Slot, r.Minor, "response slot")
	assert.Equal(t, s.target.Addr, r.From, "response source")
	return r
}

// silent requires that m gets no response within Quiet.
func (s *suite) silent(t *testing.T, c *aoe.Client, m *aoe.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.Quiet)
	defer cancel()
	r, err := c.Do(ctx, s.target.Addr, m)
	if err == nil {
		t.Fatalf("expected no response, got flags %#x error %d arg %+v", r.Flags, r.Error, r.Arg)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, aoe.ErrNoResponse) {
		t.Fatalf("expected silence, got %v", err)
	}
}

func (s *suite) ata(t *testing.T, a *aoe.ATAArg) (*aoe.Response, *aoe.ATAArg) {
	t.Helper()
	r := s.do(t, s.Client, &aoe.Message{Header: s.header(aoe.CommandATA), Arg: a})
	if r.Flags&aoe.FlagError != 0 {
		return r, nil
	}
	ra, ok := r.Arg.(*aoe.ATAArg)
	require.True(t, ok, "ATA response argument")
	return r, ra
}

func requireAoEError(t *testing.T, r *aoe.Response, e aoe.Error) {
	t.Helper()
	require.NotZero(t, r.Flags&aoe.FlagError, "response has the E flag")
	require.Equal(t, e, r.Error, "AoE error")
}

func requireOK(t *testing.T, r *aoe.Response) {
	t.Helper()
	require.Zero(t, r.Flags&aoe.FlagError, "unexpected AoE error %v", r.Error)
}

func (s *suite) discovery(t *testing.T) {
	c := s.target.Config
	assert.Equal(t, uint8(aoe.Version), c.Version, "AoE version")
	assert.NotZero(t, c.BufferCount, "buffer count")
	assert.NotZero(t, c.SectorCount, "sectors per frame")
	// Both wildcard forms find the device.
	for _, addr := range []struct {
		shelf uint16
		slot  uint8
	}{{aoe.BroadcastShelf, aoe.BroadcastSlot}, {s.target.Shelf, aoe.BroadcastSlot}, {aoe.BroadcastShelf, s.target.Slot}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		found, err := s.Client.Discover(ctx, addr.shelf, addr.slot, 500*time.Millisecond)
		cancel()
		require.NoError(t, err)
		ok := false
		for _, f := range found {
			ok = ok || (bytes.Equal(f.Addr, s.target.Addr) && f.Shelf == s.target.Shelf && f.Slot == s.target.Slot)
		}
		assert.True(t, ok, "%s answers discovery of %#x.%#x", s.target.DeviceAddr(), addr.shelf, addr.slot)
	}
}

func (s *suite) unknownCommand(t *testing.T) {
	r := s.do(t, s.Client, &aoe.Message{Header: s.header(0x42), Arg: &aoe.RawArg{Data: []byte{1, 2, 3}}})
	requireAoEError(t, r, aoe.ErrUnrecognizedCommand)
}

func (s *suite) version(t *testing.T) {
	h := s.header(aoe.CommandQueryConfig)
	h.Version = 2
	m := &aoe.Message{Header: h, Arg: &aoe.ConfigArg{Command: aoe.ConfigRead}}
	if s.Expect.UnknownVersionServed {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := s.Client.Do(ctx, s.target.Addr, m)
		require.NoError(t, err)
		requireOK(t, r)
		t.Logf("expected: a version 2 message is served, answered with version %d", r.Version)
		return
	}
	requireAoEError(t, s.do(t, s.Client, m), aoe.ErrUnsupportedVersion)
}

func (s *suite) config(t *testing.T, cmd aoe.ConfigCommand, str string) *aoe.Message {
	return &aoe.Message{Header: s.header(aoe.CommandQueryConfig), Arg: &aoe.ConfigArg{Command: cmd, String: []byte(str)}}
}

func configString(t *testing.T, r *aoe.Response) string {
	t.Helper()
	a, ok := r.Arg.(*aoe.ConfigArg)
	require.True(t, ok, "Query Config response argument")
	return string(a.String)
}

func (s *suite) queryConfig(t *testing.T) {
	r := s.do(t, s.Client, s.config(t, aoe.ConfigRead, ""))
	requireOK(t, r)
	orig := configString(t, r)
	defer func() {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigForceSet, orig))
		requireOK(t, r)
	}()
	requireOK(t, s.do(t, s.Client, s.config(t, aoe.ConfigForceSet, "")))

	t.Run("SetEmpty", func(t *testing.T) {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigSet, "netroot-a"))
		requireOK(t, r)
		assert.Equal(t, "netroot-a", configString(t, r))
	})
	t.Run("SetSame", func(t *testing.T) {
		requireOK(t, s.do(t, s.Client, s.config(t, aoe.ConfigSet, "netroot-a")))
	})
	t.Run("SetPresent", func(t *testing.T) {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigSet, "netroot-b"))
		requireAoEError(t, r, aoe.ErrConfigStringPresent)
		assert.Equal(t, "netroot-a", configString(t, r), "the present string is returned")
	})
	t.Run("TestMatch", func(t *testing.T) {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigTest, "netroot-a"))
		requireOK(t, r)
		assert.Equal(t, "netroot-a", configString(t, r))
	})
	t.Run("TestMismatch", func(t *testing.T) { s.silent(t, s.Client, s.config(t, aoe.ConfigTest, "netroot")) })
	t.Run("PrefixMatch", func(t *testing.T) {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigTestPrefix, "netroot"))
		requireOK(t, r)
		assert.Equal(t, "netroot-a", configString(t, r))
	})
	t.Run("PrefixMismatch", func(t *testing.T) { s.silent(t, s.Client, s.config(t, aoe.ConfigTestPrefix, "other")) })
	t.Run("ForceSet", func(t *testing.T) {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigForceSet, "netroot-c"))
		requireOK(t, r)
		assert.Equal(t, "netroot-c", configString(t, r))
		assert.Equal(t, "netroot-c", configString(t, s.do(t, s.Client, s.config(t, aoe.ConfigRead, ""))))
	})
	t.Run("BadSubcommand", func(t *testing.T) {
		requireAoEError(t, s.do(t, s.Client, s.config(t, 9, "")), aoe.ErrBadArgument)
	})
	t.Run("Fields", func(t *testing.T) {
		r := s.do(t, s.Client, s.config(t, aoe.ConfigRead, ""))
		a := r.Arg.(*aoe.ConfigArg)
		assert.Equal(t, aoe.ConfigRead, a.Command)
		assert.Equal(t, uint8(aoe.Version), a.Version)
		assert.Equal(t, s.target.Config.SectorCount, a.SectorCount)
	})
}

func (s *suite) identify(t *testing.T) {
	_, a := s.ata(t, &aoe.ATAArg{CmdStatus: aoe.ATAIdentifyDevice, SectorCount: 1})
	require.NotNil(t, a)
	assert.Zero(t, a.CmdStatus&aoe.ATAStatusError, "status %#x", a.CmdStatus)
	assert.NotZero(t, a.CmdStatus&aoe.ATAStatusReady, "status %#x has DRDY", a.CmdStatus)
	require.GreaterOrEqual(t, len(a.Data), aoe.SectorSize)
	id, err := aoe.ParseIdentify(a.Data)
	require.NoError(t, err)
	assert.True(t, id.LBA48, "48-bit addressing")
	assert.NotZero(t, id.Sectors, "capacity")
	assert.NotEmpty(t, id.Serial, "serial")
	assert.NotEmpty(t, id.Model, "model")
	assert.Equal(t, s.disk.Identify.Sectors, id.Sectors)
}

func (s *suite) checkPower(t *testing.T) {
	_, a := s.ata(t, &aoe.ATAArg{CmdStatus: aoe.ATACheckPowerMode})
	require.NotNil(t, a)
	assert.Equal(t, uint8(aoe.ATAStatusReady), a.CmdStatus&(aoe.ATAStatusReady|aoe.ATAStatusError))
	assert.Equal(t, uint8(0xFF), a.SectorCount, "active or idle")
}

func (s *suite) unknownATA(t *testing.T) {
	_, a := s.ata(t, &aoe.ATAArg{CmdStatus: 0xB0}) // SMART
	require.NotNil(t, a)
	assert.NotZero(t, a.CmdStatus&aoe.ATAStatusError, "status %#x has ERR", a.CmdStatus)
	assert.NotZero(t, a.ErrFeature&aoe.ATAErrorAbort, "error %#x has ABRT", a.ErrFeature)
}

func (s *suite) read(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  uint8
		ext  bool
	}{{"LBA28", aoe.ATAReadSectors, false}, {"LBA48", aoe.ATAReadSectorsExt, true}} {
		t.Run(tc.name, func(t *testing.T) {
			_, a := s.ata(t, &aoe.ATAArg{Extended: tc.ext, CmdStatus: tc.cmd, SectorCount: 1, LBA: 0})
			require.NotNil(t, a)
			assert.Zero(t, a.CmdStatus&aoe.ATAStatusError, "status %#x", a.CmdStatus)
			assert.GreaterOrEqual(t, len(a.Data), aoe.SectorSize)
		})
	}
}

func (s *suite) readBeyondEnd(t *testing.T) {
	end := s.disk.Identify.Sectors
	cases := []struct {
		lba   uint64
		count uint8
	}{{end, 1}, {end + 1000, 1}}
	if s.target.Config.SectorCount >= 2 {
		cases = append(cases, struct {
			lba   uint64
			count uint8
		}{end - 1, 2}) // starts inside, ends outside
	}
	for _, tc := range cases {
		_, a := s.ata(t, &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: tc.count, LBA: tc.lba})
		require.NotNil(t, a)
		assert.NotZero(t, a.CmdStatus&aoe.ATAStatusError, "LBA %d+%d: status %#x has ERR", tc.lba, tc.count, a.CmdStatus)
		assert.NotZero(t, a.ErrFeature&aoe.ATAErrorIDNotFound, "LBA %d+%d: error %#x has IDNF", tc.lba, tc.count, a.ErrFeature)
	}
}

func (s *suite) tooManySectors(t *testing.T) {
	n := int(s.target.Config.SectorCount) + 1
	if n > 255 {
		t.Skip("the target takes 255 sectors per frame")
	}
	r, _ := s.ata(t, &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: uint8(n)})
	requireAoEError(t, r, aoe.ErrBadArgument)
}

func (s *suite) broadcastATA(t *testing.T) {
	h := s.header(aoe.CommandATA)
	h.Minor = aoe.BroadcastSlot
	m := &aoe.Message{Header: h, Arg: &aoe.ATAArg{CmdStatus: aoe.ATACheckPowerMode}}
	if s.Expect.BroadcastATAExecuted {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := s.Client.Do(ctx, s.target.Addr, m)
		require.NoError(t, err)
		t.Log("expected: an ATA command to the broadcast slot is executed")
		return
	}
	s.silent(t, s.Client, m)
}

func (s *suite) write(t *testing.T) {
	last := s.disk.Identify.Sectors - 1
	for _, tc := range []struct {
		name string
		cmd  uint8
		ext  bool
		lba  uint64
	}{{"LBA28", aoe.ATAWriteSectors, false, 0}, {"LBA48", aoe.ATAWriteSectorsExt, true, last}} {
		t.Run(tc.name, func(t *testing.T) {
			data := bytes.Repeat([]byte(fmt.Sprintf("netroot %s %d ", tc.name, tc.lba)), 64)[:aoe.SectorSize]
			_, a := s.ata(t, &aoe.ATAArg{Extended: tc.ext, Write: true, CmdStatus: tc.cmd, SectorCount: 1, LBA: tc.lba, Data: data})
			require.NotNil(t, a)
			if !s.Writable {
				assert.NotZero(t, a.CmdStatus&aoe.ATAStatusError, "write to a read-only device: status %#x has ERR", a.CmdStatus)
				assert.NotZero(t, a.ErrFeature&aoe.ATAErrorAbort, "error %#x has ABRT", a.ErrFeature)
				return
			}
			require.Zero(t, a.CmdStatus&aoe.ATAStatusError, "status %#x error %#x", a.CmdStatus, a.ErrFeature)
			got := make([]byte, aoe.SectorSize)
			_, err := s.disk.ReadAt(got, int64(tc.lba)*aoe.SectorSize)
			require.NoError(t, err)
			assert.Equal(t, data, got)
		})
	}
	t.Run("ShortData", func(t *testing.T) {
		if !s.Writable {
			t.Skip("read-only device")
		}
		if s.target.Config.SectorCount < 2 {
			t.Skip("one sector per frame")
		}
		// Two sectors announced, one sent.
		r, _ := s.ata(t, &aoe.ATAArg{Extended: true, Write: true, CmdStatus: aoe.ATAWriteSectorsExt, SectorCount: 2,
			Data: make([]byte, aoe.SectorSize)})
		requireAoEError(t, r, aoe.ErrBadArgument)
	})
}

func (s *suite) flush(t *testing.T) {
	_, a := s.ata(t, &aoe.ATAArg{CmdStatus: aoe.ATAFlushCache})
	require.NotNil(t, a)
	assert.Zero(t, a.CmdStatus&aoe.ATAStatusError, "FLUSH CACHE status %#x", a.CmdStatus)
	_, a = s.ata(t, &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAFlushCacheExt})
	require.NotNil(t, a)
	if s.Expect.NoFlushExt {
		assert.NotZero(t, a.CmdStatus&aoe.ATAStatusError, "expected: FLUSH CACHE EXT aborted")
		t.Log("expected: FLUSH CACHE EXT is aborted")
		return
	}
	assert.Zero(t, a.CmdStatus&aoe.ATAStatusError, "FLUSH CACHE EXT status %#x", a.CmdStatus)
}

// manyTags reads a range with every request in flight at once and compares it with a read one
// frame at a time.
func (s *suite) manyTags(t *testing.T) {
	n := min(int64(s.disk.Identify.Sectors), 2048) * aoe.SectorSize
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := make([]byte, n)
	_, err := s.disk.ReadAtContext(ctx, all, 0)
	require.NoError(t, err)
	one := *s.disk
	one.InFlight = 1
	seq := make([]byte, n)
	_, err = one.ReadAtContext(ctx, seq, 0)
	require.NoError(t, err)
	require.True(t, bytes.Equal(all, seq), "parallel and sequential reads differ")
}

func (s *suite) mask(t *testing.T, c *aoe.Client, cmd aoe.MaskCommand, dirs ...aoe.Directive) (*aoe.Response, *aoe.MaskArg) {
	t.Helper()
	r := s.do(t, c, &aoe.Message{Header: s.header(aoe.CommandMACMaskList), Arg: &aoe.MaskArg{Command: cmd, Directives: dirs}})
	a, _ := r.Arg.(*aoe.MaskArg)
	return r, a
}

func fakeMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xAE, 0, 0, byte(i >> 8), byte(i)}
}

func (s *suite) maskList(t *testing.T) {
	r, a := s.mask(t, s.Client, aoe.MaskRead)
	requireOK(t, r)
	require.NotNil(t, a)
	require.Empty(t, a.Directives, "the suite needs an empty mask list to start")
	if s.Expect.MaskEditCorrupts {
		t.Run("BadDirective", s.maskBadDirective)
		t.Run("BadSubcommand", s.maskBadSubcommand)
		t.Log("expected: mask list edits that add or delete are not checked")
		return
	}
	defer func() {
		// Remove whatever the checks left, ours last.
		var dirs []aoe.Directive
		for i := range 64 {
			dirs = append(dirs, aoe.Directive{Command: aoe.DirectiveDelete, MAC: fakeMAC(i)})
		}
		dirs = append(dirs, aoe.Directive{Command: aoe.DirectiveDelete, MAC: s.me})
		r, a := s.mask(t, s.Client, aoe.MaskEdit, dirs...)
		requireOK(t, r)
		assert.Empty(t, a.Directives)
	}()
	t.Run("Add", func(t *testing.T) {
		r, a := s.mask(t, s.Client, aoe.MaskEdit,
			aoe.Directive{Command: aoe.DirectiveAdd, MAC: s.me},
			aoe.Directive{Command: aoe.DirectiveAdd, MAC: fakeMAC(0)},
			aoe.Directive{Command: aoe.DirectiveAdd, MAC: fakeMAC(0)}, // twice: listed once
			aoe.Directive{Command: aoe.DirectiveNone, MAC: fakeMAC(1)})
		requireOK(t, r)
		require.NotNil(t, a)
		assert.Zero(t, a.Error)
		assert.Equal(t, []aoe.Directive{{MAC: s.me}, {MAC: fakeMAC(0)}}, a.Directives)
		_, a = s.mask(t, s.Client, aoe.MaskRead)
		assert.Equal(t, []aoe.Directive{{MAC: s.me}, {MAC: fakeMAC(0)}}, a.Directives)
	})
	t.Run("Delete", func(t *testing.T) {
		r, a := s.mask(t, s.Client, aoe.MaskEdit, aoe.Directive{Command: aoe.DirectiveDelete, MAC: fakeMAC(0)})
		requireOK(t, r)
		assert.Equal(t, []aoe.Directive{{MAC: s.me}}, a.Directives)
	})
	t.Run("BadDirective", s.maskBadDirective)
	t.Run("ListFull", func(t *testing.T) {
		var dirs []aoe.Directive
		for i := range 64 {
			dirs = append(dirs, aoe.Directive{Command: aoe.DirectiveAdd, MAC: fakeMAC(i)})
		}
		r, a := s.mask(t, s.Client, aoe.MaskEdit, dirs...)
		requireOK(t, r)
		require.NotNil(t, a)
		assert.Equal(t, aoe.MaskErrListFull, a.Error)
		assert.Less(t, len(a.Directives), 64)
		t.Logf("mask list holds %d entries", len(a.Directives)+1)
	})
	t.Run("BadSubcommand", s.maskBadSubcommand)
}

func (s *suite) maskBadDirective(t *testing.T) {
	r, a := s.mask(t, s.Client, aoe.MaskEdit,
		aoe.Directive{Command: aoe.DirectiveNone, MAC: fakeMAC(2)},
		aoe.Directive{Command: 7, MAC: fakeMAC(3)})
	requireOK(t, r)
	require.NotNil(t, a)
	assert.Equal(t, aoe.MaskErrBadDirective, a.Error)
	assert.Len(t, a.Directives, 1, "the directive count names the failing directive")
}

func (s *suite) maskBadSubcommand(t *testing.T) {
	r, _ := s.mask(t, s.Client, 5)
	requireAoEError(t, r, aoe.ErrBadArgument)
}

func (s *suite) reserveMsg(cmd aoe.ReserveCommand, macs ...net.HardwareAddr) *aoe.Message {
	return &aoe.Message{Header: s.header(aoe.CommandReserveRelease), Arg: &aoe.ReserveArg{Command: cmd, MACs: macs}}
}

func reserveList(t *testing.T, r *aoe.Response) []net.HardwareAddr {
	t.Helper()
	a, ok := r.Arg.(*aoe.ReserveArg)
	require.True(t, ok, "Reserve/Release response argument")
	return a.MACs
}

func (s *suite) reserve(t *testing.T) {
	r := s.do(t, s.Client, s.reserveMsg(aoe.ReserveRead))
	requireOK(t, r)
	require.Empty(t, reserveList(t, r), "the suite needs an unreserved target")
	defer func() { requireOK(t, s.do(t, s.Client, s.reserveMsg(aoe.ReserveForceSet))) }()

	r = s.do(t, s.Client, s.reserveMsg(aoe.ReserveSet, s.me))
	requireOK(t, r)
	assert.Equal(t, []net.HardwareAddr{s.me}, reserveList(t, r))
	assert.Equal(t, []net.HardwareAddr{s.me}, reserveList(t, s.do(t, s.Client, s.reserveMsg(aoe.ReserveRead))))
	// The holder keeps access.
	_, a := s.ata(t, &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: 1})
	require.NotNil(t, a)
	assert.Zero(t, a.CmdStatus&aoe.ATAStatusError)
	// Release.
	r = s.do(t, s.Client, s.reserveMsg(aoe.ReserveSet))
	requireOK(t, r)
	assert.Empty(t, reserveList(t, r))
	requireAoEError(t, s.do(t, s.Client, s.reserveMsg(7)), aoe.ErrBadArgument)
}

func (s *suite) maskAccess(t *testing.T) {
	if s.Expect.MaskEditCorrupts {
		t.Skip("expected: mask list edits are broken")
	}
	r, _ := s.mask(t, s.Client, aoe.MaskEdit, aoe.Directive{Command: aoe.DirectiveAdd, MAC: s.me})
	requireOK(t, r)
	defer func() {
		r, a := s.mask(t, s.Client, aoe.MaskEdit, aoe.Directive{Command: aoe.DirectiveDelete, MAC: s.me})
		requireOK(t, r)
		assert.Empty(t, a.Directives)
		// Everyone has access again.
		requireOK(t, s.do(t, s.Other, s.config(t, aoe.ConfigRead, "")))
	}()
	s.silent(t, s.Other, s.config(t, aoe.ConfigRead, ""))
	s.silent(t, s.Other, &aoe.Message{Header: s.header(aoe.CommandATA),
		Arg: &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: 1}})
}

func (s *suite) reserveAccess(t *testing.T) {
	requireOK(t, s.do(t, s.Client, s.reserveMsg(aoe.ReserveSet, s.me)))
	defer func() { requireOK(t, s.do(t, s.Client, s.reserveMsg(aoe.ReserveSet))) }()
	read := &aoe.Message{Header: s.header(aoe.CommandATA),
		Arg: &aoe.ATAArg{Extended: true, CmdStatus: aoe.ATAReadSectorsExt, SectorCount: 1}}
	requireAoEError(t, s.do(t, s.Other, read), aoe.ErrTargetReserved)
	requireAoEError(t, s.do(t, s.Other, s.reserveMsg(aoe.ReserveSet, s.Other.HardwareAddr())), aoe.ErrTargetReserved)
	// Reading the list is allowed to anyone.
	assert.Equal(t, []net.HardwareAddr{s.me}, reserveList(t, s.do(t, s.Other, s.reserveMsg(aoe.ReserveRead))))
	// Force set takes the target over; the holder is then locked out.
	requireOK(t, s.do(t, s.Other, s.reserveMsg(aoe.ReserveForceSet, s.Other.HardwareAddr())))
	requireAoEError(t, s.do(t, s.Client, read), aoe.ErrTargetReserved)
	requireOK(t, s.do(t, s.Other, s.reserveMsg(aoe.ReserveSet, s.me)))
}
