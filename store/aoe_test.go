package store_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

// TestAoEReplicasShareShelfSlot: two replicas export the same build as the same shelf.slot, so
// an initiator sees two paths to one device; when one replica goes away, the other serves on.
func TestAoEReplicasShareShelfSlot(t *testing.T) {
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "aoe")
	image := noise(24*testChunk, 8) // whole sectors
	res, err := st.Push(context.Background(), writeBuild(t, "1.0.0", image, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)

	var lan aoetest.Network
	targets := map[string]*aoe.Target{}
	for range 2 {
		c, err := store.NewCache(st, nil)
		require.NoError(t, err)
		dev, err := c.Open(res.ID, res.Manifest, "image")
		require.NoError(t, err)
		conn := lan.Attach(nil)
		tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 7, Slot: 3, Backend: dev}}, AnnounceInterval: -1}
		go tgt.Serve(conn)
		t.Cleanup(func() { tgt.Close() })
		targets[conn.HardwareAddr().String()] = tgt
	}
	cl := aoe.NewClient(lan.Attach(nil), &aoe.ClientConfig{RetransmitTimeout: 20 * time.Millisecond, Retries: 3})
	defer cl.Close()
	ctx := context.Background()
	found, err := cl.Discover(ctx, 7, 3, 300*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, found, 2, "one device, two paths")
	assert.NotEqual(t, found[0].Addr.String(), found[1].Addr.String())

	got := make([]byte, len(image))
	half := len(image) / 2
	first, err := cl.OpenTarget(ctx, found[0])
	require.NoError(t, err)
	assert.Equal(t, int64(len(image)), first.Size())
	_, err = first.ReadAt(got[:half], 0)
	require.NoError(t, err)

	// The first replica dies; the second path serves the rest.
	require.NoError(t, targets[found[0].Addr.String()].Close())
	_, err = first.ReadAt(make([]byte, 4096), int64(half))
	assert.Error(t, err, "the dead path does not answer")
	second, err := cl.OpenTarget(ctx, found[1])
	require.NoError(t, err)
	_, err = second.ReadAt(got[half:], int64(half))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(image, got), "both paths serve the same bytes")
}
