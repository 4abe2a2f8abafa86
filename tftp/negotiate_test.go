package tftp_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/tftp"
)

// contentServer serves a fixed 100000-byte content for any read request, announcing its size
// unless unknownSize.
func contentServer(t *testing.T, srv *tftp.Server, unknownSize bool) (string, []byte) {
	content := randomBytes(100_000, 42)
	srv.Handler = tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		size := int64(len(content))
		if unknownSize {
			size = -1
		}
		_ = w.ServeContent(bytes.NewReader(content), size)
	})
	if srv.Timeout == 0 {
		// Long enough that a slow test machine never sees a retransmission it did not ask for.
		srv.Timeout = 2 * time.Second
	}
	return serve(t, srv), content
}

func TestNegotiation(t *testing.T) {
	type want struct {
		oack  []tftp.Option // nil: DATA 1 comes directly
		block int           // size of DATA 1
	}
	for _, tc := range []struct {
		name    string
		srv     *tftp.Server
		unknown bool
		mode    string
		opts    []tftp.Option
		want    want
	}{
		{name: "no options", want: want{block: 512}},
		{name: "only unknown options", opts: []tftp.Option{{"multicast", ""}, {"utimeout", "500"}}, want: want{block: 512}},
		{name: "unknown option not acknowledged", opts: []tftp.Option{{"foo", "1"}, {"blksize", "1468"}},
			want: want{oack: []tftp.Option{{"blksize", "1468"}}, block: 1468}},
		{name: "names are case-insensitive", opts: []tftp.Option{{"BLKSIZE", "1024"}, {"TSize", "0"}},
			want: want{oack: []tftp.Option{{"BLKSIZE", "1024"}, {"TSize", "100000"}}, block: 1024}},
		{name: "blksize below 8 ignored", opts: []tftp.Option{{"blksize", "7"}}, want: want{block: 512}},
		{name: "blksize not a number ignored", opts: []tftp.Option{{"blksize", "big"}}, want: want{block: 512}},
		{name: "blksize 8", opts: []tftp.Option{{"blksize", "8"}}, want: want{oack: []tftp.Option{{"blksize", "8"}}, block: 8}},
		{name: "blksize above the RFC maximum capped", opts: []tftp.Option{{"blksize", "70000"}},
			want: want{oack: []tftp.Option{{"blksize", "65464"}}, block: 65464}},
		{name: "blksize capped by the server", srv: &tftp.Server{MaxBlockSize: 1468}, opts: []tftp.Option{{"blksize", "8192"}},
			want: want{oack: []tftp.Option{{"blksize", "1468"}}, block: 1468}},
		{name: "tsize answered with the size", opts: []tftp.Option{{"tsize", "0"}},
			want: want{oack: []tftp.Option{{"tsize", "100000"}}, block: 512}},
		{name: "tsize not answered when unknown", unknown: true, opts: []tftp.Option{{"tsize", "0"}}, want: want{block: 512}},
		{name: "timeout acknowledged", opts: []tftp.Option{{"timeout", "3"}},
			want: want{oack: []tftp.Option{{"timeout", "3"}}, block: 512}},
		{name: "timeout out of range ignored", opts: []tftp.Option{{"timeout", "0"}, {"blksize", "600"}},
			want: want{oack: []tftp.Option{{"blksize", "600"}}, block: 600}},
		{name: "timeout 256 ignored", opts: []tftp.Option{{"timeout", "256"}}, want: want{block: 512}},
		{name: "windowsize", opts: []tftp.Option{{"windowsize", "16"}},
			want: want{oack: []tftp.Option{{"windowsize", "16"}}, block: 512}},
		{name: "windowsize capped by the server", srv: &tftp.Server{MaxWindowSize: 8}, opts: []tftp.Option{{"windowsize", "100"}},
			want: want{oack: []tftp.Option{{"windowsize", "8"}}, block: 512}},
		{name: "window bytes capped", opts: []tftp.Option{{"windowsize", "64"}, {"blksize", "65464"}},
			want: want{oack: []tftp.Option{{"windowsize", "16"}, {"blksize", "65464"}}, block: 65464}},
		{name: "windowsize 0 ignored", opts: []tftp.Option{{"windowsize", "0"}}, want: want{block: 512}},
		{name: "netascii mode in capitals", mode: "NetASCII", want: want{block: 512}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv
			if srv == nil {
				srv = &tftp.Server{}
			}
			addr, _ := contentServer(t, srv, tc.unknown)
			rc := dialRaw(t, addr)
			mode := tc.mode
			if mode == "" {
				mode = "octet"
			}
			rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "x", Mode: mode, Options: tc.opts})
			p := rc.must(2 * time.Second)
			if tc.want.oack != nil {
				require.IsType(t, &tftp.OAckPacket{}, p)
				assert.Equal(t, tc.want.oack, p.(*tftp.OAckPacket).Options)
				rc.send(&tftp.AckPacket{Block: 0})
				p = rc.must(2 * time.Second)
			}
			require.IsType(t, &tftp.DataPacket{}, p)
			d := p.(*tftp.DataPacket)
			assert.EqualValues(t, 1, d.Block)
			assert.Len(t, d.Data, tc.want.block)
			rc.send(&tftp.ErrorPacket{Code: tftp.ErrNotDefined, Message: "enough"})
		})
	}
}

func TestRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		code tftp.ErrorCode
	}{
		{"unsupported mode", []byte("\x00\x01file\x00mail\x00"), tftp.ErrIllegalOperation},
		{"NUL inside the name", []byte("\x00\x01fi\x00le\x00octet\x00"), tftp.ErrIllegalOperation},
		{"no mode", []byte("\x00\x01file\x00"), tftp.ErrIllegalOperation},
		{"write refused by default", []byte("\x00\x02file\x00octet\x00"), tftp.ErrAccessViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := contentServer(t, &tftp.Server{}, false)
			rc := dialRaw(t, addr)
			rc.sendBytes(tc.raw)
			// A malformed request is answered from the request port itself.
			buf := make([]byte, 1500)
			require.NoError(t, rc.c.SetReadDeadline(time.Now().Add(2*time.Second)))
			n, _, err := rc.c.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			p, err := tftp.ParsePacket(buf[:n])
			require.NoError(t, err)
			require.IsType(t, &tftp.ErrorPacket{}, p)
			assert.Equal(t, tc.code, p.(*tftp.ErrorPacket).Code)
		})
	}
}

// TestOptionRefused checks that a client answering the OACK with error 8 ends the transfer:
// no retransmission, a failed transfer in the counters and the hook.
func TestOptionRefused(t *testing.T) {
	var mu sync.Mutex
	var infos []tftp.TransferInfo
	srv := &tftp.Server{OnTransferDone: func(i tftp.TransferInfo) {
		mu.Lock()
		infos = append(infos, i)
		mu.Unlock()
	}}
	addr, _ := contentServer(t, srv, false)
	rc := dialRaw(t, addr)
	rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "x", Mode: "octet", Options: []tftp.Option{{"blksize", "1468"}}})
	require.IsType(t, &tftp.OAckPacket{}, rc.must(2*time.Second))
	rc.send(&tftp.ErrorPacket{Code: tftp.ErrOptionRefused, Message: "no thanks"})
	assert.Nil(t, rc.recv(500*time.Millisecond), "nothing after error 8")
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(infos) == 1 }, 2*time.Second, 10*time.Millisecond)
	assert.ErrorIs(t, infos[0].Err, tftp.ErrOptionRefused)
	st := srv.Stats()
	assert.EqualValues(t, 1, st.Failed)
	assert.EqualValues(t, 0, st.Retransmits)
}

// TestNoSorcerersApprentice checks that a duplicate ACK does not cause a retransmission.
func TestNoSorcerersApprentice(t *testing.T) {
	srv := &tftp.Server{Timeout: 2 * time.Second}
	addr, content := contentServer(t, srv, false)
	rc := dialRaw(t, addr)
	rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "x", Mode: "octet"})
	d1 := rc.must(time.Second).(*tftp.DataPacket)
	require.EqualValues(t, 1, d1.Block)
	assert.Equal(t, content[:512], d1.Data)
	rc.send(&tftp.AckPacket{Block: 1})
	require.EqualValues(t, 2, rc.must(time.Second).(*tftp.DataPacket).Block)
	rc.send(&tftp.AckPacket{Block: 1})
	rc.send(&tftp.AckPacket{Block: 1})
	rc.send(&tftp.AckPacket{Block: 0})
	assert.Nil(t, rc.recv(300*time.Millisecond), "a duplicate ACK must not trigger a retransmission")
	rc.send(&tftp.AckPacket{Block: 2})
	d3 := rc.must(time.Second).(*tftp.DataPacket)
	require.EqualValues(t, 3, d3.Block)
	assert.Equal(t, content[1024:1536], d3.Data)
	rc.send(&tftp.ErrorPacket{Code: tftp.ErrNotDefined, Message: "done"})
	assert.Zero(t, srv.Stats().Retransmits)
}

// TestRetransmission checks that a timeout causes a retransmission, with exponential back-off,
// until the server gives up.
func TestRetransmission(t *testing.T) {
	const timeout = 200 * time.Millisecond
	srv := &tftp.Server{Timeout: timeout, Retries: 3}
	addr, content := contentServer(t, srv, false)
	rc := dialRaw(t, addr)
	rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "x", Mode: "octet"})
	d1 := rc.must(time.Second).(*tftp.DataPacket)
	require.EqualValues(t, 1, d1.Block)
	start := time.Now()
	// Leave block 1 unacknowledged and watch the repeats.
	var at []time.Duration
	for {
		p := rc.recv(5 * time.Second)
		require.NotNil(t, p)
		if e, ok := p.(*tftp.ErrorPacket); ok {
			assert.Contains(t, e.Message, "timeout")
			break
		}
		d := p.(*tftp.DataPacket)
		assert.EqualValues(t, 1, d.Block)
		assert.Equal(t, content[:512], d.Data)
		at = append(at, time.Since(start))
	}
	require.Len(t, at, 3, "one repeat per retry")
	// Repeats after about 200, 600 and 1400 ms: the waits double. Only the gaps between
	// repeats are compared, with room for a slow machine's scheduling delays.
	gaps := []time.Duration{at[1] - at[0], at[2] - at[1]}
	assert.Greater(t, gaps[0], timeout*13/10, "back-off doubles: %v", at)
	assert.Greater(t, gaps[1], gaps[0]*13/10, "back-off doubles: %v", at)
	assert.Nil(t, rc.recv(300*time.Millisecond), "nothing after giving up")
	require.Eventually(t, func() bool { return srv.Stats().Failed == 1 }, time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 3, srv.Stats().Retransmits)
}

// TestWindowRecovery checks RFC 7440 behaviour on the sending side: after an ACK in the middle
// of a window the server continues from the block after it.
func TestWindowRecovery(t *testing.T) {
	addr, content := contentServer(t, &tftp.Server{}, false)
	rc := dialRaw(t, addr)
	rc.send(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: "x", Mode: "octet",
		Options: []tftp.Option{{"windowsize", "4"}, {"blksize", "100"}}})
	require.IsType(t, &tftp.OAckPacket{}, rc.must(time.Second))
	rc.send(&tftp.AckPacket{Block: 0})
	for b := 1; b <= 4; b++ {
		d := rc.must(time.Second).(*tftp.DataPacket)
		require.EqualValues(t, b, d.Block)
	}
	assert.Nil(t, rc.recv(50*time.Millisecond), "a window is 4 blocks")
	// Pretend block 3 was lost: acknowledge 2.
	rc.send(&tftp.AckPacket{Block: 2})
	for b := 3; b <= 6; b++ {
		d := rc.must(time.Second).(*tftp.DataPacket)
		require.EqualValues(t, b, d.Block)
		assert.Equal(t, content[(b-1)*100:b*100], d.Data)
	}
	rc.send(&tftp.ErrorPacket{Code: tftp.ErrNotDefined, Message: "done"})
}

func TestClientRefusesBadOACK(t *testing.T) {
	for _, tc := range []struct {
		name string
		oack []tftp.Option
	}{
		{"unrequested option", []tftp.Option{{"blksize", "512"}, {"windowsize", "4"}}},
		{"larger blksize", []tftp.Option{{"blksize", "2048"}}},
		{"bad number", []tftp.Option{{"blksize", "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A fake server on one socket.
			fake := dialRaw(t, "127.0.0.1:9")
			addr := fake.c.LocalAddr().String()
			errc := make(chan error, 1)
			go func() {
				_, _, err := get(t, &tftp.Client{BlockSize: 1024, Timeout: time.Second}, addr, "f")
				errc <- err
			}()
			buf := make([]byte, 1500)
			require.NoError(t, fake.c.SetReadDeadline(time.Now().Add(2*time.Second)))
			n, from, err := fake.c.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			p, err := tftp.ParsePacket(buf[:n])
			require.NoError(t, err)
			require.Equal(t, tftp.OpRRQ, p.Opcode())
			b, err := tftp.MarshalPacket(&tftp.OAckPacket{Options: tc.oack})
			require.NoError(t, err)
			_, err = fake.c.WriteToUDPAddrPort(b, from)
			require.NoError(t, err)
			n, _, err = fake.c.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			p, err = tftp.ParsePacket(buf[:n])
			require.NoError(t, err)
			require.IsType(t, &tftp.ErrorPacket{}, p)
			assert.Equal(t, tftp.ErrOptionRefused, p.(*tftp.ErrorPacket).Code)
			require.Error(t, <-errc)
		})
	}
}
