// The transmission phase's messages as plain values: requests, simple replies, structured
// reply chunks and their payloads.

package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Request is a transmission request header.
type Request struct {
	Flags  CommandFlags
	Type   Command
	Cookie uint64
	Offset uint64
	Length uint32
}

// AppendBinary appends the wire form of r (RequestHeaderSize bytes) to b.
func (r Request) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, RequestMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(r.Flags))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Type))
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	b = binary.BigEndian.AppendUint32(b, r.Length)
	return b, nil
}

// MarshalBinary returns the wire form of r.
func (r Request) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, RequestHeaderSize))
}

// UnmarshalBinary parses a request header. Short input returns io.ErrUnexpectedEOF.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) < RequestHeaderSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint32(b); m != RequestMagic {
		return fmt.Errorf("nbd: bad request magic %#x", m)
	}
	r.Flags = CommandFlags(binary.BigEndian.Uint16(b[4:]))
	r.Type = Command(binary.BigEndian.Uint16(b[6:]))
	r.Cookie = binary.BigEndian.Uint64(b[8:])
	r.Offset = binary.BigEndian.Uint64(b[16:])
	r.Length = binary.BigEndian.Uint32(b[24:])
	return nil
}
