package bootserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
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
	require.Eventually(t, func() bool { return gather()["netroot_tftp_completed_total"] >= 1 }, 5*time.Second, 10*time.Millisecond)
	got := gather()
	assert.Equal(t, 1.0, got["netroot_build_info,build=leap.x86_64-1.0.0,image=leap,state=current"])
	assert.Contains(t, got, "netroot_build_nbd_clients,build=leap.x86_64-1.0.0")
	assert.GreaterOrEqual(t, got["netroot_nbd_attached_total"], 1.0)
}
