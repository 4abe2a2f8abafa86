//go:build e2e

package e2e_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
)

// TestKIWIBoot runs kiwi.sh, which builds (or takes from its cache) a KIS image with KIWI NG
// itself from the description in kiwi/ and boots it through `netroot serve` over NBD and AoE.
// Its settings come from the environment (E2E_KIWI_PROFILES, E2E_BOOTS, E2E_TIMEOUT, ...; see
// kiwi.sh).
func TestKIWIBoot(t *testing.T) {
	peertest.Root(t, "KIWI build in a chroot, network namespace, tap device and AoE raw sockets")
	for _, p := range []struct{ name, pkg string }{
		{"kiwi-ng", "kiwi"},
		{"debootstrap", "debootstrap"},
		{"rsync", "rsync"},
		{"gpg", "gpg"},
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"dnsmasq", "dnsmasq-base"},
	} {
		peertest.Program(t, p.name, p.pkg)
	}
	peertest.File(t, "/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
	peertest.File(t, "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")

	cmd := exec.CommandContext(t.Context(), "bash", "kiwi.sh")
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Run(), "e2e/kiwi.sh failed; its output above names the kept logs")
}
