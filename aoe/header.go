package aoe

import (
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// EtherType is the Ethernet type of AoE frames.
const EtherType = 0x88A2

// Version is the AoE protocol version this package speaks.
const Version = 1

// Broadcast shelf (major) and slot (minor) addresses: a message sent to them reaches every
// device on every target that hears the frame.
const (
	BroadcastShelf uint16 = 0xFFFF
	BroadcastSlot  uint8  = 0xFF
)

// Sizes of the fixed parts of AoE messages, in bytes, counted from the start of the AoE header
// (the Ethernet header is not included).
const (
	HeaderLen     = 10
	ATAArgLen     = 12
	ConfigArgLen  = 8
	MaskArgLen    = 4
	ReserveArgLen = 2
	// MinPayload is the smallest Ethernet payload (60-byte frame less its 14-byte header);
	// shorter messages are padded with zeroes to it.
	MinPayload = 46
	// SectorSize is the ATA sector size carried by AoE.
	SectorSize = 512
	// MaxConfigLen is the longest config string a target stores.
	MaxConfigLen = 1024
)

// Flags are the AoE header flag bits.
type Flags uint8

// Header flags.
const (
	// FlagResponse (R) marks a message sent by a target.
	FlagResponse Flags = 1 << 3
	// FlagError (E) marks a response that carries an Error.
	FlagError Flags = 1 << 2
)

// Command is the AoE command of a message.
type Command uint8

// AoE commands.
const (
	CommandATA            Command = 0
	CommandQueryConfig    Command = 1
	CommandMACMaskList    Command = 2
	CommandReserveRelease Command = 3
)

func (c Command) String() string {
	switch c {
	case CommandATA:
		return "ATA"
	case CommandQueryConfig:
		return "Query Config"
	case CommandMACMaskList:
		return "MAC Mask List"
	case CommandReserveRelease:
		return "Reserve/Release"
	}
	return fmt.Sprintf("command %d", uint8(c))
}

// Error is an AoE error code, carried in responses with FlagError set.
type Error uint8

// AoE error codes.
const (
	ErrUnrecognizedCommand Error = 1
	ErrBadArgument         Error = 2
	ErrDeviceUnavailable   Error = 3
	ErrConfigStringPresent Error = 4
	ErrUnsupportedVersion  Error = 5
	ErrTargetReserved      Error = 6
)

func (e Error) Error() string {
	switch e {
	case ErrUnrecognizedCommand:
		return "aoe: unrecognized command code"
	case ErrBadArgument:
		return "aoe: bad argument parameter"
	case ErrDeviceUnavailable:
		return "aoe: device unavailable"
	case ErrConfigStringPresent:
		return "aoe: config string present"
	case ErrUnsupportedVersion:
		return "aoe: unsupported version"
	case ErrTargetReserved:
		return "aoe: target is reserved"
	}
	return fmt.Sprintf("aoe: error code %d", uint8(e))
}

// Header is the AoE header that starts every message.
type Header struct {
	// Version is the protocol version, 4 bits; Version (1) for every message this package
	// sends.
	Version uint8
	Flags   Flags // 4 bits
	// Error is meaningful when Flags has FlagError.
	Error Error
	// Major is the shelf address, Minor the slot address.
	Major   uint16
	Minor   uint8
	Command Command
	// Tag is chosen by the initiator and copied into the response.
	Tag uint32
}

// Response reports whether the R flag is set.
func (h *Header) Response() bool { return h.Flags&FlagResponse != 0 }

// AppendBinary appends the 10-byte encoded header to b.
func (h *Header) AppendBinary(b []byte) ([]byte, error) {
	if h.Version > 0xF || h.Flags > 0xF {
		return b, fmt.Errorf("aoe: header version %d or flags %#x exceed 4 bits", h.Version, uint8(h.Flags))
	}
	b = append(b, h.Version<<4|uint8(h.Flags), uint8(h.Error))
	b = binary.BigEndian.AppendUint16(b, h.Major)
	b = append(b, h.Minor, uint8(h.Command))
	return binary.BigEndian.AppendUint32(b, h.Tag), nil
}

// MarshalBinary encodes the header.
func (h *Header) MarshalBinary() ([]byte, error) { return h.AppendBinary(make([]byte, 0, HeaderLen)) }

// UnmarshalBinary decodes the first HeaderLen bytes of b; shorter input returns
// io.ErrUnexpectedEOF.
func (h *Header) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderLen {
		return io.ErrUnexpectedEOF
	}
	h.Version = b[0] >> 4
	h.Flags = Flags(b[0] & 0xF)
	h.Error = Error(b[1])
	h.Major = binary.BigEndian.Uint16(b[2:])
	h.Minor = b[4]
	h.Command = Command(b[5])
	h.Tag = binary.BigEndian.Uint32(b[6:])
	return nil
}

// pad extends b with zeroes to MinPayload bytes.
func pad(b []byte) []byte {
	for len(b) < MinPayload {
		b = append(b, 0)
	}
	return b
}

// DeviceAddr is the address of an AoE device: its shelf (the header's Major) and slot
// (Minor). Its text form is the name the Linux aoe driver gives the device, "e<shelf>.<slot>".
type DeviceAddr struct {
	Shelf uint16
	Slot  uint8
}

// DeviceAddr returns the device address the header names.
func (h *Header) DeviceAddr() DeviceAddr { return DeviceAddr{Shelf: h.Major, Slot: h.Minor} }

// Broadcast reports whether the shelf or the slot is a broadcast address, so that the address
// names no single device.
func (a DeviceAddr) Broadcast() bool { return a.Shelf == BroadcastShelf || a.Slot == BroadcastSlot }

// String returns "e<shelf>.<slot>" in decimal, such as "e0.1".
func (a DeviceAddr) String() string {
	return "e" + strconv.Itoa(int(a.Shelf)) + "." + strconv.Itoa(int(a.Slot))
}

// MarshalText returns the String form, so that loggers and encoders print the name.
func (a DeviceAddr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText parses the String form, as ParseDeviceAddr does.
func (a *DeviceAddr) UnmarshalText(b []byte) error {
	p, err := ParseDeviceAddr(string(b))
	if err != nil {
		return err
	}
	*a = p
	return nil
}

// ParseDeviceAddr parses a device address written "e<shelf>.<slot>", such as "e0.1", or
// without the "e" ("0.1"). Shelf and slot are decimal, at most 65535 and 255.
func ParseDeviceAddr(s string) (DeviceAddr, error) {
	shelf, slot, ok := strings.Cut(strings.TrimPrefix(s, "e"), ".")
	sh, err1 := strconv.ParseUint(shelf, 10, 16)
	sl, err2 := strconv.ParseUint(slot, 10, 8)
	if !ok || err1 != nil || err2 != nil {
		return DeviceAddr{}, fmt.Errorf("aoe: device address %q: want e<shelf>.<slot> with shelf 0-65535 and slot 0-255", s)
	}
	return DeviceAddr{Shelf: uint16(sh), Slot: uint8(sl)}, nil
}
