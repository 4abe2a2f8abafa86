package tftp_test

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// packetCases are encoded to testdata/packets.golden.
var packetCases = []struct {
	name string
	p    tftp.Packet
}{
	{"RRQ plain", &tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "pxelinux.0", Mode: "octet"}},
	{"RRQ default mode", &tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "boot/linux"}},
	{"RRQ options", &tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "boot/initrd", Mode: "octet", Options: []tftp.Option{
		{"blksize", "1468"}, {"tsize", "0"}, {"windowsize", "16"}, {"timeout", "1"}}}},
	{"WRQ netascii tsize", &tftp.RequestPacket{Op: tftp.OpWRQ, Filename: "log.txt", Mode: "netascii", Options: []tftp.Option{{"tsize", "1234"}}}},
	{"DATA", &tftp.DataPacket{Block: 65535, Data: []byte("hello")}},
	{"DATA empty", &tftp.DataPacket{Block: 0, Data: []byte{}}},
	{"ACK", &tftp.AckPacket{Block: 258}},
	{"ERROR", &tftp.ErrorPacket{Code: tftp.ErrFileNotFound, Message: "\"x\" not found"}},
	{"ERROR empty", &tftp.ErrorPacket{Code: tftp.ErrOptionRefused}},
	{"OACK", &tftp.OAckPacket{Options: []tftp.Option{{"blksize", "1468"}, {"tsize", "33554432"}}}},
}

func TestPacketGolden(t *testing.T) {
	var b strings.Builder
	for _, tc := range packetCases {
		enc, err := tftp.MarshalPacket(tc.p)
		require.NoError(t, err, tc.name)
		fmt.Fprintf(&b, "%s: %s\n", tc.name, hex.EncodeToString(enc))

		back, err := tftp.ParsePacket(enc)
		require.NoError(t, err, tc.name)
		again, err := tftp.MarshalPacket(back)
		require.NoError(t, err)
		assert.Equal(t, enc, again, "round trip of %s", tc.name)
		assert.Equal(t, tc.p.Opcode(), back.Opcode())
	}
	path := filepath.Join("testdata", "packets.golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), b.String())
}

func TestParsePacketErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		short bool // io.ErrUnexpectedEOF expected
		msg   string
	}{
		{"empty", "", true, "0 bytes"},
		{"one byte", "\x00", true, "1 bytes"},
		{"unknown opcode", "\x00\x09", false, "unknown opcode 9"},
		{"RRQ without name end", "\x00\x01file", true, "file name"},
		{"RRQ without mode", "\x00\x01file\x00", true, "mode"},
		{"RRQ empty name", "\x00\x01\x00octet\x00", false, "empty file name"},
		{"RRQ empty mode", "\x00\x01f\x00\x00", false, "empty mode"},
		{"option without value", "\x00\x01f\x00octet\x00blksize\x00", true, "blksize value"},
		{"option value not terminated", "\x00\x01f\x00octet\x00blksize\x00512", true, "blksize value"},
		{"duplicate option", "\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x00512\x00", false, "given twice"},
		{"short DATA", "\x00\x03\x00", true, "DATA"},
		{"short ACK", "\x00\x04", true, "ACK"},
		{"short ERROR", "\x00\x05\x00", true, "ERROR"},
		{"OACK unterminated", "\x00\x06tsize", true, "option name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tftp.ParsePacket([]byte(tc.in))
			require.Error(t, err)
			assert.ErrorContains(t, err, tc.msg)
			assert.True(t, strings.HasPrefix(err.Error(), "tftp: "), err.Error())
			if tc.short {
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
			} else {
				assert.NotErrorIs(t, err, io.ErrUnexpectedEOF)
			}
		})
	}
}

func TestParsePacketLenient(t *testing.T) {
	// Trailing NUL padding after the options and an ERROR without its final NUL are accepted.
	p, err := tftp.ParsePacket([]byte("\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00"))
	require.NoError(t, err)
	assert.Equal(t, []tftp.Option{{"tsize", "0"}}, p.(*tftp.RequestPacket).Options)
	p, err = tftp.ParsePacket([]byte("\x00\x05\x00\x01gone"))
	require.NoError(t, err)
	assert.Equal(t, &tftp.ErrorPacket{Code: tftp.ErrFileNotFound, Message: "gone"}, p)
}

func TestMarshalErrors(t *testing.T) {
	for name, p := range map[string]tftp.Packet{
		"NUL in name":  &tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "a\x00b"},
		"empty name":   &tftp.RequestPacket{Op: tftp.OpRRQ},
		"wrong opcode": &tftp.RequestPacket{Op: tftp.OpDATA, Filename: "x"},
		"empty option": &tftp.OAckPacket{Options: []tftp.Option{{"", "1"}}},
		"NUL in value": &tftp.OAckPacket{Options: []tftp.Option{{"x", "1\x00"}}},
		"NUL in mode":  &tftp.RequestPacket{Op: tftp.OpWRQ, Filename: "x", Mode: "oc\x00tet"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tftp.MarshalPacket(p)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "tftp: "), err.Error())
		})
	}
}

func TestErrorCodes(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &tftp.ErrorPacket{Code: tftp.ErrDiskFull, Message: "quota"})
	assert.ErrorIs(t, err, tftp.ErrDiskFull)
	assert.NotErrorIs(t, err, tftp.ErrFileNotFound)
	assert.Equal(t, "wrapped: tftp: disk full or allocation exceeded: quota", err.Error())
	assert.Equal(t, "tftp: error code 42", tftp.ErrorCode(42).Error())
	assert.Equal(t, "OACK", tftp.OpOACK.String())
	assert.Equal(t, "Opcode(9)", tftp.Opcode(9).String())
}
