package tftp_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

func TestOptionMatrix(t *testing.T) {
	dir := t.TempDir()
	sizes := []int{0, 1, 511, 512, 513, 1468 * 3, 100_000}
	for _, n := range sizes {
		writeFile(t, dir, fmt.Sprintf("f%d", n), randomBytes(n, uint64(n)))
	}
	addr := serve(t, &tftp.Server{Handler: tftp.FileServer(dir), Timeout: 200 * time.Millisecond})
	for _, blk := range []int{0, 8, 512, 1468, 8192, 65464} {
		for _, win := range []int{0, 1, 4, 16} {
			for _, tsize := range []bool{false, true} {
				t.Run(fmt.Sprintf("blksize=%d/windowsize=%d/tsize=%v", blk, win, tsize), func(t *testing.T) {
					c := &tftp.Client{BlockSize: blk, WindowSize: win, TransferSize: tsize, Timeout: 200 * time.Millisecond}
					for _, n := range sizes {
						if blk == 8 && n > 10_000 {
							continue
						}
						got, info, err := get(t, c, addr, fmt.Sprintf("f%d", n))
						require.NoError(t, err, "size %d", n)
						require.Equal(t, randomBytes(n, uint64(n)), got, "size %d", n)
						wantBlk := blk
						if blk == 0 {
							wantBlk = 512
						}
						assert.Equal(t, wantBlk, info.BlockSize)
						assert.Equal(t, max(win, 1), info.WindowSize)
						if tsize {
							assert.EqualValues(t, n, info.Size)
						} else {
							assert.EqualValues(t, -1, info.Size)
						}
						assert.EqualValues(t, n, info.Bytes)
					}
				})
			}
		}
	}
}
