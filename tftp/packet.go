package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Opcode is the first field of every TFTP packet.
type Opcode uint16

// Opcodes of RFC 1350 and RFC 2347.
const (
	OpRRQ   Opcode = 1 // read request
	OpWRQ   Opcode = 2 // write request
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6 // option acknowledgment (RFC 2347)
)

func (o Opcode) String() string {
	switch o {
	case OpRRQ:
		return "RRQ"
	case OpWRQ:
		return "WRQ"
	case OpDATA:
		return "DATA"
	case OpACK:
		return "ACK"
	case OpERROR:
		return "ERROR"
	case OpOACK:
		return "OACK"
	}
	return fmt.Sprintf("Opcode(%d)", uint16(o))
}

// ErrorCode is a TFTP error code. It implements error, so a received error packet can be matched
// with errors.Is(err, tftp.ErrFileNotFound).
type ErrorCode uint16

// Error codes of RFC 1350 and RFC 2347.
const (
	ErrNotDefined       ErrorCode = 0
	ErrFileNotFound     ErrorCode = 1
	ErrAccessViolation  ErrorCode = 2
	ErrDiskFull         ErrorCode = 3
	ErrIllegalOperation ErrorCode = 4
	ErrUnknownTID       ErrorCode = 5
	ErrFileExists       ErrorCode = 6
	ErrNoSuchUser       ErrorCode = 7
	ErrOptionRefused    ErrorCode = 8 // RFC 2347: the client refuses the OACK
)

var errorCodeText = [...]string{
	"not defined", "file not found", "access violation", "disk full or allocation exceeded",
	"illegal TFTP operation", "unknown transfer ID", "file already exists", "no such user",
	"option negotiation refused",
}

func (c ErrorCode) Error() string {
	if int(c) < len(errorCodeText) {
		return "tftp: " + errorCodeText[c]
	}
	return fmt.Sprintf("tftp: error code %d", uint16(c))
}

// Mode names of RFC 1350 (compared case-insensitively on the wire).
const (
	ModeOctet    = "octet"
	ModeNetascii = "netascii"
)

// Option names of RFC 2348, RFC 2349 and RFC 7440.
const (
	OptBlockSize    = "blksize"
	OptTimeout      = "timeout"
	OptTransferSize = "tsize"
	OptWindowSize   = "windowsize"
)

// Option is one name/value pair of a request or an OACK. Names are compared case-insensitively.
type Option struct {
	Name, Value string
}

// Packet is any TFTP packet value.
type Packet interface {
	Opcode() Opcode
	// AppendBinary appends the wire encoding to b.
	AppendBinary(b []byte) ([]byte, error)
}

// Compile-time checks that every packet type is a Packet.
var (
	_ Packet = (*RequestPacket)(nil)
	_ Packet = (*DataPacket)(nil)
	_ Packet = (*AckPacket)(nil)
	_ Packet = (*ErrorPacket)(nil)
	_ Packet = (*OAckPacket)(nil)
	_ error  = (*ErrorPacket)(nil)
)

// RequestPacket is a read (RRQ) or write (WRQ) request with its options.
type RequestPacket struct {
	Op       Opcode // OpRRQ or OpWRQ
	Filename string
	Mode     string
	Options  []Option
}

// DataPacket carries one block. Data aliases the parsed buffer.
type DataPacket struct {
	Block uint16
	Data  []byte
}

// AckPacket acknowledges a block (block 0 acknowledges an OACK or a write request).
type AckPacket struct {
	Block uint16
}

// ErrorPacket ends a transfer with a code and a message. As an error it unwraps to its Code.
type ErrorPacket struct {
	Code    ErrorCode
	Message string
}

// OAckPacket acknowledges the options the server accepted (RFC 2347).
type OAckPacket struct {
	Options []Option
}

// Opcode returns p.Op.
func (p *RequestPacket) Opcode() Opcode { return p.Op }

// Opcode returns OpDATA.
func (*DataPacket) Opcode() Opcode { return OpDATA }

// Opcode returns OpACK.
func (*AckPacket) Opcode() Opcode { return OpACK }

// Opcode returns OpERROR.
func (*ErrorPacket) Opcode() Opcode { return OpERROR }

// Opcode returns OpOACK.
func (*OAckPacket) Opcode() Opcode { return OpOACK }

// Option returns the value of the named option (case-insensitive) and whether it was present.
func (p *RequestPacket) Option(name string) (string, bool) { return findOption(p.Options, name) }

// Option returns the value of the named option (case-insensitive) and whether it was present.
func (p *OAckPacket) Option(name string) (string, bool) { return findOption(p.Options, name) }

func findOption(opts []Option, name string) (string, bool) {
	for _, o := range opts {
		if strings.EqualFold(o.Name, name) {
			return o.Value, true
		}
	}
	return "", false
}

func (e *ErrorPacket) Error() string {
	if e.Message == "" {
		return e.Code.Error()
	}
	return fmt.Sprintf("%v: %s", e.Code, e.Message)
}

// Unwrap returns e.Code.
func (e *ErrorPacket) Unwrap() error { return e.Code }

func appendString(b []byte, what, s string) ([]byte, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return b, fmt.Errorf("tftp: %s %q contains a NUL byte", what, s)
	}
	b = append(b, s...)
	return append(b, 0), nil
}

// AppendBinary appends the wire encoding of p to b.
func (p *RequestPacket) AppendBinary(b []byte) ([]byte, error) {
	if p.Op != OpRRQ && p.Op != OpWRQ {
		return b, fmt.Errorf("tftp: request opcode %v is not RRQ or WRQ", p.Op)
	}
	if p.Filename == "" {
		return b, errors.New("tftp: request has an empty file name")
	}
	b = binary.BigEndian.AppendUint16(b, uint16(p.Op))
	var err error
	if b, err = appendString(b, "file name", p.Filename); err != nil {
		return b, err
	}
	mode := p.Mode
	if mode == "" {
		mode = ModeOctet
	}
	if b, err = appendString(b, "mode", mode); err != nil {
		return b, err
	}
	return appendOptions(b, p.Options)
}

func appendOptions(b []byte, opts []Option) ([]byte, error) {
	var err error
	for _, o := range opts {
		if o.Name == "" {
			return b, errors.New("tftp: option with an empty name")
		}
		if b, err = appendString(b, "option name", o.Name); err != nil {
			return b, err
		}
		if b, err = appendString(b, "option "+o.Name+" value", o.Value); err != nil {
			return b, err
		}
	}
	return b, nil
}

// AppendBinary appends the wire encoding of p to b.
func (p *DataPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpDATA))
	b = binary.BigEndian.AppendUint16(b, p.Block)
	return append(b, p.Data...), nil
}

// AppendBinary appends the wire encoding of p to b.
func (p *AckPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpACK))
	return binary.BigEndian.AppendUint16(b, p.Block), nil
}

// AppendBinary appends the wire encoding of e to b. A NUL byte in the message is dropped, as the
// message is only advice for a person.
func (e *ErrorPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpERROR))
	b = binary.BigEndian.AppendUint16(b, uint16(e.Code))
	b = append(b, strings.ReplaceAll(e.Message, "\x00", "")...)
	return append(b, 0), nil
}

// AppendBinary appends the wire encoding of p to b.
func (p *OAckPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpOACK))
	return appendOptions(b, p.Options)
}

// MarshalPacket returns the wire encoding of p.
func MarshalPacket(p Packet) ([]byte, error) {
	return p.AppendBinary(nil)
}

// ParsePacket decodes one TFTP packet. Short input returns an error wrapping io.ErrUnexpectedEOF.
// The returned DataPacket aliases b; strings are copied.
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("tftp: packet of %d bytes: %w", len(b), io.ErrUnexpectedEOF)
	}
	op := Opcode(binary.BigEndian.Uint16(b))
	body := b[2:]
	switch op {
	case OpRRQ, OpWRQ:
		return parseRequest(op, body)
	case OpDATA:
		if len(body) < 2 {
			return nil, fmt.Errorf("tftp: DATA packet of %d bytes: %w", len(b), io.ErrUnexpectedEOF)
		}
		return &DataPacket{Block: binary.BigEndian.Uint16(body), Data: body[2:]}, nil
	case OpACK:
		if len(body) < 2 {
			return nil, fmt.Errorf("tftp: ACK packet of %d bytes: %w", len(b), io.ErrUnexpectedEOF)
		}
		return &AckPacket{Block: binary.BigEndian.Uint16(body)}, nil
	case OpERROR:
		if len(body) < 2 {
			return nil, fmt.Errorf("tftp: ERROR packet of %d bytes: %w", len(b), io.ErrUnexpectedEOF)
		}
		// Some peers omit the final NUL of the message; accept that.
		msg := body[2:]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i]
		}
		return &ErrorPacket{Code: ErrorCode(binary.BigEndian.Uint16(body)), Message: string(msg)}, nil
	case OpOACK:
		opts, err := parseOptions(body)
		if err != nil {
			return nil, err
		}
		return &OAckPacket{Options: opts}, nil
	}
	return nil, fmt.Errorf("tftp: unknown opcode %d", uint16(op))
}

// nextString splits a NUL-terminated string off b.
func nextString(b []byte, what string) (string, []byte, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, fmt.Errorf("tftp: %s not NUL-terminated: %w", what, io.ErrUnexpectedEOF)
	}
	return string(b[:i]), b[i+1:], nil
}

func parseRequest(op Opcode, b []byte) (*RequestPacket, error) {
	name, b, err := nextString(b, "file name")
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("tftp: %v with an empty file name", op)
	}
	mode, b, err := nextString(b, "mode")
	if err != nil {
		return nil, err
	}
	if mode == "" {
		return nil, fmt.Errorf("tftp: %v for %s with an empty mode", op, quoteName(name))
	}
	opts, err := parseOptions(b)
	if err != nil {
		return nil, err
	}
	return &RequestPacket{Op: op, Filename: name, Mode: mode, Options: opts}, nil
}

// MaxOptions is the most options ParsePacket accepts in a request or an OACK. RFC 2347 defines
// four in use (blksize, timeout, tsize, windowsize) plus a few vendor ones; a packet with more is
// refused as malformed, which bounds the work one request costs the server's request loop.
const MaxOptions = 32

func parseOptions(b []byte) ([]Option, error) {
	var opts []Option
	// seen holds the lower-cased names so far: a duplicate is found in one map lookup, so the
	// check is linear in the packet's length.
	var seen map[string]struct{}
	for len(b) > 0 {
		// Some clients pad requests with trailing NULs; an empty name ends the list.
		if b[0] == 0 {
			break
		}
		if len(opts) == MaxOptions {
			return nil, fmt.Errorf("tftp: more than %d options", MaxOptions)
		}
		var o Option
		var err error
		if o.Name, b, err = nextString(b, "option name"); err != nil {
			return nil, err
		}
		if o.Value, b, err = nextString(b, "option "+truncate(o.Name, maxQuotedName)+" value"); err != nil {
			return nil, err
		}
		if seen == nil {
			seen = make(map[string]struct{}, 4)
		}
		key := strings.ToLower(o.Name)
		if _, dup := seen[key]; dup {
			return nil, fmt.Errorf("tftp: option %s given twice", quoteName(o.Name))
		}
		seen[key] = struct{}{}
		opts = append(opts, o)
	}
	return opts, nil
}

// maxQuotedName is how much of a client-chosen name (a file or option name) goes into an error
// or a log line: enough to recognise it, never a 64 KB echo.
const maxQuotedName = 64

// quoteName quotes s for an error message, cut to maxQuotedName bytes (at a rune boundary)
// with "..." after the quote when it was longer.
func quoteName(s string) string {
	if len(s) <= maxQuotedName {
		return strconv.Quote(s)
	}
	return strconv.Quote(truncate(s, maxQuotedName)) + "..."
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
