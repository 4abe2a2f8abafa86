package main_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/kis/kistest"
)

// serve -dhcp server -user nobody: the DHCP socket (port 67, bound to its interface) and HTTP
// on port 80 are opened as root, then the lab DHCP server answers, and saves its leases, as
// nobody.
func TestServeDHCPAsNobody(t *testing.T) {
	busybox := peertest.Program(t, "busybox", "busybox-static")
	ip, nsA, nsB := vethPair(t)
	id := strings.TrimPrefix(nsA, "nrbinA")
	ifA, ifB := "nrvA"+id, "nrvB"+id
	out, err := exec.Command(ip, "-n", nsA, "addr", "add", "192.0.2.1/24", "dev", ifA).CombinedOutput()
	require.NoError(t, err, "%s", out)

	base := openDir(t)
	kisDir := filepath.Join(base, "kis")
	require.NoError(t, os.Mkdir(kisDir, 0o755))
	_, err = kistest.Write(kisDir, kistest.Spec{Name: "leap-diskless", Version: "1.15.3", Image: kistest.Image(64<<10, 2)})
	require.NoError(t, err)
	leases := filepath.Join(base, "leases")
	require.NoError(t, os.Mkdir(leases, 0o755))
	require.NoError(t, os.Chown(leases, 65534, 65534))
	leaseFile := filepath.Join(leases, "leases.json")

	p := startIn(t, ip, nsA, "serve", "-kis", kisDir, "-tftp-root", filepath.Join(base, "tftp"), "-server-ip", "192.0.2.1",
		"-no-bootloader", "-dhcp", "server", "-dhcp-iface", ifA, "-dhcp-range", "192.0.2.50-192.0.2.60",
		"-dhcp-lease-file", leaseFile, "-user", "nobody")
	p.waitLog(t, `msg="dropped root privileges" user=nobody`)
	p.waitLog(t, `msg=ready`)
	p.waitLog(t, `msg="dhcp: answering on sockets opened before dropping root"`)
	assert.Equal(t, nobodyIDs, idLines(t, p.cmd.Process.Pid))

	envOut := filepath.Join(base, "udhcpc.env")
	script := filepath.Join(base, "udhcpc-script")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nif [ \"$1\" = bound ]; then env > "+envOut+"; fi\n"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err = exec.CommandContext(ctx, ip, "netns", "exec", nsB, busybox, "udhcpc", "-f", "-q", "-n", "-i", ifB,
		"-t", "5", "-T", "2", "-s", script, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000").CombinedOutput()
	require.NoError(t, err, "udhcpc: %s", out)
	env, err := os.ReadFile(envOut)
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(env), "ip=192.0.2.50")
	assert.Contains(t, string(env), "boot_file=pxelinux.0")

	// The lease was saved by nobody, next to where root could not have put it for nobody.
	require.Eventually(t, func() bool { _, err := os.Stat(leaseFile); return err == nil }, 10*time.Second, 50*time.Millisecond)
	st, err := os.Stat(leaseFile)
	require.NoError(t, err)
	assert.Equal(t, uint32(65534), st.Sys().(*syscall.Stat_t).Uid)
	lease, err := os.ReadFile(leaseFile)
	require.NoError(t, err)
	assert.Contains(t, string(lease), "192.0.2.50")
	assert.Empty(t, p.linesWith("level=ERROR", true))

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.NoError(t, p.wait(t))
}
