package pxecfg_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/pxecfg"
)

var machineMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}

func machineConfig() *pxecfg.Config {
	e := pxecfg.NetbootEntry("leap-nbd-replica2", "boot/linux", []string{"boot/initrd"},
		"root=overlay:nbd=192.0.2.2:leap rd.driver.pre=nbd console=ttyS0,115200")
	return &pxecfg.Config{Default: e.Label, Entries: []pxecfg.Entry{e}}
}

func TestMachineNames(t *testing.T) {
	assert.Equal(t, "grub/machines/52:54:00:ab:cd:ef.cfg", pxecfg.GRUBMachineConfig("grub/grub.cfg", machineMAC))
	assert.Equal(t, "machines/52-54-00-ab-cd-ef.ipxe", pxecfg.IPXEMachineScript("boot.ipxe", machineMAC))
	assert.Equal(t, "efi/machines/52-54-00-ab-cd-ef.ipxe", pxecfg.IPXEMachineScript("efi/boot.ipxe", machineMAC))
}

func TestWriteMachineDir(t *testing.T) {
	root := t.TempDir()
	written, err := pxecfg.WriteMachineDir(root, netrootConfig(), []pxecfg.Machine{{MAC: machineMAC, Config: machineConfig()}}, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"pxelinux.cfg/default", "grub/grub.cfg", "boot.ipxe",
		"pxelinux.cfg/01-52-54-00-ab-cd-ef", "grub/machines/52:54:00:ab:cd:ef.cfg", "machines/52-54-00-ab-cd-ef.ipxe",
	}, written)
	for _, tc := range []struct{ file, golden string }{
		{"grub/grub.cfg", "dispatch.grub"},
		{"boot.ipxe", "dispatch.ipxe"},
		{"grub/machines/52:54:00:ab:cd:ef.cfg", "machine.grub"},
		{"machines/52-54-00-ab-cd-ef.ipxe", "machine.ipxe"},
	} {
		b, err := os.ReadFile(filepath.Join(root, tc.file))
		require.NoError(t, err)
		golden(t, tc.golden, b)
	}
	b, err := os.ReadFile(filepath.Join(root, "pxelinux.cfg/01-52-54-00-ab-cd-ef"))
	require.NoError(t, err)
	assert.Contains(t, string(b), "nbd=192.0.2.2:leap")

	// An invalid machine config changes nothing.
	bad := machineConfig()
	bad.Entries[0].Append = "msg=${x}"
	root2 := t.TempDir()
	_, err = pxecfg.WriteMachineDir(root2, netrootConfig(), []pxecfg.Machine{{MAC: machineMAC, Config: bad}}, nil)
	require.Error(t, err)
	entries, rerr := os.ReadDir(root2)
	require.NoError(t, rerr)
	assert.Empty(t, entries)

	_, err = pxecfg.WriteMachineDir(root2, netrootConfig(), []pxecfg.Machine{{MAC: net.HardwareAddr{1, 2}, Config: machineConfig()}}, nil)
	assert.ErrorContains(t, err, "pxecfg: machine hardware address 01:02 is not 6 bytes")
}

// TestGRUBDispatchScriptCheck runs GRUB's own parser on the dispatcher and a machine's file.
func TestGRUBDispatchScriptCheck(t *testing.T) {
	check := peertest.Program(t, "grub-script-check", "grub-common")
	for name, write := range map[string]func(*bytes.Buffer) error{
		"dispatch": func(b *bytes.Buffer) error { return pxecfg.WriteGRUBDispatch(b, "grub/grub.cfg", netrootConfig()) },
		"machine":  func(b *bytes.Buffer) error { return pxecfg.WriteGRUBMachine(b, machineConfig()) },
	} {
		var b bytes.Buffer
		require.NoError(t, write(&b))
		f := filepath.Join(t.TempDir(), name+".cfg")
		require.NoError(t, os.WriteFile(f, b.Bytes(), 0o644))
		out, err := exec.Command(check, f).CombinedOutput()
		require.NoError(t, err, "grub-script-check %s:\n%s\n%s", name, out, b.String())
	}
}
