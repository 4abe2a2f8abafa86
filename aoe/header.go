package aoe

import (
	"encoding/binary"
	"fmt"
	"io"
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
