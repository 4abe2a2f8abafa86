package handoff

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeMessage: any header, with any count of descriptors beside it, decodes to a
// message whose names and states match that count, or to an error; never a panic.
func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"type":"listeners","names":["nbd","tftp"]}`), 2)
	f.Add([]byte(`{"type":"conns","names":["nbd-conn"],"states":["TkJEU1RBVAE="]}`), 1)
	f.Add([]byte(`{"type":"done","count":3}`), 0)
	f.Add([]byte(`{"type":"conns","names":["a"],"states":[]}`), 1)
	f.Add([]byte(`null`), 0)
	f.Fuzz(func(t *testing.T, b []byte, nfiles int) {
		m, err := decodeMessage(b, nfiles)
		if err != nil {
			return
		}
		require.Len(t, m.Names, nfiles)
		if m.States != nil {
			require.Len(t, m.States, nfiles)
		}
		// What decodes encodes again to the same message.
		again, err := json.Marshal(m)
		require.NoError(t, err)
		m2, err := decodeMessage(again, nfiles)
		require.NoError(t, err)
		require.Equal(t, m, m2)
	})
}

// FuzzParseStored: the state memfd of the fd store parses or fails cleanly.
func FuzzParseStored(f *testing.F) {
	f.Add([]byte(`[{"fdname":"netroot-conn.0","name":"nbd-conn","state":"TkJEU1RBVAE="}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		stored, err := parseStored(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(stored)
		require.NoError(t, err)
		stored2, err := parseStored(again)
		require.NoError(t, err)
		require.Equal(t, len(stored), len(stored2))
		for i := range stored {
			require.Equal(t, stored[i].FDName, stored2[i].FDName)
			require.Equal(t, stored[i].Name, stored2[i].Name)
			require.Equal(t, string(stored[i].State), string(stored2[i].State))
		}
	})
}
