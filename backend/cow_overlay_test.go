package backend_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
)

// TestCopyOnWriteOverlayHasNoName: the temporary overlay in TempDir has no name while it is in
// use (issue #17: named overlays survived SIGKILL and the OOM killer), and it still holds the
// writes.
func TestCopyOnWriteOverlayHasNoName(t *testing.T) {
	dir := t.TempDir()
	base := backend.NewMemoryFrom(randomBytes(3, 1<<20), true)
	d, err := backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: dir})
	require.NoError(t, err)
	data := randomBytes(4, 256<<10)
	_, err = d.WriteAt(data, 4096)
	require.NoError(t, err)
	got := make([]byte, len(data))
	_, err = d.ReadAt(got, 4096)
	require.NoError(t, err)
	require.Equal(t, data, got)
	assert.Empty(t, dirNames(t, dir), "the overlay has a name in TempDir")
	require.NoError(t, d.Close())
	assert.Empty(t, dirNames(t, dir))
}

// TestCopyOnWriteOverlayGoneAfterKill kills a process holding a written overlay with SIGKILL:
// nothing of it stays in TempDir.
func TestCopyOnWriteOverlayGoneAfterKill(t *testing.T) {
	if dir := os.Getenv("NETROOT_COW_CHILD_DIR"); dir != "" {
		base := backend.NewMemory(8 << 20)
		d, err := backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: dir})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 4<<20), 0); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		select {} // until killed
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCopyOnWriteOverlayGoneAfterKill$")
	cmd.Env = append(os.Environ(), "NETROOT_COW_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready", strings.TrimSpace(line))
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	assert.Empty(t, dirNames(t, dir), "the overlay outlived its process")
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
