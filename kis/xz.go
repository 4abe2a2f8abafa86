package kis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os/exec"
	"strings"
	"sync"

	"github.com/ulikunitz/xz"
)

// xzProgram is the xz program found on PATH, or "" when there is none. Where it is installed it
// decompresses several times faster than the pure-Go decoder (and with -T0 on several cores for
// the multi-block files that KIWI's `xz --threads=0` writes), which matters for multi-GB images.
var xzProgram = sync.OnceValue(func() string {
	p, err := exec.LookPath("xz")
	if err != nil {
		return ""
	}
	return p
})

// newXZReader returns a streaming xz decoder over r: the xz program when it is installed, else
// the built-in decoder. name says what is decompressed, in the errors of starting the decoder;
// callers name it in read errors. The caller must Close it; a Close before the end stops the
// decoder.
func newXZReader(ctx context.Context, r io.Reader, name string) (io.ReadCloser, error) {
	return newXZReaderWith(ctx, r, name, xzProgram())
}

// newXZReaderWith decompresses with program (the path of an xz program), or with the built-in
// decoder when program is "".
func newXZReaderWith(ctx context.Context, r io.Reader, name, program string) (io.ReadCloser, error) {
	if program == "" {
		zr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("kis: %s: xz: %w", name, err)
		}
		return io.NopCloser(zr), nil
	}
	p := &xzProcess{ctx: ctx}
	p.cmd = exec.CommandContext(ctx, program, "--decompress", "--stdout", "--threads=0")
	p.cmd.Stdin = r
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("kis: %s: xz: %w", name, err)
	}
	p.out = bufio.NewReaderSize(out, 1<<20)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("kis: %s: starting %s: %w", name, program, err)
	}
	return p, nil
}

// xzProcess reads the output of a running xz program. Its end of data is only reported once the
// program has exited successfully, so a truncated or corrupt input is an error, never a short
// image.
type xzProcess struct {
	ctx    context.Context
	cmd    *exec.Cmd
	out    io.Reader
	stderr bytes.Buffer
	waited bool
	err    error // the program's outcome, once waited
}

func (p *xzProcess) Read(b []byte) (int, error) {
	n, err := p.out.Read(b)
	if err == io.EOF {
		if werr := p.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// Close stops the program if it is still running and reaps it.
func (p *xzProcess) Close() error {
	if !p.waited {
		_ = p.cmd.Process.Kill()
		_ = p.wait()
	}
	return nil
}

func (p *xzProcess) wait() error {
	if p.waited {
		return p.err
	}
	p.waited = true
	err := p.cmd.Wait()
	switch {
	case p.ctx.Err() != nil:
		p.err = p.ctx.Err()
	case err != nil:
		msg := strings.TrimSpace(p.stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		// Callers name the file; xz's own "/usr/bin/xz: (stdin): " prefix says nothing more.
		if _, m, ok := strings.Cut(msg, "(stdin): "); ok {
			msg = m
		}
		p.err = fmt.Errorf("xz: %s", msg)
	}
	return p.err
}

// xzMaxIndex bounds the index xzUncompressedSize reads (a record takes a few bytes per block;
// KIWI's multi-GB images have some thousand blocks).
const xzMaxIndex = 16 << 20

// xzUncompressedSize reads the uncompressed size of the .xz file r of the given size from the
// indexes of its streams (read from the end, as `xz --list` does), without decompressing.
// ok is false when the file does not end in well-formed streams.
func xzUncompressedSize(r io.ReaderAt, size int64) (total int64, ok bool) {
	if size <= 0 {
		return 0, false
	}
	end := size
	for streams := 0; end > 0; streams++ {
		if streams >= 1<<16 {
			return 0, false
		}
		// Stream padding: multiples of four zero bytes between and after streams.
		var word [4]byte
		for end >= 4 {
			if _, err := r.ReadAt(word[:], end-4); err != nil {
				return 0, false
			}
			if word != [4]byte{} {
				break
			}
			end -= 4
		}
		if end < 24 {
			return 0, false
		}
		var footer [12]byte
		if _, err := r.ReadAt(footer[:], end-12); err != nil {
			return 0, false
		}
		if footer[10] != 'Y' || footer[11] != 'Z' || crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer[:4]) {
			return 0, false
		}
		indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
		if indexSize > xzMaxIndex || indexSize > end-24 {
			return 0, false
		}
		index := make([]byte, indexSize)
		if _, err := r.ReadAt(index, end-12-indexSize); err != nil {
			return 0, false
		}
		blocks, uncompressed, ok := parseXZIndex(index)
		if !ok || uncompressed > math.MaxInt64-total {
			return 0, false
		}
		total += uncompressed
		streamSize := 12 + blocks + indexSize + 12
		if streamSize > end {
			return 0, false
		}
		var header [12]byte
		if _, err := r.ReadAt(header[:], end-streamSize); err != nil {
			return 0, false
		}
		if string(header[:6]) != "\xfd7zXZ\x00" || [2]byte(header[6:8]) != [2]byte(footer[8:10]) {
			return 0, false
		}
		end -= streamSize
	}
	return total, true
}

// parseXZIndex parses an xz index (indicator, record count, records of unpadded and
// uncompressed size, padding, CRC32) and returns the blocks' size in the stream (each padded to
// four bytes) and their uncompressed size.
func parseXZIndex(b []byte) (blocks, uncompressed int64, ok bool) {
	if len(b) < 8 || b[0] != 0 || crc32.ChecksumIEEE(b[:len(b)-4]) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return 0, 0, false
	}
	p := b[1 : len(b)-4]
	varint := func() (int64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 || n > 9 || v > math.MaxInt64/2 {
			return 0, false
		}
		p = p[n:]
		return int64(v), true
	}
	count, ok := varint()
	if !ok || count > int64(len(p))/2 {
		return 0, 0, false
	}
	for range count {
		unpadded, ok1 := varint()
		size, ok2 := varint()
		if !ok1 || !ok2 || unpadded == 0 || size > math.MaxInt64-uncompressed {
			return 0, 0, false
		}
		blocks += (unpadded + 3) &^ 3
		uncompressed += size
		if blocks < 0 {
			return 0, 0, false
		}
	}
	for _, c := range p {
		if c != 0 {
			return 0, 0, false
		}
	}
	if len(p) != (4-(len(b)-4-len(p))%4)%4 {
		return 0, 0, false
	}
	return blocks, uncompressed, true
}
