package nbd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClientNegotiation(t *testing.T) {
	srv := &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "root", Description: "root image", Device: patterned(1 << 20)},
		&nbd.Export{Name: "data", Device: backend.NewMemory(4096), Writable: true}),
		DisableList: true}
	addr := coreServe(t, srv)
	ctx := context.Background()
	c, err := nbd.Dial(ctx, "tcp", addr, nil)
	require.NoError(t, err)
	defer c.Close()
	assert.True(t, c.StructuredReplies())
	assert.False(t, c.TLS())

	_, err = c.List(ctx)
	var oe *nbd.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, nbd.OptList, oe.Option)
	assert.Equal(t, nbd.RepErrPolicy, oe.Reply)

	info, err := c.Info(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, nbd.ExportInfo{Name: "root", Description: "root image", Size: 1 << 20,
		Flags:        nbd.FlagHasFlags | nbd.FlagReadOnly | nbd.FlagSendCache | nbd.FlagSendDF | nbd.FlagCanMultiConn,
		MinBlockSize: 1, PreferredBlockSize: 4096, MaxPayloadSize: 32 << 20}, info)

	_, err = c.Go(ctx, "missing")
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, nbd.RepErrUnknown, oe.Reply)
	assert.Contains(t, oe.Error(), `"missing"`)

	_, err = c.ReadAt(make([]byte, 1), 0)
	assert.Error(t, err, "no reads before Go")

	info, err = c.Go(ctx, "data")
	require.NoError(t, err)
	assert.Equal(t, int64(4096), c.Size())
	assert.Equal(t, info, c.Export())
	_, err = c.List(ctx)
	assert.Error(t, err, "no options after Go")
}

func TestClientWithoutMetaContext(t *testing.T) {
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: patterned(4096)})})
	c := coreDial(t, addr, "x", &nbd.DialOptions{NoMetaContext: true})
	_, err := c.BlockStatus(context.Background(), 0, 512, 0)
	assert.Error(t, err)
	// The server refuses it too when asked directly.
	err = c.Do(context.Background(), nbd.Request{Type: nbd.CmdBlockStatus, Length: 512}, nil)
	assert.ErrorIs(t, err, nbd.EINVAL)
}

func TestClientCancel(t *testing.T) {
	dev := &countingDevice{Memory: patterned(1 << 16), blockAt: 4096, release: make(chan struct{})}
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "x", Device: dev})})
	c := coreDial(t, addr, "x", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	buf := make([]byte, 512)
	err := c.Do(ctx, nbd.Request{Type: nbd.CmdRead, Offset: 4096, Length: 512}, buf)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(dev.release)
	// The late reply is discarded, not written into the abandoned buffer, and the connection
	// goes on.
	got := make([]byte, 512)
	_, err = c.ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, dev.Bytes()[:512], got)
	assert.Equal(t, make([]byte, 512), buf)
	require.NoError(t, c.Close())
	_, err = c.ReadAt(got, 0)
	assert.True(t, errors.Is(err, nbd.ErrClientClosed), "%v", err)
}
