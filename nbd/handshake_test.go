package nbd_test

import (
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func handshakeServer(t *testing.T) string {
	root := &nbd.Export{Name: "root", Description: "root image", Device: patterned(1 << 20), Writable: true}
	ro := &nbd.Export{Name: "ro", Device: backend.NewMemory(8192)}
	denied := &nbd.Export{Name: "denied", Device: backend.NewMemory(4096),
		Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	secret := &nbd.Export{Name: "secret", Device: backend.NewMemory(4096), TLS: nbd.TLSRequired}
	return coreServe(t, &nbd.Server{Exports: coreExports(t, root, ro, denied, secret)})
}

func TestHandshakeOptions(t *testing.T) {
	addr := handshakeServer(t)
	fixed := nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes
	tests := []struct {
		name  string
		opt   nbd.Option
		data  []byte
		check func(t *testing.T, reps []optReply)
	}{
		{"list", nbd.OptList, nil, func(t *testing.T, reps []optReply) {
			var list []nbd.ServerReply
			for _, r := range reps[:len(reps)-1] {
				require.Equal(t, nbd.RepServer, r.typ)
				var sr nbd.ServerReply
				require.NoError(t, sr.UnmarshalBinary(r.data))
				list = append(list, sr)
			}
			// denied is not allowed from loopback, secret needs TLS.
			assert.Equal(t, []nbd.ServerReply{{Name: "root", Description: "root image"}, {Name: "ro"}}, list)
			assert.Equal(t, nbd.RepAck, reps[len(reps)-1].typ)
		}},
		{"list with data", nbd.OptList, []byte{1}, wantError(nbd.RepErrInvalid)},
		{"info", nbd.OptInfo, infoData("root", nbd.InfoName, nbd.InfoDescription, nbd.InfoBlockSize, 999),
			func(t *testing.T, reps []optReply) {
				require.Len(t, reps, 5)
				got := map[nbd.InfoType][]byte{}
				for _, r := range reps[:4] {
					require.Equal(t, nbd.RepInfo, r.typ)
					var it nbd.InfoTextReply
					require.NoError(t, it.UnmarshalBinary(r.data))
					got[it.Type] = r.data
				}
				var ie nbd.InfoExportReply
				require.NoError(t, ie.UnmarshalBinary(got[nbd.InfoExport]))
				assert.Equal(t, uint64(1<<20), ie.Size)
				assert.NotZero(t, ie.Flags&nbd.FlagHasFlags)
				assert.Zero(t, ie.Flags&nbd.FlagReadOnly)
				assert.Equal(t, "\x00\x01root", string(got[nbd.InfoName]))
				assert.Equal(t, "\x00\x02root image", string(got[nbd.InfoDescription]))
				assert.Equal(t, []byte{0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0}, got[nbd.InfoBlockSize])
				assert.Equal(t, nbd.RepAck, reps[4].typ)
			}},
		{"info without requests sends export only", nbd.OptInfo, infoData("ro"), func(t *testing.T, reps []optReply) {
			require.Len(t, reps, 2)
			require.Equal(t, nbd.RepInfo, reps[0].typ)
			var ie nbd.InfoExportReply
			require.NoError(t, ie.UnmarshalBinary(reps[0].data))
			assert.Equal(t, nbd.FlagReadOnly, ie.Flags&(nbd.FlagReadOnly|nbd.FlagSendTrim|nbd.FlagSendWriteZeroes|nbd.FlagSendFlush))
		}},
		{"info default export", nbd.OptInfo, infoData(""), func(t *testing.T, reps []optReply) {
			require.Equal(t, nbd.RepAck, reps[len(reps)-1].typ)
			var ie nbd.InfoExportReply
			require.NoError(t, ie.UnmarshalBinary(reps[0].data))
			assert.Equal(t, uint64(1<<20), ie.Size)
		}},
		{"info unknown export", nbd.OptInfo, infoData("nope"), wantError(nbd.RepErrUnknown)},
		{"info denied export", nbd.OptInfo, infoData("denied"), wantError(nbd.RepErrPolicy)},
		{"info TLS-only export", nbd.OptInfo, infoData("secret"), wantError(nbd.RepErrTLSReqd)},
		{"info name too long", nbd.OptInfo, []byte{0, 0, 0, 9, 'r', 0, 0}, wantError(nbd.RepErrInvalid)},
		{"info odd request list", nbd.OptInfo, append(infoData("root", nbd.InfoName), 0), wantError(nbd.RepErrInvalid)},
		{"info short", nbd.OptInfo, []byte{0, 0}, wantError(nbd.RepErrInvalid)},
		{"go unknown export", nbd.OptGo, infoData("nope"), wantError(nbd.RepErrUnknown)},
		{"structured reply with data", nbd.OptStructuredReply, []byte{0}, wantError(nbd.RepErrInvalid)},
		{"starttls without TLS", nbd.OptStartTLS, nil, wantError(nbd.RepErrPolicy)},
		{"unknown option", nbd.Option(0xdead), []byte("ignored"), wantError(nbd.RepErrUnsup)},
		{"peek export", nbd.OptPeekExport, nil, wantError(nbd.RepErrUnsup)},
		{"extended headers", nbd.OptExtendedHeaders, nil, wantError(nbd.RepErrUnsup)},
		{"set meta context before structured", nbd.OptSetMetaContext, metaData("root", nbd.MetaContextBaseAllocation),
			wantError(nbd.RepErrInvalid)},
		{"list meta context all", nbd.OptListMetaContext, metaData("root"), func(t *testing.T, reps []optReply) {
			require.Len(t, reps, 2)
			require.Equal(t, nbd.RepMetaContext, reps[0].typ)
			assert.Equal(t, nbd.MetaContextBaseAllocation, string(reps[0].data[4:]))
			assert.Equal(t, nbd.RepAck, reps[1].typ)
		}},
		{"list meta context base wildcard", nbd.OptListMetaContext, metaData("root", "base:"), func(t *testing.T, reps []optReply) {
			require.Len(t, reps, 2)
			assert.Equal(t, nbd.MetaContextBaseAllocation, string(reps[0].data[4:]))
		}},
		{"list meta context other namespace", nbd.OptListMetaContext, metaData("root", "qemu:dirty-bitmap:x"),
			func(t *testing.T, reps []optReply) {
				require.Len(t, reps, 1)
				assert.Equal(t, nbd.RepAck, reps[0].typ)
			}},
		{"list meta context no colon", nbd.OptListMetaContext, metaData("root", "nocolon"), wantError(nbd.RepErrInvalid)},
		{"list meta context truncated", nbd.OptListMetaContext, metaData("root", "base:allocation")[:20], wantError(nbd.RepErrInvalid)},
		{"list meta context unknown export", nbd.OptListMetaContext, metaData("nope"), wantError(nbd.RepErrUnknown)},
		{"oversized option", nbd.Option(0xbeef), make([]byte, 70000), wantError(nbd.RepErrTooBig)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := dialRaw(t, addr, fixed)
			r.option(tt.opt, tt.data)
			tt.check(t, r.replies(tt.opt))
			// The handshake goes on after every reply above.
			r.option(nbd.OptList, nil)
			assert.Equal(t, nbd.RepAck, r.replies(nbd.OptList)[2].typ)
			r.option(nbd.OptAbort, nil)
			assert.Equal(t, nbd.RepAck, r.reply(nbd.OptAbort).typ)
			r.closed()
		})
	}
}

func wantError(typ nbd.ReplyType) func(*testing.T, []optReply) {
	return func(t *testing.T, reps []optReply) {
		t.Helper()
		require.Len(t, reps, 1)
		assert.Equal(t, typ, reps[0].typ)
		assert.NotEmpty(t, reps[0].data, "error replies carry a message")
	}
}

func TestHandshakeExportName(t *testing.T) {
	addr := handshakeServer(t)
	tests := []struct {
		name   string
		flags  nbd.ClientFlags
		export string
		zeroes int
		closed bool
		size   uint64
		rdOnly bool
	}{
		{"no zeroes", nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes, "root", 0, false, 1 << 20, false},
		{"zeroes", nbd.FlagCFixedNewstyle, "root", 124, false, 1 << 20, false},
		{"non-fixed client", 0, "ro", 124, false, 8192, true},
		{"default export", nbd.FlagCNoZeroes, "", 0, false, 1 << 20, false},
		{"unknown export closes", nbd.FlagCFixedNewstyle, "nope", 0, true, 0, false},
		{"denied export closes", nbd.FlagCFixedNewstyle, "denied", 0, true, 0, false},
		{"TLS-only export closes", nbd.FlagCFixedNewstyle, "secret", 0, true, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := dialRaw(t, addr, tt.flags)
			r.option(nbd.OptExportName, []byte(tt.export))
			if tt.closed {
				r.closed()
				return
			}
			b := make([]byte, nbd.ExportNameReplySize+tt.zeroes)
			_, err := io.ReadFull(r.br, b)
			require.NoError(t, err)
			var er nbd.ExportNameReply
			require.NoError(t, er.UnmarshalBinary(b))
			assert.Equal(t, tt.size, er.Size)
			assert.Equal(t, tt.rdOnly, er.Flags&nbd.FlagReadOnly != 0)
			assert.Zero(t, er.Flags&nbd.FlagSendDF, "no DF without structured replies")
			assert.Equal(t, make([]byte, tt.zeroes), b[nbd.ExportNameReplySize:])
			// Transmission works: read 16 bytes.
			r.request(nbd.Request{Type: nbd.CmdRead, Cookie: 7, Length: 16}, nil)
			errno, cookie := r.simpleReply()
			require.Zero(t, errno)
			require.Equal(t, uint64(7), cookie)
			_, err = io.ReadFull(r.br, make([]byte, 16))
			require.NoError(t, err)
			r.request(nbd.Request{Type: nbd.CmdDisc}, nil)
			r.closed()
		})
	}
}

func TestHandshakeViolationsClose(t *testing.T) {
	addr := handshakeServer(t)
	t.Run("unknown client flags", func(t *testing.T) {
		r := dialRaw(t, addr, 1<<5)
		r.closed()
	})
	t.Run("bad option magic", func(t *testing.T) {
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
		r.write(make([]byte, nbd.OptionHeaderSize))
		r.closed()
	})
	t.Run("huge option", func(t *testing.T) {
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
		r.write(must(t, nbd.OptionHeader{Option: nbd.OptList, Length: 1 << 31}))
		r.closed()
	})
	t.Run("abort and leave", func(t *testing.T) {
		// The client may close without reading the ACK; the server must cope.
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
		r.option(nbd.OptAbort, nil)
		r.c.Close()
	})
}

func TestHandshakeMetaContext(t *testing.T) {
	addr := handshakeServer(t)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	r.option(nbd.OptStructuredReply, nil)
	require.Equal(t, nbd.RepAck, r.reply(nbd.OptStructuredReply).typ)

	r.option(nbd.OptSetMetaContext, metaData("root", "x-other:thing", nbd.MetaContextBaseAllocation))
	reps := r.replies(nbd.OptSetMetaContext)
	require.Len(t, reps, 2)
	require.Equal(t, nbd.RepMetaContext, reps[0].typ)
	var mc nbd.MetaContextReply
	require.NoError(t, mc.UnmarshalBinary(reps[0].data))
	assert.Equal(t, nbd.MetaContextBaseAllocation, mc.Name)

	// Selecting nothing is not an error.
	r.option(nbd.OptSetMetaContext, metaData("root"))
	assert.Len(t, r.replies(nbd.OptSetMetaContext), 1)
	// The final selection counts: select again, then go.
	r.option(nbd.OptSetMetaContext, metaData("root", nbd.MetaContextBaseAllocation))
	assert.Len(t, r.replies(nbd.OptSetMetaContext), 2)

	r.option(nbd.OptGo, infoData("root"))
	reps = r.replies(nbd.OptGo)
	require.Equal(t, nbd.RepAck, reps[len(reps)-1].typ)
	var ie nbd.InfoExportReply
	require.NoError(t, ie.UnmarshalBinary(reps[0].data))
	assert.NotZero(t, ie.Flags&nbd.FlagSendDF)

	r.request(nbd.Request{Type: nbd.CmdBlockStatus, Cookie: 1, Offset: 512, Length: 4096}, nil)
	c := r.chunk()
	assert.Equal(t, nbd.ChunkTypeBlockStatus, c.typ)
	assert.Equal(t, nbd.ReplyFlagDone, c.flags)
	bs := nbd.BlockStatusChunk{Offset: 512}
	require.NoError(t, bs.UnmarshalBinary(c.payload))
	assert.Equal(t, nbd.BlockStatusChunk{ContextID: mc.ID, Offset: 512, Extents: []nbd.Extent{{Offset: 512, Length: 4096}}}, bs)
}

func TestHandshakeStartTLSResetsState(t *testing.T) {
	// Covered with real TLS in TestTLS; here only the option errors of a TLS server.
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: backend.NewMemory(512)}),
		TLSConfig: nbdtest.NewPKI(t).ServerConfig(false), TLSMode: nbd.TLSRequired}
	addr := coreServe(t, srv)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	for _, opt := range []nbd.Option{nbd.OptList, nbd.OptInfo, nbd.OptGo, nbd.OptStructuredReply} {
		r.option(opt, infoData("x"))
		rep := r.reply(opt)
		assert.Equal(t, nbd.RepErrTLSReqd, rep.typ, opt.String())
		assert.True(t, strings.Contains(string(rep.data), "TLS"))
	}
	r.option(nbd.OptStartTLS, []byte{1})
	assert.Equal(t, nbd.RepErrInvalid, r.reply(nbd.OptStartTLS).typ)
	r.option(nbd.OptExportName, []byte("x"))
	r.closed()
}
