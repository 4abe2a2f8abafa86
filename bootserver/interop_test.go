package bootserver_test

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis/kistest"
)

// TestNBDCopyAcrossReload has libnbd's nbdcopy read a build's whole export while a reload
// replaces the build and its grace period passes: nbdcopy blocks on a full pipe mid-image,
// keeping its connection, and finishes byte-exact afterwards; the old build goes only then.
func TestNBDCopyAcrossReload(t *testing.T) {
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	kisDir := t.TempDir()
	img1 := kistest.Image(8<<20, 11)
	_, err := kistest.Write(kisDir, kistest.Spec{Name: "leap", Version: "1.0.0", Image: img1})
	require.NoError(t, err)
	srv, ev := newServer(t, kisDir)
	run(t, srv)
	const v1, v2 = "leap.x86_64-1.0.0", "leap.x86_64-1.1.0"
	uri := "nbd://" + srv.ActiveListeners().NBD.Addr().String()

	cmd := exec.Command(nbdcopy, "--connections=1", "--requests=1", "--request-size=65536", uri+"/"+v1, "-")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	first := make([]byte, 64<<10)
	_, err = io.ReadFull(out, first)
	require.NoError(t, err, "nbdcopy: %s", stderr.String())
	require.Eventually(t, func() bool { b, _ := buildState(srv, v1); return b.Clients == 1 }, 10*time.Second, 10*time.Millisecond)

	writeBuild(t, kisDir, "leap", "1.1.0", 2)
	require.NoError(t, srv.Reload(context.Background()))
	time.Sleep(3 * srv.Grace)
	b, ok := buildState(srv, v1)
	require.True(t, ok, "nbdcopy's build stays while it reads")
	assert.Equal(t, 1, b.Clients)
	list, err := exec.Command(nbdinfo, "--list", uri).CombinedOutput()
	require.NoError(t, err, "%s", list)
	assert.Contains(t, string(list), `export="`+v1+`"`)
	assert.Contains(t, string(list), `export="`+v2+`"`)

	rest, err := io.ReadAll(out)
	require.NoError(t, err)
	require.NoError(t, cmd.Wait(), "nbdcopy: %s", stderr.String())
	assert.True(t, bytes.Equal(img1, append(first, rest...)), "nbdcopy read the old build byte-exact across the reload")
	require.Eventually(t, func() bool { return ev.has(bootserver.BuildRetired, v1) }, 10*time.Second, 20*time.Millisecond)
}
