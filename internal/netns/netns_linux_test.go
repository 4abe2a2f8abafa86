package netns_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/netns"
	"github.com/netroot/netroot/internal/peertest"
)

func TestDo(t *testing.T) {
	peertest.Root(t, "ip netns add")
	ip := peertest.Program(t, "ip", "iproute2")
	ns := fmt.Sprintf("nrnetns%d", os.Getpid())
	out, err := exec.Command(ip, "netns", "add", ns).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", ns).Run() })

	self := func() string {
		l, err := os.Readlink("/proc/thread-self/ns/net")
		require.NoError(t, err)
		return l
	}
	outside := self()
	var inside string
	require.NoError(t, netns.Do(ns, func() error { inside = self(); return nil }))
	assert.NotEqual(t, outside, inside, "fn ran in the other namespace")
	assert.Equal(t, outside, self(), "the caller's thread never moved")

	boom := errors.New("boom")
	assert.ErrorIs(t, netns.Do(ns, func() error { return boom }), boom, "fn's error comes back")
	assert.Error(t, netns.Do("nrnetns-none", func() error { return nil }), "no such namespace")
}
