// The transmission phase's messages as plain values: requests, simple replies, structured
// reply chunks and their payloads.

package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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

// SimpleReply is a simple reply header: SimpleReplyMagic, the error, the request's cookie.
type SimpleReply struct {
	Errno  Errno
	Cookie uint64
}

// AppendBinary appends the SimpleReplyHeaderSize bytes of r to b.
func (r SimpleReply) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, SimpleReplyMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(r.Errno))
	return binary.BigEndian.AppendUint64(b, r.Cookie), nil
}

// UnmarshalBinary parses a simple reply header.
func (r *SimpleReply) UnmarshalBinary(b []byte) error {
	if len(b) < SimpleReplyHeaderSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint32(b); m != SimpleReplyMagic {
		return fmt.Errorf("nbd: bad simple reply magic %#x", m)
	}
	r.Errno, r.Cookie = Errno(binary.BigEndian.Uint32(b[4:])), binary.BigEndian.Uint64(b[8:])
	return nil
}

// ChunkHeader is a structured reply chunk header: StructuredReplyMagic, flags, type, the
// request's cookie, the length of the payload that follows.
type ChunkHeader struct {
	Flags  ReplyFlags
	Type   ChunkType
	Cookie uint64
	Length uint32
}

// AppendBinary appends the StructuredReplyHeaderSize bytes of h to b.
func (h ChunkHeader) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, StructuredReplyMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(h.Flags))
	b = binary.BigEndian.AppendUint16(b, uint16(h.Type))
	b = binary.BigEndian.AppendUint64(b, h.Cookie)
	return binary.BigEndian.AppendUint32(b, h.Length), nil
}

// UnmarshalBinary parses a structured reply chunk header.
func (h *ChunkHeader) UnmarshalBinary(b []byte) error {
	if len(b) < StructuredReplyHeaderSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint32(b); m != StructuredReplyMagic {
		return fmt.Errorf("nbd: bad structured reply magic %#x", m)
	}
	h.Flags = ReplyFlags(binary.BigEndian.Uint16(b[4:]))
	h.Type = ChunkType(binary.BigEndian.Uint16(b[6:]))
	h.Cookie = binary.BigEndian.Uint64(b[8:])
	h.Length = binary.BigEndian.Uint32(b[16:])
	return nil
}

// ErrorChunk is the payload of an NBD_REPLY_TYPE_ERROR chunk: the error and a message. Every
// error chunk type starts with these fields.
type ErrorChunk struct {
	Errno   Errno
	Message string
}

// AppendBinary appends the wire form of e to b.
func (e ErrorChunk) AppendBinary(b []byte) ([]byte, error) {
	if len(e.Message) > 0xffff {
		return b, fmt.Errorf("nbd: error message of %d bytes exceeds 65535", len(e.Message))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(e.Errno))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Message)))
	return append(b, e.Message...), nil
}

// UnmarshalBinary parses the whole of b as an NBD_REPLY_TYPE_ERROR payload.
func (e *ErrorChunk) UnmarshalBinary(b []byte) error {
	rest, err := e.unmarshalPrefix(b)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("nbd: %d bytes after the error message", len(rest))
	}
	return err
}

// unmarshalPrefix parses the fields every error chunk starts with and returns the bytes after
// them (the fields of the chunk's type).
func (e *ErrorChunk) unmarshalPrefix(b []byte) ([]byte, error) {
	if len(b) < 6 {
		return nil, io.ErrUnexpectedEOF
	}
	n := int(binary.BigEndian.Uint16(b[4:]))
	if len(b)-6 < n {
		return nil, io.ErrUnexpectedEOF
	}
	e.Errno, e.Message = Errno(binary.BigEndian.Uint32(b)), string(b[6:6+n])
	return b[6+n:], nil
}

// ErrorOffsetChunk is the payload of an NBD_REPLY_TYPE_ERROR_OFFSET chunk: an error chunk's
// fields and the offset where the error happened.
type ErrorOffsetChunk struct {
	ErrorChunk
	Offset uint64
}

// AppendBinary appends the wire form of e to b.
func (e ErrorOffsetChunk) AppendBinary(b []byte) ([]byte, error) {
	b, err := e.ErrorChunk.AppendBinary(b)
	if err != nil {
		return b, err
	}
	return binary.BigEndian.AppendUint64(b, e.Offset), nil
}

// UnmarshalBinary parses the whole of b as an NBD_REPLY_TYPE_ERROR_OFFSET payload.
func (e *ErrorOffsetChunk) UnmarshalBinary(b []byte) error {
	rest, err := e.ErrorChunk.unmarshalPrefix(b)
	switch {
	case err != nil:
		return err
	case len(rest) < 8:
		return io.ErrUnexpectedEOF
	case len(rest) != 8:
		return fmt.Errorf("nbd: %d bytes after the error offset", len(rest)-8)
	}
	e.Offset = binary.BigEndian.Uint64(rest)
	return nil
}

// OffsetDataChunk is the fixed start of an NBD_REPLY_TYPE_OFFSET_DATA payload: the offset of
// the data that follows it (the chunk's length less OffsetDataChunkSize bytes). Like a header,
// it is written in front of data that is sent separately.
type OffsetDataChunk struct {
	Offset uint64
}

// OffsetDataChunkSize is the size of an OffsetDataChunk.
const OffsetDataChunkSize = 8

// AppendBinary appends the OffsetDataChunkSize bytes of d to b.
func (d OffsetDataChunk) AppendBinary(b []byte) ([]byte, error) {
	return binary.BigEndian.AppendUint64(b, d.Offset), nil
}

// UnmarshalBinary parses the start of an offset-data payload.
func (d *OffsetDataChunk) UnmarshalBinary(b []byte) error {
	if len(b) < OffsetDataChunkSize {
		return io.ErrUnexpectedEOF
	}
	d.Offset = binary.BigEndian.Uint64(b)
	return nil
}

// OffsetHoleChunk is the payload of an NBD_REPLY_TYPE_OFFSET_HOLE chunk.
type OffsetHoleChunk struct {
	Offset uint64
	Length uint32
}

// AppendBinary appends the 12 bytes of h to b.
func (h OffsetHoleChunk) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, h.Offset)
	return binary.BigEndian.AppendUint32(b, h.Length), nil
}

// UnmarshalBinary parses the whole of b as an offset-hole payload.
func (h *OffsetHoleChunk) UnmarshalBinary(b []byte) error {
	if len(b) < 12 {
		return io.ErrUnexpectedEOF
	}
	if len(b) != 12 {
		return fmt.Errorf("nbd: offset-hole payload of %d bytes, want 12", len(b))
	}
	h.Offset, h.Length = binary.BigEndian.Uint64(b), binary.BigEndian.Uint32(b[8:])
	return nil
}

// BlockStatusChunk is the payload of an NBD_REPLY_TYPE_BLOCK_STATUS chunk: a metadata context
// ID and the status of consecutive extents. On the wire an extent is its length (32 bits,
// nonzero) and its status flags (base:allocation: Hole is StateHole, Zero is StateZero); its
// offset is implied, the first extent starting at the request's offset. Offset holds that
// start: AppendBinary ignores it and the extents' offsets, UnmarshalBinary keeps it and
// numbers the extents from it.
type BlockStatusChunk struct {
	ContextID uint32
	Offset    int64
	Extents   []Extent
}

// AppendBinary appends the wire form of s to b.
func (s BlockStatusChunk) AppendBinary(b []byte) ([]byte, error) {
	if len(s.Extents) == 0 {
		return b, errors.New("nbd: block status without extents")
	}
	b = binary.BigEndian.AppendUint32(b, s.ContextID)
	for _, e := range s.Extents {
		if e.Length <= 0 || e.Length > math.MaxUint32 {
			return b, fmt.Errorf("nbd: extent length %d outside 1..%d", e.Length, uint32(math.MaxUint32))
		}
		b = binary.BigEndian.AppendUint32(b, uint32(e.Length))
		b = binary.BigEndian.AppendUint32(b, extentFlags(e))
	}
	return b, nil
}

// UnmarshalBinary parses the whole of b as an NBD_REPLY_TYPE_BLOCK_STATUS payload.
func (s *BlockStatusChunk) UnmarshalBinary(b []byte) error {
	if len(b) < 4+8 {
		return io.ErrUnexpectedEOF
	}
	exts, _, err := appendExtents(nil, b[4:], s.Offset)
	if err != nil {
		return err
	}
	s.ContextID, s.Extents = binary.BigEndian.Uint32(b), exts
	return nil
}

// BlockStatusDescriptorSize is the size of one extent in a BlockStatusChunk.
const BlockStatusDescriptorSize = 8

// appendExtents decodes the block status descriptors that fill b, the first starting at pos,
// appends them to dst and returns the offset after the last.
func appendExtents(dst []Extent, b []byte, pos int64) ([]Extent, int64, error) {
	if len(b)%BlockStatusDescriptorSize != 0 {
		return dst, pos, io.ErrUnexpectedEOF
	}
	for ; len(b) > 0; b = b[BlockStatusDescriptorSize:] {
		n := int64(binary.BigEndian.Uint32(b))
		if n == 0 {
			return dst, pos, errors.New("nbd: extent of length 0")
		}
		f := binary.BigEndian.Uint32(b[4:])
		dst = append(dst, Extent{Offset: pos, Length: n, Hole: f&StateHole != 0, Zero: f&StateZero != 0})
		pos += n
	}
	return dst, pos, nil
}

// extentFlags returns the base:allocation status flags of e.
func extentFlags(e Extent) uint32 {
	var f uint32
	if e.Hole {
		f |= StateHole
	}
	if e.Zero {
		f |= StateZero
	}
	return f
}
