//go:build e2e

package e2e_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
)

// TestBoot runs run.sh, which boots qemu guests over NBD and AoE and checks each boot. Its
// settings come from the environment (E2E_SERVER, E2E_BOOTS, E2E_TIMEOUT, ...; see run.sh).
func TestBoot(t *testing.T) {
	peertest.Root(t, "network namespace, tap device and AoE raw sockets")
	for _, p := range []struct{ name, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"dnsmasq", "dnsmasq-base"},
		{"debootstrap", "debootstrap"},
		{"mksquashfs", "squashfs-tools"},
		{"in.tftpd", "tftpd-hpa"},
		{"nbd-server", "nbd-server"},
		{"vblade", "vblade"},
	} {
		peertest.Program(t, p.name, p.pkg)
	}
	peertest.File(t, "/bin/busybox", "busybox-static")
	peertest.File(t, "/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
	peertest.File(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")

	cmd := exec.CommandContext(t.Context(), "bash", "run.sh")
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Run(), "e2e/run.sh failed; its output above names the kept logs")
}
