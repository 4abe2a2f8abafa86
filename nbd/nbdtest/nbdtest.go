package nbdtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/nbd"
)

// MinSize is the smallest export the suite accepts.
const MinSize = 1 << 20

// Options configure a conformance run.
type Options struct {
	// Export is the name of a writable export of at least MinSize bytes. The suite overwrites
	// its contents.
	Export string
	// Size is the export's expected size; 0 accepts any size of at least MinSize.
	Size int64
	// ReadOnlyExport names a read-only export, served at ReadOnlyAddr ("" meaning the same
	// address). When empty, the read-only checks are not run.
	ReadOnlyExport string
	ReadOnlyAddr   string
	// Dial opens a connection; nil dials TCP with a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds each connection of a check; 0 means 60 seconds.
	Timeout time.Duration
	// TLS, when set, makes every check upgrade its connection with NBD_OPT_STARTTLS first and
	// adds checks of the upgrade itself. It is the client side: RootCAs to verify the server,
	// Certificates when the server verifies clients.
	TLS *tls.Config
	// TLSRequired states that the server refuses NBD_OPT_INFO and NBD_OPT_GO of Export before
	// TLS (NBD_REP_ERR_TLS_REQD).
	TLSRequired bool
	// Expect states where the server differs from the protocol document's recommendations.
	Expect Expect
}

// Expect describes the behaviour to check where the protocol document leaves a choice or a
// server knowingly deviates. The zero value is what the document recommends (its SHOULDs), which
// is what netroot's own server does.
type Expect struct {
	// InfoSizeZero: NBD_OPT_INFO reports size 0 (nbd-server opens the file only on GO).
	InfoSizeZero bool
	// ListRefused is the error NBD_OPT_LIST gets; 0 means the export must be listed.
	ListRefused nbd.ReplyType
	// ListWithData is the reply to NBD_OPT_LIST carrying data; 0 means NBD_REP_ERR_INVALID.
	ListWithData nbd.ReplyType
	// NoStructuredReplies: NBD_OPT_STRUCTURED_REPLY gets NBD_REP_ERR_UNSUP. Checks that need
	// structured replies then assert the refusal and use simple replies.
	NoStructuredReplies bool
	// StructuredReplyWithData is the reply to NBD_OPT_STRUCTURED_REPLY carrying data; 0 means
	// NBD_REP_ERR_INVALID.
	StructuredReplyWithData nbd.ReplyType
	// NoBaseAllocation: NBD_OPT_SET_META_CONTEXT base:allocation selects no context.
	NoBaseAllocation bool
	// MetaWithoutStructured is the reply to NBD_OPT_SET_META_CONTEXT before structured replies;
	// 0 means NBD_REP_ERR_INVALID.
	MetaWithoutStructured nbd.ReplyType
	// UnknownExport is the reply to NBD_OPT_INFO/GO for a missing export; 0 means
	// NBD_REP_ERR_UNKNOWN.
	UnknownExport nbd.ReplyType
	// MalformedGo is the reply to an NBD_OPT_GO whose name overruns the option; 0 means
	// NBD_REP_ERR_INVALID.
	MalformedGo nbd.ReplyType
	// MalformedGoDesyncs: after its error reply to such an option the server no longer answers
	// on the connection (nbd-server 3.24), so the check ends there.
	MalformedGoDesyncs bool
	// UnknownClientFlagsAccepted: the server goes on after client flags it does not know instead
	// of closing as the document requires (nbd-server 3.24).
	UnknownClientFlagsAccepted bool
	// WritePastEndNoReplyTLS: over TLS, a WRITE past the end (sent with its payload in one TLS
	// record) gets no reply at all (nbdkit 1.32); the check asserts the silence and ends.
	WritePastEndNoReplyTLS bool
	// StartTLSWithDataNoReply: NBD_OPT_STARTTLS carrying data gets no reply (nbd-server 3.24);
	// the check asserts the silence and ends.
	StartTLSWithDataNoReply bool
	// ListWithDataDesyncs: NBD_OPT_LIST with data gets its error reply, then the list anyway,
	// and the data is left unread, so the connection is out of step (nbd-server 3.24).
	ListWithDataDesyncs bool
	// StartTLS is the reply to NBD_OPT_STARTTLS on a server without TLS; 0 accepts either
	// NBD_REP_ERR_UNSUP or NBD_REP_ERR_POLICY, as the document does.
	StartTLS nbd.ReplyType
	// ReadPastEnd, WritePastEnd, UnknownCommand and WriteReadOnly are the errors of those
	// requests; 0 means the document's NBD_EINVAL, NBD_ENOSPC, NBD_EINVAL and NBD_EPERM.
	ReadPastEnd, WritePastEnd, UnknownCommand, WriteReadOnly nbd.Errno
	// MaxPayload is the largest READ and WRITE the suite sends; 0 means 32 MiB (the
	// document's recommended minimum maximum), capped at the export size.
	MaxPayload int
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// suite is one run's state.
type suite struct {
	addr string
	o    Options
	size int64 // the export size, learnt from the first GO
}

// Run checks the NBD server at addr (host:port) with subtests of t. It needs a writable export,
// opts.Export; opts must not be nil.
func Run(t *testing.T, addr string, opts *Options) {
	s := &suite{addr: addr, o: *opts}
	if s.o.Timeout == 0 {
		s.o.Timeout = 60 * time.Second
	}
	if s.o.Dial == nil {
		var d net.Dialer
		s.o.Dial = d.DialContext
	}
	{
		w := s.dial(t, addr)
		s.start(t, w)
		ei := w.goExport(s.o.Export)
		s.size = ei.size
		w.disconnect()
	}
	if s.o.Size != 0 {
		require.Equal(t, s.o.Size, s.size, "nbdtest: export %q size", s.o.Export)
	}
	require.GreaterOrEqual(t, s.size, int64(MinSize), "nbdtest: export %q is too small", s.o.Export)

	t.Run("handshake", func(t *testing.T) {
		for _, c := range []struct {
			name string
			fn   func(t *testing.T)
		}{
			{"greeting", s.greeting},
			{"export-name-no-zeroes", s.exportNameNoZeroes},
			{"export-name-zeroes", s.exportNameZeroes},
			{"export-name-unknown", s.exportNameUnknown},
			{"unknown-client-flags", s.unknownClientFlags},
			{"bad-option-magic", s.badOptionMagic},
			{"unknown-option", s.unknownOption},
			{"list", s.list},
			{"list-with-data", s.listWithData},
			{"info-then-go", s.infoThenGo},
			{"info-unknown-export", s.infoUnknownExport},
			{"go-unknown-export", s.goUnknownExport},
			{"go-malformed", s.goMalformed},
			{"go-block-size", s.goBlockSize},
			{"structured-reply", s.structuredReply},
			{"structured-reply-with-data", s.structuredReplyWithData},
			{"meta-context-without-structured", s.metaWithoutStructured},
			{"list-meta-context", s.listMetaContext},
			{"starttls-without-tls", s.startTLSWithoutTLS},
			{"abort", s.abort},
			{"abort-and-vanish", s.abortAndVanish},
		} {
			if c.name == "starttls-without-tls" && s.o.TLS != nil {
				continue
			}
			t.Run(c.name, c.fn)
		}
	})
	if s.o.TLS != nil {
		t.Run("tls", func(t *testing.T) {
			t.Run("required-before-starttls", s.tlsRequired)
			t.Run("starttls-with-data", s.startTLSWithData)
			t.Run("starttls-twice", s.startTLSTwice)
		})
	}
	t.Run("transmission", func(t *testing.T) {
		for _, c := range []struct {
			name string
			fn   func(t *testing.T)
		}{
			{"read-write-simple", func(t *testing.T) { s.readWrite(t, false) }},
			{"read-write-structured", func(t *testing.T) { s.readWrite(t, true) }},
			{"read-past-end", s.readPastEnd},
			{"write-past-end", s.writePastEnd},
			{"unknown-command", s.unknownCommand},
			{"flush-fua", s.flushFUA},
			{"trim", s.trim},
			{"write-zeroes", s.writeZeroes},
			{"cache", s.cache},
			{"read-df", s.readDF},
			{"block-status", s.blockStatus},
			{"pipelined", s.pipelined},
			{"large", s.large},
			{"multi-conn", s.multiConn},
			{"concurrent-connections", s.concurrentConnections},
			{"disconnect", s.disconnectCmd},
		} {
			t.Run(c.name, c.fn)
		}
		if s.o.ReadOnlyExport != "" {
			t.Run("read-only", s.readOnly)
		}
	})
}

// dial opens a raw connection closed at the end of t, with a deadline of the check's timeout.
func (s *suite) dial(t testing.TB, addr string) *wire {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
	defer cancel()
	c, err := s.o.Dial(ctx, "tcp", addr)
	require.NoError(t, err, "nbdtest: dial %s", addr)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(s.o.Timeout)))
	return &wire{t: t, c: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// start greets and sends the client flags, then upgrades to TLS when the run uses TLS.
func (s *suite) start(t testing.TB, w *wire) {
	t.Helper()
	w.start()
	if s.o.TLS != nil {
		w.startTLS(s.o.TLS)
	}
}

// startTLS sends NBD_OPT_STARTTLS and runs the TLS handshake over the connection.
func (w *wire) startTLS(cfg *tls.Config) {
	w.t.Helper()
	_, final := w.option(nbd.OptStartTLS, nil)
	if final != nbd.RepAck {
		w.t.Fatalf("nbdtest: NBD_OPT_STARTTLS: %v", final)
	}
	if w.r.Buffered() != 0 {
		w.t.Fatalf("nbdtest: %d bytes after the NBD_OPT_STARTTLS reply, before the TLS handshake", w.r.Buffered())
	}
	tc := tls.Client(w.c, cfg)
	if err := tc.Handshake(); err != nil {
		w.t.Fatalf("nbdtest: TLS handshake: %v", err)
	}
	w.c = tc
	w.r = bufio.NewReaderSize(tc, 64<<10)
}

// open negotiates the writable export, with structured replies when asked and supported, and
// base:allocation when meta is set.
func (s *suite) open(t testing.TB, structured, meta bool) (w *wire, metaID uint32, haveMeta bool) {
	t.Helper()
	w = s.dial(t, s.addr)
	s.start(t, w)
	if structured && !s.o.Expect.NoStructuredReplies {
		_, final := w.option(nbd.OptStructuredReply, nil)
		require.Equal(t, nbd.RepAck, final, "NBD_OPT_STRUCTURED_REPLY")
		w.structured = true
		if meta {
			metaID, haveMeta = s.setMeta(t, w)
		}
	}
	w.goExport(s.o.Export)
	return w, metaID, haveMeta
}

func (s *suite) setMeta(t testing.TB, w *wire) (uint32, bool) {
	t.Helper()
	replies, final := w.option(nbd.OptSetMetaContext, metaRequest(s.o.Export, nbd.MetaContextBaseAllocation))
	require.Equal(t, nbd.RepAck, final, "NBD_OPT_SET_META_CONTEXT")
	if s.o.Expect.NoBaseAllocation {
		assert.Empty(t, replies, "NBD_OPT_SET_META_CONTEXT selected a context")
		return 0, false
	}
	require.Len(t, replies, 1, "NBD_OPT_SET_META_CONTEXT replies")
	r := replies[0]
	require.Equal(t, nbd.RepMetaContext, r.typ)
	require.Greater(t, len(r.data), 4)
	assert.Equal(t, nbd.MetaContextBaseAllocation, string(r.data[4:]))
	return binary.BigEndian.Uint32(r.data), true
}

// disconnect sends NBD_CMD_DISC in transmission; the server must close without a reply.
func (w *wire) disconnect() {
	w.t.Helper()
	w.request(0, nbd.CmdDisc, 0xd15c, 0, 0, nil)
	if err := w.expectClosed(5 * time.Second); err != nil {
		w.t.Errorf("nbdtest: after NBD_CMD_DISC: %v", err)
	}
}

// abortOptions ends option haggling politely.
func (w *wire) abortOptions() {
	w.t.Helper()
	w.sendOption(nbd.OptAbort, nil)
	w.c.Close()
}

// pattern returns n reproducible pseudo-random bytes.
func pattern(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func okReply(t testing.TB, r reply, what string) {
	t.Helper()
	require.Zero(t, r.err, "%s failed: %v", what, r.err)
}

// ---- handshake ----

func (s *suite) greeting(t *testing.T) {
	w := s.dial(t, s.addr)
	w.greet()
	assert.NotZero(t, w.hflags&nbd.FlagFixedNewstyle, "NBD_FLAG_FIXED_NEWSTYLE not offered (flags %#x)", w.hflags)
	t.Logf("handshake flags %#x", uint16(w.hflags))
	w.clientFlags(nbd.FlagCFixedNewstyle)
	w.abortOptions()
}

func (s *suite) exportNameNoZeroes(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	if w.hflags&nbd.FlagNoZeroes == 0 {
		t.Logf("server does not offer NBD_FLAG_NO_ZEROES; checking the zeroes instead")
	}
	w.exportName(s.o.Export)
	assert.Equal(t, s.size, w.size)
	assert.NotZero(t, w.tflags&nbd.FlagHasFlags, "NBD_FLAG_HAS_FLAGS")
	r := w.do(0, nbd.CmdRead, 0, 512, nil)
	okReply(t, r, "READ after NBD_OPT_EXPORT_NAME")
	assert.Len(t, r.data, 512)
	w.disconnect()
}

func (s *suite) exportNameZeroes(t *testing.T) {
	w := s.dial(t, s.addr)
	w.greet()
	w.clientFlags(nbd.FlagCFixedNewstyle)
	if s.o.TLS != nil {
		w.startTLS(s.o.TLS)
	}
	w.exportName(s.o.Export) // reads and checks the 124 zero bytes
	assert.Equal(t, s.size, w.size)
	r := w.do(0, nbd.CmdRead, 4096, 512, nil)
	okReply(t, r, "READ after NBD_OPT_EXPORT_NAME with zeroes")
	w.disconnect()
}

func (s *suite) exportNameUnknown(t *testing.T) {
	// "If the server is unwilling to allow the export, it MUST terminate the session."
	w := s.dial(t, s.addr)
	s.start(t, w)
	w.sendOption(nbd.OptExportName, []byte("nbdtest-no-such-export"))
	if s.o.Expect.UnknownExport == nbd.RepAck {
		// A server that serves any name answers as for its export.
		b := w.readFull(nbd.ExportNameReplySize)
		assert.Equal(t, uint64(s.size), binary.BigEndian.Uint64(b))
		return
	}
	assert.NoError(t, w.expectClosed(5*time.Second), "NBD_OPT_EXPORT_NAME of a missing export")
}

func (s *suite) unknownClientFlags(t *testing.T) {
	// "the server MUST close the TCP connection if it does not recognize the client's flags"
	w := s.dial(t, s.addr)
	w.greet()
	w.clientFlags(nbd.FlagCFixedNewstyle | 1<<31)
	w.sendOption(nbd.OptList, nil)
	if s.o.Expect.UnknownClientFlagsAccepted {
		// Any reply shows the server went on.
		r := w.readOptionReply(nbd.OptList)
		t.Logf("NBD_OPT_LIST after unknown client flags: %v", r.typ)
		return
	}
	assert.NoError(t, w.expectClosed(5*time.Second))
}

func (s *suite) badOptionMagic(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	w.write(bytes.Repeat([]byte{0x55}, nbd.OptionHeaderSize))
	assert.NoError(t, w.expectClosed(5*time.Second), "option with a wrong magic")
}

func (s *suite) unknownOption(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	// A payload of 64 KiB that the server must skip to stay in step.
	_, final := w.option(nbd.Option(0x7e57), pattern(1, 64<<10))
	assert.Equal(t, nbd.RepErrUnsup, final, "unknown option")
	_, final = w.option(nbd.Option(0x7e58), nil)
	assert.Equal(t, nbd.RepErrUnsup, final, "second unknown option")
	w.goExport(s.o.Export)
	okReply(t, w.do(0, nbd.CmdRead, 0, 512, nil), "READ after unknown options")
	w.disconnect()
}

func (s *suite) list(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	replies, final := w.option(nbd.OptList, nil)
	if s.o.Expect.ListRefused != 0 {
		assert.Equal(t, s.o.Expect.ListRefused, final, "NBD_OPT_LIST")
		assert.Empty(t, replies)
		w.abortOptions()
		return
	}
	require.Equal(t, nbd.RepAck, final, "NBD_OPT_LIST")
	var names []string
	for _, r := range replies {
		require.Equal(t, nbd.RepServer, r.typ)
		require.GreaterOrEqual(t, len(r.data), 4)
		n := binary.BigEndian.Uint32(r.data)
		require.LessOrEqual(t, uint64(n), uint64(len(r.data)-4), "NBD_REP_SERVER name length")
		names = append(names, string(r.data[4:4+n]))
	}
	assert.Contains(t, names, s.o.Export)
	// Haggling goes on after a list.
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) listWithData(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	_, final := w.option(nbd.OptList, []byte("junk"))
	assert.Equal(t, or(s.o.Expect.ListWithData, nbd.RepErrInvalid), final, "NBD_OPT_LIST with data")
	if s.o.Expect.ListWithDataDesyncs {
		replies, final := w.replies(nbd.OptList)
		require.Equal(t, nbd.RepAck, final, "the list after the error")
		assert.NotEmpty(t, replies, "the list after the error")
		return
	}
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) infoThenGo(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	replies, final := w.option(nbd.OptInfo, infoRequest(s.o.Export, nbd.InfoName, nbd.InfoDescription))
	require.Equal(t, nbd.RepAck, final, "NBD_OPT_INFO")
	ei := w.parseInfo(replies)
	require.True(t, ei.hasExport, "NBD_INFO_EXPORT missing from NBD_OPT_INFO")
	if s.o.Expect.InfoSizeZero {
		assert.Zero(t, ei.size, "NBD_OPT_INFO size")
	} else {
		assert.Equal(t, s.size, ei.size, "NBD_OPT_INFO size")
	}
	// INFO leaves the client in negotiation: GO on the same connection.
	gi := w.goExport(s.o.Export)
	assert.Equal(t, s.size, gi.size)
	assert.Equal(t, ei.flags&^nbd.FlagHasFlags, gi.flags&^nbd.FlagHasFlags, "INFO and GO flags differ")
	okReply(t, w.do(0, nbd.CmdRead, 0, 4096, nil), "READ")
	w.disconnect()
}

func (s *suite) infoUnknownExport(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	_, final := w.option(nbd.OptInfo, infoRequest("nbdtest-no-such-export"))
	assert.Equal(t, or(s.o.Expect.UnknownExport, nbd.RepErrUnknown), final, "NBD_OPT_INFO of a missing export")
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) goUnknownExport(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	replies, final := w.option(nbd.OptGo, infoRequest("nbdtest-no-such-export"))
	assert.Equal(t, or(s.o.Expect.UnknownExport, nbd.RepErrUnknown), final, "NBD_OPT_GO of a missing export")
	if final == nbd.RepAck {
		// A server that serves any name (nbdkit) is now in transmission.
		w.parseInfo(replies)
		w.disconnect()
		return
	}
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) goMalformed(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	// The name length claims 100 bytes; the option holds 3.
	data := binary.BigEndian.AppendUint32(nil, 100)
	data = append(data, "abc"...)
	_, final := w.option(nbd.OptGo, data)
	assert.Equal(t, or(s.o.Expect.MalformedGo, nbd.RepErrInvalid), final, "NBD_OPT_GO with an overrunning name")
	if s.o.Expect.MalformedGoDesyncs {
		return
	}
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) goBlockSize(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	replies, final := w.option(nbd.OptGo, infoRequest(s.o.Export, nbd.InfoBlockSize, nbd.InfoName, nbd.InfoDescription))
	require.Equal(t, nbd.RepAck, final, "NBD_OPT_GO")
	ei := w.parseInfo(replies)
	require.True(t, ei.hasExport)
	assert.Equal(t, s.size, ei.size)
	if bs := ei.blockSize; bs != nil {
		minB, pref, maxB := bs[0], bs[1], bs[2]
		t.Logf("block sizes: min %d preferred %d max payload %d", minB, pref, maxB)
		assert.Equal(t, 1, bits.OnesCount32(minB), "minimum block size %d is not a power of 2", minB)
		assert.LessOrEqual(t, minB, uint32(1<<16), "minimum block size")
		assert.Equal(t, 1, bits.OnesCount32(pref), "preferred block size %d is not a power of 2", pref)
		assert.GreaterOrEqual(t, pref, max(minB, 512), "preferred block size")
		assert.GreaterOrEqual(t, maxB, pref, "maximum payload below the preferred block size")
	}
	okReply(t, w.do(0, nbd.CmdRead, 0, 512, nil), "READ")
	w.disconnect()
}

func (s *suite) structuredReply(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	_, final := w.option(nbd.OptStructuredReply, nil)
	if s.o.Expect.NoStructuredReplies {
		assert.Equal(t, nbd.RepErrUnsup, final, "NBD_OPT_STRUCTURED_REPLY")
		w.abortOptions()
		return
	}
	require.Equal(t, nbd.RepAck, final, "NBD_OPT_STRUCTURED_REPLY")
	w.structured = true
	w.goExport(s.o.Export)
	r := w.do(0, nbd.CmdRead, 0, 8192, nil)
	okReply(t, r, "structured READ")
	assert.True(t, r.structured, "READ answered with a simple reply after structured replies were negotiated")
	// An error to a READ must come as an error chunk too.
	r = w.do(0, nbd.CmdRead, uint64(s.size), 512, nil)
	assert.Equal(t, or(s.o.Expect.ReadPastEnd, nbd.EINVAL), r.err, "READ past the end")
	w.disconnect()
}

func (s *suite) structuredReplyWithData(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	_, final := w.option(nbd.OptStructuredReply, []byte{1})
	want := or(s.o.Expect.StructuredReplyWithData, nbd.RepErrInvalid)
	if s.o.Expect.NoStructuredReplies {
		want = nbd.RepErrUnsup
	}
	assert.Equal(t, want, final, "NBD_OPT_STRUCTURED_REPLY with data")
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) metaWithoutStructured(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	_, final := w.option(nbd.OptSetMetaContext, metaRequest(s.o.Export, nbd.MetaContextBaseAllocation))
	assert.Equal(t, or(s.o.Expect.MetaWithoutStructured, nbd.RepErrInvalid), final,
		"NBD_OPT_SET_META_CONTEXT before NBD_OPT_STRUCTURED_REPLY")
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) listMetaContext(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	if s.o.Expect.NoStructuredReplies {
		w.abortOptions()
		return
	}
	_, final := w.option(nbd.OptStructuredReply, nil)
	require.Equal(t, nbd.RepAck, final)
	replies, final := w.option(nbd.OptListMetaContext, metaRequest(s.o.Export, "base:"))
	require.Equal(t, nbd.RepAck, final, "NBD_OPT_LIST_META_CONTEXT")
	var names []string
	for _, r := range replies {
		require.Equal(t, nbd.RepMetaContext, r.typ)
		require.GreaterOrEqual(t, len(r.data), 4)
		names = append(names, string(r.data[4:]))
	}
	if s.o.Expect.NoBaseAllocation {
		assert.NotContains(t, names, nbd.MetaContextBaseAllocation)
	} else {
		assert.Contains(t, names, nbd.MetaContextBaseAllocation)
	}
	// An unknown namespace must be ignored, leaving an empty list.
	replies, final = w.option(nbd.OptListMetaContext, metaRequest(s.o.Export, "nbdtest-unknown:thing"))
	assert.Equal(t, nbd.RepAck, final, "NBD_OPT_LIST_META_CONTEXT of an unknown namespace")
	assert.Empty(t, replies)
	w.abortOptions()
}

func (s *suite) startTLSWithoutTLS(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	_, final := w.option(nbd.OptStartTLS, nil)
	if s.o.Expect.StartTLS != 0 {
		assert.Equal(t, s.o.Expect.StartTLS, final, "NBD_OPT_STARTTLS without TLS")
	} else {
		assert.Contains(t, []nbd.ReplyType{nbd.RepErrUnsup, nbd.RepErrPolicy}, final, "NBD_OPT_STARTTLS without TLS")
	}
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) abort(t *testing.T) {
	w := s.dial(t, s.addr)
	s.start(t, w)
	w.sendOption(nbd.OptAbort, nil)
	// The server may acknowledge; either way it closes.
	require.NoError(t, w.c.SetReadDeadline(time.Now().Add(5*time.Second)))
	if b, err := w.r.Peek(1); err == nil && len(b) == 1 {
		r := w.readOptionReply(nbd.OptAbort)
		assert.Equal(t, nbd.RepAck, r.typ, "NBD_OPT_ABORT reply")
	}
	assert.NoError(t, w.expectClosed(5*time.Second), "after NBD_OPT_ABORT")
}

func (s *suite) abortAndVanish(t *testing.T) {
	// Clients often send NBD_OPT_ABORT and close at once; the server's reply then meets a
	// closed socket. It must shrug that off and go on serving others.
	for range 5 {
		w := s.dial(t, s.addr)
		s.start(t, w)
		w.sendOption(nbd.OptAbort, nil)
		if tc, ok := w.c.(*tls.Conn); ok {
			tc.NetConn().Close()
		} else {
			w.c.Close()
		}
	}
	w := s.dial(t, s.addr)
	s.start(t, w)
	w.goExport(s.o.Export)
	okReply(t, w.do(0, nbd.CmdRead, 0, 512, nil), "READ after clients vanished")
	w.disconnect()
}

// ---- transmission ----

func (s *suite) readWrite(t *testing.T, structured bool) {
	w, _, _ := s.open(t, structured, false)
	size := uint64(s.size)
	cases := []struct{ off, n uint64 }{
		{0, 1}, {1, 4095}, {4095, 2}, {8192, 4096}, {65535, 131073},
		{size - 1, 1}, {size - 4096, 4096}, {size / 2, 12345},
	}
	for i, c := range cases {
		data := pattern(uint64(i)+100, int(c.n))
		okReply(t, w.do(0, nbd.CmdWrite, c.off, uint32(c.n), data), "WRITE")
		r := w.do(0, nbd.CmdRead, c.off, uint32(c.n), nil)
		okReply(t, r, "READ")
		if !bytes.Equal(data, r.data) {
			t.Errorf("READ %d+%d after WRITE returned different data", c.off, c.n)
		}
		if w.structured {
			assert.True(t, r.structured)
		}
	}
	// An earlier write overlapped by a later one keeps its untouched bytes.
	a := pattern(7, 8192)
	b := pattern(8, 100)
	okReply(t, w.do(0, nbd.CmdWrite, 1<<19, 8192, a), "WRITE")
	okReply(t, w.do(0, nbd.CmdWrite, 1<<19+4000, 100, b), "WRITE")
	copy(a[4000:], b)
	r := w.do(0, nbd.CmdRead, 1<<19, 8192, nil)
	okReply(t, r, "READ")
	assert.True(t, bytes.Equal(a, r.data), "overlapping writes")
	w.disconnect()
}

func (s *suite) readPastEnd(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	want := or(s.o.Expect.ReadPastEnd, nbd.EINVAL)
	size := uint64(s.size)
	for _, c := range []struct{ off, n uint64 }{{size - 512, 1024}, {size, 1}, {1 << 62, 512}} {
		r := w.do(0, nbd.CmdRead, c.off, uint32(c.n), nil)
		assert.Equal(t, want, r.err, "READ %d+%d on a %d-byte export", c.off, c.n, size)
		assert.Empty(t, r.data, "a failed simple READ carries no data")
	}
	okReply(t, w.do(0, nbd.CmdRead, size-512, 512, nil), "READ of the last sector")
	w.disconnect()
}

func (s *suite) writePastEnd(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	want := or(s.o.Expect.WritePastEnd, nbd.ENOSPC)
	size := uint64(s.size)
	before := w.do(0, nbd.CmdRead, size-4096, 4096, nil)
	okReply(t, before, "READ")
	if s.o.TLS != nil && s.o.Expect.WritePastEndNoReplyTLS {
		w.request(0, nbd.CmdWrite, 1, size-512, 1024, pattern(3, 1024))
		assert.NoError(t, w.expectSilence(time.Second), "WRITE across the end over TLS")
		return
	}
	r := w.do(0, nbd.CmdWrite, size-512, 1024, pattern(3, 1024))
	assert.Equal(t, want, r.err, "WRITE across the end")
	r = w.do(0, nbd.CmdWrite, size, 4096, pattern(4, 4096))
	assert.Equal(t, want, r.err, "WRITE at the end")
	// The payloads were drained: the stream is still in step.
	data := pattern(5, 512)
	okReply(t, w.do(0, nbd.CmdWrite, 0, 512, data), "WRITE after failed writes")
	r = w.do(0, nbd.CmdRead, 0, 512, nil)
	okReply(t, r, "READ")
	assert.Equal(t, data, r.data)
	w.disconnect()
}

func (s *suite) unknownCommand(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	r := w.do(0, nbd.Command(0x7f), 0, 0, nil)
	assert.Equal(t, or(s.o.Expect.UnknownCommand, nbd.EINVAL), r.err, "unknown command")
	okReply(t, w.do(0, nbd.CmdRead, 0, 512, nil), "READ after an unknown command")
	w.disconnect()
}

func (s *suite) flushFUA(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	t.Logf("transmission flags %#x", uint16(w.tflags))
	if w.tflags&nbd.FlagSendFlush != 0 {
		okReply(t, w.do(0, nbd.CmdWrite, 4096, 4096, pattern(9, 4096)), "WRITE")
		okReply(t, w.do(0, nbd.CmdFlush, 0, 0, nil), "FLUSH")
	}
	if w.tflags&nbd.FlagSendFUA != 0 {
		data := pattern(10, 4096)
		okReply(t, w.do(nbd.CmdFlagFUA, nbd.CmdWrite, 8192, 4096, data), "WRITE with FUA")
		r := w.do(0, nbd.CmdRead, 8192, 4096, nil)
		okReply(t, r, "READ")
		assert.Equal(t, data, r.data)
	}
	w.disconnect()
}

func (s *suite) trim(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	if w.tflags&nbd.FlagSendTrim == 0 {
		t.Logf("NBD_FLAG_SEND_TRIM not advertised")
		w.disconnect()
		return
	}
	okReply(t, w.do(0, nbd.CmdWrite, 1<<16, 1<<16, pattern(11, 1<<16)), "WRITE")
	okReply(t, w.do(0, nbd.CmdTrim, 1<<16, 1<<16, nil), "TRIM")
	// TRIM promises nothing about the contents, but the range stays readable.
	r := w.do(0, nbd.CmdRead, 1<<16, 1<<16, nil)
	okReply(t, r, "READ of a trimmed range")
	assert.Len(t, r.data, 1<<16)
	w.disconnect()
}

func (s *suite) writeZeroes(t *testing.T) {
	w, _, _ := s.open(t, true, false)
	if w.tflags&nbd.FlagSendWriteZeroes == 0 {
		t.Logf("NBD_FLAG_SEND_WRITE_ZEROES not advertised")
		w.disconnect()
		return
	}
	for _, flags := range []nbd.CommandFlags{0, nbd.CmdFlagNoHole} {
		const off, n = 3 << 16, 3 << 12
		data := pattern(12, n)
		okReply(t, w.do(0, nbd.CmdWrite, off, n, data), "WRITE")
		okReply(t, w.do(flags, nbd.CmdWriteZeroes, off+4096, 4096, nil), "WRITE_ZEROES")
		clear(data[4096:8192])
		r := w.do(0, nbd.CmdRead, off, n, nil)
		okReply(t, r, "READ")
		assert.True(t, bytes.Equal(data, r.data), "WRITE_ZEROES (flags %#x) did not zero exactly its range", flags)
	}
	if w.tflags&nbd.FlagSendFastZero != 0 {
		r := w.do(nbd.CmdFlagFastZero, nbd.CmdWriteZeroes, 5<<16, 4096, nil)
		if r.err != 0 {
			assert.Equal(t, nbd.ENOTSUP, r.err, "WRITE_ZEROES with FAST_ZERO may only fail with ENOTSUP")
		}
	}
	r := w.do(0, nbd.CmdWriteZeroes, uint64(s.size)-512, 1024, nil)
	assert.Equal(t, or(s.o.Expect.WritePastEnd, nbd.ENOSPC), r.err, "WRITE_ZEROES across the end")
	w.disconnect()
}

func (s *suite) cache(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	if w.tflags&nbd.FlagSendCache != 0 {
		okReply(t, w.do(0, nbd.CmdCache, 0, 1<<16, nil), "CACHE")
	} else {
		t.Logf("NBD_FLAG_SEND_CACHE not advertised")
	}
	w.disconnect()
}

func (s *suite) readDF(t *testing.T) {
	w, _, _ := s.open(t, true, false)
	if !w.structured || w.tflags&nbd.FlagSendDF == 0 {
		t.Logf("NBD_FLAG_SEND_DF not advertised or no structured replies")
		w.disconnect()
		return
	}
	data := pattern(13, 1<<17)
	okReply(t, w.do(0, nbd.CmdWrite, 1<<18, 1<<17, data), "WRITE")
	r := w.do(nbd.CmdFlagDF, nbd.CmdRead, 1<<18, 1<<17, nil)
	okReply(t, r, "READ with DF")
	assert.Equal(t, 1, r.dataChunks, "READ with NBD_CMD_FLAG_DF must come in one chunk")
	assert.True(t, bytes.Equal(data, r.data))
	w.disconnect()
}

func (s *suite) blockStatus(t *testing.T) {
	w, id, ok := s.open(t, true, true)
	if !ok {
		t.Logf("no base:allocation context (expected)")
		w.disconnect()
		return
	}
	size := uint64(s.size)
	for _, c := range []struct {
		flags  nbd.CommandFlags
		off, n uint64
	}{{0, 0, size}, {0, 4096, 1 << 20}, {nbd.CmdFlagReqOne, 0, size}, {0, size - 1, 1}} {
		r := w.do(c.flags, nbd.CmdBlockStatus, c.off, uint32(min(c.n, 1<<31)), nil)
		okReply(t, r, "BLOCK_STATUS")
		ext, found := r.contexts[id]
		require.True(t, found, "no extents for base:allocation context %d", id)
		require.NotEmpty(t, ext)
		if c.flags&nbd.CmdFlagReqOne != 0 {
			assert.Len(t, ext, 1, "NBD_CMD_FLAG_REQ_ONE")
		}
		var total uint64
		for i, e := range ext {
			assert.NotZero(t, e.length, "extent %d has length 0", i)
			assert.Zero(t, e.flags&^(nbd.StateHole|nbd.StateZero), "extent %d flags %#x", i, e.flags)
			total += uint64(e.length)
		}
		// The last extent may run past the request, never past the export.
		assert.LessOrEqual(t, total, size-c.off, "extents beyond the export")
		if len(ext) > 1 {
			assert.Less(t, total-uint64(ext[len(ext)-1].length), c.n, "extents after the requested range")
		}
	}
	r := w.do(0, nbd.CmdBlockStatus, size, 512, nil)
	assert.Equal(t, nbd.EINVAL, r.err, "BLOCK_STATUS past the end")
	w.disconnect()
}

func (s *suite) pipelined(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	const n, blk = 64, 4096
	base := uint64(1 << 19)
	in := map[uint64]pending{}
	datas := make([][]byte, n)
	for i := range n {
		datas[i] = pattern(uint64(1000+i), blk)
		off := base + uint64(i)*blk
		h := uint64(0x1000 + i)
		in[h] = pending{nbd.CmdWrite, off, blk}
		w.request(0, nbd.CmdWrite, h, off, blk, datas[i])
	}
	for len(in) > 0 {
		okReply(t, w.readReply(in), "pipelined WRITE")
	}
	var handles []uint64
	for i := range n {
		off := base + uint64(i)*blk
		h := uint64(0x2000 + i)
		in[h] = pending{nbd.CmdRead, off, blk}
		w.request(0, nbd.CmdRead, h, off, blk, nil)
	}
	for len(in) > 0 {
		r := w.readReply(in)
		okReply(t, r, "pipelined READ")
		handles = append(handles, r.handle)
		assert.True(t, bytes.Equal(datas[r.handle-0x2000], r.data), "pipelined READ %#x data", r.handle)
	}
	slices.Sort(handles)
	assert.Len(t, slices.Compact(handles), n, "each request answered once")
	w.disconnect()
}

func (s *suite) large(t *testing.T) {
	w, _, _ := s.open(t, true, false)
	n := min(or(s.o.Expect.MaxPayload, nbd.DefaultMaxPayloadSize), int(s.size))
	data := pattern(14, n)
	okReply(t, w.do(0, nbd.CmdWrite, 0, uint32(n), data), "large WRITE")
	r := w.do(0, nbd.CmdRead, 0, uint32(n), nil)
	okReply(t, r, "large READ")
	assert.True(t, bytes.Equal(data, r.data), "large READ of %d bytes", n)
	w.disconnect()
}

func (s *suite) multiConn(t *testing.T) {
	a, _, _ := s.open(t, false, false)
	if a.tflags&nbd.FlagCanMultiConn == 0 {
		t.Logf("NBD_FLAG_CAN_MULTI_CONN not advertised")
		a.disconnect()
		return
	}
	b, _, _ := s.open(t, false, false)
	data := pattern(15, 4096)
	okReply(t, a.do(0, nbd.CmdWrite, 12288, 4096, data), "WRITE on the first connection")
	if a.tflags&nbd.FlagSendFlush != 0 {
		okReply(t, a.do(0, nbd.CmdFlush, 0, 0, nil), "FLUSH")
	}
	r := b.do(0, nbd.CmdRead, 12288, 4096, nil)
	okReply(t, r, "READ on the second connection")
	assert.Equal(t, data, r.data, "multi-conn: a flushed write is visible on another connection")
	a.disconnect()
	b.disconnect()
}

func (s *suite) concurrentConnections(t *testing.T) {
	// Connections in transmission at the same time, each writing and reading back its own
	// block: all are served, and none sees another's data.
	const n = 32
	ws := make([]*wire, n)
	for i := range ws {
		ws[i], _, _ = s.open(t, false, false)
	}
	datas := make([][]byte, n)
	for i, w := range ws {
		datas[i] = pattern(uint64(2000+i), 4096)
		w.request(0, nbd.CmdWrite, uint64(i), uint64(2<<20+i*4096), 4096, datas[i])
	}
	for i, w := range ws {
		okReply(t, w.readReply(map[uint64]pending{uint64(i): {nbd.CmdWrite, uint64(2<<20 + i*4096), 4096}}), "WRITE")
	}
	for i, w := range ws {
		r := w.do(0, nbd.CmdRead, uint64(2<<20+((i+1)%n)*4096), 4096, nil)
		okReply(t, r, "READ")
		assert.True(t, bytes.Equal(datas[(i+1)%n], r.data), "connection %d reading the block of connection %d", i, (i+1)%n)
	}
	for _, w := range ws {
		w.disconnect()
	}
}

func (s *suite) disconnectCmd(t *testing.T) {
	w, _, _ := s.open(t, false, false)
	// A write in flight when DISC arrives must still be performed.
	data := pattern(16, 4096)
	w.request(0, nbd.CmdWrite, 1, 16384, 4096, data)
	r := w.readReply(map[uint64]pending{1: {nbd.CmdWrite, 16384, 4096}})
	okReply(t, r, "WRITE")
	w.disconnect()

	v, _, _ := s.open(t, false, false)
	r = v.do(0, nbd.CmdRead, 16384, 4096, nil)
	okReply(t, r, "READ")
	assert.Equal(t, data, r.data)
	v.disconnect()
}

func (s *suite) readOnly(t *testing.T) {
	addr := or(s.o.ReadOnlyAddr, s.addr)
	w := s.dial(t, addr)
	s.start(t, w)
	w.goExport(s.o.ReadOnlyExport)
	assert.NotZero(t, w.tflags&nbd.FlagReadOnly, "NBD_FLAG_READ_ONLY on a read-only export")
	r := w.do(0, nbd.CmdWrite, 0, 4096, pattern(17, 4096))
	assert.Equal(t, or(s.o.Expect.WriteReadOnly, nbd.EPERM), r.err, "WRITE on a read-only export")
	okReply(t, w.do(0, nbd.CmdRead, 0, 4096, nil), "READ after a refused WRITE")
	w.disconnect()
}

// ---- TLS ----

func (s *suite) tlsRequired(t *testing.T) {
	w := s.dial(t, s.addr)
	w.start()
	if s.o.TLSRequired {
		for _, opt := range []nbd.Option{nbd.OptInfo, nbd.OptGo} {
			_, final := w.option(opt, infoRequest(s.o.Export))
			assert.Equal(t, nbd.RepErrTLSReqd, final, "%v before TLS", opt)
		}
	}
	w.startTLS(s.o.TLS)
	w.goExport(s.o.Export)
	data := pattern(20, 4096)
	okReply(t, w.do(0, nbd.CmdWrite, 20480, 4096, data), "WRITE over TLS")
	r := w.do(0, nbd.CmdRead, 20480, 4096, nil)
	okReply(t, r, "READ over TLS")
	assert.Equal(t, data, r.data)
	w.disconnect()
}

func (s *suite) startTLSWithData(t *testing.T) {
	w := s.dial(t, s.addr)
	w.start()
	if s.o.Expect.StartTLSWithDataNoReply {
		w.sendOption(nbd.OptStartTLS, []byte("junk"))
		assert.NoError(t, w.expectSilence(time.Second), "NBD_OPT_STARTTLS with data")
		return
	}
	_, final := w.option(nbd.OptStartTLS, []byte("junk"))
	assert.Equal(t, nbd.RepErrInvalid, final, "NBD_OPT_STARTTLS with data")
	w.startTLS(s.o.TLS)
	w.goExport(s.o.Export)
	w.disconnect()
}

func (s *suite) startTLSTwice(t *testing.T) {
	w := s.dial(t, s.addr)
	w.start()
	w.startTLS(s.o.TLS)
	_, final := w.option(nbd.OptStartTLS, nil)
	assert.Equal(t, nbd.RepErrInvalid, final, "NBD_OPT_STARTTLS after TLS")
	w.goExport(s.o.Export)
	w.disconnect()
}
