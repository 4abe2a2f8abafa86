package handoff

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func channelPair(t *testing.T) (a, b *channel) {
	t.Helper()
	fa, fb, err := socketpair()
	require.NoError(t, err)
	a, err = newChannel(fa)
	require.NoError(t, err)
	b, err = newChannel(fb)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// TestChannelCarriesDescriptors sends more pipes than fit in one message and checks that every
// received descriptor is the same pipe, with its name and state.
func TestChannelCarriesDescriptors(t *testing.T) {
	for _, n := range []int{0, 1, maxBatch, maxBatch + 1, 3*maxBatch + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			a, b := channelPair(t)
			var files []File
			var readEnds []*os.File
			for i := range n {
				r, w, err := os.Pipe()
				require.NoError(t, err)
				readEnds = append(readEnds, r)
				files = append(files, File{Name: fmt.Sprintf("pipe-%d", i), State: []byte(fmt.Sprintf("state %d", i)), File: w})
			}
			t.Cleanup(func() { CloseFiles(files) })
			require.NoError(t, a.sendBatches(msgConns, files))
			require.NoError(t, a.send(message{Type: msgDone, Count: n}, nil))
			var got []File
			for {
				m, fs, err := b.recv(time.Now().Add(5 * time.Second))
				require.NoError(t, err)
				assert.LessOrEqual(t, len(fs), maxBatch)
				got = append(got, fs...)
				if m.Type == msgDone {
					assert.Equal(t, n, m.Count)
					break
				}
				assert.Equal(t, msgConns, m.Type)
			}
			require.Len(t, got, n)
			for i, f := range got {
				assert.Equal(t, files[i].Name, f.Name)
				assert.Equal(t, files[i].State, f.State)
				flags, err := unix.FcntlInt(f.File.Fd(), unix.F_GETFD, 0)
				require.NoError(t, err)
				assert.NotZero(t, flags&unix.FD_CLOEXEC, "received descriptors are close-on-exec")
				// The received write end writes into the original pipe.
				_, err = f.File.Write([]byte{byte(i)})
				require.NoError(t, err)
				require.NoError(t, f.Close())
				require.NoError(t, files[i].Close())
				b, err := io.ReadAll(readEnds[i])
				require.NoError(t, err)
				assert.Equal(t, []byte{byte(i)}, b)
				require.NoError(t, readEnds[i].Close())
			}
		})
	}
}

func TestChannelRejectsBadMessages(t *testing.T) {
	t.Run("names without descriptors", func(t *testing.T) {
		a, b := channelPair(t)
		_, _, err := a.c.WriteMsgUnix([]byte(`{"type":"conns","names":["x"]}`), nil, nil)
		require.NoError(t, err)
		_, _, err = b.recv(time.Now().Add(time.Second))
		assert.ErrorContains(t, err, "names 1 descriptors and carries 0")
	})
	t.Run("descriptors without names", func(t *testing.T) {
		a, b := channelPair(t)
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer r.Close()
		_, _, err = a.c.WriteMsgUnix([]byte(`{"type":"conns"}`), unix.UnixRights(int(w.Fd())), nil)
		require.NoError(t, err)
		require.NoError(t, w.Close())
		_, _, err = b.recv(time.Now().Add(time.Second))
		assert.ErrorContains(t, err, "names 0 descriptors and carries 1")
		// The received copy was closed: the pipe has no writer left.
		require.NoError(t, r.SetReadDeadline(time.Now().Add(time.Second)))
		n, err := r.Read(make([]byte, 1))
		assert.Equal(t, 0, n)
		assert.ErrorIs(t, err, io.EOF)
	})
	t.Run("not json", func(t *testing.T) {
		a, b := channelPair(t)
		_, _, err := a.c.WriteMsgUnix([]byte("\x00\x01"), nil, nil)
		require.NoError(t, err)
		_, _, err = b.recv(time.Now().Add(time.Second))
		assert.ErrorContains(t, err, "bad message")
	})
	t.Run("wrong type", func(t *testing.T) {
		a, b := channelPair(t)
		require.NoError(t, a.send(message{Type: msgAck}, nil))
		_, _, err := b.expect(msgReady, time.Now().Add(time.Second))
		assert.ErrorContains(t, err, `got "ack" message, want "ready"`)
	})
	t.Run("peer closed", func(t *testing.T) {
		a, b := channelPair(t)
		require.NoError(t, a.Close())
		_, _, err := b.recv(time.Now().Add(time.Second))
		assert.ErrorIs(t, err, io.EOF)
	})
	t.Run("timeout", func(t *testing.T) {
		_, b := channelPair(t)
		_, _, err := b.recv(time.Now().Add(20 * time.Millisecond))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	})
}

func TestFileOfDuplicates(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	dup, err := FileOf(w)
	require.NoError(t, err)
	assert.NotEqual(t, w.Fd(), dup.Fd())
	require.NoError(t, w.Close())
	_, err = dup.Write([]byte("y"))
	require.NoError(t, err, "the duplicate outlives the original")
	require.NoError(t, dup.Close())
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "y", string(b))
}

// TestInheritInProcess plays the old process on one end of a socketpair and lets Inherit and
// Ready run on the other: a TCP listener and a UDP socket arrive and work, connections come
// after ready, and the old side gets the confirmation.
func TestInheritInProcess(t *testing.T) {
	oldEnd, newEnd, err := socketpair()
	require.NoError(t, err)
	old, err := newChannel(oldEnd)
	require.NoError(t, err)
	defer old.Close()
	giveToInherit(t, newEnd)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	lf, err := FileOf(ln.(*net.TCPListener))
	require.NoError(t, err)
	pf, err := FileOf(pc.(*net.UDPConn))
	require.NoError(t, err)
	require.NoError(t, old.send(message{Type: msgListeners}, []File{{Name: "nbd", File: lf}, {Name: "tftp", File: pf}, {Name: "unused", File: lf}}))
	CloseFiles([]File{{File: lf}, {File: pf}})

	inh, err := Inherit()
	require.NoError(t, err)
	require.NotNil(t, inh)
	_, set := os.LookupEnv(EnvFD)
	assert.False(t, set, "Inherit clears %s", EnvFD)
	assert.Equal(t, []string{"nbd", "tftp", "unused"}, inh.Names())
	l2, err := inh.Listener("nbd")
	require.NoError(t, err)
	defer l2.Close()
	pc2, err := inh.PacketConn("tftp")
	require.NoError(t, err)
	defer pc2.Close()
	none, err := inh.Listener("http")
	assert.NoError(t, err)
	assert.Nil(t, none)

	// The inherited UDP socket is the same socket.
	cl, err := net.Dial("udp", pc.LocalAddr().String())
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.Write([]byte("rrq"))
	require.NoError(t, err)
	buf := make([]byte, 16)
	require.NoError(t, pc2.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, _, err := pc2.ReadFrom(buf)
	require.NoError(t, err)
	assert.Equal(t, "rrq", string(buf[:n]))

	// The old side: wait for ready, send two connections, finish.
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	oldDone := make(chan error, 1)
	go func() {
		defer w.Close()
		m, _, err := old.expect(msgReady, time.Now().Add(5*time.Second))
		if err == nil && m.PID != os.Getpid() {
			err = fmt.Errorf("ready names pid %d", m.PID)
		}
		if err == nil {
			err = old.sendBatches(msgConns, []File{{Name: "c", State: []byte("1"), File: w}, {Name: "c", State: []byte("2"), File: w}})
		}
		if err == nil {
			err = old.send(message{Type: msgDone, Count: 2}, nil)
		}
		if err == nil {
			m, _, err = old.expect(msgAck, time.Now().Add(5*time.Second))
			if err == nil && m.Count != 2 {
				err = fmt.Errorf("ack of %d", m.Count)
			}
		}
		oldDone <- err
	}()
	conns, err := inh.Ready(context.Background(), 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, <-oldDone)
	require.Len(t, conns, 2)
	assert.Equal(t, []byte("1"), conns[0].State)
	assert.Equal(t, []byte("2"), conns[1].State)
	CloseFiles(conns)
	assert.Empty(t, inh.Names(), "Ready closes the listeners nobody took")
}

// TestReadyFailsWhenOldProcessDies: the old process vanishes between ready and done; Ready
// returns no connection (the ones received are closed).
func TestReadyFailsWhenOldProcessDies(t *testing.T) {
	oldEnd, newEnd, err := socketpair()
	require.NoError(t, err)
	old, err := newChannel(oldEnd)
	require.NoError(t, err)
	giveToInherit(t, newEnd)
	require.NoError(t, old.send(message{Type: msgListeners}, nil))
	inh, err := Inherit()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	go func() {
		_, _, _ = old.expect(msgReady, time.Now().Add(5*time.Second))
		_ = old.sendBatches(msgConns, []File{{Name: "c", File: w}})
		_ = w.Close()
		_ = old.Close()
	}()
	conns, err := inh.Ready(context.Background(), 5*time.Second)
	assert.ErrorIs(t, err, io.EOF)
	assert.Nil(t, conns)
	// The received copy of w was closed: the pipe reads EOF.
	require.NoError(t, r.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = r.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF)
}

// giveToInherit makes f's descriptor the one Inherit takes over (and closes) through EnvFD.
func giveToInherit(t *testing.T, f *os.File) {
	fd, err := unix.Dup(int(f.Fd()))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	t.Setenv(EnvFD, fmt.Sprint(fd))
}
