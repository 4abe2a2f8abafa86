package nbd

import (
	"fmt"
	"strconv"
)

// Protocol constants, taken from the NetworkBlockDevice project's doc/proto.md. The names follow
// the document's: NBD_OPT_GO is OptGo, NBD_REP_ERR_UNSUP is RepErrUnsup, NBD_CMD_FLAG_FUA is
// CmdFlagFUA, and so on.

// DefaultPort is the IANA-reserved TCP port for newstyle negotiation.
const DefaultPort = 10809

// Magic values.
const (
	// Magic opens every handshake: ASCII "NBDMAGIC" (INIT_PASSWD).
	Magic uint64 = 0x4e42444d41474943
	// OldstyleMagic (cliserv_magic) follows Magic in the oldstyle handshake, which this package
	// does not implement.
	OldstyleMagic uint64 = 0x00420281861253
	// OptionMagic follows Magic in the newstyle handshake and opens every option request: ASCII
	// "IHAVEOPT".
	OptionMagic uint64 = 0x49484156454F5054
	// OptionReplyMagic opens every option reply in fixed newstyle negotiation.
	OptionReplyMagic uint64 = 0x3e889045565a9

	// RequestMagic opens every transmission request (NBD_REQUEST_MAGIC).
	RequestMagic uint32 = 0x25609513
	// SimpleReplyMagic opens a simple reply (NBD_SIMPLE_REPLY_MAGIC, formerly NBD_REPLY_MAGIC).
	SimpleReplyMagic uint32 = 0x67446698
	// StructuredReplyMagic opens a structured reply chunk (NBD_STRUCTURED_REPLY_MAGIC).
	StructuredReplyMagic uint32 = 0x668e33ef
	// ExtendedRequestMagic and ExtendedReplyMagic are reserved for the experimental
	// EXTENDED_HEADERS extension, which this package does not negotiate.
	ExtendedRequestMagic uint32 = 0x21e41c71
	ExtendedReplyMagic   uint32 = 0x6e8a278c
)

// Fixed sizes of the wire messages, in bytes.
const (
	// HandshakeSize is the server's greeting: Magic, OptionMagic, handshake flags.
	HandshakeSize = 8 + 8 + 2
	// OptionHeaderSize is an option request header: OptionMagic, option, data length.
	OptionHeaderSize = 8 + 4 + 4
	// OptionReplyHeaderSize is an option reply header: OptionReplyMagic, option, type, length.
	OptionReplyHeaderSize = 8 + 4 + 4 + 4
	// ExportNameReplySize is the reply to OptExportName without its 124 zero bytes.
	ExportNameReplySize = 8 + 2
	// ExportNameZeroes is the number of reserved zero bytes after the OptExportName reply unless
	// both sides agreed on no zeroes.
	ExportNameZeroes = 124
	// RequestHeaderSize is a transmission request header.
	RequestHeaderSize = 4 + 2 + 2 + 8 + 8 + 4
	// SimpleReplyHeaderSize is a simple reply header.
	SimpleReplyHeaderSize = 4 + 4 + 8
	// StructuredReplyHeaderSize is a structured reply chunk header.
	StructuredReplyHeaderSize = 4 + 2 + 2 + 8 + 4
	// MaxStringLength is the longest string (export name, error message) the document allows.
	MaxStringLength = 4096
)

// Default size constraints from the "Size constraints" section: a server without other
// constraints supports a minimum block size of 1, a preferred block size of 4096 and a payload
// of at least 32 MiB.
const (
	DefaultMinBlockSize       = 1
	DefaultPreferredBlockSize = 4096
	DefaultMaxPayloadSize     = 32 << 20
)

// HandshakeFlags are the 16 bits the server sends after the two magic values.
type HandshakeFlags uint16

// Handshake flags.
const (
	FlagFixedNewstyle HandshakeFlags = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	FlagNoZeroes      HandshakeFlags = 1 << 1 // NBD_FLAG_NO_ZEROES
)

// ClientFlags are the 32 bits the client sends in reply to the handshake flags.
type ClientFlags uint32

// Client flags.
const (
	FlagCFixedNewstyle ClientFlags = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	FlagCNoZeroes      ClientFlags = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

// TransmissionFlags describe an export and what the server supports on it.
type TransmissionFlags uint16

// Transmission flags.
const (
	FlagHasFlags           TransmissionFlags = 1 << 0  // NBD_FLAG_HAS_FLAGS, always set
	FlagReadOnly           TransmissionFlags = 1 << 1  // NBD_FLAG_READ_ONLY
	FlagSendFlush          TransmissionFlags = 1 << 2  // NBD_FLAG_SEND_FLUSH
	FlagSendFUA            TransmissionFlags = 1 << 3  // NBD_FLAG_SEND_FUA
	FlagRotational         TransmissionFlags = 1 << 4  // NBD_FLAG_ROTATIONAL
	FlagSendTrim           TransmissionFlags = 1 << 5  // NBD_FLAG_SEND_TRIM
	FlagSendWriteZeroes    TransmissionFlags = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	FlagSendDF             TransmissionFlags = 1 << 7  // NBD_FLAG_SEND_DF
	FlagCanMultiConn       TransmissionFlags = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	FlagSendResize         TransmissionFlags = 1 << 9  // NBD_FLAG_SEND_RESIZE (experimental)
	FlagSendCache          TransmissionFlags = 1 << 10 // NBD_FLAG_SEND_CACHE
	FlagSendFastZero       TransmissionFlags = 1 << 11 // NBD_FLAG_SEND_FAST_ZERO
	FlagBlockStatusPayload TransmissionFlags = 1 << 12 // NBD_FLAG_BLOCK_STATUS_PAYLOAD (experimental)
)

// Option is an option request code sent during option haggling.
type Option uint32

// Option codes.
const (
	OptExportName      Option = 1  // NBD_OPT_EXPORT_NAME
	OptAbort           Option = 2  // NBD_OPT_ABORT
	OptList            Option = 3  // NBD_OPT_LIST
	OptPeekExport      Option = 4  // NBD_OPT_PEEK_EXPORT (withdrawn)
	OptStartTLS        Option = 5  // NBD_OPT_STARTTLS
	OptInfo            Option = 6  // NBD_OPT_INFO
	OptGo              Option = 7  // NBD_OPT_GO
	OptStructuredReply Option = 8  // NBD_OPT_STRUCTURED_REPLY
	OptListMetaContext Option = 9  // NBD_OPT_LIST_META_CONTEXT
	OptSetMetaContext  Option = 10 // NBD_OPT_SET_META_CONTEXT
	OptExtendedHeaders Option = 11 // NBD_OPT_EXTENDED_HEADERS (experimental)
)

var optionNames = map[Option]string{
	OptExportName: "EXPORT_NAME", OptAbort: "ABORT", OptList: "LIST", OptPeekExport: "PEEK_EXPORT",
	OptStartTLS: "STARTTLS", OptInfo: "INFO", OptGo: "GO", OptStructuredReply: "STRUCTURED_REPLY",
	OptListMetaContext: "LIST_META_CONTEXT", OptSetMetaContext: "SET_META_CONTEXT",
	OptExtendedHeaders: "EXTENDED_HEADERS",
}

func (o Option) String() string {
	if s, ok := optionNames[o]; ok {
		return "NBD_OPT_" + s
	}
	return "NBD_OPT(" + strconv.FormatUint(uint64(o), 10) + ")"
}

// ReplyType is the type of an option reply. Error replies have bit 31 set.
type ReplyType uint32

// Option reply types.
const (
	RepAck         ReplyType = 1 // NBD_REP_ACK
	RepServer      ReplyType = 2 // NBD_REP_SERVER
	RepInfo        ReplyType = 3 // NBD_REP_INFO
	RepMetaContext ReplyType = 4 // NBD_REP_META_CONTEXT

	RepErrFlag          ReplyType = 1 << 31         // bit 31, set on every error reply
	RepErrUnsup         ReplyType = RepErrFlag | 1  // NBD_REP_ERR_UNSUP
	RepErrPolicy        ReplyType = RepErrFlag | 2  // NBD_REP_ERR_POLICY
	RepErrInvalid       ReplyType = RepErrFlag | 3  // NBD_REP_ERR_INVALID
	RepErrPlatform      ReplyType = RepErrFlag | 4  // NBD_REP_ERR_PLATFORM
	RepErrTLSReqd       ReplyType = RepErrFlag | 5  // NBD_REP_ERR_TLS_REQD
	RepErrUnknown       ReplyType = RepErrFlag | 6  // NBD_REP_ERR_UNKNOWN
	RepErrShutdown      ReplyType = RepErrFlag | 7  // NBD_REP_ERR_SHUTDOWN
	RepErrBlockSizeReqd ReplyType = RepErrFlag | 8  // NBD_REP_ERR_BLOCK_SIZE_REQD
	RepErrTooBig        ReplyType = RepErrFlag | 9  // NBD_REP_ERR_TOO_BIG
	RepErrExtHeaderReqd ReplyType = RepErrFlag | 10 // NBD_REP_ERR_EXT_HEADER_REQD (experimental)
)

var replyNames = map[ReplyType]string{
	RepAck: "ACK", RepServer: "SERVER", RepInfo: "INFO", RepMetaContext: "META_CONTEXT",
	RepErrUnsup: "ERR_UNSUP", RepErrPolicy: "ERR_POLICY", RepErrInvalid: "ERR_INVALID",
	RepErrPlatform: "ERR_PLATFORM", RepErrTLSReqd: "ERR_TLS_REQD", RepErrUnknown: "ERR_UNKNOWN",
	RepErrShutdown: "ERR_SHUTDOWN", RepErrBlockSizeReqd: "ERR_BLOCK_SIZE_REQD",
	RepErrTooBig: "ERR_TOO_BIG", RepErrExtHeaderReqd: "ERR_EXT_HEADER_REQD",
}

// IsError reports whether t is an error reply (bit 31 set).
func (t ReplyType) IsError() bool { return t&RepErrFlag != 0 }

func (t ReplyType) String() string {
	if s, ok := replyNames[t]; ok {
		return "NBD_REP_" + s
	}
	return "NBD_REP(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// InfoType is the type of an NBD_REP_INFO reply and of an information request in OptInfo and
// OptGo.
type InfoType uint16

// Information types.
const (
	InfoExport      InfoType = 0 // NBD_INFO_EXPORT: size and transmission flags
	InfoName        InfoType = 1 // NBD_INFO_NAME: canonical export name
	InfoDescription InfoType = 2 // NBD_INFO_DESCRIPTION
	InfoBlockSize   InfoType = 3 // NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum payload
)

// Command is a transmission request type.
type Command uint16

// Command types.
const (
	CmdRead        Command = 0 // NBD_CMD_READ
	CmdWrite       Command = 1 // NBD_CMD_WRITE
	CmdDisc        Command = 2 // NBD_CMD_DISC
	CmdFlush       Command = 3 // NBD_CMD_FLUSH
	CmdTrim        Command = 4 // NBD_CMD_TRIM
	CmdCache       Command = 5 // NBD_CMD_CACHE
	CmdWriteZeroes Command = 6 // NBD_CMD_WRITE_ZEROES
	CmdBlockStatus Command = 7 // NBD_CMD_BLOCK_STATUS
	CmdResize      Command = 8 // NBD_CMD_RESIZE (experimental)
)

var commandNames = [...]string{"READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES",
	"BLOCK_STATUS", "RESIZE"}

func (c Command) String() string {
	if int(c) < len(commandNames) {
		return "NBD_CMD_" + commandNames[c]
	}
	return "NBD_CMD(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// CommandFlags modify a transmission request.
type CommandFlags uint16

// Command flags.
const (
	CmdFlagFUA        CommandFlags = 1 << 0 // NBD_CMD_FLAG_FUA
	CmdFlagNoHole     CommandFlags = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	CmdFlagDF         CommandFlags = 1 << 2 // NBD_CMD_FLAG_DF
	CmdFlagReqOne     CommandFlags = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	CmdFlagFastZero   CommandFlags = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO
	CmdFlagPayloadLen CommandFlags = 1 << 5 // NBD_CMD_FLAG_PAYLOAD_LEN (experimental)
)

// ReplyFlags are the flags of a structured reply chunk.
type ReplyFlags uint16

// Structured reply flags.
const (
	ReplyFlagDone ReplyFlags = 1 << 0 // NBD_REPLY_FLAG_DONE: final chunk of the reply
)

// ChunkType is the type of a structured reply chunk. Error chunks have bit 15 set.
type ChunkType uint16

// Structured reply chunk types.
const (
	ChunkTypeNone           ChunkType = 0         // NBD_REPLY_TYPE_NONE
	ChunkTypeOffsetData     ChunkType = 1         // NBD_REPLY_TYPE_OFFSET_DATA
	ChunkTypeOffsetHole     ChunkType = 2         // NBD_REPLY_TYPE_OFFSET_HOLE
	ChunkTypeBlockStatus    ChunkType = 5         // NBD_REPLY_TYPE_BLOCK_STATUS
	ChunkTypeBlockStatusExt ChunkType = 6         // NBD_REPLY_TYPE_BLOCK_STATUS_EXT (experimental)
	ChunkTypeErrorFlag      ChunkType = 1 << 15   // bit 15, set on every error chunk
	ChunkTypeError          ChunkType = 1<<15 + 1 // NBD_REPLY_TYPE_ERROR
	ChunkTypeErrorOffset    ChunkType = 1<<15 + 2 // NBD_REPLY_TYPE_ERROR_OFFSET
)

// IsError reports whether t is an error chunk type (bit 15 set).
func (t ChunkType) IsError() bool { return t&ChunkTypeErrorFlag != 0 }

func (t ChunkType) String() string {
	switch t {
	case ChunkTypeNone:
		return "NBD_REPLY_TYPE_NONE"
	case ChunkTypeOffsetData:
		return "NBD_REPLY_TYPE_OFFSET_DATA"
	case ChunkTypeOffsetHole:
		return "NBD_REPLY_TYPE_OFFSET_HOLE"
	case ChunkTypeBlockStatus:
		return "NBD_REPLY_TYPE_BLOCK_STATUS"
	case ChunkTypeBlockStatusExt:
		return "NBD_REPLY_TYPE_BLOCK_STATUS_EXT"
	case ChunkTypeError:
		return "NBD_REPLY_TYPE_ERROR"
	case ChunkTypeErrorOffset:
		return "NBD_REPLY_TYPE_ERROR_OFFSET"
	}
	return "NBD_REPLY_TYPE(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// Metadata contexts and the base:allocation status flags.
const (
	// MetaContextBaseAllocation is the one metadata context the document defines.
	MetaContextBaseAllocation = "base:allocation"

	StateHole uint32 = 1 << 0 // NBD_STATE_HOLE: the extent is not allocated
	StateZero uint32 = 1 << 1 // NBD_STATE_ZERO: the extent reads as zeroes
)

// Errno is an error value of a transmission reply. Only the values listed in the document may
// be sent. It implements error, so a Client returns it (wrapped) when the server fails a request.
type Errno uint32

// Error values.
const (
	EPERM     Errno = 1   // NBD_EPERM: operation not permitted
	EIO       Errno = 5   // NBD_EIO: input/output error
	ENOMEM    Errno = 12  // NBD_ENOMEM: cannot allocate memory
	EINVAL    Errno = 22  // NBD_EINVAL: invalid argument
	ENOSPC    Errno = 28  // NBD_ENOSPC: no space left on device
	EOVERFLOW Errno = 75  // NBD_EOVERFLOW: value too large
	ENOTSUP   Errno = 95  // NBD_ENOTSUP: operation not supported
	ESHUTDOWN Errno = 108 // NBD_ESHUTDOWN: server is shutting down
)

var errnoText = map[Errno]string{
	EPERM: "NBD_EPERM: operation not permitted", EIO: "NBD_EIO: input/output error",
	ENOMEM: "NBD_ENOMEM: cannot allocate memory", EINVAL: "NBD_EINVAL: invalid argument",
	ENOSPC: "NBD_ENOSPC: no space left on device", EOVERFLOW: "NBD_EOVERFLOW: value too large",
	ENOTSUP:   "NBD_ENOTSUP: operation not supported",
	ESHUTDOWN: "NBD_ESHUTDOWN: server is shutting down",
}

func (e Errno) Error() string {
	if s, ok := errnoText[e]; ok {
		return s
	}
	return fmt.Sprintf("NBD error %d", uint32(e))
}
