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
