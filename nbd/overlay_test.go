package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCopyOnWriteExports(t *testing.T) {
	base := patterned(1 << 20)
	orig := bytes.Clone(base.Bytes())
	srv := &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "conn", Device: backend.ReadOnly(base), CopyOnWrite: nbd.CopyOnWritePerConnection},
		&nbd.Export{Name: "client", Device: backend.ReadOnly(base), CopyOnWrite: nbd.CopyOnWritePerClient})}
	addr := coreServe(t, srv)
	ctx := context.Background()
	write := func(c *nbd.Client, s string) {
		_, err := c.WriteAt([]byte(s), 1000)
		require.NoError(t, err)
	}
	read := func(c *nbd.Client) string {
		b := make([]byte, 5)
		_, err := c.ReadAt(b, 1000)
		require.NoError(t, err)
		return string(b)
	}

	t.Run("per connection", func(t *testing.T) {
		a := coreDial(t, addr, "conn", nil)
		b := coreDial(t, addr, "conn", nil)
		assert.Zero(t, a.Export().Flags&nbd.FlagReadOnly, "writable through the overlay")
		assert.Zero(t, a.Export().Flags&nbd.FlagCanMultiConn, "connections do not share writes")
		write(a, "alpha")
		write(b, "bravo")
		assert.Equal(t, "alpha", read(a))
		assert.Equal(t, "bravo", read(b))
		require.NoError(t, a.Zero(ctx, 0, 4096, 0))
		require.NoError(t, a.Zero(ctx, 8192, 8192, nbd.CmdFlagFastZero), "overlays zero fast")
		require.NoError(t, a.Trim(ctx, 4096, 4096))
		require.NoError(t, a.Flush(ctx))
		require.NoError(t, a.Close())
		c := coreDial(t, addr, "conn", nil)
		assert.Equal(t, string(orig[1000:1005]), read(c), "a new connection starts from the base")
	})
	t.Run("per client", func(t *testing.T) {
		a := coreDial(t, addr, "client", nil)
		assert.NotZero(t, a.Export().Flags&nbd.FlagCanMultiConn)
		write(a, "delta")
		require.NoError(t, a.Close())
		b := coreDial(t, addr, "client", nil)
		assert.Equal(t, "delta", read(b), "the same client address finds its overlay again")
		// Another client address (over a pipe, no IP) has its own overlay.
		sc, cc := net.Pipe()
		go srv.ServeConn(ctx, sc)
		p, err := nbd.NewClient(ctx, cc, nil)
		require.NoError(t, err)
		_, err = p.Go(ctx, "client")
		require.NoError(t, err)
		assert.Equal(t, string(orig[1000:1005]), read(p))
		require.NoError(t, p.Close())
	})
	assert.Equal(t, orig, base.Bytes(), "the base image is untouched")
}

func TestCopyOnWriteOverlayFailures(t *testing.T) {
	base := patterned(4096)
	srv := &nbd.Server{Exports: coreExports(t,
		&nbd.Export{Name: "broken", Device: base, CopyOnWrite: nbd.CopyOnWritePerConnection,
			NewOverlay: func(backend.Device) (backend.Device, error) { return nil, errors.New("disk full") }},
		&nbd.Export{Name: "readonly", Device: base, CopyOnWrite: nbd.CopyOnWritePerConnection,
			NewOverlay: func(b backend.Device) (backend.Device, error) { return backend.ReadOnly(b), nil }},
		&nbd.Export{Name: "custom", Device: base, CopyOnWrite: nbd.CopyOnWritePerConnection,
			NewOverlay: func(b backend.Device) (backend.Device, error) {
				return backend.NewCopyOnWrite(b, nil, &backend.CopyOnWriteOptions{TempDir: t.TempDir()})
			}})}
	addr := coreServe(t, srv)
	ctx := context.Background()
	for name, want := range map[string]string{"broken": "disk full", "readonly": "cannot be written"} {
		c, err := nbd.Dial(ctx, "tcp", addr, nil)
		require.NoError(t, err)
		_, err = c.Go(ctx, name)
		var oe *nbd.OptionError
		require.ErrorAs(t, err, &oe, name)
		assert.Equal(t, nbd.RepErrPolicy, oe.Reply)
		assert.Contains(t, oe.Message, want)
		require.NoError(t, c.Close())
	}
	c := coreDial(t, addr, "custom", nil)
	_, err := c.WriteAt([]byte("x"), 0)
	require.NoError(t, err)
}
