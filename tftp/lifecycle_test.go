package tftp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

// slowReaderAt delays each read by delay per 512 bytes, to keep a transfer running.
type slowReaderAt struct {
	r     io.ReaderAt
	delay time.Duration
}

func (s slowReaderAt) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(s.delay * time.Duration((len(p)+511)/512))
	return s.r.ReadAt(p, off)
}

func slowServer(content []byte) *tftp.Server {
	return &tftp.Server{Timeout: 200 * time.Millisecond, Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(slowReaderAt{bytes.NewReader(content), 5 * time.Millisecond}, int64(len(content)))
	})}
}

func TestShutdownWaitsForTransfers(t *testing.T) {
	content := randomBytes(512*40, 1) // 40 blocks of 5 ms: about 200 ms
	srv := slowServer(content)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pc) }()
	addr := pc.LocalAddr().String()

	got := make(chan []byte, 1)
	go func() {
		b, _, err := get(t, &tftp.Client{}, addr, "f")
		assert.NoError(t, err)
		got <- b
	}()
	require.Eventually(t, func() bool { return srv.Stats().Active == 1 }, 2*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	assert.Equal(t, content, <-got, "the running transfer finished")
	require.ErrorIs(t, <-served, tftp.ErrServerClosed)
	assert.EqualValues(t, 1, srv.Stats().Completed)

	// New requests are refused: the request port is closed.
	_, _, err = get(t, &tftp.Client{Timeout: 50 * time.Millisecond, Retries: 1}, addr, "f")
	require.Error(t, err)
	require.ErrorIs(t, srv.Serve(pc), tftp.ErrServerClosed)
}

func TestShutdownDeadlineStopsTransfers(t *testing.T) {
	content := randomBytes(512*1000, 1) // 5 s of slow reads
	srv := slowServer(content)
	addr := serve(t, srv)
	errc := make(chan error, 1)
	go func() {
		_, _, err := get(t, &tftp.Client{Timeout: 100 * time.Millisecond, Retries: 2}, addr, "f")
		errc <- err
	}()
	require.Eventually(t, func() bool { return srv.Stats().Active == 1 }, 2*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, srv.Shutdown(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)
	err := <-errc
	require.Error(t, err, "the client sees the transfer end early")
	// ... and is told why, rather than left to time out (issue #17).
	var ep *tftp.ErrorPacket
	require.ErrorAs(t, err, &ep)
	assert.Equal(t, "server shutting down", ep.Message)
	require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 2*time.Second, 5*time.Millisecond)
}

func TestCloseEndsTransfers(t *testing.T) {
	srv := slowServer(randomBytes(512*1000, 1))
	addr := serve(t, srv)
	errc := make(chan error, 1)
	go func() {
		_, _, err := get(t, &tftp.Client{Timeout: 100 * time.Millisecond, Retries: 2}, addr, "f")
		errc <- err
	}()
	require.Eventually(t, func() bool { return srv.Stats().Active == 1 }, 2*time.Second, time.Millisecond)
	require.NoError(t, srv.Close())
	err := <-errc
	var ep *tftp.ErrorPacket
	require.ErrorAs(t, err, &ep)
	assert.Equal(t, "server shutting down", ep.Message)
	require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 2*time.Second, 5*time.Millisecond)
}

func TestListenAndServe(t *testing.T) {
	srv := &tftp.Server{}
	require.Error(t, srv.ListenAndServe("127.0.0.1:-1"))
	srv = &tftp.Server{}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe("127.0.0.1:0") }()
	require.Eventually(t, func() bool { return true }, time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, srv.Close())
	require.ErrorIs(t, <-done, tftp.ErrServerClosed)
}

func TestStatsAndHook(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "pxelinux.cfg/default", []byte("DEFAULT linux\n"))
	var mu sync.Mutex
	var infos []tftp.TransferInfo
	srv := &tftp.Server{Handler: tftp.FileServer(dir), WriteHandler: tftp.UploadServer(dir, nil),
		Timeout: 100 * time.Millisecond,
		OnTransferDone: func(i tftp.TransferInfo) {
			mu.Lock()
			infos = append(infos, i)
			mu.Unlock()
		}}
	addr := serve(t, srv)
	_, _, err := get(t, &tftp.Client{BlockSize: 1024, TransferSize: true}, addr, "pxelinux.cfg/default")
	require.NoError(t, err)
	_, _, err = get(t, &tftp.Client{}, addr, "missing")
	require.Error(t, err)
	_, err = (&tftp.Client{}).Put(context.Background(), addr, "up", strings.NewReader("hello"), 5)
	require.NoError(t, err)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(infos) == 3 }, 2*time.Second, 5*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	byName := map[string]tftp.TransferInfo{}
	for _, i := range infos {
		byName[i.Filename] = i
	}
	ok := byName["pxelinux.cfg/default"]
	assert.NoError(t, ok.Err)
	assert.Equal(t, tftp.OpRRQ, ok.Op)
	assert.EqualValues(t, 14, ok.Bytes)
	assert.EqualValues(t, 14, ok.Size)
	assert.Equal(t, 1024, ok.BlockSize)
	assert.Equal(t, "127.0.0.1", ok.Remote.Addr().String())
	assert.Positive(t, ok.Duration)
	assert.ErrorIs(t, byName["missing"].Err, tftp.ErrFileNotFound)
	assert.Equal(t, tftp.OpWRQ, byName["up"].Op)
	assert.EqualValues(t, 5, byName["up"].Bytes)

	// The upload's transfer lingers for the dally after the last ACK.
	require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 3*time.Second, 10*time.Millisecond)
	st := srv.Stats()
	assert.Equal(t, tftp.Stats{Requests: 3, Completed: 2, Failed: 1, BytesSent: 14, BytesReceived: 5}, st)
}

func TestPerClientContent(t *testing.T) {
	srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		if r.Filename != "pxelinux.cfg/default" {
			w.Error(tftp.ErrFileNotFound, "only the config")
			return
		}
		cfg := fmt.Sprintf("# for %s mode %s\n", r.RemoteAddr.Addr(), r.Mode)
		_ = w.ServeContent(strings.NewReader(cfg), int64(len(cfg)))
	})}
	addr := serve(t, srv)
	got, _, err := get(t, &tftp.Client{}, addr, "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Equal(t, "# for 127.0.0.1 mode octet\n", string(got))
	_, _, err = get(t, &tftp.Client{}, addr, "other")
	var ep *tftp.ErrorPacket
	require.ErrorAs(t, err, &ep)
	assert.Equal(t, "only the config", ep.Message)
}

func TestHandlerWithoutAnswer(t *testing.T) {
	addr := serve(t, &tftp.Server{Handler: tftp.HandlerFunc(func(tftp.ResponseWriter, *tftp.Request) {})})
	_, _, err := get(t, &tftp.Client{}, addr, "x")
	require.ErrorIs(t, err, tftp.ErrFileNotFound)
}

func TestHandlerPanic(t *testing.T) {
	addr := serve(t, &tftp.Server{Handler: tftp.HandlerFunc(func(tftp.ResponseWriter, *tftp.Request) { panic("boom") })})
	_, _, err := get(t, &tftp.Client{}, addr, "x")
	require.ErrorIs(t, err, tftp.ErrNotDefined)
}

func TestNetascii(t *testing.T) {
	text := []byte("line1\nline2\r\nbare\rcr\n\n")
	// LF -> CR LF and CR -> CR NUL on the wire.
	wire := "line1\r\nline2\r\x00\r\nbare\r\x00cr\r\n\r\n"
	addr := serve(t, &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(bytes.NewReader(text), int64(len(text)))
	})})
	t.Run("client decodes", func(t *testing.T) {
		got, info, err := get(t, &tftp.Client{Netascii: true, TransferSize: true}, addr, "x")
		require.NoError(t, err)
		assert.Equal(t, string(text), string(got))
		assert.EqualValues(t, len(wire), info.Size, "tsize is the netascii size")
	})
	t.Run("wire form", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "x", Mode: "netascii", Options: []tftp.Option{{"blksize", "8"}}})
		require.IsType(t, &tftp.OAckPacket{}, rc.must(time.Second))
		var got []byte
		for blk := uint16(0); ; {
			rc.send(&tftp.AckPacket{Block: blk})
			d := rc.must(time.Second).(*tftp.DataPacket)
			got = append(got, d.Data...)
			blk = d.Block
			if len(d.Data) < 8 {
				rc.send(&tftp.AckPacket{Block: blk})
				break
			}
		}
		assert.Equal(t, wire, string(got))
	})
}

// TestRollover transfers a file that wraps the 16-bit block number twice at blksize 512 (the
// curl interop test does the same with curl's lock-step client).
func TestRollover(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 67 MB")
	}
	const size = 65536*512*2 + 100
	srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(patternReaderAt{size}, size)
	})}
	addr := serve(t, srv)
	h := sha256.New()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := (&tftp.Client{BlockSize: 512, WindowSize: 64, TransferSize: true}).Get(ctx, addr, "big", h)
	require.NoError(t, err)
	assert.EqualValues(t, size, info.Bytes)
	assert.Equal(t, patternSum(size), [32]byte(h.Sum(nil)))
}

func TestClientContextCancel(t *testing.T) {
	srv := slowServer(randomBytes(512*1000, 1))
	addr := serve(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := (&tftp.Client{}).Get(ctx, addr, "f", io.Discard)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestClientNoAnswer(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	start := time.Now()
	_, err = (&tftp.Client{Timeout: 20 * time.Millisecond, Retries: 2}).Get(context.Background(), pc.LocalAddr().String(), "f", io.Discard)
	require.ErrorContains(t, err, "no answer")
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	content := randomBytes(70_000, 6)
	srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		if !r.RemoteAddr.Addr().Is6() {
			w.Error(tftp.ErrAccessViolation, "expected IPv6")
			return
		}
		_ = w.ServeContent(bytes.NewReader(content), int64(len(content)))
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pc) }()
	defer func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-done, tftp.ErrServerClosed)
	}()
	got, info, err := get(t, &tftp.Client{BlockSize: 65464, WindowSize: 4, TransferSize: true}, pc.LocalAddr().String(), "f")
	require.NoError(t, err)
	assert.Equal(t, content, got)
	// The IPv6 loopback MTU (65536) leaves 65536-40-8-4 bytes, more than the RFC maximum.
	assert.Equal(t, 65464, info.BlockSize)
}

func TestClientConfigErrors(t *testing.T) {
	for name, c := range map[string]*tftp.Client{
		"blksize too small": {BlockSize: 7},
		"blksize too large": {BlockSize: 65465},
		"windowsize":        {WindowSize: 70000},
		"timeout":           {TimeoutOption: 256},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Get(context.Background(), "127.0.0.1:1", "f", io.Discard)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "tftp: client "), err.Error())
		})
	}
	_, err := (&tftp.Client{}).Get(context.Background(), "127.0.0.1", "f", io.Discard) // no port
	require.Error(t, err)
}

// TestWildcardAnswersFromRequestAddress checks that a server bound to a wildcard address
// answers each request from the address the client sent it to (PXE firmware ignores answers
// from any other), here 127.0.0.2 and 127.0.0.3 on the loopback interface.
func TestWildcardAnswersFromRequestAddress(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			wild := "0.0.0.0:0"
			if network == "udp" {
				wild = "[::]:0"
			}
			pc, err := net.ListenPacket(network, wild)
			if err != nil {
				t.Skipf("cannot listen on %s: %v", wild, err)
			}
			var mu sync.Mutex
			var locals []string
			srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
				if r.Filename == "warm-up" {
					_ = w.ServeContent(strings.NewReader("hello"), 5)
					return
				}
				// Only this test's requests: a wildcard port may get strays.
				if r.Filename != "wildcard-test" {
					w.Error(tftp.ErrFileNotFound, "not this test's")
					return
				}
				mu.Lock()
				locals = append(locals, r.LocalAddr.Addr().Unmap().String())
				mu.Unlock()
				_ = w.ServeContent(strings.NewReader("hello"), 5)
			})}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(pc) }()
			defer func() {
				require.NoError(t, srv.Close())
				require.ErrorIs(t, <-done, tftp.ErrServerClosed)
			}()
			port := pc.LocalAddr().(*net.UDPAddr).Port
			// A request queued before Serve turned on IP_PKTINFO has no destination address: wait
			// until Serve runs (127.0.0.1 is the address routing picks anyway).
			_, _, err = get(t, &tftp.Client{Timeout: 200 * time.Millisecond}, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "warm-up")
			require.NoError(t, err)
			for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
				addr := net.JoinHostPort(ip, strconv.Itoa(port))
				got, info, err := get(t, &tftp.Client{Timeout: 200 * time.Millisecond, Retries: 2}, addr, "wildcard-test")
				require.NoError(t, err, "the answer must come from %s", ip)
				assert.Equal(t, "hello", string(got))
				assert.Equal(t, ip, info.Remote.Addr().String())
			}
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, []string{"127.0.0.2", "127.0.0.3"}, locals, "Request.LocalAddr")
		})
	}
}

// TestConcurrentTransfers runs more transfers at once than there are Ps: the first ones get a
// blocking socket and a thread of their own, the rest use the netpoller, and all arrive
// byte-exact and are counted.
func TestConcurrentTransfers(t *testing.T) {
	content := randomBytes(300_000, 7)
	srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(bytesReader(content), int64(len(content)))
	})}
	addr := serve(t, srv)
	n := runtime.GOMAXPROCS(0) + 6
	errs := make(chan error, n)
	for i := range n {
		go func() {
			c := &tftp.Client{BlockSize: 512 + 100*i, WindowSize: 1 + i%4}
			var buf bytes.Buffer
			_, err := c.Get(context.Background(), addr, "f", &buf)
			if err == nil && !bytes.Equal(buf.Bytes(), content) {
				err = fmt.Errorf("client %d: content differs", i)
			}
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	require.Eventually(t, func() bool { return srv.Stats().Completed == uint64(n) }, 10*time.Second, 5*time.Millisecond)
	assert.Zero(t, srv.Stats().Failed)
}
