// Reply encoding: every reply of the transmission phase is built here from the wire values
// (SimpleReply, ChunkHeader and the chunk payloads) and written through the connection's
// msgWriter. Read replies put their header into a buffer of the caller's, in front of data
// sent from elsewhere.

package nbd

// readReplyHeader holds the header of a successful read reply: a simple reply, or a chunk
// header and the start of an offset-data payload.
type readReplyHeader [StructuredReplyHeaderSize + OffsetDataChunkSize]byte

// readHeader puts in h the header of a successful read reply with r.Length bytes of data.
func (c *conn) readHeader(h *readReplyHeader, r Request) []byte {
	if !c.structured {
		b, _ := SimpleReply{Cookie: r.Cookie}.AppendBinary(h[:0])
		return b
	}
	b, _ := ChunkHeader{Flags: ReplyFlagDone, Type: ChunkTypeOffsetData, Cookie: r.Cookie,
		Length: OffsetDataChunkSize + r.Length}.AppendBinary(h[:0])
	b, _ = OffsetDataChunk{Offset: r.Offset}.AppendBinary(b)
	return b
}

// sendRead sends the successful reply to a read with its data.
func (c *conn) sendRead(r Request, buf []byte) {
	if c.structured && len(buf) == 0 {
		c.replyNone(r)
		return
	}
	var h readReplyHeader
	c.send(c.readHeader(&h, r), buf)
}

func (c *conn) replyOK(r Request) {
	var h [SimpleReplyHeaderSize]byte
	b, _ := SimpleReply{Cookie: r.Cookie}.AppendBinary(h[:0])
	c.send(b)
}

func (c *conn) replyNone(r Request) {
	var h [StructuredReplyHeaderSize]byte
	b, _ := ChunkHeader{Flags: ReplyFlagDone, Type: ChunkTypeNone, Cookie: r.Cookie}.AppendBinary(h[:0])
	c.send(b)
}

// replyBlockStatus sends the base:allocation status of exts, consecutive from r.Offset, each
// of a length that fits 32 bits.
func (c *conn) replyBlockStatus(r Request, exts []Extent) {
	b := make([]byte, StructuredReplyHeaderSize, StructuredReplyHeaderSize+4+BlockStatusDescriptorSize*len(exts))
	b, _ = BlockStatusChunk{ContextID: metaContextID, Offset: int64(r.Offset), Extents: exts}.AppendBinary(b)
	ChunkHeader{Flags: ReplyFlagDone, Type: ChunkTypeBlockStatus, Cookie: r.Cookie,
		Length: uint32(len(b) - StructuredReplyHeaderSize)}.AppendBinary(b[:0])
	c.send(b)
}

// replyError sends an error reply: a structured error chunk with msg when structured replies
// are negotiated, a simple reply otherwise. Its error is that of the connection, which the
// request loop sees too.
func (c *conn) replyError(r Request, errno Errno, msg string) error {
	c.srv.stats.errors.Add(1)
	c.log.Debug("nbd: request failed", "cmd", r.Type.String(), "offset", r.Offset, "length", r.Length,
		"errno", uint32(errno), "reason", msg)
	if !c.structured {
		var h [SimpleReplyHeaderSize]byte
		b, _ := SimpleReply{Errno: errno, Cookie: r.Cookie}.AppendBinary(h[:0])
		return c.send(b)
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b := make([]byte, StructuredReplyHeaderSize, StructuredReplyHeaderSize+6+len(msg))
	b, _ = ErrorChunk{Errno: errno, Message: msg}.AppendBinary(b)
	ChunkHeader{Flags: ReplyFlagDone, Type: ChunkTypeError, Cookie: r.Cookie,
		Length: uint32(len(b) - StructuredReplyHeaderSize)}.AppendBinary(b[:0])
	return c.send(b)
}
