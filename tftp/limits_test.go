package tftp_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

// manyOptionsRequest is the request of issue #17's first defect: a 65 KB RRQ with about 11,500
// distinct short option names.
func manyOptionsRequest(n int) []byte {
	b := []byte("\x00\x01f\x00octet\x00")
	for i := range n {
		b = append(b, strconv.FormatInt(int64(i), 36)...)
		b = append(b, 0, '1', 0)
	}
	return b
}

// TestManyOptionsRefused: a request with more options than MaxOptions is refused as malformed
// by the request loop after reading at most MaxOptions of them, and legitimate requests are
// served meanwhile. Before the fix the parser accepted it, with a duplicate check quadratic in
// the number of options.
func TestManyOptionsRefused(t *testing.T) {
	raw := manyOptionsRequest(10_500)
	require.Greater(t, len(raw), 60_000)
	require.Less(t, len(raw), 65_507)
	_, err := tftp.ParsePacket(raw)
	require.ErrorContains(t, err, "more than 32 options")
	_, err = tftp.ParsePacket(manyOptionsRequest(tftp.MaxOptions))
	require.NoError(t, err, "MaxOptions options are fine")

	srv := &tftp.Server{}
	addr, content := contentServer(t, srv, false)
	for range 20 {
		rc := dialRaw(t, addr)
		rc.sendBytes(raw)
		b := rc.recvRaw(2 * time.Second)
		require.NotNil(t, b, "a malformed request is answered")
		p, err := tftp.ParsePacket(b)
		require.NoError(t, err)
		assert.Equal(t, tftp.ErrIllegalOperation, p.(*tftp.ErrorPacket).Code)
	}
	got, _, err := get(t, &tftp.Client{}, addr, "file")
	require.NoError(t, err)
	require.Equal(t, content, got)
	assert.EqualValues(t, 20, srv.Stats().Malformed)
}

// TestDuplicateOptions: duplicates are found case-insensitively, also among many options.
func TestDuplicateOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []string
	}{
		{"adjacent", []string{"blksize", "BLKSIZE"}},
		{"far apart", append(append([]string{"tsize"}, manyNames(29)...), "TSize")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte("\x00\x01f\x00octet\x00")
			for _, o := range tc.opts {
				b = append(append(b, o...), 0, '1', 0)
			}
			_, err := tftp.ParsePacket(b)
			require.ErrorContains(t, err, "given twice")
		})
	}
}

func manyNames(n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("x%d", i))
	}
	return s
}

// TestErrorMessagesBounded: an ERROR packet never echoes a long name in full, and the error of
// a refused request carries the package prefix once.
func TestErrorMessagesBounded(t *testing.T) {
	var mu sync.Mutex
	var errs []error
	var logs syncBuffer
	srv := &tftp.Server{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: tftp.FileServer(t.TempDir()), OnTransferDone: func(i tftp.TransferInfo) {
			mu.Lock()
			errs = append(errs, i.Err)
			mu.Unlock()
		}}
	addr := serve(t, srv)
	long := strings.Repeat("x", 60_000)
	for _, name := range []string{"../" + long, long, "/" + long, "ok/../" + long} {
		rc := dialRaw(t, addr)
		rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: name, Mode: "octet"})
		b := rc.recvRaw(2 * time.Second)
		require.NotNil(t, b)
		assert.LessOrEqual(t, len(b), 4+200+1, "ERROR packet of %d bytes", len(b))
		p, err := tftp.ParsePacket(b)
		require.NoError(t, err)
		require.IsType(t, &tftp.ErrorPacket{}, p)
	}
	// The client's errors say the prefix once too.
	_, _, err := get(t, &tftp.Client{}, addr, "../x")
	require.ErrorIs(t, err, tftp.ErrAccessViolation)
	assert.Equal(t, 1, strings.Count(err.Error(), "tftp:"), "one prefix in %q", err)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(errs) == 5 }, 2*time.Second, 5*time.Millisecond)
	for _, err := range errs {
		require.Error(t, err)
		assert.Equal(t, 1, strings.Count(err.Error(), "tftp:"), "one prefix in %q", err)
		assert.Less(t, len(err.Error()), 300)
	}
	// Log lines do not echo the names in full either.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		assert.Less(t, len(l), 2000, "log line of %d bytes", len(l))
	}
}

// countingReaderAt counts the bytes read from it.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TestNetasciiStreams: a netascii read request without tsize gets its first block after a
// read-ahead, not after the whole file was read and encoded; with tsize the netascii size is
// computed for files up to a bound and left out above it.
func TestNetasciiStreams(t *testing.T) {
	const size = 32 << 20
	var cur atomic.Pointer[countingReaderAt]
	addr := serve(t, &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		c := &countingReaderAt{r: patternReaderAt{size}}
		cur.Store(c)
		_ = w.ServeContent(c, size)
	})})
	for _, tc := range []struct {
		name  string
		opts  []tftp.Option
		oack  bool
		tsize bool
	}{
		{"no options", nil, false, false},
		{"tsize above the bound", []tftp.Option{{Name: "tsize", Value: "0"}, {Name: "blksize", Value: "1024"}}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, addr)
			rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "netascii", Options: tc.opts})
			p := rc.must(5 * time.Second)
			if tc.oack {
				require.IsType(t, &tftp.OAckPacket{}, p)
				_, has := p.(*tftp.OAckPacket).Option("tsize")
				assert.Equal(t, tc.tsize, has)
				rc.send(&tftp.AckPacket{Block: 0})
				p = rc.must(5 * time.Second)
			}
			require.IsType(t, &tftp.DataPacket{}, p)
			assert.Less(t, cur.Load().n.Load(), int64(1<<20), "bytes read before the first block")
			rc.send(&tftp.ErrorPacket{Code: tftp.ErrNotDefined, Message: "enough"})
		})
	}
	t.Run("tsize below the bound", func(t *testing.T) {
		text := bytes.Repeat([]byte("a\nb\r"), 1000)
		addr := serve(t, &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
			_ = w.ServeContent(bytes.NewReader(text), int64(len(text)))
		})})
		got, info, err := get(t, &tftp.Client{Netascii: true, TransferSize: true}, addr, "f")
		require.NoError(t, err)
		assert.Equal(t, text, got)
		assert.EqualValues(t, 6000, info.Size)
	})
}

// blockingServer serves content once release is closed, and counts the handlers running.
func blockingServer(srv *tftp.Server, content []byte, release <-chan struct{}) *tftp.Server {
	srv.Handler = tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = w.ServeContent(bytes.NewReader(content), int64(len(content)))
	})
	return srv
}

// TestTransferCaps: MaxTransfers caps the transfers at once and MaxTransfersPerClient those of
// one address, so another address still gets a slot; refused requests get an ERROR packet
// from the request port and are counted by reason.
func TestTransferCaps(t *testing.T) {
	release := make(chan struct{})
	content := randomBytes(3000, 3)
	srv := blockingServer(&tftp.Server{MaxTransfers: 3, MaxTransfersPerClient: 2}, content, release)
	addr := serve(t, srv)
	refused := func(from, want string) {
		t.Helper()
		rc := dialRawFrom(t, addr, from)
		rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "octet"})
		b := rc.recvRaw(2 * time.Second)
		require.NotNil(t, b, "a refused request is answered")
		p, err := tftp.ParsePacket(b)
		require.NoError(t, err)
		require.IsType(t, &tftp.ErrorPacket{}, p)
		assert.Contains(t, p.(*tftp.ErrorPacket).Message, want)
	}
	var wg sync.WaitGroup
	results := make(chan error, 3)
	start := func(from string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := getFrom(from, addr)
			if err == nil && !bytes.Equal(got, content) {
				err = errors.New("content differs")
			}
			results <- err
		}()
	}
	start("127.0.0.1")
	start("127.0.0.1")
	require.Eventually(t, func() bool { return srv.Stats().Active == 2 }, 2*time.Second, time.Millisecond)
	refused("127.0.0.1", "too many transfers")
	start("127.0.0.2")
	require.Eventually(t, func() bool { return srv.Stats().Active == 3 }, 2*time.Second, time.Millisecond)
	refused("127.0.0.3", "server busy")
	st := srv.Stats()
	assert.EqualValues(t, 1, st.RefusedClient)
	assert.EqualValues(t, 1, st.RefusedBusy)
	close(release)
	wg.Wait()
	close(results)
	for err := range results {
		require.NoError(t, err)
	}
}

// getFrom fetches "f" from the loopback address from (Client picks its own source address), in
// lock-step with 512-byte blocks.
func getFrom(from, addr string) ([]byte, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	srv, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	req, _ := tftp.MarshalPacket(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "octet"})
	if _, err := c.WriteToUDP(req, srv); err != nil {
		return nil, err
	}
	var out []byte
	buf := make([]byte, 1024)
	for want := uint16(1); ; want++ {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, peer, err := c.ReadFromUDP(buf)
		if err != nil {
			return nil, err
		}
		p, err := tftp.ParsePacket(buf[:n])
		if err != nil {
			return nil, err
		}
		d, ok := p.(*tftp.DataPacket)
		if !ok {
			return nil, fmt.Errorf("got %T: %v", p, p)
		}
		if d.Block != want {
			return nil, fmt.Errorf("block %d, want %d", d.Block, want)
		}
		out = append(out, d.Data...)
		ack, _ := tftp.MarshalPacket(&tftp.AckPacket{Block: d.Block})
		if _, err := c.WriteToUDP(ack, peer); err != nil {
			return nil, err
		}
		if len(d.Data) < 512 {
			return out, nil
		}
	}
}

// TestBufferBudget is issue #17's fifth defect: clients ask for the largest windows
// (blksize 65464, windowsize 64, timeout 255), acknowledge the OACK and go away. The windows
// granted stay within MaxBufferBytes (plus a floor of about three blocks of FloorBlockSize per
// transfer, which no client is refused), one address gets at most a quarter of the budget, the
// memory is counted in Stats, and MaxIdle ends the abandoned transfers long before 255 s.
func TestBufferBudget(t *testing.T) {
	const budget = 1 << 20
	srv := &tftp.Server{MaxBufferBytes: budget, MaxIdle: 500 * time.Millisecond, MaxTransfersPerClient: -1,
		Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
			_ = w.ServeContent(patternReaderAt{100 << 20}, 100<<20)
		})}
	addr := serve(t, srv)
	opts := []tftp.Option{{Name: "blksize", Value: "65464"}, {Name: "windowsize", Value: "64"}, {Name: "timeout", Value: "255"}}
	var granted int64
	perAddr := map[string]int64{}
	for i := range 24 { // requests
		from := fmt.Sprintf("127.0.0.%d", 1+i%6)
		rc := dialRawFrom(t, addr, from)
		rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "octet", Options: opts})
		b, from2 := rc.recvRawFrom(2 * time.Second)
		require.NotNil(t, b)
		rc.peer = from2
		p, err := tftp.ParsePacket(b)
		require.NoError(t, err)
		switch p := p.(type) {
		case *tftp.OAckPacket:
			bs, _ := p.Option("blksize")
			ws, _ := p.Option("windowsize")
			blk, _ := strconv.Atoi(bs)
			win, _ := strconv.Atoi(ws)
			granted += int64(blk * win)
			perAddr[from] += int64(blk * win)
			rc.send(&tftp.AckPacket{Block: 0})
		default:
			t.Fatalf("unexpected %v", p)
		}
	}
	const requests, floor = 24, 4 * tftp.FloorBlockSize
	st := srv.Stats()
	assert.LessOrEqual(t, st.BufferedBytes, int64(budget+requests*floor))
	assert.Positive(t, st.BufferedBytes)
	assert.LessOrEqual(t, granted, int64(budget+requests*floor))
	for from, n := range perAddr {
		assert.LessOrEqual(t, n, int64(budget/4+requests/6*floor), "windows of %s", from)
	}
	assert.Positive(t, st.BudgetShrunk, "later requests got smaller windows")
	// A legitimate client from elsewhere still gets its file once the idle ones are given up.
	require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, srv.Stats().BufferedBytes)
	rc := dialRawFrom(t, addr, "127.0.0.9")
	rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "octet", Options: opts[:2]})
	require.IsType(t, &tftp.OAckPacket{}, rc.must(2*time.Second))
}

// TestMaxIdle: a client that negotiates timeout 255 and goes silent holds its transfer for
// MaxIdle, not for minutes.
func TestMaxIdle(t *testing.T) {
	srv := &tftp.Server{MaxIdle: 300 * time.Millisecond, Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(patternReaderAt{1 << 20}, 1<<20)
	})}
	addr := serve(t, srv)
	rc := dialRaw(t, addr)
	rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "octet", Options: []tftp.Option{{Name: "timeout", Value: "255"}}})
	require.IsType(t, &tftp.OAckPacket{}, rc.must(2*time.Second))
	rc.send(&tftp.AckPacket{Block: 0})
	require.IsType(t, &tftp.DataPacket{}, rc.must(2*time.Second))
	require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 5*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 1, srv.Stats().Failed)
	// The server says why it gave up.
	p := rc.must(time.Second)
	require.IsType(t, &tftp.ErrorPacket{}, p)
}

// TestPortRange: transfer sockets take their ports from PortRange; when all are in use, a
// request is answered "server busy" and counted.
func TestPortRange(t *testing.T) {
	first := freeUDPPorts(t, 2)
	release := make(chan struct{})
	content := randomBytes(1000, 5)
	srv := blockingServer(&tftp.Server{PortRange: tftp.PortRange{First: first, Last: first + 1}}, content, release)
	addr := serve(t, srv)
	var rcs []*rawClient
	for range 3 {
		rc := dialRaw(t, addr)
		rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "f", Mode: "octet"})
		rcs = append(rcs, rc)
	}
	require.Eventually(t, func() bool { return srv.Stats().Active == 3 }, 2*time.Second, time.Millisecond)
	close(release)
	ports := map[uint16]bool{}
	busy := 0
	for _, rc := range rcs {
		b, from := rc.recvRawFrom(2 * time.Second)
		require.NotNil(t, b)
		p, err := tftp.ParsePacket(b)
		require.NoError(t, err)
		switch p := p.(type) {
		case *tftp.DataPacket:
			ports[from.Port()] = true
			assert.GreaterOrEqual(t, from.Port(), first)
			assert.LessOrEqual(t, from.Port(), first+1)
		case *tftp.ErrorPacket:
			assert.Equal(t, "server busy", p.Message)
			busy++
		}
	}
	assert.Len(t, ports, 2)
	assert.Equal(t, 1, busy)
	assert.EqualValues(t, 1, srv.Stats().RefusedPort)
}

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want tftp.PortRange
		err  string
	}{
		{"50000:50100", tftp.PortRange{First: 50000, Last: 50100}, ""},
		{"69-69", tftp.PortRange{First: 69, Last: 69}, ""},
		{"50100:50000", tftp.PortRange{}, "first <= last"},
		{"0:10", tftp.PortRange{}, "first <= last"},
		{"1:70000", tftp.PortRange{}, "port numbers"},
		{"5000", tftp.PortRange{}, "first:last"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := tftp.ParsePortRange(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, strings.ReplaceAll(tc.in, "-", ":"), got.String())
		})
	}
	srv := &tftp.Server{PortRange: tftp.PortRange{First: 10, Last: 5}}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	require.ErrorContains(t, srv.Serve(pc), "port range")
}

// freeUDPPorts returns the first of n consecutive loopback UDP ports that are free now.
func freeUDPPorts(t *testing.T, n int) uint16 {
	t.Helper()
	for range 100 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		first := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if first+n > 65535 {
			continue
		}
		ok := true
		for p := first; p < first+n && ok; p++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: p})
			if ok = err == nil; ok {
				c.Close()
			}
		}
		if ok {
			return uint16(first)
		}
	}
	t.Fatal("no free consecutive UDP ports")
	return 0
}
