package nbd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// passOn moves a handed-over connection the way a binary upgrade does: its descriptor and its
// marshalled state cross to the next server, the old process's copies are closed.
func passOn(t *testing.T, hc nbd.HandedConn) (net.Conn, nbd.ConnState) {
	t.Helper()
	b, err := hc.State.MarshalBinary()
	require.NoError(t, err)
	var st nbd.ConnState
	require.NoError(t, st.UnmarshalBinary(b))
	tc, ok := hc.Conn.(*net.TCPConn)
	require.True(t, ok, "handed connection is %T", hc.Conn)
	f, err := tc.File()
	require.NoError(t, err)
	require.NoError(t, hc.Conn.Close())
	nc, err := net.FileConn(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return nc, st
}

// resumeAll serves the handed-over connections on srv until the test ends.
func resumeAll(t *testing.T, srv *nbd.Server, res *nbd.HandoffResult) {
	t.Helper()
	var wg sync.WaitGroup
	for _, hc := range res.Conns {
		nc, st := passOn(t, hc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := srv.Resume(context.Background(), nc, st)
			if err != nil && !errors.Is(err, nbd.ErrServerClosed) {
				t.Errorf("Resume: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
}

func handoffFile(t *testing.T, data []byte) backend.Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	f, err := backend.OpenFile(path, &backend.FileOptions{ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// TestHandoff reads an export with several concurrent readers while the server hands the
// connection to another server: every read returns the right bytes and none fails.
func TestHandoff(t *testing.T) {
	const size = 4 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	tests := []struct {
		name string
		opts nbd.DialOptions
		file bool
	}{
		{"structured with base:allocation", nbd.DialOptions{}, false},
		{"structured without meta context", nbd.DialOptions{NoMetaContext: true}, false},
		{"simple replies", nbd.DialOptions{NoStructuredReplies: true}, false},
		{"file with sendfile", nbd.DialOptions{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exports := func() nbd.ExportLookup {
				var dev backend.Device = backend.NewMemoryFrom(bytes.Clone(data), true)
				if tt.file {
					dev = handoffFile(t, data)
				}
				return coreExports(t, &nbd.Export{Name: "root", Device: dev})
			}
			a := &nbd.Server{Exports: exports()}
			b := &nbd.Server{Exports: exports()}
			addr := coreServe(t, a)
			c := coreDial(t, addr, "root", &tt.opts)
			wantBlockStatus := !tt.opts.NoStructuredReplies && !tt.opts.NoMetaContext

			var reads atomic.Int64
			stop := make(chan struct{})
			errs := make(chan error, 4)
			var wg sync.WaitGroup
			for r := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sizes := []int{4 << 10, 100 << 10, 1 << 20, 512}
					buf := make([]byte, 1<<20)
					for i := 0; ; i++ {
						select {
						case <-stop:
							errs <- nil
							return
						default:
						}
						n := sizes[(i+r)%len(sizes)]
						off := int64((i*131+r*977)*4096) % (size - int64(n))
						if _, err := c.ReadAt(buf[:n], off); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
							errs <- errors.New("read returned wrong bytes")
							return
						}
						reads.Add(1)
					}
				}()
			}
			waitFor(t, func() bool { return reads.Load() >= 40 })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := a.Handoff(ctx)
			require.NoError(t, err)
			require.Len(t, res.Conns, 1)
			assert.Zero(t, res.Kept)
			st := res.Conns[0].State
			assert.Equal(t, "root", st.Export)
			assert.Equal(t, uint64(size), st.Size)
			assert.Equal(t, !tt.opts.NoStructuredReplies, st.Structured)
			if wantBlockStatus {
				assert.Equal(t, []nbd.MetaContext{{ID: 1, Name: nbd.MetaContextBaseAllocation}}, st.MetaContexts)
			} else {
				assert.Empty(t, st.MetaContexts)
			}
			before := reads.Load()
			resumeAll(t, b, res)
			waitFor(t, func() bool { return reads.Load() >= before+40 })
			close(stop)
			wg.Wait()
			for range 4 {
				require.NoError(t, <-errs)
			}
			if wantBlockStatus {
				ext, err := c.BlockStatus(ctx, 0, 4096, 0)
				require.NoError(t, err)
				require.NotEmpty(t, ext)
			}
			require.NoError(t, c.Close())
			assert.Equal(t, int64(1), b.Stats().Resumed)
			assert.NotZero(t, b.Stats().Requests[nbd.CmdRead], "the new server served reads")
			assert.NotZero(t, a.Stats().Requests[nbd.CmdRead], "the old server served reads")
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHandoffDuringNegotiation: a connection negotiating when Handoff starts finishes its
// negotiation with the old server and is handed over when it enters transmission; a request
// sent together with NBD_OPT_GO is served by the new one.
func TestHandoffDuringNegotiation(t *testing.T) {
	a := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "root", Device: patterned(1 << 20)})}
	b := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "root", Device: patterned(1 << 20)})}
	addr := coreServe(t, a)
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	r.option(nbd.OptStructuredReply, nil)
	require.Equal(t, nbd.RepAck, r.reply(nbd.OptStructuredReply).typ)

	type result struct {
		res *nbd.HandoffResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := a.Handoff(context.Background())
		done <- result{res, err}
	}()
	waitFor(t, func() bool {
		probe, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true // the listener is closed: Handoff has started
		}
		probe.Close() // a negotiating connection that leaves at once
		return false
	})
	// NBD_OPT_GO and a READ in one write.
	var msg []byte
	msg = binary.BigEndian.AppendUint64(msg, nbd.OptionMagic)
	msg = binary.BigEndian.AppendUint32(msg, uint32(nbd.OptGo))
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(infoData("root"))))
	msg = append(msg, infoData("root")...)
	req, err := nbd.Request{Type: nbd.CmdRead, Cookie: 7, Offset: 4096, Length: 512}.MarshalBinary()
	require.NoError(t, err)
	r.write(append(msg, req...))
	reps := r.replies(nbd.OptGo)
	require.Equal(t, nbd.RepAck, reps[len(reps)-1].typ)

	got := <-done
	require.NoError(t, got.err)
	require.Len(t, got.res.Conns, 1)
	resumeAll(t, b, got.res)
	ch := r.chunk()
	assert.Equal(t, uint64(7), ch.cookie)
	assert.Equal(t, nbd.ChunkTypeOffsetData, ch.typ)
	want := make([]byte, 512)
	_, err = patterned(1<<20).ReadAt(want, 4096)
	require.NoError(t, err)
	assert.Equal(t, want, ch.payload[8:])
	assert.Zero(t, a.Stats().Requests[nbd.CmdRead])
	assert.Equal(t, int64(1), b.Stats().Requests[nbd.CmdRead])
}

// TestHandoffKeepsTLS: a TLS connection is not handed over; the old server goes on serving it
// and Shutdown then lets it finish. An idle negotiating client is closed when ctx ends.
func TestHandoffKeepsTLS(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	a := &nbd.Server{
		Exports:   coreExports(t, &nbd.Export{Name: "root", Device: patterned(1 << 20)}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.Server}},
	}
	addr := coreServe(t, a)
	c := coreDial(t, addr, "root", &nbd.DialOptions{TLSConfig: &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"}})
	idle := dialRaw(t, addr, nbd.FlagCFixedNewstyle)
	waitFor(t, func() bool { return a.Stats().ActiveConnections == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := a.Handoff(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, res.Conns)
	assert.Equal(t, 1, res.Kept)
	assert.Equal(t, 1, res.Closed)
	idle.closed()

	buf := make([]byte, 4096)
	_, err = c.ReadAt(buf, 8192)
	require.NoError(t, err, "the TLS client is still served")
	want := make([]byte, 4096)
	_, err = patterned(1<<20).ReadAt(want, 8192)
	require.NoError(t, err)
	assert.Equal(t, want, buf)
	require.NoError(t, c.Close())
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	require.NoError(t, a.Shutdown(sctx))
}

// TestResumeRefuses: Resume checks the state against the new server's export.
func TestResumeRefuses(t *testing.T) {
	good := nbd.ConnState{Export: "root", Size: 1 << 20, Flags: nbd.FlagHasFlags | nbd.FlagReadOnly}
	tests := []struct {
		name   string
		mutate func(*nbd.ConnState)
		want   string
	}{
		{"export gone", func(s *nbd.ConnState) { s.Export = "old" }, `export "old" not found`},
		{"size changed", func(s *nbd.ConnState) { s.Size = 4096 }, "has size 1048576, the client was told 4096"},
		{"was writable", func(s *nbd.ConnState) { s.Flags = nbd.FlagHasFlags }, "no longer writable"},
		{"extended headers", func(s *nbd.ConnState) { s.ExtendedHeaders = true }, "extended headers"},
		{"unknown context", func(s *nbd.ConnState) {
			s.Structured = true
			s.MetaContexts = []nbd.MetaContext{{ID: 9, Name: "qemu:dirty-bitmap:x"}}
		}, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "root", Device: patterned(1 << 20)})}
			st := good
			tt.mutate(&st)
			s, c := net.Pipe()
			defer c.Close()
			err := srv.Resume(context.Background(), s, st)
			require.ErrorContains(t, err, tt.want)
			_, err = c.Read(make([]byte, 1))
			require.Error(t, err, "the connection is closed")
		})
	}
}

func TestConnStateRoundTrip(t *testing.T) {
	for _, st := range []nbd.ConnState{
		{},
		{Export: "root", Size: 1 << 30, Flags: nbd.FlagHasFlags | nbd.FlagReadOnly, Remote: "192.0.2.1:1234"},
		{Export: "x", Structured: true, MetaContexts: []nbd.MetaContext{{1, nbd.MetaContextBaseAllocation}},
			Pending: []byte{0x25, 0x60, 0x95, 0x13, 0, 0}},
	} {
		b, err := st.MarshalBinary()
		require.NoError(t, err)
		var got nbd.ConnState
		require.NoError(t, got.UnmarshalBinary(b))
		assert.Equal(t, st, got)
		for i := range len(b) {
			require.ErrorIs(t, new(nbd.ConnState).UnmarshalBinary(b[:i]), io.ErrUnexpectedEOF, "cut at %d", i)
		}
		require.ErrorContains(t, new(nbd.ConnState).UnmarshalBinary(append(b, 0)), "after the end")
	}
	_, err := nbd.ConnState{Pending: make([]byte, nbd.MaxPendingBytes+1)}.MarshalBinary()
	require.Error(t, err)
}

// TestHandoffFallback: when the next process fails, the old server takes its handed-over
// connections back with Resume and serves a new listener; after Close, Handoff refuses.
func TestHandoffFallback(t *testing.T) {
	a := &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "root", Device: patterned(1 << 20)})}
	addr := coreServe(t, a)
	c := coreDial(t, addr, "root", nil)
	buf := make([]byte, 4096)
	_, err := c.ReadAt(buf, 0)
	require.NoError(t, err)

	res, err := a.Handoff(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Conns, 1)
	resumeAll(t, a, res) // the same server
	_, err = c.ReadAt(buf, 8192)
	require.NoError(t, err)
	assert.Equal(t, patterned(1 << 20).Bytes()[8192:8192+4096], buf)
	assert.Equal(t, int64(1), a.Stats().Resumed)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	c2 := coreDial(t, l.Addr().String(), "root", nil)
	_, err = c2.ReadAt(buf, 0)
	require.NoError(t, err)
	require.NoError(t, c2.Close())

	require.NoError(t, a.Close())
	require.ErrorIs(t, <-served, nbd.ErrServerClosed)
	_, err = a.Handoff(context.Background())
	require.ErrorIs(t, err, nbd.ErrServerClosed)
}
