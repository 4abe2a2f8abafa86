package aoe_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/internal/peertest"
)

// vethPair is two network namespaces joined by a veth pair, both deleted when the test ends.
type vethPair struct {
	ip       string
	nsA, nsB string // namespace names
	ifA, ifB string // interface names inside them
}

var vethSeq atomic.Int32

// newVethPair creates namespaces A (the target side) and B (the initiator side) joined by a
// veth pair with the given MTU.
func newVethPair(t *testing.T, mtu int) *vethPair {
	t.Helper()
	peertest.Root(t, "network namespaces and AF_PACKET sockets")
	p := &vethPair{ip: peertest.Program(t, "ip", "iproute2")}
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, vethSeq.Add(1))
	p.nsA, p.nsB = "netroot-aoe-"+id+"-a", "netroot-aoe-"+id+"-b"
	p.ifA, p.ifB = "aoe"+id+"a", "aoe"+id+"b"
	for _, ns := range []string{p.nsA, p.nsB} {
		p.run(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command(p.ip, "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	p.run(t, "link", "add", p.ifA, "netns", p.nsA, "type", "veth", "peer", "name", p.ifB, "netns", p.nsB)
	p.run(t, "-n", p.nsA, "link", "set", p.ifA, "mtu", fmt.Sprint(mtu), "up")
	p.run(t, "-n", p.nsB, "link", "set", p.ifB, "mtu", fmt.Sprint(mtu), "up")
	return p
}

func (p *vethPair) run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(p.ip, args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// listenIn opens an AoE socket on ifname inside namespace ns, closed when the test ends.
func listenIn(t *testing.T, ns, ifname string) *aoe.Conn {
	t.Helper()
	c, err := aoetest.ListenIn(ns, ifname)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestListenInNamespace(t *testing.T) {
	p := newVethPair(t, 9000)
	a := listenIn(t, p.nsA, p.ifA)
	b := listenIn(t, p.nsB, p.ifB)
	require.Equal(t, 9000, a.MTU())
	msg := &aoe.Message{Header: aoe.Header{Version: 1, Major: 1, Minor: 2, Command: aoe.CommandQueryConfig, Tag: 77},
		Arg: &aoe.ConfigArg{String: []byte("hello")}}
	frame, err := msg.MarshalBinary()
	require.NoError(t, err)
	_, err = b.WriteTo(frame, a.LocalAddr())
	require.NoError(t, err)
	require.NoError(t, a.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 9000)
	n, from, err := a.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, b.HardwareAddr().String(), from.String())
	var got aoe.Message
	require.NoError(t, got.UnmarshalBinary(buf[:n]))
	require.Equal(t, msg.Header, got.Header)
	require.Equal(t, "hello", string(got.Arg.(*aoe.ConfigArg).String))
	// The sender does not see its own frame.
	require.NoError(t, b.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, _, err = b.ReadFrom(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// exactIO writes random data over the whole device through d, reads it back with many tags
// in flight and compares it with what the backend holds, read by backendBytes.
func exactIO(t *testing.T, d *aoe.Disk, seed uint64, backendBytes func() []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	size := d.Size()
	want := randomBytes(seed, int(size))
	_, err := d.WriteAtContext(ctx, want, 0)
	require.NoError(t, err)
	require.NoError(t, d.Flush(ctx))
	got := make([]byte, size)
	_, err = d.ReadAtContext(ctx, got, 0)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "read back differs from what was written")
	require.True(t, bytes.Equal(want, backendBytes()), "backend differs from what was written")
	// An unaligned window in the middle, rewritten and read.
	part := randomBytes(seed+1, 300*aoe.SectorSize)
	_, err = d.WriteAtContext(ctx, part, 777*aoe.SectorSize)
	require.NoError(t, err)
	copy(want[777*aoe.SectorSize:], part)
	got = make([]byte, 1000*aoe.SectorSize)
	_, err = d.ReadAtContext(ctx, got, 500*aoe.SectorSize)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want[500*aoe.SectorSize:1500*aoe.SectorSize], got), "window read differs")
	require.True(t, bytes.Equal(want, backendBytes()), "backend differs after the window write")
}

func TestRawTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtu  int
		loss float64
	}{{"mtu1500", 1500, 0}, {"mtu9000", 9000, 0}, {"mtu1500-loss", 1500, 0.05}, {"mtu9000-loss", 9000, 0.05}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newVethPair(t, tc.mtu)
			var tpc, cpc net.PacketConn = listenIn(t, p.nsA, p.ifA), listenIn(t, p.nsB, p.ifB)
			if tc.loss > 0 {
				// Seeded drops on both sides: requests, responses and announcements are lost.
				tpc = aoetest.Lossy(tpc, 11, tc.loss)
				cpc = aoetest.Lossy(cpc, 12, tc.loss)
			}
			mem := backend.NewMemory(4 << 20)
			tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 2, Slot: 5, Backend: mem}}}
			errc := make(chan error, 1)
			go func() { errc <- tgt.Serve(tpc) }()
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				require.NoError(t, tgt.Shutdown(ctx))
				require.ErrorIs(t, <-errc, aoe.ErrServerClosed)
			})
			c := aoe.NewClient(cpc, &aoe.ClientConfig{RetransmitTimeout: 20 * time.Millisecond, Retries: 20})
			t.Cleanup(func() { _ = c.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := c.Open(ctx, 2, 5)
			require.NoError(t, err)
			require.Equal(t, map[int]int{1500: 2, 9000: 17}[tc.mtu], d.SectorsPerFrame)
			if tc.loss == 0 {
				aoetest.Run(t, aoe.DeviceAddr{Shelf: 2, Slot: 5}, &aoetest.Options{Client: c, Writable: true})
			}
			exactIO(t, d, uint64(tc.mtu), func() []byte {
				// ReadAt, not Bytes: a retransmitted write may still be running (with the
				// same data) when the transfer has completed.
				b := make([]byte, mem.Size())
				_, err := mem.ReadAt(b, 0)
				require.NoError(t, err)
				return b
			})
			if tc.loss > 0 {
				require.Positive(t, aoetest.Dropped(cpc)+aoetest.Dropped(tpc), "frames were dropped")
				t.Logf("dropped %d frames at the initiator, %d at the target", aoetest.Dropped(cpc), aoetest.Dropped(tpc))
			}
			st := tgt.Stats()
			require.Positive(t, st.SectorsWritten)
			require.Positive(t, st.SectorsRead)
		})
	}
}

// startVblade runs vblade as the test's child in namespace ns, exporting file as
// e<shelf>.<slot> on ifname.
func startVblade(t *testing.T, p *vethPair, shelf, slot int, file string, args ...string) {
	t.Helper()
	vblade := peertest.Program(t, "vblade", "vblade")
	argv := append([]string{"netns", "exec", p.nsA, vblade}, args...)
	argv = append(argv, fmt.Sprint(shelf), fmt.Sprint(slot), p.ifA, file)
	cmd := exec.Command(p.ip, argv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("vblade output: %s", out.String())
		}
	})
}

func TestRawVblade(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtu  int
		loss float64
	}{{"mtu1500", 1500, 0}, {"mtu9000", 9000, 0}, {"mtu9000-loss", 9000, 0.05}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newVethPair(t, tc.mtu)
			file := filepath.Join(t.TempDir(), "disk.img")
			require.NoError(t, os.WriteFile(file, make([]byte, 4<<20), 0o600))
			startVblade(t, p, 1, 2, file)
			var cpc net.PacketConn = listenIn(t, p.nsB, p.ifB)
			if tc.loss > 0 {
				// vblade's requests and responses are dropped on our side, by a seeded schedule.
				cpc = aoetest.Lossy(cpc, 13, tc.loss)
			}
			c := aoe.NewClient(cpc, &aoe.ClientConfig{RetransmitTimeout: 20 * time.Millisecond, Retries: 20})
			t.Cleanup(func() { _ = c.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := c.Open(ctx, 1, 2)
			require.NoError(t, err)
			require.Equal(t, map[int]int{1500: 2, 9000: 17}[tc.mtu], d.SectorsPerFrame)
			require.Equal(t, int64(4<<20), d.Size())
			if tc.loss == 0 {
				aoetest.Run(t, aoe.DeviceAddr{Shelf: 1, Slot: 2}, &aoetest.Options{Client: c, Writable: true, Expect: aoetest.Vblade})
			}
			exactIO(t, d, uint64(tc.mtu)+100, func() []byte {
				b, err := os.ReadFile(file)
				require.NoError(t, err)
				return b
			})
		})
	}
}

// TestListenCloseReleasesSockets checks that Close releases every socket Listen opened,
// including the send-only one the batched sends use.
func TestListenCloseReleasesSockets(t *testing.T) {
	p := newVethPair(t, 1500)
	openFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		return len(ents)
	}
	before := openFDs()
	for range 3 {
		c, err := aoetest.ListenIn(p.nsA, p.ifA)
		require.NoError(t, err)
		require.Greater(t, openFDs(), before)
		require.NoError(t, c.Close())
	}
	require.Equal(t, before, openFDs())
}

// TestRawTargetStops checks that Shutdown and Close stop a Target whose workers wait for
// frames in blocking receives outside the runtime's poller, while idle and after serving.
func TestRawTargetStops(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stop  func(*aoe.Target) error
		serve bool
	}{
		{"shutdown-idle", func(tgt *aoe.Target) error { return tgt.Shutdown(context.Background()) }, false},
		{"shutdown", func(tgt *aoe.Target) error { return tgt.Shutdown(context.Background()) }, true},
		{"close", (*aoe.Target).Close, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newVethPair(t, 9000)
			tpc, cpc := listenIn(t, p.nsA, p.ifA), listenIn(t, p.nsB, p.ifB)
			tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: 1, Slot: 1, Backend: backend.NewMemory(1 << 20)}}}
			errc := make(chan error, 1)
			go func() { errc <- tgt.Serve(tpc) }()
			c := aoe.NewClient(cpc, &aoe.ClientConfig{RetransmitTimeout: 20 * time.Millisecond, Retries: 20})
			t.Cleanup(func() { _ = c.Close() })
			if tc.serve {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				d, err := c.Open(ctx, 1, 1)
				require.NoError(t, err)
				_, err = d.ReadAtContext(ctx, make([]byte, 64<<10), 0)
				require.NoError(t, err)
				require.Positive(t, tgt.Stats().SectorsRead)
			} else {
				require.Eventually(t, func() bool { return tgt.Stats().FramesOut > 0 }, 5*time.Second, time.Millisecond,
					"the target announced itself")
			}
			require.NoError(t, tc.stop(tgt))
			select {
			case err := <-errc:
				require.ErrorIs(t, err, aoe.ErrServerClosed)
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return")
			}
		})
	}
}
