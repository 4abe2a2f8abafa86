package store

import (
	"crypto/sha256"
	"encoding/binary"
	"net"
	"slices"
	"strings"
)

// Rendezvous returns replicas ordered by preference for the machine with hardware address mac,
// by rendezvous (highest random weight) hashing: each replica's weight is the first 8 bytes of
// SHA-256(replica, 0, mac). The first is the machine's replica; when it fails, the next. The
// order depends only on the set of replicas, not on the order they are given in, so every
// replica computes the same placement; removing a replica moves only the machines it had, and
// adding one takes about 1/n of the machines from the others.
func Rendezvous(mac net.HardwareAddr, replicas []string) []string {
	type scored struct {
		name  string
		score uint64
	}
	s := make([]scored, 0, len(replicas))
	for _, r := range replicas {
		if slices.ContainsFunc(s, func(x scored) bool { return x.name == r }) {
			continue
		}
		s = append(s, scored{r, weight(r, mac)})
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].name
	}
	return out
}

// PickReplica returns the replica Rendezvous puts first for mac among healthy; "" when there
// is none.
func PickReplica(mac net.HardwareAddr, healthy []string) string {
	var best string
	var bestScore uint64
	for _, r := range healthy {
		w := weight(r, mac)
		if best == "" || w > bestScore || (w == bestScore && r < best) {
			best, bestScore = r, w
		}
	}
	return best
}

func weight(replica string, mac net.HardwareAddr) uint64 {
	h := sha256.New()
	h.Write([]byte(replica))
	h.Write([]byte{0})
	h.Write(mac)
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
