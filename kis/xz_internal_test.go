package kis

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os/exec"
	"testing"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"
)

// Both decoders, the xz program and the built-in one, must give the same bytes for what the
// real xz and the Go encoder write, and refuse damaged input.
func TestXZDecoders(t *testing.T) {
	prog := peertest.Program(t, "xz", "xz-utils")
	data := make([]byte, 3<<20+123)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(rng.IntN(16)) // compressible, like a file system image
	}
	var goXZ bytes.Buffer
	w, err := xz.NewWriter(&goXZ)
	require.NoError(t, err)
	_, err = w.Write(data)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	// Several blocks, as KIWI's `xz --threads=0` writes for large images.
	cmd := exec.Command(prog, "--compress", "--stdout", "--threads=2", "--block-size=1MiB")
	cmd.Stdin = bytes.NewReader(data)
	realXZ, err := cmd.Output()
	require.NoError(t, err)

	decoders := map[string]string{"builtin": "", "program": prog}
	inputs := map[string][]byte{"go-encoder": goXZ.Bytes(), "xz-multiblock": realXZ}
	for dname, program := range decoders {
		for iname, in := range inputs {
			t.Run(dname+"/"+iname, func(t *testing.T) {
				r, err := newXZReaderWith(context.Background(), bytes.NewReader(in), "img.xz", program)
				require.NoError(t, err)
				defer r.Close()
				got, err := io.ReadAll(r)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(data, got), "decompressed %d bytes, want %d identical ones", len(got), len(data))
			})
		}
		t.Run(dname+"/damaged", func(t *testing.T) {
			for what, in := range map[string][]byte{
				"truncated": realXZ[:len(realXZ)/2],
				"corrupt":   flip(realXZ, len(realXZ)/2),
				"not-xz":    []byte("this is not an xz file at all, just text"),
				"empty":     nil,
			} {
				r, err := newXZReaderWith(context.Background(), bytes.NewReader(in), "img.xz", program)
				if err == nil {
					_, err = io.ReadAll(r)
					r.Close()
				}
				assert.Error(t, err, what)
			}
		})
	}
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x55
	return c
}

// A canceled context stops the xz program with the context's error, and closing a reader
// before its end stops the program without waiting for it.
func TestXZProgramStops(t *testing.T) {
	prog := peertest.Program(t, "xz", "xz-utils")
	cmd := exec.Command(prog, "--compress", "--stdout", "-0")
	cmd.Stdin = bytes.NewReader(make([]byte, 64<<20))
	in, err := cmd.Output()
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	r, err := newXZReaderWith(ctx, bytes.NewReader(in), "zeros.xz", prog)
	require.NoError(t, err)
	buf := make([]byte, 1<<20)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)
	cancel()
	_, err = io.Copy(io.Discard, r)
	assert.ErrorIs(t, err, context.Canceled)
	require.NoError(t, r.Close())

	r, err = newXZReaderWith(context.Background(), bytes.NewReader(in), "zeros.xz", prog)
	require.NoError(t, err)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	p := r.(*xzProcess)
	assert.NotNil(t, p.cmd.ProcessState, "the program was reaped")
}

// The size read from the xz indexes is what decompressing gives, for what the xz program and
// the Go encoder write, several blocks, streams concatenated with padding; anything else is
// "unknown", never a wrong size.
func TestXZUncompressedSize(t *testing.T) {
	prog := peertest.Program(t, "xz", "xz-utils")
	data := make([]byte, 1<<20+123)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range data {
		data[i] = byte(rng.IntN(16))
	}
	compress := func(in []byte, args ...string) []byte {
		cmd := exec.Command(prog, append([]string{"--compress", "--stdout"}, args...)...)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		require.NoError(t, err)
		return out
	}
	var goXZ bytes.Buffer
	w, err := xz.NewWriter(&goXZ)
	require.NoError(t, err)
	_, err = w.Write(data)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	multi := compress(data, "--threads=2", "--block-size=256KiB")
	second := compress(data[:1000])
	concat := append(append(append([]byte{}, multi...), 0, 0, 0, 0), second...)
	concat = append(concat, 0, 0, 0, 0, 0, 0, 0, 0)

	for _, tc := range []struct {
		name string
		in   []byte
		want int64
		ok   bool
	}{
		{"go encoder", goXZ.Bytes(), int64(len(data)), true},
		{"xz single block", compress(data, "-1"), int64(len(data)), true},
		{"xz several blocks", multi, int64(len(data)), true},
		{"streams with padding", concat, int64(len(data) + 1000), true},
		{"empty input compressed", compress(nil), 0, true},
		{"truncated", multi[:len(multi)-5], 0, false},
		{"corrupt index", flip(multi, len(multi)-20), 0, false},
		{"not xz", []byte("this is not an xz file at all, just some text"), 0, false},
		{"nothing", nil, 0, false},
		{"garbage before", append([]byte("junk"), multi...), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := xzUncompressedSize(bytes.NewReader(tc.in), int64(len(tc.in)))
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

// FuzzXZUncompressedSize: any file gives a size or "unknown", quickly and without a panic; a
// size it gives is never negative.
func FuzzXZUncompressedSize(f *testing.F) {
	var goXZ bytes.Buffer
	w, err := xz.NewWriter(&goXZ)
	require.NoError(f, err)
	_, err = w.Write(bytes.Repeat([]byte("netroot "), 5000))
	require.NoError(f, err)
	require.NoError(f, w.Close())
	f.Add(goXZ.Bytes())
	f.Add([]byte("\xfd7zXZ\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		n, ok := xzUncompressedSize(bytes.NewReader(in), int64(len(in)))
		if ok {
			assert.GreaterOrEqual(t, n, int64(0))
		} else {
			assert.Zero(t, n)
		}
	})
}
