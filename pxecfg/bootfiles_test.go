package pxecfg_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/pxecfg"
)

func TestBootFiles(t *testing.T) {
	c := netrootConfig()
	c.UI = "vesamenu.c32"
	c.Entries = append(c.Entries, pxecfg.Entry{Label: "chain", KernelKeyword: "COM32", Kernel: "chain.c32", Append: "hd0"})
	files, err := pxecfg.BootFiles(pxecfg.BIOS, c)
	require.NoError(t, err)
	assert.Equal(t, []pxecfg.BootFile{
		{Name: "pxelinux.0", Source: "/usr/lib/PXELINUX/pxelinux.0", Package: "pxelinux"},
		{Name: "ldlinux.c32", Source: "/usr/lib/syslinux/modules/bios/ldlinux.c32", Package: "syslinux-common"},
		{Name: "vesamenu.c32", Source: "/usr/lib/syslinux/modules/bios/vesamenu.c32", Package: "syslinux-common"},
		{Name: "chain.c32", Source: "/usr/lib/syslinux/modules/bios/chain.c32", Package: "syslinux-common"},
	}, files)

	files, err = pxecfg.BootFiles(pxecfg.UEFI64, nil)
	require.NoError(t, err)
	assert.Equal(t, []pxecfg.BootFile{
		{Name: "syslinux.efi", Source: "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi", Package: "syslinux-efi"},
		{Name: "ldlinux.e64", Source: "/usr/lib/syslinux/modules/efi64/ldlinux.e64", Package: "syslinux-common"},
	}, files)

	files, err = pxecfg.BootFiles(pxecfg.UEFI64GRUB, c)
	require.NoError(t, err)
	assert.Equal(t, []string{"bootx64.efi", "grubx64.efi"}, []string{files[0].Name, files[1].Name})
	assert.Equal(t, "grub-efi-amd64-signed", files[1].Package)

	_, err = pxecfg.BootFiles(pxecfg.Firmware(9), nil)
	assert.ErrorContains(t, err, "unknown firmware Firmware(9)")

	c.UI = "../menu.c32"
	_, err = pxecfg.BootFiles(pxecfg.BIOS, c)
	assert.ErrorContains(t, err, "leaves the TFTP root")
}

func TestInstallBootFilesMissing(t *testing.T) {
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "loader.efi"), []byte("loader"), 0o644))
	dst := t.TempDir()
	copied, err := pxecfg.InstallBootFiles(dst, []pxecfg.BootFile{
		{Name: "loader.efi", Source: filepath.Join(src, "loader.efi"), Package: "pkg-a"},
		{Name: "grubx64.efi", Source: filepath.Join(src, "grubnetx64.efi.signed"), Package: "grub-efi-amd64-signed"},
		{Name: "bootx64.efi", Source: filepath.Join(src, "shimx64.efi.signed"), Package: "shim-signed"},
		{Name: "other.efi", Source: filepath.Join(src, "other"), Package: "shim-signed"},
	})
	assert.Equal(t, []string{"loader.efi"}, copied, "present files are copied anyway")
	got, rerr := os.ReadFile(filepath.Join(dst, "loader.efi"))
	require.NoError(t, rerr)
	assert.Equal(t, "loader", string(got))

	var missing *pxecfg.MissingError
	require.True(t, errors.As(err, &missing), "error %v", err)
	assert.Len(t, missing.Files, 3)
	assert.Equal(t, []string{"grub-efi-amd64-signed", "shim-signed"}, missing.Packages())
	assert.Contains(t, err.Error(), "grubnetx64.efi.signed (for grubx64.efi, Debian package grub-efi-amd64-signed)")
	assert.Contains(t, err.Error(), "apt-get install grub-efi-amd64-signed shim-signed")
}
