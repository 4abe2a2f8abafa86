package nbd_test

import (
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/nbd"
)

// TestThousandConnections holds 1,000 connections in transmission at once (a rack of diskless
// clients attached to one root image), reads through every one of them, reports the memory an
// idle connection costs, and checks that no connection, goroutine or file descriptor is left
// once they disconnect. The client side is the raw test client, which needs no goroutines.
func TestThousandConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 1,000 sockets; skipped in -short mode")
	}
	const conns = 1000
	dev := patterned(1 << 20)
	srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "root", Device: dev})}
	addr := coreServe(t, srv)
	fdsBefore := openFDs(t)
	goroutinesBefore := runtime.NumGoroutine()
	memBefore := liveBytes()

	clients := make([]*rawConn, 0, conns)
	for range conns {
		r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
		r.goRaw("root", false)
		clients = append(clients, r)
	}
	require.Equal(t, int64(conns), srv.Stats().ActiveConnections, "all connections open at once")
	perConn := (liveBytes() - memBefore) / conns
	t.Logf("%d idle connections in transmission: %d goroutines, %.1f KiB of heap and stacks per connection (server and raw test client together)",
		conns, runtime.NumGoroutine()-goroutinesBefore, float64(perConn)/1024)

	// Every connection is served: one 4 KiB read each, checked against the device.
	buf := make([]byte, 4096)
	for i, r := range clients {
		require.NoError(t, r.c.SetDeadline(time.Now().Add(10*time.Second)))
		off := uint64(i*4096) % (1 << 20)
		r.request(nbd.Request{Type: nbd.CmdRead, Cookie: uint64(i), Offset: off, Length: 4096}, nil)
		errno, cookie := r.simpleReply()
		require.Zero(t, errno)
		require.Equal(t, uint64(i), cookie)
		_, err := io.ReadFull(r.br, buf)
		require.NoError(t, err)
		require.Equal(t, dev.Bytes()[off:off+4096], buf, "connection %d", i)
	}
	for _, r := range clients {
		require.NoError(t, r.c.Close())
	}

	deadline := time.Now().Add(20 * time.Second)
	for (srv.Stats().ActiveConnections != 0 || runtime.NumGoroutine() > goroutinesBefore || openFDs(t) > fdsBefore) &&
		time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.Zero(t, srv.Stats().ActiveConnections)
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutinesBefore, "goroutines left over")
	assert.LessOrEqual(t, openFDs(t), fdsBefore, "file descriptors left over")
	assert.Equal(t, int64(conns), srv.Stats().Attached)
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(entries)
}

// liveBytes is the memory in use by the heap and goroutine stacks after a collection.
func liveBytes() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
