package aoe_test

import (
	"bytes"
	"encoding/hex"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/aoe"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
)

// wireCases are messages with their golden encodings in testdata/<name>.hex.
var wireCases = []struct {
	name string
	msg  aoe.Message
}{
	{"ata-read-request", aoe.Message{
		Header: aoe.Header{Version: 1, Major: 0x1234, Minor: 0x56, Command: aoe.CommandATA, Tag: 0xdeadbeef},
		Arg:    &aoe.ATAArg{Extended: true, SectorCount: 2, CmdStatus: aoe.ATAReadSectorsExt, LBA: 0x0000_0102_0304_0506},
	}},
	{"ata-write-request", aoe.Message{
		Header: aoe.Header{Version: 1, Major: 0, Minor: 1, Command: aoe.CommandATA, Tag: 7},
		Arg: &aoe.ATAArg{Extended: false, Device: true, Async: true, Write: true, SectorCount: 1,
			CmdStatus: aoe.ATAWriteSectors, LBA: 0x0fffffff, Data: []byte("sector data")},
	}},
	{"ata-error-response", aoe.Message{
		Header: aoe.Header{Version: 1, Flags: aoe.FlagResponse | aoe.FlagError, Error: aoe.ErrBadArgument,
			Major: 1, Minor: 2, Command: aoe.CommandATA, Tag: 3},
		Arg: &aoe.ATAArg{ErrFeature: aoe.ATAErrorIDNotFound, CmdStatus: aoe.ATAStatusReady | aoe.ATAStatusError},
	}},
	{"config-response", aoe.Message{
		Header: aoe.Header{Version: 1, Flags: aoe.FlagResponse, Major: 0, Minor: 1, Command: aoe.CommandQueryConfig},
		Arg: &aoe.ConfigArg{BufferCount: 64, FirmwareVersion: 0x4019, SectorCount: 17, Version: 1,
			Command: aoe.ConfigTestPrefix, String: []byte("netroot")},
	}},
	{"mask-edit", aoe.Message{
		Header: aoe.Header{Version: 1, Major: 9, Minor: 9, Command: aoe.CommandMACMaskList, Tag: 1},
		Arg: &aoe.MaskArg{Command: aoe.MaskEdit, Directives: []aoe.Directive{
			{Command: aoe.DirectiveAdd, MAC: macA}, {Command: aoe.DirectiveDelete, MAC: macB}}},
	}},
	{"mask-full", aoe.Message{
		Header: aoe.Header{Version: 1, Flags: aoe.FlagResponse, Major: 9, Minor: 9, Command: aoe.CommandMACMaskList, Tag: 1},
		Arg:    &aoe.MaskArg{Command: aoe.MaskEdit, Error: aoe.MaskErrListFull, Directives: []aoe.Directive{{MAC: macA}}},
	}},
	{"reserve-set", aoe.Message{
		Header: aoe.Header{Version: 1, Major: 0xffff, Minor: 0xff, Command: aoe.CommandReserveRelease, Tag: 2},
		Arg:    &aoe.ReserveArg{Command: aoe.ReserveSet, MACs: []net.HardwareAddr{macA, macB}},
	}},
	{"unknown-command", aoe.Message{
		Header: aoe.Header{Version: 1, Major: 1, Minor: 1, Command: 0xf0, Tag: 5},
		Arg:    &aoe.RawArg{Data: []byte{1, 2, 3}},
	}},
}

func TestWireGolden(t *testing.T) {
	for _, tc := range wireCases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.msg.MarshalBinary()
			require.NoError(t, err)
			assert.GreaterOrEqual(t, len(b), aoe.MinPayload, "padded to the minimum frame")
			path := filepath.Join("testdata", tc.name+".hex")
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(hex.Dump(b)), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, string(want), hex.Dump(b))

			var got aoe.Message
			require.NoError(t, got.UnmarshalBinary(b))
			assert.Equal(t, tc.msg.Header, got.Header)
			// Decoding the padded frame and encoding it again gives the same frame.
			again, err := got.MarshalBinary()
			require.NoError(t, err)
			if _, ok := tc.msg.Arg.(*aoe.ATAArg); !ok {
				if _, raw := tc.msg.Arg.(*aoe.RawArg); !raw {
					assert.Equal(t, b, again)
				}
			}
		})
	}
}

func TestWireFields(t *testing.T) {
	b, err := (&aoe.Message{
		Header: aoe.Header{Version: 1, Flags: aoe.FlagResponse, Error: 0, Major: 0x0102, Minor: 3, Command: aoe.CommandATA, Tag: 0x0a0b0c0d},
		Arg:    &aoe.ATAArg{Extended: true, Write: true, ErrFeature: 0x11, SectorCount: 0x22, CmdStatus: 0x34, LBA: 0x060504030201},
	}).MarshalBinary()
	require.NoError(t, err)
	// Version in the high nibble, R flag 0x08; big-endian major and tag.
	assert.Equal(t, []byte{0x18, 0, 1, 2, 3, 0, 0x0a, 0x0b, 0x0c, 0x0d}, b[:10])
	// AFlags E|W, LBA little-endian, two reserved bytes.
	assert.Equal(t, []byte{0x41, 0x11, 0x22, 0x34, 1, 2, 3, 4, 5, 6, 0, 0}, b[10:22])
}

func TestWireErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  aoe.Message
	}{
		{"version", aoe.Message{Header: aoe.Header{Version: 16}}},
		{"flags", aoe.Message{Header: aoe.Header{Flags: 0x10}}},
		{"lba", aoe.Message{Arg: &aoe.ATAArg{LBA: 1 << 48}}},
		{"config", aoe.Message{Header: aoe.Header{Command: aoe.CommandQueryConfig}, Arg: &aoe.ConfigArg{String: make([]byte, 1025)}}},
		{"config-command", aoe.Message{Header: aoe.Header{Command: aoe.CommandQueryConfig}, Arg: &aoe.ConfigArg{Command: 16}}},
		{"mask-mac", aoe.Message{Header: aoe.Header{Command: aoe.CommandMACMaskList}, Arg: &aoe.MaskArg{Directives: []aoe.Directive{{MAC: macA[:4]}}}}},
		{"reserve-mac", aoe.Message{Header: aoe.Header{Command: aoe.CommandReserveRelease}, Arg: &aoe.ReserveArg{MACs: []net.HardwareAddr{nil}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.msg.MarshalBinary()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "aoe: ")
		})
	}
}

func TestUnmarshalShort(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"header", []byte{0x10, 0, 0, 1, 1}},
		{"ata", []byte{0x10, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0x40, 0, 1}},
		{"config", []byte{0x10, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 16, 0}},
		{"config-string", []byte{0x10, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 16, 0, 0, 0, 0, 0, 5, 'a'}},
		{"mask", []byte{0x10, 0, 0, 1, 1, 2, 0, 0, 0, 1, 0, 1, 0, 2, 0, 1, 1, 2, 3, 4, 5, 6}},
		{"reserve", []byte{0x10, 0, 0, 1, 1, 3, 0, 0, 0, 1, 1, 2, 1, 2, 3, 4, 5, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m aoe.Message
			assert.ErrorIs(t, m.UnmarshalBinary(tc.b), io.ErrUnexpectedEOF)
		})
	}
	var c aoe.ConfigArg
	err := c.UnmarshalBinary([]byte{0, 0, 0, 0, 0, 0, 0x04, 0x01})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1025")
}

func TestErrorStrings(t *testing.T) {
	for e := aoe.Error(1); e <= 7; e++ {
		assert.Contains(t, e.Error(), "aoe: ")
	}
	assert.Equal(t, "aoe: target is reserved", aoe.ErrTargetReserved.Error())
	assert.Equal(t, "aoe: mask list: list full", aoe.MaskErrListFull.Error())
	assert.Equal(t, "Query Config", aoe.CommandQueryConfig.String())
}

// FuzzMessage decodes arbitrary payloads; whatever decodes must encode, and decode again to
// the same message.
func FuzzMessage(f *testing.F) {
	for _, tc := range wireCases {
		b, err := tc.msg.MarshalBinary()
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m aoe.Message
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			// Only the 4-bit fields can fail to encode, and decoding never produces them.
			t.Fatalf("decoded message does not encode: %v", err)
		}
		var again aoe.Message
		require.NoError(t, again.UnmarshalBinary(enc))
		require.Equal(t, m.Header, again.Header)
		enc2, err := again.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, enc, enc2)
	})
}

// FuzzIdentify parses arbitrary IDENTIFY data.
func FuzzIdentify(f *testing.F) {
	f.Add(make([]byte, 512))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := aoe.ParseIdentify(b)
		if len(b) < 512 {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			return
		}
		require.NoError(t, err)
		require.LessOrEqual(t, len(id.Model), 40)
	})
}

func TestDeviceAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want aoe.DeviceAddr
		err  bool
	}{
		{in: "e0.1", want: aoe.DeviceAddr{Shelf: 0, Slot: 1}},
		{in: "0.1", want: aoe.DeviceAddr{Shelf: 0, Slot: 1}},
		{in: "e65535.255", want: aoe.DeviceAddr{Shelf: 65535, Slot: 255}},
		{in: "e65536.1", err: true},
		{in: "e1.256", err: true},
		{in: "e1", err: true},
		{in: "e1.", err: true},
		{in: "e-1.2", err: true},
		{in: "e1.2.3", err: true},
		{in: "", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := aoe.ParseDeviceAddr(tc.in)
			if tc.err {
				require.ErrorContains(t, err, strconv.Quote(tc.in))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	a := aoe.DeviceAddr{Shelf: 12, Slot: 3}
	assert.Equal(t, "e12.3", a.String())
	assert.False(t, a.Broadcast())
	assert.True(t, aoe.DeviceAddr{Shelf: aoe.BroadcastShelf, Slot: 3}.Broadcast())
	assert.True(t, aoe.DeviceAddr{Shelf: 1, Slot: aoe.BroadcastSlot}.Broadcast())
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "device", a)
	assert.Contains(t, logged.String(), `"device":"e12.3"`)
}

func FuzzParseDeviceAddr(f *testing.F) {
	for _, s := range []string{"e0.1", "1.2", "e65535.255", "e99999.1", "e.", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := aoe.ParseDeviceAddr(s)
		if err != nil {
			return
		}
		back, err := aoe.ParseDeviceAddr(a.String())
		require.NoError(t, err)
		require.Equal(t, a, back)
	})
}
