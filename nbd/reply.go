// Reply encoding: simple replies and structured chunks written through the connection's
// msgWriter.

package nbd

// putSimpleReply puts a simple reply header at the start of b.
func putSimpleReply(b []byte, errno Errno, cookie uint64) {
	SimpleReply{Errno: errno, Cookie: cookie}.AppendBinary(b[:0])
}

// putChunkHeader puts a structured reply chunk header at the start of b.
func putChunkHeader(b []byte, flags ReplyFlags, typ ChunkType, cookie uint64, length uint32) {
	ChunkHeader{Flags: flags, Type: typ, Cookie: cookie, Length: length}.AppendBinary(b[:0])
}

func (c *conn) replyOK(r Request) {
	var h [SimpleReplyHeaderSize]byte
	putSimpleReply(h[:], 0, r.Cookie)
	c.send(h[:])
}

func (c *conn) replyNone(r Request) {
	var h [StructuredReplyHeaderSize]byte
	putChunkHeader(h[:], ReplyFlagDone, ChunkTypeNone, r.Cookie, 0)
	c.send(h[:])
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
		putSimpleReply(h[:], errno, r.Cookie)
		return c.send(h[:])
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b, _ := ChunkHeader{Flags: ReplyFlagDone, Type: ChunkTypeError, Cookie: r.Cookie, Length: uint32(6 + len(msg))}.
		AppendBinary(make([]byte, 0, StructuredReplyHeaderSize+6+len(msg)))
	b, _ = ErrorChunk{Errno: errno, Message: msg}.AppendBinary(b)
	return c.send(b)
}
