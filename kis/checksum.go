package kis

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// maxBlockSize is the largest block size KIWI's checksum writer picks.
const maxBlockSize = 8192

// Checksum is the content of a KIS build's .md5 file: the MD5 of the uncompressed root image and
// its size as a block count times a block size, plus the size of the compressed image when the
// build is compressed.
type Checksum struct {
	MD5                 [16]byte
	Blocks, BlockSize   int64
	CompressedBlocks    int64 // 0 when the image is not compressed
	CompressedBlockSize int64 // 0 when the image is not compressed
}

// Size returns the size in bytes of the uncompressed image.
func (c Checksum) Size() int64 { return c.Blocks * c.BlockSize }

// CompressedSize returns the size in bytes of the compressed image, or -1 when the checksum
// does not record one.
func (c Checksum) CompressedSize() int64 {
	if c.CompressedBlockSize == 0 {
		return -1
	}
	return c.CompressedBlocks * c.CompressedBlockSize
}

// Sum returns the MD5 in lower-case hex, as KIWI writes it.
func (c Checksum) Sum() string { return hex.EncodeToString(c.MD5[:]) }

// BlockList splits size the way KIWI's checksum writer does: the block size is the product of
// the smallest prime factors of size that stays at most 8192, and blocks*blocksize == size.
// Size 0 gives 0 blocks of 1 byte.
func BlockList(size int64) (blocks, blockSize int64) {
	if size <= 0 {
		return 0, 1
	}
	bs, n := int64(1), size
	for p := int64(2); p <= maxBlockSize && p*p <= n; p++ {
		for n%p == 0 {
			if bs*p > maxBlockSize {
				return size / bs, bs
			}
			bs *= p
			n /= p
		}
	}
	if n > 1 && bs*n <= maxBlockSize {
		bs *= n
	}
	return size / bs, bs
}

// NewChecksum returns the checksum KIWI would write for an image of size bytes with the given
// MD5. compressedSize is the size of the .xz file, or -1 for an uncompressed image.
func NewChecksum(sum [16]byte, size, compressedSize int64) Checksum {
	c := Checksum{MD5: sum}
	c.Blocks, c.BlockSize = BlockList(size)
	if compressedSize >= 0 {
		c.CompressedBlocks, c.CompressedBlockSize = BlockList(compressedSize)
	}
	return c
}

// MarshalText returns the .md5 file line, with its trailing newline.
func (c Checksum) MarshalText() ([]byte, error) {
	if c.BlockSize <= 0 || c.Blocks < 0 {
		return nil, fmt.Errorf("kis: checksum block list %d*%d is not valid", c.Blocks, c.BlockSize)
	}
	s := fmt.Sprintf("%s %d %d", c.Sum(), c.Blocks, c.BlockSize)
	if c.CompressedBlockSize != 0 {
		if c.CompressedBlockSize < 0 || c.CompressedBlocks < 0 {
			return nil, fmt.Errorf("kis: checksum compressed block list %d*%d is not valid",
				c.CompressedBlocks, c.CompressedBlockSize)
		}
		s += fmt.Sprintf(" %d %d", c.CompressedBlocks, c.CompressedBlockSize)
	}
	return []byte(s + "\n"), nil
}

// UnmarshalText parses a .md5 file: "MD5 BLOCKS BLOCKSIZE" or
// "MD5 BLOCKS BLOCKSIZE CBLOCKS CBLOCKSIZE", fields separated by white space.
func (c *Checksum) UnmarshalText(text []byte) error {
	v, err := ParseChecksum(string(text))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// ParseChecksum parses the content of a .md5 file.
func ParseChecksum(s string) (Checksum, error) {
	f := strings.Fields(s)
	if len(f) != 3 && len(f) != 5 {
		return Checksum{}, fmt.Errorf("kis: md5 file %q: want \"MD5 BLOCKS BLOCKSIZE [CBLOCKS CBLOCKSIZE]\", got %d fields",
			clip(s), len(f))
	}
	var c Checksum
	if len(f[0]) != 32 {
		return Checksum{}, fmt.Errorf("kis: md5 file: checksum %q is not 32 hex digits", clip(f[0]))
	}
	if _, err := hex.Decode(c.MD5[:], []byte(f[0])); err != nil {
		return Checksum{}, fmt.Errorf("kis: md5 file: checksum %q: %w", f[0], err)
	}
	nums := make([]int64, len(f)-1)
	for i, s := range f[1:] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return Checksum{}, fmt.Errorf("kis: md5 file: block field %d %q is not a count", i+2, clip(s))
		}
		nums[i] = n
	}
	c.Blocks, c.BlockSize = nums[0], nums[1]
	if len(nums) == 4 {
		c.CompressedBlocks, c.CompressedBlockSize = nums[2], nums[3]
	}
	pairs := [][2]int64{{c.Blocks, c.BlockSize}}
	if len(nums) == 4 {
		pairs = append(pairs, [2]int64{c.CompressedBlocks, c.CompressedBlockSize})
	}
	for _, bl := range pairs {
		if bl[1] == 0 || bl[0] > (1<<62)/bl[1] {
			return Checksum{}, fmt.Errorf("kis: md5 file: block list %d*%d is not a size", bl[0], bl[1])
		}
	}
	return c, nil
}

// ReadChecksum reads and parses a .md5 file.
func ReadChecksum(path string) (Checksum, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Checksum{}, fmt.Errorf("kis: %w", err)
	}
	// A .md5 file is one short line; refuse to read something else entirely.
	if st.Size() > 4096 {
		return Checksum{}, fmt.Errorf("kis: md5 file %s is %d bytes, not one line", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Checksum{}, fmt.Errorf("kis: %w", err)
	}
	c, err := ParseChecksum(string(b))
	if err != nil {
		return Checksum{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// clip shortens untrusted input quoted in an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
