package tftp

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestClientKey: per-client limits count an IPv4 address (also IPv4-mapped) or an IPv6 /64.
func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"192.0.2.1", "::ffff:192.0.2.1"},
		{"fd00:1:2:3::1", "fd00:1:2:3:ffff::2"},
		{"fe80::1%eth0", "fe80::2%eth1"},
	} {
		assert.Equal(t, clientKey(netip.MustParseAddr(tc.a)), clientKey(netip.MustParseAddr(tc.b)), "%s and %s", tc.a, tc.b)
	}
	for _, tc := range []struct{ a, b string }{
		{"192.0.2.1", "192.0.2.2"},
		{"fd00:1:2:3::1", "fd00:1:2:4::1"},
	} {
		assert.NotEqual(t, clientKey(netip.MustParseAddr(tc.a)), clientKey(netip.MustParseAddr(tc.b)), "%s and %s", tc.a, tc.b)
	}
}

// TestLimit: 0 means the default, a negative value no limit (0), anything else itself.
func TestLimit(t *testing.T) {
	assert.Equal(t, 7, limit(0, 7))
	assert.Equal(t, 0, limit(-1, 7))
	assert.Equal(t, 3, limit(3, 7))
}
