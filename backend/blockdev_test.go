//go:build linux

package backend_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/internal/peertest"
)

// loopDevice attaches path to a new loop device with losetup and detaches it when t ends.
func loopDevice(t *testing.T, path string) string {
	t.Helper()
	peertest.Root(t, "attaching a loop device")
	losetup := peertest.Program(t, "losetup", "mount")
	out, err := exec.Command(losetup, "--find", "--show", path).CombinedOutput()
	if err != nil {
		peertest.Missing(t, "losetup cannot attach a loop device: "+strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestModelBlockDevice runs the model on a loop block device, as vblade and nbd-server export
// real disks: the size comes from seeking, fallocate wants sector alignment (unaligned trims
// and zeroing fall back to writing zeroes), and SEEK_DATA reports all data.
func TestModelBlockDevice(t *testing.T) {
	const size = 1<<20 + 3*512 // loop devices have whole sectors
	tests := []struct {
		name string
		opts backend.FileOptions
	}{
		{"buffered", backend.FileOptions{}},
		{"direct", backend.FileOptions{Direct: true}},
		{"window", backend.FileOptions{Offset: 512, Length: size - 1024}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			init := randomBytes(uint64(130+i), size)
			dev := loopDevice(t, writeImage(t, t.TempDir(), init))
			d, err := backend.OpenFile(dev, &tt.opts)
			if tt.opts.Direct && errors.Is(err, unix.EINVAL) {
				t.Skipf("%s refuses O_DIRECT: %v", dev, err)
			}
			require.NoError(t, err)
			defer d.Close()
			model := bytes.Clone(init[tt.opts.Offset : tt.opts.Offset+d.Size()])
			require.Equal(t, size-2*tt.opts.Offset, d.Size())
			runModel(t, d, model, uint64(140+i))
			runConcurrent(t, d, model, uint64(150+i))
			require.NoError(t, d.Sync())

			raw, err := os.ReadFile(dev)
			require.NoError(t, err)
			require.Len(t, raw, size)
			assert.True(t, bytes.Equal(init[:tt.opts.Offset], raw[:tt.opts.Offset]), "bytes before window changed")
			end := tt.opts.Offset + d.Size()
			assert.True(t, bytes.Equal(model, raw[tt.opts.Offset:end]), "device differs from model")
			assert.True(t, bytes.Equal(init[end:], raw[end:]), "bytes after window changed")
		})
	}
}
