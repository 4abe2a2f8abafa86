package store_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/store"
)

func randomMACs(n int, seed uint64) []net.HardwareAddr {
	r := rand.New(rand.NewPCG(seed, 3))
	macs := make([]net.HardwareAddr, n)
	for i := range macs {
		m := make(net.HardwareAddr, 6)
		for j := range m {
			m[j] = byte(r.Uint32())
		}
		m[0] = m[0]&^1 | 2 // unicast, locally administered
		macs[i] = m
	}
	return macs
}

func TestRendezvousStable(t *testing.T) {
	replicas := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}
	for _, mac := range randomMACs(200, 1) {
		order := store.Rendezvous(mac, replicas)
		require.ElementsMatch(t, replicas, order)
		// The same answer whatever order the set is given in, every time.
		rev := slices.Clone(replicas)
		slices.Reverse(rev)
		assert.Equal(t, order, store.Rendezvous(mac, rev))
		assert.Equal(t, order[0], store.PickReplica(mac, rev))
		assert.Equal(t, order[0], store.PickReplica(mac, replicas))
	}
	assert.Equal(t, "", store.PickReplica(randomMACs(1, 2)[0], nil))
	assert.Equal(t, []string{"a"}, store.Rendezvous(randomMACs(1, 2)[0], []string{"a", "a"}))
}

// TestRendezvousPinned pins the weights: replicas running different netroot versions must
// place machines alike, so the hash may never change. The expected order was computed
// independently (Python's hashlib over the same bytes).
func TestRendezvousPinned(t *testing.T) {
	mac, err := net.ParseMAC("52:54:00:12:34:56")
	require.NoError(t, err)
	got := store.Rendezvous(mac, []string{"replica-a", "replica-b", "replica-c", "replica-d"})
	assert.Equal(t, []string{"replica-c", "replica-d", "replica-b", "replica-a"}, got)
}

func TestRendezvousSpreadAndMinimalMoves(t *testing.T) {
	replicas := []string{"r1", "r2", "r3", "r4"}
	macs := randomMACs(20000, 7)
	count := map[string]int{}
	before := map[string]string{}
	for _, m := range macs {
		r := store.PickReplica(m, replicas)
		count[r]++
		before[m.String()] = r
	}
	for _, r := range replicas {
		share := float64(count[r]) / float64(len(macs))
		assert.InDelta(t, 0.25, share, 0.02, "share of %s", r)
	}

	// r3 fails: only its machines move, and they spread over the other three.
	healthy := []string{"r1", "r2", "r4"}
	moved := map[string]int{}
	for _, m := range macs {
		r := store.PickReplica(m, healthy)
		if old := before[m.String()]; old != "r3" {
			assert.Equal(t, old, r, "machine %s moved off a healthy replica", m)
		} else {
			moved[r]++
		}
	}
	for _, r := range healthy {
		assert.InDelta(t, float64(count["r3"])/3, float64(moved[r]), float64(count["r3"])*0.1, "r3's machines onto %s", r)
	}

	// A fifth replica takes about a fifth, all from the others.
	grown := append(slices.Clone(replicas), "r5")
	taken := 0
	for _, m := range macs {
		r := store.PickReplica(m, grown)
		if r == "r5" {
			taken++
		} else {
			assert.Equal(t, before[m.String()], r)
		}
	}
	assert.InDelta(t, 0.2, float64(taken)/float64(len(macs)), 0.02)
}

func ExampleRendezvous() {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	replicas := []string{"replica-a", "replica-b", "replica-c"}
	fmt.Println("boots from:", store.PickReplica(mac, replicas))
	fmt.Println("preference:", store.Rendezvous(mac, replicas))
	// Output:
	// boots from: replica-c
	// preference: [replica-c replica-b replica-a]
}
