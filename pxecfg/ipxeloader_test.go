package pxecfg_test

import (
	"bytes"
	"debug/pe"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/pxecfg"
)

func TestFindIPXE(t *testing.T) {
	for _, tc := range []struct {
		name, id, idLike string
		files            []string
		distro, efi      string
	}{
		{"debian", "debian", "", []string{"/usr/lib/ipxe/snponly.efi", "/usr/lib/ipxe/undionly.kpxe"}, "debian", "/usr/lib/ipxe/snponly.efi"},
		{"fedora", "fedora", "", []string{"/usr/share/ipxe/ipxe-snponly-x86_64.efi", "/usr/share/ipxe/undionly.kpxe"}, "fedora", "/usr/share/ipxe/ipxe-snponly-x86_64.efi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.id, tc.idLike, tc.files...)
			l, err := pxecfg.FindIPXE(&pxecfg.SignedOptions{Root: root})
			require.NoError(t, err)
			assert.Equal(t, tc.distro, l.Distro)
			assert.Equal(t, filepath.Join(root, tc.efi), l.EFI.Source)
			assert.Equal(t, "snponly.efi", l.EFI.Name)
			assert.Equal(t, "undionly.kpxe", l.BIOS.Name)
		})
	}
	for _, tc := range []struct{ id, idLike, want string }{
		{"debian", "", "apt-get install ipxe"},
		{"rocky", "rhel centos fedora", "dnf install ipxe-bootimgs-x86"},
	} {
		t.Run("missing "+tc.id, func(t *testing.T) {
			_, err := pxecfg.FindIPXE(&pxecfg.SignedOptions{Root: fakeRoot(t, tc.id, tc.idLike)})
			var missing *pxecfg.MissingError
			require.True(t, errors.As(err, &missing), "error %v", err)
			assert.Equal(t, []string{tc.want}, missing.Commands())
		})
	}
	dir := t.TempDir()
	_, err := pxecfg.FindIPXE(&pxecfg.SignedOptions{Dir: dir})
	assert.EqualError(t, err, "pxecfg: iPXE folder "+dir+" needs snponly.efi (or ipxe.efi) and undionly.kpxe")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("efi"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "undionly.kpxe"), []byte("bios"), 0o644))
	l, err := pxecfg.FindIPXE(&pxecfg.SignedOptions{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "ipxe.efi"), l.EFI.Source)
	out := t.TempDir()
	copied, err := pxecfg.InstallBootFiles(out, l.Files())
	require.NoError(t, err)
	assert.Equal(t, []string{"snponly.efi", "undionly.kpxe"}, copied)
}

// TestFindIPXEInstalled finds this machine's Debian package ipxe and checks that the UEFI
// binary is an x86-64 PE image and the BIOS one a real-mode image, not a PE one.
func TestFindIPXEInstalled(t *testing.T) {
	peertest.File(t, "/usr/lib/ipxe/snponly.efi", "ipxe")
	l, err := pxecfg.FindIPXE(nil)
	require.NoError(t, err)
	assert.Equal(t, "debian", l.Distro)
	pf, err := pe.Open(l.EFI.Source)
	require.NoError(t, err)
	defer pf.Close()
	assert.Equal(t, uint16(pe.IMAGE_FILE_MACHINE_AMD64), pf.Machine)
	b, err := os.ReadFile(l.BIOS.Source)
	require.NoError(t, err)
	assert.Greater(t, len(b), 1024)
	assert.False(t, bytes.HasPrefix(b, []byte("MZ")), "undionly.kpxe is not a PE image")
}
