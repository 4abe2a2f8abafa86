// Buffer pools by size class, for request payloads, read replies and the reply writer.

package nbd

import (
	"math/bits"
	"sync"
)

// Buffers come from pools by power-of-two size class, 4 KiB to 32 MiB.
const minBufShift, maxBufShift = 12, 25

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func getBuf(n int) *[]byte {
	shift := minBufShift
	if n > 1<<minBufShift {
		shift = bits.Len(uint(n - 1))
	}
	if shift > maxBufShift {
		b := make([]byte, n)
		return &b
	}
	if p, ok := bufPools[shift-minBufShift].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<shift)
	return &b
}

func putBuf(p *[]byte) {
	c := cap(*p)
	shift := bits.Len(uint(c)) - 1
	if c != 1<<shift || shift < minBufShift || shift > maxBufShift {
		return
	}
	bufPools[shift-minBufShift].Put(p)
}
