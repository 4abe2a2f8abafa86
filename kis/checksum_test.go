package kis_test

import (
	"crypto/md5"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites the file under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create the golden file")
	assert.Equal(t, string(want), string(got))
}

// TestBlockList compares with the block lists KIWI's own Checksum._block_list
// (kiwi/utils/checksum.py with kiwi/utils/primes.py, kiwi 9.24) computes for these sizes.
func TestBlockList(t *testing.T) {
	for _, tc := range []struct{ size, blocks, blockSize int64 }{
		{1, 1, 1}, {2, 1, 2}, {7, 1, 7}, {4096, 1, 4096}, {8192, 1, 8192}, {8193, 2731, 3},
		{12288, 3, 4096}, {65536, 8, 8192}, {1000000, 125, 8000}, {104857600, 12800, 8192},
		{1073741824, 131072, 8192}, {255255, 221, 1155}, {9973, 9973, 1}, {19946, 9973, 2},
		{16382, 8191, 2}, {123456789, 13717421, 9}, {4294971392, 1048577, 4096},
		{999999937, 999999937, 1}, {5000000000, 1953125, 2560}, {49146, 8191, 6}, {8748, 3, 2916},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			blocks, bs := kis.BlockList(tc.size)
			assert.Equal(t, tc.blocks, blocks)
			assert.Equal(t, tc.blockSize, bs)
		})
	}
}

func TestParseChecksum(t *testing.T) {
	sum := md5.Sum([]byte("image"))
	hexSum := fmt.Sprintf("%x", sum)
	for _, tc := range []struct {
		name, in string
		want     kis.Checksum
		size     int64
		csize    int64
	}{
		{"plain", hexSum + " 3 4096\n", kis.Checksum{MD5: sum, Blocks: 3, BlockSize: 4096}, 12288, -1},
		{"compressed", hexSum + " 12800 8192 2731 3\n",
			kis.Checksum{MD5: sum, Blocks: 12800, BlockSize: 8192, CompressedBlocks: 2731, CompressedBlockSize: 3},
			104857600, 8193},
		{"no newline, upper case, tabs", strings.ToUpper(hexSum) + "\t1\t7", kis.Checksum{MD5: sum, Blocks: 1, BlockSize: 7}, 7, -1},
		{"empty image", hexSum + " 0 1\n", kis.Checksum{MD5: sum, Blocks: 0, BlockSize: 1}, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kis.ParseChecksum(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, c)
			assert.Equal(t, tc.size, c.Size())
			assert.Equal(t, tc.csize, c.CompressedSize())
			assert.Equal(t, hexSum, c.Sum())
			var u kis.Checksum
			require.NoError(t, u.UnmarshalText([]byte(tc.in)))
			assert.Equal(t, c, u)
		})
	}
}

func TestParseChecksumErrors(t *testing.T) {
	sum := fmt.Sprintf("%x", md5.Sum(nil))
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "got 0 fields"},
		{"four fields", sum + " 1 2 3", "got 4 fields"},
		{"short sum", "abc 1 2", `checksum "abc" is not 32 hex digits`},
		{"not hex", strings.Repeat("g", 32) + " 1 2", "gggg"},
		{"negative", sum + " -1 2", `block field 2 "-1" is not a count`},
		{"word", sum + " 1 x", `block field 3 "x" is not a count`},
		{"zero block size", sum + " 1 0", "block list 1*0 is not a size"},
		{"zero compressed block size", sum + " 1 1 1 0", "block list 1*0 is not a size"},
		{"overflow", sum + " 9223372036854775807 8192", "is not a size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kis.ParseChecksum(tc.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "kis: md5 file")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestChecksumMarshalGolden(t *testing.T) {
	var out []byte
	for _, tc := range []struct {
		data  string
		csize int64
	}{{"", -1}, {"root image", -1}, {strings.Repeat("x", 12288), -1}, {strings.Repeat("y", 104857), 8193}} {
		c := kis.NewChecksum(md5.Sum([]byte(tc.data)), int64(len(tc.data)), tc.csize)
		line, err := c.MarshalText()
		require.NoError(t, err)
		back, err := kis.ParseChecksum(string(line))
		require.NoError(t, err)
		assert.Equal(t, c, back)
		out = append(out, line...)
	}
	golden(t, "checksum.golden", out)

	_, err := kis.Checksum{}.MarshalText()
	assert.ErrorContains(t, err, "kis: checksum block list 0*0 is not valid")
}

func TestReadChecksum(t *testing.T) {
	dir := t.TempDir()
	_, err := kis.ReadChecksum(filepath.Join(dir, "nope.md5"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	big := filepath.Join(dir, "big.md5")
	require.NoError(t, os.WriteFile(big, make([]byte, 5000), 0o644))
	_, err = kis.ReadChecksum(big)
	assert.ErrorContains(t, err, "is 5000 bytes, not one line")

	bad := filepath.Join(dir, "bad.md5")
	require.NoError(t, os.WriteFile(bad, []byte("nonsense\n"), 0o644))
	_, err = kis.ReadChecksum(bad)
	assert.ErrorContains(t, err, "(in "+bad+")")
}

func FuzzParseChecksum(f *testing.F) {
	f.Add("d41d8cd98f00b204e9800998ecf8427e 0 1\n")
	f.Add("0cc175b9c0f1b6a831c399e269772661 12800 8192 2731 3\n")
	f.Add("0CC175B9C0F1B6A831C399E269772661\t1 7")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := kis.ParseChecksum(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kis: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		if c.Size() < 0 || c.BlockSize <= 0 {
			t.Fatalf("ParseChecksum(%q) = %+v: bad size", s, c)
		}
		line, err := c.MarshalText()
		if err != nil {
			t.Fatalf("MarshalText(%+v): %v", c, err)
		}
		back, err := kis.ParseChecksum(string(line))
		if err != nil || back != c {
			t.Fatalf("round trip of %q: %q gives %+v, %v", s, line, back, err)
		}
	})
}
