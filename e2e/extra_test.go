//go:build e2e

package e2e_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
)

// guestPeers skips (or fails under NETROOT_REQUIRE_PEERS=1) without what every qemu boot
// through `netroot serve` needs.
func guestPeers(t *testing.T) {
	t.Helper()
	peertest.Root(t, "network namespace and tap device")
	for _, p := range []struct{ name, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"dnsmasq", "dnsmasq-base"},
		{"debootstrap", "debootstrap"},
		{"mksquashfs", "squashfs-tools"},
	} {
		peertest.Program(t, p.name, p.pkg)
	}
	peertest.File(t, "/bin/busybox", "busybox-static")
	peertest.File(t, "/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
	peertest.File(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")
}

func runScript(t *testing.T, script string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", script)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Run(), "e2e/%s failed; its output above names the kept logs", script)
}

// TestRollForward runs rollforward.sh: a guest keeps reading its root byte-exact while netroot
// serve rolls forward to a new build (SIGHUP) and upgrades its binary (SIGUSR2); a guest booted
// afterwards gets the new build.
func TestRollForward(t *testing.T) {
	guestPeers(t)
	runScript(t, "rollforward.sh")
}

// TestReplica runs replica.sh: a guest boots from `netroot serve -store` over a throw-away
// Ceph RGW (.ci/ceph-rgw), with no local copy of the image; a second guest boots over AoE from
// two replicas and keeps reading while one of them is killed.
func TestReplica(t *testing.T) {
	guestPeers(t)
	for _, p := range []struct{ name, pkg string }{
		{"ceph-mon", "ceph-mon"},
		{"ceph-osd", "ceph-osd"},
		{"radosgw", "radosgw"},
		{"ceph", "ceph-common"},
	} {
		peertest.Program(t, p.name, p.pkg)
	}
	runScript(t, "replica.sh")
}
