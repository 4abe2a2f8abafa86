package nbd_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestServeConnOverPipe(t *testing.T) {
	dev := patterned(1 << 16)
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "p", Device: dev})}
	sc, cc := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), sc) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.NewClient(ctx, cc, nil)
	require.NoError(t, err)
	info, err := c.Go(ctx, "p")
	require.NoError(t, err)
	assert.Equal(t, int64(1<<16), info.Size)
	assert.NotZero(t, info.Flags&nbd.FlagReadOnly)
	got := make([]byte, 1000)
	_, err = c.ReadAt(got, 77)
	require.NoError(t, err)
	assert.Equal(t, dev.Bytes()[77:1077], got)
	_, err = c.WriteAt(got, 0)
	assert.ErrorIs(t, err, nbd.EPERM)
	require.NoError(t, c.Close())
	require.NoError(t, <-done, "NBD_CMD_DISC ends ServeConn cleanly")
}

func TestServeConnAbort(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "p", Device: patterned(512)})}
	sc, cc := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), sc) }()
	c, err := nbd.NewClient(context.Background(), cc, nil)
	require.NoError(t, err)
	list, err := c.List(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.NoError(t, c.Close())
	require.NoError(t, <-done, "NBD_OPT_ABORT ends ServeConn cleanly")
}

func TestAttachHookAndLimits(t *testing.T) {
	var mu sync.Mutex
	var attached []string
	srv := &nbd.Server{
		Exports: coreExports(t, &nbd.Export{Name: "one", Device: patterned(4096), MaxConnections: 1},
			&nbd.Export{Name: "lan", Device: patterned(4096), Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
			&nbd.Export{Name: "wan", Device: patterned(4096), Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}),
		OnAttach: func(e *nbd.Export, remote net.Addr) {
			mu.Lock()
			defer mu.Unlock()
			ap, err := netip.ParseAddrPort(remote.String())
			assert.NoError(t, err)
			attached = append(attached, e.Name+"@"+ap.Addr().String())
		},
	}
	addr := coreServe(t, srv)
	ctx := context.Background()
	first := coreDial(t, addr, "one", nil)
	c, err := nbd.Dial(ctx, "tcp", addr, nil)
	require.NoError(t, err)
	_, err = c.Go(ctx, "one")
	var oe *nbd.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, nbd.RepErrPolicy, oe.Reply)
	assert.Contains(t, oe.Message, "connection limit")
	// The refused client can still pick another export.
	_, err = c.Go(ctx, "lan")
	require.NoError(t, err)
	_, err = c.Info(ctx, "wan")
	assert.Error(t, err, "negotiation is over")
	require.NoError(t, c.Close())
	require.NoError(t, first.Close())
	// The slot is free again once the first connection ended.
	require.Eventually(t, func() bool {
		c, err := nbd.Dial(ctx, "tcp", addr, nil)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Go(ctx, "one")
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)

	c, err = nbd.Dial(ctx, "tcp", addr, nil)
	require.NoError(t, err)
	_, err = c.Go(ctx, "wan")
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, nbd.RepErrPolicy, oe.Reply)
	require.NoError(t, c.Close())

	// The hook runs on the server's side of each connection after the GO reply, so attaches
	// of different connections may be reported late and in either order.
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(attached)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(got()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.ElementsMatch(t, []string{"one@127.0.0.1", "lan@127.0.0.1", "one@127.0.0.1"}, got())
}

func TestServerMaxConnections(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: patterned(512)}), MaxConnections: 1}
	addr := coreServe(t, srv)
	c := coreDial(t, addr, "x", nil)
	_, err := nbd.Dial(context.Background(), "tcp", addr, nil)
	require.Error(t, err, "the second connection is closed at once")
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool {
		c, err := nbd.Dial(context.Background(), "tcp", addr, nil)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
}

func TestTimeouts(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: patterned(512)}),
		HandshakeTimeout: 100 * time.Millisecond, IdleTimeout: 200 * time.Millisecond}
	addr := coreServe(t, srv)
	t.Run("handshake", func(t *testing.T) {
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
		start := time.Now()
		r.closed()
		assert.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("idle", func(t *testing.T) {
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
		r.goRaw("x", false)
		// Activity keeps the connection open past the handshake timeout.
		for range 3 {
			time.Sleep(80 * time.Millisecond)
			r.request(nbd.Request{Type: nbd.CmdCache, Cookie: 1, Length: 512}, nil)
			r.expectOK(1)
		}
		r.closed()
	})
}

// slowDevice delays every read.
type slowDevice struct {
	backend.Device
	delay time.Duration
}

func (d slowDevice) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(d.delay)
	return d.Device.ReadAt(p, off)
}

func TestShutdown(t *testing.T) {
	dev := slowDevice{patterned(1 << 20), 200 * time.Millisecond}
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	addr := l.Addr().String()

	busy := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	busy.goRaw("x", false)
	negotiating := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	busy.request(nbd.Request{Type: nbd.CmdRead, Cookie: 42, Offset: 4096, Length: 4096}, nil)
	time.Sleep(50 * time.Millisecond) // let the server read the request

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()

	// The request in flight is answered, then the connection closes.
	busy.expectOK(42)
	got := make([]byte, 4096)
	_, err = io.ReadFull(busy.br, got)
	require.NoError(t, err)
	assert.Equal(t, patterned(1 << 20).Bytes()[4096:8192], got)
	busy.closed()
	negotiating.closed()
	require.NoError(t, <-shut)
	require.ErrorIs(t, <-served, nbd.ErrServerClosed)
	_, err = net.Dial("tcp", addr)
	assert.Error(t, err, "listener closed")
	assert.ErrorIs(t, srv.Serve(mustListen(t)), nbd.ErrServerClosed)
	assert.ErrorIs(t, srv.ListenAndServe(), nbd.ErrServerClosed)
	assert.Zero(t, srv.Stats().ActiveConnections)
}

func TestShutdownDeadline(t *testing.T) {
	dev := slowDevice{patterned(4096), 2 * time.Second}
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev})}
	addr := coreServe(t, srv)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	r.goRaw("x", false)
	r.request(nbd.Request{Type: nbd.CmdRead, Cookie: 1, Length: 512}, nil)
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, srv.Shutdown(ctx), context.DeadlineExceeded)
	r.closed()
}

func mustListen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l
}

func TestServeConnContextCancel(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: patterned(4096)})}
	sc, cc := net.Pipe()
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, sc) }()
	c, err := nbd.NewClient(context.Background(), cc, nil)
	require.NoError(t, err)
	_, err = c.Go(context.Background(), "x")
	require.NoError(t, err)
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, nbd.ErrServerClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn ignored its context")
	}
}

func TestExportSet(t *testing.T) {
	ctx := context.Background()
	var set nbd.ExportSet
	_, err := set.LookupExport(ctx, "")
	assert.ErrorIs(t, err, nbd.ErrUnknownExport)
	require.NoError(t, set.Add(&nbd.Export{Name: "a", Device: patterned(1)}))
	require.NoError(t, set.Add(&nbd.Export{Name: "b", Device: patterned(2)}))
	assert.Error(t, set.Add(&nbd.Export{Name: "a", Device: patterned(1)}), "duplicate")
	assert.Error(t, set.Add(&nbd.Export{Name: "c"}), "no device")
	e, err := set.LookupExport(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, "a", e.Name, "the first export is the default")
	assert.True(t, set.Remove("a"))
	assert.False(t, set.Remove("a"))
	_, err = set.LookupExport(ctx, "a")
	assert.ErrorIs(t, err, nbd.ErrUnknownExport)
	list, err := set.ListExports(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "b", list[0].Name)
}

// TestManyConnections serves a few hundred concurrent readers and checks that every connection
// and goroutine is gone after they disconnect.
func TestManyConnections(t *testing.T) {
	const conns = 300
	dev := patterned(1 << 20)
	// All from one address at once: without the per-address handshake limit.
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev}), MaxHandshakesPerSource: -1}
	addr := coreServe(t, srv)
	baseline := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := nbd.Dial(ctx, "tcp", addr, nil)
			if !assert.NoError(t, err) {
				return
			}
			defer c.Close()
			if _, err := c.Go(ctx, "x"); !assert.NoError(t, err) {
				return
			}
			off := int64(i*4096) % (1 << 20)
			buf := make([]byte, 4096)
			for range 3 {
				_, err := c.ReadAt(buf, off)
				assert.NoError(t, err)
			}
			assert.Equal(t, dev.Bytes()[off:off+4096], buf)
		})
	}
	wg.Wait()
	assert.Equal(t, int64(conns), srv.Stats().Attached)
	// Polled by hand: assert.Eventually runs its condition in goroutines of its own.
	deadline := time.Now().Add(10 * time.Second)
	for (srv.Stats().ActiveConnections != 0 || runtime.NumGoroutine() > baseline) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.Zero(t, srv.Stats().ActiveConnections)
	if !assert.LessOrEqual(t, runtime.NumGoroutine(), baseline, "goroutines left over") {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
	}
}

func TestShutdownCompletesStartedRequest(t *testing.T) {
	dev := backend.NewMemory(1 << 16)
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev, Writable: true})}
	addr := coreServe(t, srv)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	r.goRaw("x", false)
	payload := []byte("0123456789abcdef")
	b, err := nbd.Request{Type: nbd.CmdWrite, Cookie: 3, Offset: 64, Length: uint32(len(payload))}.MarshalBinary()
	require.NoError(t, err)
	r.write(append(b, payload[:5]...))
	time.Sleep(50 * time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	r.write(payload[5:])
	r.expectOK(3)
	r.closed()
	require.NoError(t, <-shut)
	assert.Equal(t, payload, dev.Bytes()[64:80])
}
