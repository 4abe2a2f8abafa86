// The handshake's messages as plain values: greeting, client flags, option requests and
// replies and their payloads. The transmission phase's are in wire_transmit.go.

package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The protocol's messages as plain values. Each has AppendBinary, which appends its wire form,
// and UnmarshalBinary, which parses it and returns io.ErrUnexpectedEOF for short input. Headers
// (fixed size) parse their first bytes; payloads (INFO/GO, metadata contexts, error chunks) must
// fill their input exactly.

// OptionHeader is the header of an option request: OptionMagic, the option, the length of the
// data that follows.
type OptionHeader struct {
	Option Option
	Length uint32
}

// AppendBinary appends the OptionHeaderSize bytes of h to b.
func (h OptionHeader) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, OptionMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Option))
	return binary.BigEndian.AppendUint32(b, h.Length), nil
}

// UnmarshalBinary parses an option request header.
func (h *OptionHeader) UnmarshalBinary(b []byte) error {
	if len(b) < OptionHeaderSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint64(b); m != OptionMagic {
		return fmt.Errorf("nbd: bad option magic %#x", m)
	}
	h.Option = Option(binary.BigEndian.Uint32(b[8:]))
	h.Length = binary.BigEndian.Uint32(b[12:])
	return nil
}

// OptionReplyHeader is the header of an option reply: OptionReplyMagic, the option answered,
// the reply type, the length of the data that follows.
type OptionReplyHeader struct {
	Option Option
	Type   ReplyType
	Length uint32
}

// AppendBinary appends the OptionReplyHeaderSize bytes of h to b.
func (h OptionReplyHeader) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, OptionReplyMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Option))
	b = binary.BigEndian.AppendUint32(b, uint32(h.Type))
	return binary.BigEndian.AppendUint32(b, h.Length), nil
}

// UnmarshalBinary parses an option reply header.
func (h *OptionReplyHeader) UnmarshalBinary(b []byte) error {
	if len(b) < OptionReplyHeaderSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint64(b); m != OptionReplyMagic {
		return fmt.Errorf("nbd: bad option reply magic %#x", m)
	}
	h.Option = Option(binary.BigEndian.Uint32(b[8:]))
	h.Type = ReplyType(binary.BigEndian.Uint32(b[12:]))
	h.Length = binary.BigEndian.Uint32(b[16:])
	return nil
}

// InfoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO: an export name and the information
// asked for.
type InfoRequest struct {
	Name  string
	Infos []InfoType
}

// AppendBinary appends the wire form of r to b.
func (r InfoRequest) AppendBinary(b []byte) ([]byte, error) {
	if len(r.Infos) > 0xffff {
		return b, fmt.Errorf("nbd: %d information requests exceed 65535", len(r.Infos))
	}
	b = appendString32(b, r.Name)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Infos)))
	for _, i := range r.Infos {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return b, nil
}

// UnmarshalBinary parses the whole of b as NBD_OPT_INFO or NBD_OPT_GO data.
func (r *InfoRequest) UnmarshalBinary(b []byte) error {
	name, rest, err := takeString32(b, 2)
	if err != nil {
		return err
	}
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 2*count {
		return io.ErrUnexpectedEOF
	}
	if len(rest) != 2*count {
		return fmt.Errorf("nbd: %d information requests need %d bytes, have %d", count, 2*count, len(rest))
	}
	var infos []InfoType
	for i := range count {
		infos = append(infos, InfoType(binary.BigEndian.Uint16(rest[2*i:])))
	}
	r.Name, r.Infos = name, infos
	return nil
}

// MetaContextRequest is the data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT:
// an export name and queries.
type MetaContextRequest struct {
	Name    string
	Queries []string
}

// AppendBinary appends the wire form of r to b.
func (r MetaContextRequest) AppendBinary(b []byte) ([]byte, error) {
	b = appendString32(b, r.Name)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Queries)))
	for _, q := range r.Queries {
		b = appendString32(b, q)
	}
	return b, nil
}

// UnmarshalBinary parses the whole of b as metadata context option data.
func (r *MetaContextRequest) UnmarshalBinary(b []byte) error {
	name, rest, err := takeString32(b, 4)
	if err != nil {
		return err
	}
	count := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for range count {
		var q string
		if q, rest, err = takeString32(rest, 0); err != nil {
			return err
		}
		queries = append(queries, q)
	}
	if len(rest) != 0 {
		return fmt.Errorf("nbd: %d bytes after the last query", len(rest))
	}
	r.Name, r.Queries = name, queries
	return nil
}

// MetaContextReply is the data of NBD_REP_META_CONTEXT: a context's ID and name.
type MetaContextReply struct {
	ID   uint32
	Name string
}

// AppendBinary appends the wire form of r to b.
func (r MetaContextReply) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, r.ID)
	return append(b, r.Name...), nil
}

// UnmarshalBinary parses the whole of b as NBD_REP_META_CONTEXT data.
func (r *MetaContextReply) UnmarshalBinary(b []byte) error {
	if len(b) < 4 {
		return io.ErrUnexpectedEOF
	}
	r.ID, r.Name = binary.BigEndian.Uint32(b), string(b[4:])
	return nil
}

// InfoExportReply is the NBD_INFO_EXPORT information of an NBD_REP_INFO reply (its type
// included): the export's size and transmission flags.
type InfoExportReply struct {
	Size  uint64
	Flags TransmissionFlags
}

// AppendBinary appends the 12 bytes of r to b.
func (r InfoExportReply) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(InfoExport))
	b = binary.BigEndian.AppendUint64(b, r.Size)
	return binary.BigEndian.AppendUint16(b, uint16(r.Flags)), nil
}

// UnmarshalBinary parses the whole of b as NBD_INFO_EXPORT.
func (r *InfoExportReply) UnmarshalBinary(b []byte) error {
	if err := infoExact(b, InfoExport, 12); err != nil {
		return err
	}
	r.Size, r.Flags = binary.BigEndian.Uint64(b[2:]), TransmissionFlags(binary.BigEndian.Uint16(b[10:]))
	return nil
}

// InfoBlockSizeReply is the NBD_INFO_BLOCK_SIZE information (its type included): the export's
// size constraints.
type InfoBlockSizeReply struct {
	Min, Preferred, MaxPayload uint32
}

// AppendBinary appends the 14 bytes of r to b.
func (r InfoBlockSizeReply) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(InfoBlockSize))
	b = binary.BigEndian.AppendUint32(b, r.Min)
	b = binary.BigEndian.AppendUint32(b, r.Preferred)
	return binary.BigEndian.AppendUint32(b, r.MaxPayload), nil
}

// UnmarshalBinary parses the whole of b as NBD_INFO_BLOCK_SIZE.
func (r *InfoBlockSizeReply) UnmarshalBinary(b []byte) error {
	if err := infoExact(b, InfoBlockSize, 14); err != nil {
		return err
	}
	r.Min = binary.BigEndian.Uint32(b[2:])
	r.Preferred = binary.BigEndian.Uint32(b[6:])
	r.MaxPayload = binary.BigEndian.Uint32(b[10:])
	return nil
}

func infoExact(b []byte, typ InfoType, n int) error {
	if len(b) < n {
		return io.ErrUnexpectedEOF
	}
	if t := InfoType(binary.BigEndian.Uint16(b)); t != typ {
		return fmt.Errorf("nbd: information type %d, want %d", t, typ)
	}
	if len(b) != n {
		return fmt.Errorf("nbd: information %d of %d bytes, want %d", typ, len(b), n)
	}
	return nil
}

// appendString32 appends s with a 32-bit length before it.
func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// takeString32 takes a string with a 32-bit length off b, and checks that at least more bytes
// follow it.
func takeString32(b []byte, more int) (string, []byte, error) {
	if len(b) < 4+more {
		return "", nil, io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b))-4-uint64(more) {
		return "", nil, io.ErrUnexpectedEOF
	}
	return string(b[4 : 4+n]), b[4+n:], nil
}

// Greeting is the server's first message in the newstyle handshake: Magic, OptionMagic and the
// handshake flags.
type Greeting struct {
	Flags HandshakeFlags
}

// AppendBinary appends the HandshakeSize bytes of g to b.
func (g Greeting) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, Magic)
	b = binary.BigEndian.AppendUint64(b, OptionMagic)
	return binary.BigEndian.AppendUint16(b, uint16(g.Flags)), nil
}

// UnmarshalBinary parses a newstyle greeting.
func (g *Greeting) UnmarshalBinary(b []byte) error {
	if len(b) < HandshakeSize {
		return io.ErrUnexpectedEOF
	}
	if m := binary.BigEndian.Uint64(b); m != Magic {
		return fmt.Errorf("nbd: bad server magic %#x", m)
	}
	if m := binary.BigEndian.Uint64(b[8:]); m != OptionMagic {
		return fmt.Errorf("nbd: server magic %#x is not newstyle (oldstyle is not supported)", m)
	}
	g.Flags = HandshakeFlags(binary.BigEndian.Uint16(b[16:]))
	return nil
}

// ClientFlagsSize is the size of the client flags, the client's answer to the greeting.
const ClientFlagsSize = 4

// AppendBinary appends the ClientFlagsSize bytes of f to b.
func (f ClientFlags) AppendBinary(b []byte) ([]byte, error) {
	return binary.BigEndian.AppendUint32(b, uint32(f)), nil
}

// UnmarshalBinary parses client flags.
func (f *ClientFlags) UnmarshalBinary(b []byte) error {
	if len(b) < ClientFlagsSize {
		return io.ErrUnexpectedEOF
	}
	*f = ClientFlags(binary.BigEndian.Uint32(b))
	return nil
}

// ExportNameReply is the server's reply to NBD_OPT_EXPORT_NAME, without the ExportNameZeroes
// zero bytes that follow it unless both sides agreed on no zeroes: the export's size and
// transmission flags.
type ExportNameReply struct {
	Size  uint64
	Flags TransmissionFlags
}

// AppendBinary appends the ExportNameReplySize bytes of r to b.
func (r ExportNameReply) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint64(b, r.Size)
	return binary.BigEndian.AppendUint16(b, uint16(r.Flags)), nil
}

// UnmarshalBinary parses an NBD_OPT_EXPORT_NAME reply.
func (r *ExportNameReply) UnmarshalBinary(b []byte) error {
	if len(b) < ExportNameReplySize {
		return io.ErrUnexpectedEOF
	}
	r.Size, r.Flags = binary.BigEndian.Uint64(b), TransmissionFlags(binary.BigEndian.Uint16(b[8:]))
	return nil
}

// ServerReply is the data of NBD_REP_SERVER, one export of an NBD_OPT_LIST reply: its name
// (with a 32-bit length) and its description (the rest).
type ServerReply struct {
	Name, Description string
}

// AppendBinary appends the wire form of r to b.
func (r ServerReply) AppendBinary(b []byte) ([]byte, error) {
	return append(appendString32(b, r.Name), r.Description...), nil
}

// UnmarshalBinary parses the whole of b as NBD_REP_SERVER data.
func (r *ServerReply) UnmarshalBinary(b []byte) error {
	name, rest, err := takeString32(b, 0)
	if err != nil {
		return err
	}
	r.Name, r.Description = name, string(rest)
	return nil
}

// InfoTextReply is an NBD_REP_INFO reply's data made of its information type and text: the
// form of NBD_INFO_NAME and NBD_INFO_DESCRIPTION. Any information parses as one, so a reader
// can learn the type before parsing the data as what it is.
type InfoTextReply struct {
	Type InfoType
	Text string
}

// AppendBinary appends the wire form of r to b.
func (r InfoTextReply) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(r.Type))
	return append(b, r.Text...), nil
}

// UnmarshalBinary parses the whole of b as NBD_REP_INFO data.
func (r *InfoTextReply) UnmarshalBinary(b []byte) error {
	if len(b) < 2 {
		return io.ErrUnexpectedEOF
	}
	r.Type, r.Text = InfoType(binary.BigEndian.Uint16(b)), string(b[2:])
	return nil
}
