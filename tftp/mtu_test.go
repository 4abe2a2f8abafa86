package tftp_test

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/tftp"
)

const envInNetns = "NETROOT_TFTP_TEST_IN_NETNS"

// TestPathMTU checks that blksize is capped by the path MTU: it runs itself again in a new
// network namespace (gone when that process exits) whose loopback has an MTU of 1500.
func TestPathMTU(t *testing.T) {
	if os.Getenv(envInNetns) == "1" {
		pathMTUInNetns(t)
		return
	}
	peertest.Root(t, "creates a network namespace")
	unshare := peertest.Program(t, "unshare", "util-linux")
	ip := peertest.Program(t, "ip", "iproute2")
	cmd := exec.Command(unshare, "--net", "sh", "-c",
		`"$1" link set lo mtu 1500 up && exec "$2" -test.run '^TestPathMTU$' -test.v`, "sh", ip, os.Args[0])
	cmd.Env = append(os.Environ(), envInNetns+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "--- PASS: TestPathMTU", "%s", out)
	require.Contains(t, string(out), "--- PASS: TestPathMTU/udp4", "%s", out)
	t.Logf("in the namespace:\n%s", out)
}

func pathMTUInNetns(t *testing.T) {
	for _, tc := range []struct {
		network, addr string
		want          int
	}{
		{"udp4", "127.0.0.1:0", 1500 - 20 - 8 - 4},
		{"udp6", "[::1]:0", 1500 - 40 - 8 - 4},
	} {
		t.Run(tc.network, func(t *testing.T) {
			pc, err := net.ListenPacket(tc.network, tc.addr)
			if err != nil && tc.network == "udp6" {
				t.Skipf("no IPv6 loopback in the namespace: %v", err)
			}
			require.NoError(t, err)
			content := randomBytes(20_000, 3)
			srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
				_ = w.ServeContent(bytesReader(content), int64(len(content)))
			})}
			go func() { _ = srv.Serve(pc) }()
			defer srv.Close()
			got, info, err := get(t, &tftp.Client{BlockSize: 8192}, pc.LocalAddr().String(), "f")
			require.NoError(t, err)
			assert.Equal(t, content, got)
			assert.Equal(t, tc.want, info.BlockSize)
		})
	}
}
