package nbd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// promiseConn is a conn with only what the promise needs: the client's bytes in buffered and
// then unbuffered, and a writer whose writes land in out.
func promiseConn(t *testing.T, buffered int) (*conn, *bytes.Buffer) {
	t.Helper()
	out := new(bytes.Buffer)
	c := &conn{br: bufio.NewReaderSize(strings.NewReader(strings.Repeat("x", 4096)), 4096), w: newMsgWriter(out, 4096, nil)}
	if buffered > 0 {
		_, err := c.br.Peek(buffered)
		require.NoError(t, err)
	}
	return c, out
}

func TestPromise(t *testing.T) {
	t.Run("a payload already buffered keeps replies held", func(t *testing.T) {
		c, out := promiseConn(t, 100)
		require.NoError(t, c.promiseAfter(nil))
		require.NoError(t, c.send([]byte("reply")))
		require.NoError(t, c.awaitPayload(100, func() error {
			assert.True(t, c.promised())
			assert.Zero(t, out.Len(), "held while nothing waits")
			return nil
		}))
		assert.True(t, c.promised())
		assert.Zero(t, out.Len())
	})
	t.Run("a payload to wait for sends held replies first", func(t *testing.T) {
		c, out := promiseConn(t, 0)
		require.NoError(t, c.promiseAfter(nil))
		require.NoError(t, c.send([]byte("reply")))
		require.NoError(t, c.awaitPayload(100, func() error {
			assert.False(t, c.promised())
			assert.Equal(t, "reply", out.String())
			return nil
		}))
		assert.True(t, c.promised(), "made again once the payload is in")
	})
	t.Run("a failed read ends the promise", func(t *testing.T) {
		c, out := promiseConn(t, 100)
		require.NoError(t, c.promiseAfter(nil))
		require.NoError(t, c.send([]byte("reply")))
		err := c.awaitPayload(10, func() error { return io.ErrUnexpectedEOF })
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.False(t, c.promised())
		assert.Equal(t, "reply", out.String())
	})
	t.Run("a wait on the server inside a payload read does not renew it", func(t *testing.T) {
		c, _ := promiseConn(t, 0)
		require.NoError(t, c.promiseAfter(nil))
		require.NoError(t, c.awaitPayload(100, func() error {
			c.await(func() {})
			assert.False(t, c.promised(), "the payload read may still wait for the client")
			return nil
		}))
		assert.True(t, c.promised())
	})
	t.Run("a wait on the server sends held replies and restores the promise", func(t *testing.T) {
		c, out := promiseConn(t, 0)
		require.NoError(t, c.promiseAfter(nil))
		require.NoError(t, c.send([]byte("reply")))
		c.await(func() { assert.Equal(t, "reply", out.String()) })
		assert.True(t, c.promised())
	})
	t.Run("the next request waited for sends held replies and frees the buffer", func(t *testing.T) {
		c, out := promiseConn(t, 0)
		require.NoError(t, c.promiseAfter(nil))
		require.NoError(t, c.send([]byte("reply")))
		read := errors.New("read")
		err := c.awaitRequest(func() error {
			assert.Equal(t, "reply", out.String())
			assert.Nil(t, c.w.bufp, "buffer back in the pool")
			return read
		})
		require.ErrorIs(t, err, read)
		assert.False(t, c.promised())
	})
}
