package handoff

import (
	"fmt"
	"io"
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
