package nbd_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClientThatStopsReading: clients that send READs and never read the replies hold no more
// than the server-wide buffer budget, are disconnected after WriteTimeout, and a client that
// reads its replies is served meanwhile and after.
func TestClientThatStopsReading(t *testing.T) {
	const budget = 8 << 20
	srv := &nbd.Server{
		// A copy-on-write export: read replies are buffered, not lent by the device.
		Exports:        coreExports(t, &nbd.Export{Name: "x", Device: patterned(16 << 20), CopyOnWrite: nbd.CopyOnWritePerConnection}),
		MaxBufferBytes: budget,
		WriteTimeout:   300 * time.Millisecond,
	}
	addr := coreServe(t, srv)
	const hostile = 3
	for range hostile {
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
		r.goRaw("x", false)
		require.NoError(t, r.c.(*net.TCPConn).SetReadBuffer(4096))
		for i := range 64 {
			r.request(nbd.Request{Type: nbd.CmdRead, Cookie: uint64(i), Offset: uint64(i%16) << 20, Length: 1 << 20}, nil)
		}
	}
	var peak int64
	deadline := time.Now().Add(20 * time.Second)
	for srv.Stats().WriteTimeouts < hostile && time.Now().Before(deadline) {
		peak = max(peak, srv.Stats().BufferedBytes)
		time.Sleep(time.Millisecond)
	}
	st := srv.Stats()
	assert.Equal(t, int64(hostile), st.WriteTimeouts, "every client that stopped reading was disconnected")
	assert.LessOrEqual(t, peak, int64(budget))
	assert.Positive(t, peak)
	assert.Equal(t, int64(budget), st.BufferLimit)
	waitFor(t, func() bool { return srv.Stats().ActiveConnections == 0 && srv.Stats().BufferedBytes == 0 })

	c := coreDial(t, addr, "x", nil)
	buf := make([]byte, 4<<20)
	_, err := c.ReadAt(buf, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, patterned(16 << 20).Bytes()[1<<20:5<<20], buf)
}

// TestExportIdleTimeout: an export's own idle timeout applies, and overrides the server's.
func TestExportIdleTimeout(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "short", Device: patterned(512), IdleTimeout: 100 * time.Millisecond},
		&nbd.Export{Name: "never", Device: patterned(512), IdleTimeout: -1}),
		IdleTimeout: 100 * time.Millisecond}
	addr := coreServe(t, srv)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	r.goRaw("short", false)
	start := time.Now()
	r.closed()
	assert.Less(t, time.Since(start), 5*time.Second)

	r = dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	r.goRaw("never", false)
	time.Sleep(300 * time.Millisecond)
	r.request(nbd.Request{Type: nbd.CmdCache, Cookie: 1, Length: 512}, nil)
	r.expectOK(1)
}

// TestRefusals: every way of turning a client away is counted and reported with the client
// and the export it asked for.
func TestRefusals(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	var mu sync.Mutex
	var got []nbd.Refusal
	srv := &nbd.Server{
		Exports: coreExports(t,
			&nbd.Export{Name: "open", Device: patterned(512), MaxConnections: 1},
			&nbd.Export{Name: "closed", Device: patterned(512), Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
			&nbd.Export{Name: "secret", Device: patterned(512), TLS: nbd.TLSRequired}),
		TLSConfig:              &tls.Config{Certificates: []tls.Certificate{pki.Server}},
		MaxHandshakesPerSource: 2,
		OnRefuse: func(r nbd.Refusal) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r)
		},
	}
	addr := coreServe(t, srv)
	last := func() nbd.Refusal {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, got)
		return got[len(got)-1]
	}
	ctx := context.Background()
	goErr := func(export string) {
		t.Helper()
		c, err := nbd.Dial(ctx, "tcp", addr, nil)
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Go(ctx, export)
		require.Error(t, err)
	}

	holder := coreDial(t, addr, "open", nil)
	goErr("open")
	assert.Equal(t, nbd.RefusedExportFull, last().Reason)
	assert.Equal(t, "open", last().Export)
	goErr("nonexistent")
	assert.Equal(t, nbd.RefusedUnknownExport, last().Reason)
	assert.Equal(t, "nonexistent", last().Export)
	assert.Equal(t, "127.0.0.1", last().Remote.(*net.TCPAddr).IP.String())
	goErr("closed")
	assert.Equal(t, nbd.RefusedNotAllowed, last().Reason)
	goErr("secret")
	assert.Equal(t, nbd.RefusedTLSRequired, last().Reason)
	assert.Contains(t, last().Detail, "requires TLS")

	// Two connections negotiating from 127.0.0.1: a third is closed at once.
	dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	waitFor(t, func() bool { return srv.Stats().ActiveConnections == 3 })
	third, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer third.Close()
	_, err = third.Read(make([]byte, 1))
	require.Error(t, err, "refused before the greeting")
	assert.Equal(t, nbd.RefusedHandshakeLimit, last().Reason)

	st := srv.Stats()
	for reason, n := range map[nbd.RefuseReason]int64{
		nbd.RefusedExportFull: 1, nbd.RefusedUnknownExport: 1, nbd.RefusedNotAllowed: 1,
		nbd.RefusedTLSRequired: 1, nbd.RefusedHandshakeLimit: 1,
	} {
		assert.Equal(t, n, st.Refused[reason], reason.String())
	}
	require.NoError(t, holder.Close())
}

// TestServerFull: beyond MaxConnections a connection is closed before the greeting.
func TestServerFull(t *testing.T) {
	refused := make(chan nbd.Refusal, 1)
	srv := &nbd.Server{
		Exports:        coreExports(t, &nbd.Export{Name: "x", Device: patterned(512)}),
		MaxConnections: 1,
		OnRefuse:       func(r nbd.Refusal) { refused <- r },
	}
	addr := coreServe(t, srv)
	coreDial(t, addr, "x", nil)
	second, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer second.Close()
	_, err = second.Read(make([]byte, 1))
	require.Error(t, err)
	r := <-refused
	assert.Equal(t, nbd.RefusedServerFull, r.Reason)
	assert.Empty(t, r.Export)
	assert.Equal(t, int64(1), srv.Stats().Refused[nbd.RefusedServerFull])
}

// TestTLSRequiredServerRefusal: on a TLS-only server NBD_OPT_GO before STARTTLS is a refusal.
func TestTLSRequiredServerRefusal(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	var got []nbd.Refusal
	var mu sync.Mutex
	srv := &nbd.Server{
		Exports:   coreExports(t, &nbd.Export{Name: "root", Device: patterned(512)}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.Server}},
		TLSMode:   nbd.TLSRequired,
		OnRefuse: func(r nbd.Refusal) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r)
		},
	}
	addr := coreServe(t, srv)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	r.option(nbd.OptGo, infoData("root"))
	assert.Equal(t, nbd.RepErrTLSReqd, r.reply(nbd.OptGo).typ)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 1)
	assert.Equal(t, nbd.Refusal{Reason: nbd.RefusedTLSRequired, Remote: got[0].Remote, Export: "root",
		Detail: "the server requires TLS"}, got[0])
}

// TestOnDetach reports what a connection did when it leaves.
func TestOnDetach(t *testing.T) {
	done := make(chan nbd.Detach, 1)
	srv := &nbd.Server{
		Exports:  coreExports(t, &nbd.Export{Name: "x", Device: patterned(1 << 20), Writable: true}),
		OnDetach: func(d nbd.Detach) { done <- d },
	}
	addr := coreServe(t, srv)
	c := coreDial(t, addr, "x", nil)
	_, err := c.ReadAt(make([]byte, 300<<10), 0)
	require.NoError(t, err)
	_, err = c.WriteAt(make([]byte, 5000), 4096)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	d := <-done
	assert.Equal(t, "x", d.Export.Name)
	assert.Equal(t, int64(300<<10), d.BytesRead)
	assert.Equal(t, int64(5000), d.BytesWritten)
	assert.Equal(t, int64(3), d.Requests, "read, write and disconnect")
	assert.Positive(t, d.Duration)
	assert.NoError(t, d.Err)
	assert.False(t, d.HandedOver)
}
