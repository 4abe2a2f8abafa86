package bootserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// events records a server's events.
type events struct {
	mu  sync.Mutex
	all []bootserver.Event
}

func (e *events) add(ev bootserver.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) has(kind bootserver.EventKind, build string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if ev.Kind == kind && (build == "" || ev.Build.String() == build) {
			return true
		}
	}
	return false
}

// writeBuild writes a KIS build of image name at version into dir and returns its image.
func writeBuild(t *testing.T, dir, name, version string, seed uint64) []byte {
	t.Helper()
	img := kistest.Image(256<<10, seed)
	_, err := kistest.Write(dir, kistest.Spec{
		Name: name, Version: version, Image: img, Compressed: true,
		Append: "root=UUID=0000 rd.kiwi.custom=1 quiet",
	})
	require.NoError(t, err)
	return img
}

// newServer returns a loopback server for the builds in kisDir.
func newServer(t *testing.T, kisDir string) (*bootserver.Server, *events) {
	t.Helper()
	ev := &events{}
	return &bootserver.Server{
		Source:   &bootserver.KISSource{Dirs: []string{kisDir}, CacheDir: t.TempDir()},
		Arch:     "x86_64",
		TFTPRoot: t.TempDir(),
		ServerIP: netip.MustParseAddr("127.0.0.1"),
		TFTPAddr: "127.0.0.1:0",
		NBDAddr:  "127.0.0.1:0",
		Grace:    300 * time.Millisecond,
		OnEvent:  ev.add,
	}, ev
}

// run starts srv and waits until it serves; the server stops at the end of the test.
func run(t *testing.T, srv *bootserver.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	require.Eventually(t, func() bool {
		select {
		case err := <-errc:
			require.NoError(t, err, "Run returned early")
		default:
		}
		l := srv.ActiveListeners()
		return l.TFTP != nil && (srv.DisableNBD || l.NBD != nil)
	}, 30*time.Second, 10*time.Millisecond)
}

// readExport reads the whole export name through netroot's NBD client.
func readExport(t *testing.T, srv *bootserver.Server, name string) []byte {
	t.Helper()
	c, info := attach(t, srv, name)
	defer c.Close()
	data, err := io.ReadAll(io.NewSectionReader(c, 0, info.Size))
	require.NoError(t, err)
	return data
}

func attach(t *testing.T, srv *bootserver.Server, name string) (*nbd.Client, nbd.ExportInfo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", srv.ActiveListeners().NBD.Addr().String(), nil)
	require.NoError(t, err)
	info, err := c.Go(ctx, name)
	require.NoError(t, err)
	return c, info
}

func tftpGet(t *testing.T, srv *bootserver.Server, name string) ([]byte, error) {
	t.Helper()
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := (&tftp.Client{}).Get(ctx, srv.ActiveListeners().TFTP.LocalAddr().String(), name, &buf)
	return buf.Bytes(), err
}

func TestServeOneBuild(t *testing.T) {
	kisDir := t.TempDir()
	img := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, ev := newServer(t, kisDir)
	srv.Boot.Append = "console=ttyS0"
	run(t, srv)

	const id = "leap.x86_64-1.0.0"
	assert.Equal(t, id, srv.State().Default.String())
	assert.True(t, bytes.Equal(img, readExport(t, srv, id)), "export named by build ID")
	assert.True(t, bytes.Equal(img, readExport(t, srv, "")), "the default export is the default image's build")

	cfg, err := tftpGet(t, srv, "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Contains(t, string(cfg), bootserver.Marker)
	assert.Contains(t, string(cfg), "root=overlay:nbd=127.0.0.1:"+id)
	assert.Contains(t, string(cfg), "rd.kiwi.custom=1")
	assert.Contains(t, string(cfg), "console=ttyS0")
	assert.Contains(t, string(cfg), "boot/"+id+"/linux")
	kernel, err := tftpGet(t, srv, "boot/"+id+"/linux")
	require.NoError(t, err)
	assert.NotEmpty(t, kernel)
	for _, f := range []string{"grub/grub.cfg", "boot.ipxe"} {
		b, err := os.ReadFile(filepath.Join(srv.TFTPRoot, f))
		require.NoError(t, err)
		assert.Contains(t, string(b), bootserver.Marker, f)
	}
	assert.True(t, ev.has(bootserver.BuildCurrent, id))
	assert.Eventually(t, func() bool { return ev.has(bootserver.NBDDetach, id) }, 5*time.Second, 20*time.Millisecond)
}

func TestShutdownReturnsServerClosed(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(context.Background()) }()
	require.Eventually(t, func() bool { return srv.ActiveListeners().NBD != nil }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, srv.Shutdown(context.Background()))
	err := <-errc
	assert.True(t, errors.Is(err, bootserver.ErrServerClosed), "%v", err)
}

func TestServicesRunInTheGroup(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, ev := newServer(t, kisDir)
	started, stopped := make(chan string, 1), make(chan struct{})
	srv.Services = []bootserver.Service{bootserver.ServiceFuncs{
		ServiceName: "fake",
		ServeFunc: func(context.Context) error {
			// Services start once the first build is published.
			started <- srv.State().Default.String()
			<-stopped
			return errFakeClosed
		},
		ShutdownFunc: func(context.Context) error { close(stopped); return nil },
		Closed:       errFakeClosed,
	}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	assert.Equal(t, "leap.x86_64-1.0.0", <-started)
	require.Eventually(t, func() bool { return ev.has(bootserver.Ready, "") }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-errc, "a service's Closed error is no failure")
	select {
	case <-stopped:
	default:
		t.Fatal("the service was not shut down with the group")
	}
}

func TestFailingServiceStopsTheGroup(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.Services = []bootserver.Service{bootserver.ServiceFuncs{
		ServiceName: "broken",
		ServeFunc:   func(context.Context) error { return errors.New("port in use") },
	}}
	err := srv.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broken server: port in use")
}

var errFakeClosed = errors.New("fake: closed")

func TestMetrics(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	reg := prometheus.NewRegistry()
	srv.Registerer = reg
	run(t, srv)
	readExport(t, srv, "leap.x86_64-1.0.0")
	_, err := tftpGet(t, srv, "pxelinux.cfg/default")
	require.NoError(t, err)

	gather := func() map[string]float64 {
		families, err := reg.Gather()
		require.NoError(t, err)
		got := map[string]float64{}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				name := f.GetName()
				for _, l := range m.GetLabel() {
					name += "," + l.GetName() + "=" + l.GetValue()
				}
				got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		return got
	}
	// The server counts a transfer when it has seen the last acknowledgement.
	require.Eventually(t, func() bool { return gather()["netroot_tftp_transfers_total,result=completed"] >= 1 }, 5*time.Second, 10*time.Millisecond)
	got := gather()
	assert.Equal(t, 1.0, got["netroot_image_info,build=leap.x86_64-1.0.0,image=leap,state=current,version=1.0.0"])
	assert.Contains(t, got, "netroot_nbd_export_clients,export=leap.x86_64-1.0.0")
	assert.GreaterOrEqual(t, got["netroot_nbd_attachments_total"], 1.0)
}

// TestForcedShutdownIsAnError leaves a TFTP transfer hanging (the client never acknowledges)
// when Run's context ends: the shutdown timeout runs out and Run says so.
func TestForcedShutdownIsAnError(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.ShutdownTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	require.Eventually(t, func() bool { return srv.ActiveListeners().TFTP != nil }, 30*time.Second, 10*time.Millisecond)

	// The transfer answers from a port of its own (RFC 1350's TID), so an unconnected socket.
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer c.Close()
	_, err = c.WriteTo(append([]byte{0, 1}, "boot/leap.x86_64-1.0.0/linux\x00octet\x00"...), srv.ActiveListeners().TFTP.LocalAddr())
	require.NoError(t, err)
	buf := make([]byte, 1024)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, _, err = c.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 3}, buf[:2], "the first DATA packet; never acknowledged")

	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, bootserver.ErrShutdownTimeout)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestBusyPortFailsBeforeStaging: a TFTP address in use fails Run before any build is opened
// or any file is written to the TFTP root.
func TestBusyPortFailsBeforeStaging(t *testing.T) {
	kisDir := t.TempDir()
	writeBuild(t, kisDir, "leap", "1.0.0", 1)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	srv, ev := newServer(t, kisDir)
	srv.TFTPAddr = busy.LocalAddr().String()
	err = srv.Run(context.Background())
	var le *bootserver.ListenError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "tftp", le.Proto)
	entries, err := os.ReadDir(srv.TFTPRoot)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing staged")
	assert.False(t, ev.has(bootserver.BuildReady, ""), "no build opened")

	// The same Server runs once the port is free.
	busy.Close()
	run(t, srv)
	assert.NotNil(t, srv.ActiveListeners().NBD)
}

// TestLimitsReachTheServers: the NBD connection limit of Server.Limits turns a second client
// away, counted as server-full, while the first keeps reading.
func TestLimitsReachTheServers(t *testing.T) {
	kisDir := t.TempDir()
	img := writeBuild(t, kisDir, "leap", "1.0.0", 1)
	srv, _ := newServer(t, kisDir)
	srv.Limits = bootserver.Limits{NBDMaxConnections: 1, TFTPMaxTransfers: 1}
	run(t, srv)
	c, _ := attach(t, srv, "leap.x86_64-1.0.0")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c2, err := nbd.Dial(ctx, "tcp", srv.ActiveListeners().NBD.Addr().String(), nil); err == nil {
		_, err = c2.Go(ctx, "leap.x86_64-1.0.0")
		c2.Close()
		require.Error(t, err, "a second connection beyond NBDMaxConnections")
	}
	require.Eventually(t, func() bool {
		return srv.NBDServer().Stats().Refused[nbd.RefusedServerFull] == 1
	}, 10*time.Second, 10*time.Millisecond)
	got := make([]byte, len(img))
	_, err := c.ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, img, got, "the first client is served on")
}
