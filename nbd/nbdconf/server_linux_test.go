//go:build linux

package nbdconf_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdconf"
)

func TestConfigFileNewServer(t *testing.T) {
	dir := t.TempDir()
	cowDir := t.TempDir()
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	img := filepath.Join(dir, "root.img")
	require.NoError(t, os.WriteFile(img, data, 0o644))
	auth := filepath.Join(dir, "auth")
	require.NoError(t, os.WriteFile(auth, []byte("127.0.0.0/8\n"), 0o644))
	cfg := "[generic]\nallowlist = true\n" +
		"[ro]\nexportname = " + img + "\nreadonly = true\nmaxconnections = 3\nauthfile = " + auth + "\n" +
		"[cow]\nexportname = " + img + "\ncopyonwrite = true\ncowdir = " + cowDir + "\n"
	cf, err := nbdconf.ParseConfigFile(strings.NewReader(cfg), "config")
	require.NoError(t, err)
	srv, closeDevices, err := cf.NewServer(nil)
	require.NoError(t, err)
	defer func() { assert.NoError(t, closeDevices()) }()
	assert.False(t, srv.DisableList)

	ctx := context.Background()
	ro, err := srv.Exports.LookupExport(ctx, "ro")
	require.NoError(t, err)
	assert.False(t, ro.Writable)
	assert.Equal(t, 3, ro.MaxConnections)
	require.Len(t, ro.Allow, 1)
	assert.Equal(t, "127.0.0.0/8", ro.Allow[0].String())
	cow, err := srv.Exports.LookupExport(ctx, "cow")
	require.NoError(t, err)
	assert.Equal(t, nbd.CopyOnWritePerConnection, cow.CopyOnWrite)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(sctx))
	}()

	// A write to the copy-on-write export is seen by its own connection only, lands in an
	// overlay file in cowdir, and never reaches the image.
	c, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	_, err = c.Go(ctx, "cow")
	require.NoError(t, err)
	patch := bytes.Repeat([]byte{0xA5}, 8192)
	_, err = c.WriteAt(patch, 4096)
	require.NoError(t, err)
	got := make([]byte, len(patch))
	_, err = c.ReadAt(got, 4096)
	require.NoError(t, err)
	assert.Equal(t, patch, got)
	entries, err := os.ReadDir(cowDir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "one overlay file for the connection")

	c2, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	_, err = c2.Go(ctx, "cow")
	require.NoError(t, err)
	_, err = c2.ReadAt(got, 4096)
	require.NoError(t, err)
	assert.Equal(t, data[4096:4096+len(patch)], got, "another connection sees the image")
	require.NoError(t, c2.Close())
	require.NoError(t, c.Close())

	onDisk, err := os.ReadFile(img)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, onDisk), "copy-on-write leaves the image alone")
	assert.Eventually(t, func() bool {
		entries, err := os.ReadDir(cowDir)
		return err == nil && len(entries) == 0
	}, 10*time.Second, 50*time.Millisecond, "overlay files are removed when connections end")

	// The read-only export refuses writes.
	c3, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	require.NoError(t, err)
	defer c3.Close()
	_, err = c3.Go(ctx, "ro")
	require.NoError(t, err)
	_, err = c3.WriteAt(patch, 0)
	assert.Error(t, err)
}

func TestConfigFileNewServerErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4096), 0o644))
	for _, tc := range []struct {
		name, cfg, want string
	}{
		{"missing image", "[generic]\n[root]\nexportname = " + filepath.Join(dir, "absent") + "\n", `config:2: export "root"`},
		{"missing authfile", "[generic]\n[root]\nexportname = " + img + "\nauthfile = " + filepath.Join(dir, "noauth") + "\n", "noauth"},
		{"force_tls without certificate", "[generic]\nforce_tls = true\n[root]\nexportname = " + img + "\n", "force_tls needs certfile"},
		{"export force_tls without certificate", "[generic]\n[root]\nexportname = " + img + "\nforce_tls = true\n", `export "root": force_tls needs certfile`},
		{"bad certificate", "[generic]\ncertfile = " + img + "\nkeyfile = " + img + "\n[root]\nexportname = " + img + "\n", "certfile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cf, err := nbdconf.ParseConfigFile(strings.NewReader(tc.cfg), "config")
			require.NoError(t, err)
			_, _, err = cf.NewServer(nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestConfigFileTimeout: an export's timeout disconnects its idle clients, and only its own.
func TestConfigFileTimeout(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4096), 0o644))
	cfg := "[generic]\n[short]\nexportname = " + img + "\nreadonly = true\ntimeout = 1\n" +
		"[long]\nexportname = " + img + "\nreadonly = true\n"
	cf, err := nbdconf.ParseConfigFile(strings.NewReader(cfg), "config")
	require.NoError(t, err)
	assert.Empty(t, cf.Warnings)
	srv, closeDevices, err := cf.NewServer(nil)
	require.NoError(t, err)
	defer func() { assert.NoError(t, closeDevices()) }()
	short, err := srv.Exports.LookupExport(context.Background(), "short")
	require.NoError(t, err)
	assert.Equal(t, time.Second, short.IdleTimeout)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(export string) *nbd.Client {
		c, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		_, err = c.Go(ctx, export)
		require.NoError(t, err)
		return c
	}
	shortC, longC := dial("short"), dial("long")
	time.Sleep(1500 * time.Millisecond)
	buf := make([]byte, 512)
	_, err = shortC.ReadAt(buf, 0)
	assert.Error(t, err, "the idle client of the export with timeout = 1 was disconnected")
	_, err = longC.ReadAt(buf, 0)
	assert.NoError(t, err, "the export without timeout keeps its idle client")
}
