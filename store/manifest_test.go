package store_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func sampleManifest() *store.Manifest {
	return &store.Manifest{
		Format: store.ManifestFormat, Build: "tbz.x86_64-1.2.3", Name: "tbz", Arch: "x86_64", Version: "1.2.3",
		KernelVersion: "6.1.0-13-amd64", MD5: "0123456789abcdef0123456789abcdef", Append: "root=UUID=42 rd.kiwi.install.pass.bootparam",
		Created:   time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC),
		ChunkSize: store.MinChunkSize,
		Image:     store.Blob{Size: store.MinChunkSize + 1, Chunks: []store.Hash{store.Sum([]byte("a")), store.Sum([]byte("b"))}},
		Kernel:    store.Blob{Size: 10, Chunks: []store.Hash{store.Sum([]byte("k"))}},
		Initrd:    store.Blob{Size: 0, Chunks: []store.Hash{}},
	}
}

func TestManifestGolden(t *testing.T) {
	data, id, err := store.MarshalManifest(sampleManifest())
	require.NoError(t, err)
	assert.Equal(t, store.Sum(data), id)
	golden := filepath.Join("testdata", "manifest.json")
	if *update {
		require.NoError(t, os.WriteFile(golden, data, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(data))

	m, err := store.ParseManifest(data)
	require.NoError(t, err)
	again, id2, err := store.MarshalManifest(m)
	require.NoError(t, err)
	assert.Equal(t, id, id2)
	assert.Equal(t, data, again)
}

func TestParseManifestRejects(t *testing.T) {
	good, _, err := store.MarshalManifest(sampleManifest())
	require.NoError(t, err)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"format", store.ManifestFormat, "netroot-manifest/9", "format"},
		{"chunk size not a power of two", `"chunk_size": 4096`, `"chunk_size": 4097`, "chunk size"},
		{"chunk size too small", `"chunk_size": 4096`, `"chunk_size": 2048`, "chunk size"},
		{"chunk count", `"size": 4097`, `"size": 9000`, "chunks"},
		{"negative size", `"size": 10`, `"size": -10`, "size"},
		{"build", `"build": "tbz.x86_64-1.2.3"`, `"build": "other"`, "build"},
		{"md5", `0123456789abcdef0123456789abcdef`, `0123456789ABCDEF0123456789abcdef`, "md5"},
		{"hash", store.Sum([]byte("a")).String(), "zz", "hash"},
		{"unknown field", `"format"`, `"extra": 1, "format"`, "unknown field"},
		{"trailing data", "[]\n }\n}\n", "[]\n }\n} {}", "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1)
			require.NotEqual(t, good, bad, "replacement did not apply")
			_, err := store.ParseManifest(bad)
			require.ErrorIs(t, err, store.ErrInvalid)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestParseTag(t *testing.T) {
	tag := store.Tag{Name: "x", Manifest: store.Sum([]byte("m")), Build: "a.b-1", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	data, err := store.MarshalTag(tag)
	require.NoError(t, err)
	got, err := store.ParseTag("x", data)
	require.NoError(t, err)
	assert.Equal(t, tag, got)
	for _, bad := range []string{"", "{}", `{"manifest":"00"}`, `{"manifest":"` + tag.Manifest.String() + `","x":1}`, string(make([]byte, store.MaxTagSize+1))} {
		_, err := store.ParseTag("x", []byte(bad))
		assert.ErrorIs(t, err, store.ErrInvalid, "%q", bad)
	}
}

func FuzzParseManifest(f *testing.F) {
	good, err := os.ReadFile(filepath.Join("testdata", "manifest.json"))
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte(`{"format":"netroot-manifest/1"}`))
	f.Add([]byte(`{"chunk_size":-1,"image":{"size":9223372036854775807,"chunks":[]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := store.ParseManifest(data)
		if err != nil {
			require.ErrorIs(t, err, store.ErrInvalid)
			return
		}
		// A manifest that parses marshals, and parses again to the same value.
		out, _, err := store.MarshalManifest(m)
		require.NoError(t, err)
		m2, err := store.ParseManifest(out)
		require.NoError(t, err)
		assert.Equal(t, m, m2)
	})
}

func FuzzParseTag(f *testing.F) {
	data, err := store.MarshalTag(store.Tag{Manifest: store.Sum(nil), Build: "a.b-1", Time: time.Unix(0, 0).UTC()})
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte(`{"manifest":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tag, err := store.ParseTag("t", data)
		if err != nil {
			require.ErrorIs(t, err, store.ErrInvalid)
			return
		}
		out, err := store.MarshalTag(tag)
		require.NoError(t, err)
		tag2, err := store.ParseTag("t", out)
		require.NoError(t, err)
		assert.True(t, tag.Time.Equal(tag2.Time))
		assert.Equal(t, tag.Manifest, tag2.Manifest)
	})
}
