package nbd_test

import (
	"encoding/hex"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWireBytes checks messages against their bytes as the protocol document lays them out
// (magics, field order and widths, big-endian), in both directions.
func TestWireBytes(t *testing.T) {
	type value interface {
		AppendBinary([]byte) ([]byte, error)
	}
	tests := []struct {
		name string
		v    value
		hex  string
	}{
		{"option header NBD_OPT_GO", nbd.OptionHeader{Option: nbd.OptGo, Length: 10},
			"49484156454f5054 00000007 0000000a"},
		{"option reply NBD_REP_ACK", nbd.OptionReplyHeader{Option: nbd.OptGo, Type: nbd.RepAck},
			"0003e889045565a9 00000007 00000001 00000000"},
		{"NBD_OPT_GO data", nbd.InfoRequest{Name: "root", Infos: []nbd.InfoType{nbd.InfoBlockSize}},
			"00000004 726f6f74 0001 0003"},
		{"NBD_OPT_SET_META_CONTEXT data", nbd.MetaContextRequest{Name: "root", Queries: []string{"base:allocation"}},
			"00000004 726f6f74 00000001 0000000f 626173653a616c6c6f636174696f6e"},
		{"NBD_REP_META_CONTEXT data", nbd.MetaContextReply{ID: 1, Name: "base:allocation"},
			"00000001 626173653a616c6c6f636174696f6e"},
		{"NBD_INFO_EXPORT", nbd.InfoExportReply{Size: 1 << 20, Flags: nbd.FlagHasFlags | nbd.FlagReadOnly},
			"0000 0000000000100000 0003"},
		{"NBD_INFO_BLOCK_SIZE", nbd.InfoBlockSizeReply{Min: 1, Preferred: 4096, MaxPayload: 32 << 20},
			"0003 00000001 00001000 02000000"},
		{"simple reply NBD_EIO", nbd.SimpleReply{Errno: nbd.EIO, Cookie: 0x0102030405060708},
			"67446698 00000005 0102030405060708"},
		{"chunk header OFFSET_DATA done", nbd.ChunkHeader{Flags: nbd.ReplyFlagDone, Type: nbd.ChunkTypeOffsetData, Cookie: 1, Length: 520},
			"668e33ef 0001 0001 0000000000000001 00000208"},
		{"error chunk NBD_EINVAL", nbd.ErrorChunk{Errno: nbd.EINVAL, Message: "bad"},
			"00000016 0003 626164"},
		{"offset-hole chunk", nbd.OffsetHoleChunk{Offset: 4096, Length: 512},
			"0000000000001000 00000200"},
		// The greeting spells "NBDMAGIC" and "IHAVEOPT", as the document's "Newstyle
		// negotiation" section shows.
		{"greeting", nbd.Greeting{Flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes},
			"4e42444d41474943 49484156454f5054 0003"},
		{"client flags", nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes, "00000003"},
		{"NBD_OPT_EXPORT_NAME reply", nbd.ExportNameReply{Size: 1 << 20, Flags: nbd.FlagHasFlags | nbd.FlagReadOnly},
			"0000000000100000 0003"},
		{"NBD_REP_SERVER data", nbd.ServerReply{Name: "root", Description: "the root"},
			"00000004 726f6f74 74686520726f6f74"},
		{"NBD_INFO_NAME", nbd.InfoTextReply{Type: nbd.InfoName, Text: "root"}, "0001 726f6f74"},
		// Structured reply payloads, laid out as in the section "Structured reply types".
		{"offset-data chunk start", nbd.OffsetDataChunk{Offset: 4096}, "0000000000001000"},
		{"block status chunk", nbd.BlockStatusChunk{ContextID: 1, Extents: []nbd.Extent{
			{Offset: 0, Length: 4096}, {Offset: 4096, Length: 512, Hole: true, Zero: true}}},
			"00000001 00001000 00000000 00000200 00000003"},
		{"error-offset chunk", nbd.ErrorOffsetChunk{ErrorChunk: nbd.ErrorChunk{Errno: nbd.EIO, Message: "bad"}, Offset: 512},
			"00000005 0003 626164 0000000000000200"},
		{"request NBD_CMD_READ", nbd.Request{Type: nbd.CmdRead, Cookie: 2, Offset: 512, Length: 4096},
			"25609513 0000 0000 0000000000000002 0000000000000200 00001000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := hex.DecodeString(strings.ReplaceAll(tt.hex, " ", ""))
			require.NoError(t, err)
			got, err := tt.v.AppendBinary(nil)
			require.NoError(t, err)
			assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(got))
			back := reflect.New(reflect.TypeOf(tt.v))
			u := back.Interface().(interface{ UnmarshalBinary([]byte) error })
			require.NoError(t, u.UnmarshalBinary(want))
			assert.Equal(t, tt.v, back.Elem().Interface())
			// Cut short, it is incomplete (or, where its last field takes the rest, shorter).
			for k := range len(want) {
				err := reflect.New(reflect.TypeOf(tt.v)).Interface().(interface{ UnmarshalBinary([]byte) error }).UnmarshalBinary(want[:k])
				if err != nil {
					require.ErrorIs(t, err, io.ErrUnexpectedEOF, "first %d bytes", k)
				}
			}
		})
	}
}
