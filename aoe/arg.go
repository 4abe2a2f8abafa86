package aoe

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// Arg is the command-specific argument that follows the header: *ATAArg, *ConfigArg, *MaskArg,
// *ReserveArg, or *RawArg for commands this package does not know.
type Arg interface {
	AppendBinary(b []byte) ([]byte, error)
	UnmarshalBinary(b []byte) error
}

var (
	_ Arg = (*ATAArg)(nil)
	_ Arg = (*ConfigArg)(nil)
	_ Arg = (*MaskArg)(nil)
	_ Arg = (*ReserveArg)(nil)
	_ Arg = (*RawArg)(nil)
)

// ATA argument flag bits (AFlags).
const (
	aflagExtended = 1 << 6
	aflagDevice   = 1 << 4
	aflagAsync    = 1 << 1
	aflagWrite    = 1 << 0
)

// maxLBA48 is the largest value the 6-byte LBA field holds.
const maxLBA48 = 1<<48 - 1

// ATAArg is the argument of an ATA command (CommandATA) and of its response.
type ATAArg struct {
	Extended bool // E: LBA48 command
	Device   bool // D: the ATA device/head register's DEV bit
	Async    bool // A: asynchronous write
	Write    bool // W: Data travels from initiator to target
	// ErrFeature is the ATA feature register in requests and the error register in responses.
	ErrFeature uint8
	// SectorCount is the ATA sector count register.
	SectorCount uint8
	// CmdStatus is the ATA command register in requests and the status register in responses.
	CmdStatus uint8
	// LBA is the 48-bit logical block address (sent little-endian).
	LBA uint64
	// Data is the sector data. UnmarshalBinary makes it alias its input.
	Data []byte
}

// Offsets of the fields of the 12-byte ATA argument (AoEr11 section 3.1), from its start.
const (
	ataOffFlags      = 0  // AFlags
	ataOffErrFeature = 1  // Err/Feature
	ataOffCount      = 2  // Sector Count
	ataOffCmdStatus  = 3  // Cmd/Status
	ataOffLBA        = 4  // lba0 to lba5, little-endian
	ataOffReserved   = 10 // two reserved bytes
)

// ataRegs is an ATA argument in place in a message, at least ATAArgLen bytes: the one codec of
// its fields, used by ATAArg and by the Target, which reads requests and builds responses in
// the receive buffer.
type ataRegs []byte

func (r ataRegs) flags() uint8      { return r[ataOffFlags] }
func (r ataRegs) errFeature() uint8 { return r[ataOffErrFeature] }
func (r ataRegs) count() uint8      { return r[ataOffCount] }
func (r ataRegs) cmdStatus() uint8  { return r[ataOffCmdStatus] }

func (r ataRegs) lba() uint64 {
	b := r[ataOffLBA : ataOffLBA+6]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 | uint64(b[5])<<40
}

// setResult stores a response's error, sector count and status registers; the flags and LBA
// stay those of the request, as AoEr11 has them echoed.
func (r ataRegs) setResult(errReg, count, status uint8) {
	r[ataOffErrFeature], r[ataOffCount], r[ataOffCmdStatus] = errReg, count, status
}

// put stores every field.
func (r ataRegs) put(flags, errFeature, count, cmdStatus uint8, lba uint64) {
	r[ataOffFlags] = flags
	r.setResult(errFeature, count, cmdStatus)
	for i := range 6 {
		r[ataOffLBA+i] = byte(lba >> (8 * i))
	}
	r[ataOffReserved], r[ataOffReserved+1] = 0, 0
}

// AppendBinary appends the encoded argument and its data to b.
func (a *ATAArg) AppendBinary(b []byte) ([]byte, error) {
	if a.LBA > maxLBA48 {
		return b, fmt.Errorf("aoe: ATA LBA %#x exceeds 48 bits", a.LBA)
	}
	var f uint8
	if a.Extended {
		f |= aflagExtended
	}
	if a.Device {
		f |= aflagDevice
	}
	if a.Async {
		f |= aflagAsync
	}
	if a.Write {
		f |= aflagWrite
	}
	n := len(b)
	b = append(b, make([]byte, ATAArgLen)...)
	ataRegs(b[n:]).put(f, a.ErrFeature, a.SectorCount, a.CmdStatus, a.LBA)
	return append(b, a.Data...), nil
}

// MarshalBinary encodes the argument.
func (a *ATAArg) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil) }

// UnmarshalBinary decodes an ATA argument; Data aliases b.
func (a *ATAArg) UnmarshalBinary(b []byte) error {
	if len(b) < ATAArgLen {
		return io.ErrUnexpectedEOF
	}
	r := ataRegs(b)
	f := r.flags()
	a.Extended = f&aflagExtended != 0
	a.Device = f&aflagDevice != 0
	a.Async = f&aflagAsync != 0
	a.Write = f&aflagWrite != 0
	a.ErrFeature, a.SectorCount, a.CmdStatus = r.errFeature(), r.count(), r.cmdStatus()
	a.LBA = r.lba()
	a.Data = b[ATAArgLen:]
	return nil
}

// ConfigCommand is the subcommand (CCmd) of a Query Config message.
type ConfigCommand uint8

// Query Config subcommands.
const (
	// ConfigRead asks for the config string.
	ConfigRead ConfigCommand = 0
	// ConfigTest asks for a reply only if the config string equals the argument.
	ConfigTest ConfigCommand = 1
	// ConfigTestPrefix asks for a reply only if the argument is a prefix of the config string.
	ConfigTestPrefix ConfigCommand = 2
	// ConfigSet sets the config string if it is empty (or already equal); otherwise the
	// target answers ErrConfigStringPresent.
	ConfigSet ConfigCommand = 3
	// ConfigForceSet sets the config string unconditionally.
	ConfigForceSet ConfigCommand = 4
)

// ConfigArg is the argument of Query Config messages.
type ConfigArg struct {
	// BufferCount is the number of messages the target can queue.
	BufferCount uint16
	// FirmwareVersion is the target's firmware version.
	FirmwareVersion uint16
	// SectorCount is the most sectors the target accepts in one ATA message.
	SectorCount uint8
	// Version is the AoE version the target speaks (4 bits).
	Version uint8
	// Command is the subcommand (4 bits).
	Command ConfigCommand
	// String is the config string, at most MaxConfigLen bytes. UnmarshalBinary makes it alias
	// its input.
	String []byte
}

// AppendBinary appends the encoded argument to b.
func (c *ConfigArg) AppendBinary(b []byte) ([]byte, error) {
	if c.Version > 0xF || c.Command > 0xF {
		return b, fmt.Errorf("aoe: config version %d or command %d exceed 4 bits", c.Version, c.Command)
	}
	if len(c.String) > MaxConfigLen {
		return b, fmt.Errorf("aoe: config string of %d bytes exceeds %d", len(c.String), MaxConfigLen)
	}
	b = binary.BigEndian.AppendUint16(b, c.BufferCount)
	b = binary.BigEndian.AppendUint16(b, c.FirmwareVersion)
	b = append(b, c.SectorCount, c.Version<<4|uint8(c.Command))
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.String)))
	return append(b, c.String...), nil
}

// MarshalBinary encodes the argument.
func (c *ConfigArg) MarshalBinary() ([]byte, error) { return c.AppendBinary(nil) }

// UnmarshalBinary decodes a Query Config argument. Bytes after the config string (Ethernet
// padding) are ignored.
func (c *ConfigArg) UnmarshalBinary(b []byte) error {
	if len(b) < ConfigArgLen {
		return io.ErrUnexpectedEOF
	}
	c.BufferCount = binary.BigEndian.Uint16(b)
	c.FirmwareVersion = binary.BigEndian.Uint16(b[2:])
	c.SectorCount = b[4]
	c.Version = b[5] >> 4
	c.Command = ConfigCommand(b[5] & 0xF)
	n := int(binary.BigEndian.Uint16(b[6:]))
	if n > MaxConfigLen {
		return fmt.Errorf("aoe: config string length %d exceeds %d", n, MaxConfigLen)
	}
	if len(b)-ConfigArgLen < n {
		return io.ErrUnexpectedEOF
	}
	c.String = b[ConfigArgLen : ConfigArgLen+n]
	return nil
}

// MaskCommand is the subcommand (MCmd) of a MAC Mask List message.
type MaskCommand uint8

// MAC Mask List subcommands.
const (
	MaskRead MaskCommand = 0
	MaskEdit MaskCommand = 1
)

// MaskError is the MError field of a MAC Mask List response.
type MaskError uint8

// MAC Mask List errors.
const (
	MaskErrUnspecified  MaskError = 1
	MaskErrBadDirective MaskError = 2
	MaskErrListFull     MaskError = 3
)

func (e MaskError) Error() string {
	switch e {
	case MaskErrUnspecified:
		return "aoe: mask list: unspecified error"
	case MaskErrBadDirective:
		return "aoe: mask list: bad directive command"
	case MaskErrListFull:
		return "aoe: mask list: list full"
	}
	return fmt.Sprintf("aoe: mask list: error %d", uint8(e))
}

// DirectiveCommand is the command (DCmd) of a MAC Mask List directive.
type DirectiveCommand uint8

// MAC Mask List directive commands.
const (
	DirectiveNone   DirectiveCommand = 0
	DirectiveAdd    DirectiveCommand = 1
	DirectiveDelete DirectiveCommand = 2
)

// Directive is one entry of a MAC Mask List message: an edit in requests, a list member in
// responses (with DirectiveNone).
type Directive struct {
	Command DirectiveCommand
	MAC     net.HardwareAddr
}

// MaskArg is the argument of MAC Mask List messages.
type MaskArg struct {
	Command    MaskCommand
	Error      MaskError
	Directives []Directive
}

// AppendBinary appends the encoded argument to b.
func (m *MaskArg) AppendBinary(b []byte) ([]byte, error) {
	if len(m.Directives) > 255 {
		return b, fmt.Errorf("aoe: %d mask directives exceed 255", len(m.Directives))
	}
	b = append(b, 0, uint8(m.Command), uint8(m.Error), uint8(len(m.Directives)))
	for _, d := range m.Directives {
		if len(d.MAC) != 6 {
			return b, fmt.Errorf("aoe: mask directive MAC %q is not 6 bytes", d.MAC)
		}
		b = append(b, 0, uint8(d.Command))
		b = append(b, d.MAC...)
	}
	return b, nil
}

// MarshalBinary encodes the argument.
func (m *MaskArg) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes a MAC Mask List argument; the directives' MACs are copies.
func (m *MaskArg) UnmarshalBinary(b []byte) error {
	if len(b) < MaskArgLen {
		return io.ErrUnexpectedEOF
	}
	m.Command = MaskCommand(b[1])
	m.Error = MaskError(b[2])
	n := int(b[3])
	b = b[MaskArgLen:]
	if len(b) < 8*n && m.Error == 0 {
		return io.ErrUnexpectedEOF
	}
	// In an error response the directive count names the failing directive and targets such
	// as vblade send fewer directives than that: the missing ones decode as zero.
	m.Directives = make([]Directive, n)
	macs := make([]byte, 6*n)
	for i := range n {
		mac := macs[6*i : 6*i+6 : 6*i+6]
		if 8*i+8 <= len(b) {
			copy(mac, b[8*i+2:])
			m.Directives[i].Command = DirectiveCommand(b[8*i+1])
		}
		m.Directives[i].MAC = mac
	}
	return nil
}

// ReserveCommand is the subcommand (RCmd) of a Reserve/Release message.
type ReserveCommand uint8

// Reserve/Release subcommands.
const (
	// ReserveRead asks for the reserve list.
	ReserveRead ReserveCommand = 0
	// ReserveSet replaces the reserve list if the sender is on it or it is empty; an empty
	// list releases the target.
	ReserveSet ReserveCommand = 1
	// ReserveForceSet replaces the reserve list unconditionally.
	ReserveForceSet ReserveCommand = 2
)

// ReserveArg is the argument of Reserve/Release messages.
type ReserveArg struct {
	Command ReserveCommand
	MACs    []net.HardwareAddr
}

// AppendBinary appends the encoded argument to b.
func (r *ReserveArg) AppendBinary(b []byte) ([]byte, error) {
	if len(r.MACs) > 255 {
		return b, fmt.Errorf("aoe: %d reserve MACs exceed 255", len(r.MACs))
	}
	b = append(b, uint8(r.Command), uint8(len(r.MACs)))
	for _, mac := range r.MACs {
		if len(mac) != 6 {
			return b, fmt.Errorf("aoe: reserve MAC %q is not 6 bytes", mac)
		}
		b = append(b, mac...)
	}
	return b, nil
}

// MarshalBinary encodes the argument.
func (r *ReserveArg) MarshalBinary() ([]byte, error) { return r.AppendBinary(nil) }

// UnmarshalBinary decodes a Reserve/Release argument; the MACs are copies.
func (r *ReserveArg) UnmarshalBinary(b []byte) error {
	if len(b) < ReserveArgLen {
		return io.ErrUnexpectedEOF
	}
	r.Command = ReserveCommand(b[0])
	n := int(b[1])
	b = b[ReserveArgLen:]
	if len(b) < 6*n {
		return io.ErrUnexpectedEOF
	}
	r.MACs = make([]net.HardwareAddr, n)
	macs := make([]byte, 6*n)
	copy(macs, b)
	for i := range n {
		r.MACs[i] = macs[6*i : 6*i+6 : 6*i+6]
	}
	return nil
}

// RawArg is the argument of a command this package does not interpret.
type RawArg struct {
	Data []byte
}

// AppendBinary appends Data to b.
func (r *RawArg) AppendBinary(b []byte) ([]byte, error) { return append(b, r.Data...), nil }

// MarshalBinary encodes the argument.
func (r *RawArg) MarshalBinary() ([]byte, error) { return r.AppendBinary(nil) }

// UnmarshalBinary makes Data alias b.
func (r *RawArg) UnmarshalBinary(b []byte) error {
	r.Data = b
	return nil
}

// Message is a whole AoE message: a header and its command's argument.
type Message struct {
	Header
	// Arg matches Header.Command; nil encodes as no argument.
	Arg Arg
}

// AppendBinary appends the encoded message to b, padded with zeroes to MinPayload bytes.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b, err := m.Header.AppendBinary(b)
	if err != nil {
		return b, err
	}
	if m.Arg != nil {
		if b, err = m.Arg.AppendBinary(b); err != nil {
			return b, err
		}
	}
	for len(b)-start < MinPayload {
		b = append(b, 0)
	}
	return b, nil
}

// MarshalBinary encodes the message, padded to MinPayload bytes.
func (m *Message) MarshalBinary() ([]byte, error) { return m.AppendBinary(nil) }

// UnmarshalBinary decodes a message, choosing Arg by the command. A response with FlagError
// whose argument is cut short decodes with a nil Arg, since targets may answer errors with the
// header alone. Data and config strings alias b.
func (m *Message) UnmarshalBinary(b []byte) error {
	if err := m.Header.UnmarshalBinary(b); err != nil {
		return err
	}
	switch m.Command {
	case CommandATA:
		m.Arg = new(ATAArg)
	case CommandQueryConfig:
		m.Arg = new(ConfigArg)
	case CommandMACMaskList:
		m.Arg = new(MaskArg)
	case CommandReserveRelease:
		m.Arg = new(ReserveArg)
	default:
		m.Arg = new(RawArg)
	}
	if err := m.Arg.UnmarshalBinary(b[HeaderLen:]); err != nil {
		if m.Flags&FlagError != 0 && err == io.ErrUnexpectedEOF {
			m.Arg = nil
			return nil
		}
		return err
	}
	return nil
}
