package nbdtest_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdconf"
	"github.com/netroot/netroot/nbd/nbdtest"
)

// serve runs an nbd.Server with exports on a loopback port until the test ends.
func serve(t *testing.T, srv *nbd.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveOn(t, srv, l)
	return l.Addr().String()
}

// serveOn runs srv on l until the test ends.
func serveOn(t *testing.T, srv *nbd.Server, l net.Listener) {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		assert.ErrorIs(t, <-done, nbd.ErrServerClosed)
	})
}

// TestNetroot runs the suite against netroot's own server with the document's recommended
// behaviour throughout: Expect is zero.
func TestNetroot(t *testing.T) {
	set, err := nbd.NewExportSet(
		&nbd.Export{Name: "rw", Description: "scratch", Device: backend.NewMemory(imageSize), Writable: true},
		&nbd.Export{Name: "ro", Device: backend.NewMemoryFrom(make([]byte, imageSize), true)},
	)
	require.NoError(t, err)
	addr := serve(t, &nbd.Server{Exports: set})
	nbdtest.Run(t, addr, &nbdtest.Options{Export: "rw", Size: imageSize, ReadOnlyExport: "ro"})
}

// TestNetrootFromNBDServerConfig serves the very configuration file that TestNBDServer gives
// nbd-server, read with nbdconf.ReadConfigFile, and runs the same suite: an operator's existing
// nbd-server configuration works unchanged, with the document's recommended behaviour.
func TestNetrootFromNBDServerConfig(t *testing.T) {
	dir := t.TempDir()
	img := image(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	cfgPath := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfgPath, []byte(nbdServerConfig(port, "", img)), 0o644))

	cfg, err := nbdconf.ReadConfigFile(cfgPath)
	require.NoError(t, err)
	assert.Empty(t, cfg.Warnings)
	require.Equal(t, []string{l.Addr().String()}, cfg.Generic.Addrs())
	srv, closeDevices, err := cfg.NewServer(nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, closeDevices()) })
	serveOn(t, srv, l)
	nbdtest.Run(t, l.Addr().String(), &nbdtest.Options{Export: "rw", Size: imageSize, ReadOnlyExport: "ro"})
}
