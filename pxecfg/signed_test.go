package pxecfg_test

import (
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

// fakeRoot makes a file system root holding the given files and an os-release naming id.
func fakeRoot(t *testing.T, id, idLike string, files ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(f), 0o644))
	}
	rel := "ID=" + id + "\n"
	if idLike != "" {
		rel += `ID_LIKE="` + idLike + `"` + "\n"
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(rel), 0o644))
	return root
}

func TestFindSignedLoader(t *testing.T) {
	for _, tc := range []struct {
		name, arch, id, idLike string
		files                  []string
		distro, shim, grub     string
		cfg                    string
	}{
		{"debian x64", "x64", "debian", "", []string{"/usr/lib/shim/shimx64.efi.signed", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"},
			"debian", "/usr/lib/shim/shimx64.efi.signed", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub/grub.cfg"},
		{"debian arm64", "aa64", "ubuntu", "debian", []string{"/usr/lib/shim/shimaa64.efi.signed", "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed"},
			"debian", "/usr/lib/shim/shimaa64.efi.signed", "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed", "grub/grub.cfg"},
		{"suse", "x64", "opensuse-leap", "suse opensuse", []string{"/usr/share/efi/x86_64/shim.efi", "/usr/share/efi/x86_64/grub.efi"},
			"suse", "/usr/share/efi/x86_64/shim.efi", "/usr/share/efi/x86_64/grub.efi", ""},
		{"suse older grub", "x64", "sles", "suse", []string{"/usr/share/efi/x86_64/shim.efi", "/usr/share/grub2/x86_64-efi/grub.efi"},
			"suse", "/usr/share/efi/x86_64/shim.efi", "/usr/share/grub2/x86_64-efi/grub.efi", ""},
		{"rhel", "x64", "rhel", "fedora", []string{"/boot/efi/EFI/redhat/shimx64.efi", "/boot/efi/EFI/redhat/grubx64.efi"},
			"rhel", "/boot/efi/EFI/redhat/shimx64.efi", "/boot/efi/EFI/redhat/grubx64.efi", ""},
		{"fedora arm64", "aa64", "fedora", "", []string{"/boot/efi/EFI/fedora/shimaa64.efi", "/boot/efi/EFI/fedora/grubaa64.efi"},
			"fedora", "/boot/efi/EFI/fedora/shimaa64.efi", "/boot/efi/EFI/fedora/grubaa64.efi", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.id, tc.idLike, tc.files...)
			l, err := pxecfg.FindSignedLoader(tc.arch, &pxecfg.SignedOptions{Root: root})
			require.NoError(t, err)
			assert.Equal(t, tc.distro, l.Distro)
			assert.Equal(t, filepath.Join(root, tc.shim), l.Shim.Source)
			assert.Equal(t, filepath.Join(root, tc.grub), l.GRUB.Source)
			assert.Equal(t, "boot"+tc.arch+".efi", l.Shim.Name)
			assert.Equal(t, "grub"+tc.arch+".efi", l.GRUB.Name)
			assert.Equal(t, tc.cfg, l.GRUBConfig)
		})
	}
}

func TestFindSignedLoaderMissing(t *testing.T) {
	for _, tc := range []struct {
		id, idLike, arch string
		want             string
	}{
		{"debian", "", "x64", "apt-get install shim-signed grub-efi-amd64-signed"},
		{"ubuntu", "debian", "aa64", "apt-get install shim-signed grub-efi-arm64-signed"},
		{"opensuse-tumbleweed", "opensuse suse", "x64", "zypper install shim grub2-x86_64-efi"},
		{"fedora", "", "x64", "dnf install shim-x64 grub2-efi-x64"},
		{"rocky", "rhel centos fedora", "aa64", "dnf install shim-aa64 grub2-efi-aa64"},
		{"arch", "", "x64", "apt-get install shim-signed grub-efi-amd64-signed"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			root := fakeRoot(t, tc.id, tc.idLike)
			_, err := pxecfg.FindSignedLoader(tc.arch, &pxecfg.SignedOptions{Root: root})
			var missing *pxecfg.MissingError
			require.True(t, errors.As(err, &missing), "error %v", err)
			assert.Len(t, missing.Files, 2)
			assert.Equal(t, []string{tc.want}, missing.Commands())
			assert.Contains(t, err.Error(), "install with: "+tc.want)
		})
	}
	_, err := pxecfg.FindSignedLoader("ia32", nil)
	assert.EqualError(t, err, `pxecfg: unknown UEFI architecture "ia32" (want x64 or aa64)`)
}

func TestFindSignedLoaderDir(t *testing.T) {
	dir := t.TempDir()
	_, err := pxecfg.FindSignedLoader("x64", &pxecfg.SignedOptions{Dir: dir})
	assert.ErrorContains(t, err, "has no shim (one of shimx64.efi.signed, shimx64.efi, shim.efi, bootx64.efi) and no GRUB (one of grubnetx64.efi.signed")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "shim.efi"), []byte("shim"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "grubnetx64.efi"), []byte("grub"), 0o644))
	l, err := pxecfg.FindSignedLoader("x64", &pxecfg.SignedOptions{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "shim.efi"), l.Shim.Source)
	assert.Equal(t, filepath.Join(dir, "grubnetx64.efi"), l.GRUB.Source)
	assert.Equal(t, "grub/grub.cfg", l.GRUBConfig)

	out := t.TempDir()
	copied, err := pxecfg.InstallBootFiles(out, l.Files())
	require.NoError(t, err)
	assert.Equal(t, []string{"bootx64.efi", "grubx64.efi"}, copied)
}

// TestFindSignedLoaderInstalled finds this machine's Debian packages shim-signed and
// grub-efi-amd64-signed, and checks that the files are PE images (signed ones carry a
// certificate table).
func TestFindSignedLoaderInstalled(t *testing.T) {
	peertest.File(t, "/usr/lib/shim/shimx64.efi.signed", "shim-signed")
	peertest.File(t, "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub-efi-amd64-signed")
	l, err := pxecfg.FindSignedLoader("x64", nil)
	require.NoError(t, err)
	assert.Equal(t, "debian", l.Distro)
	for _, f := range l.Files() {
		pf, err := pe.Open(f.Source)
		require.NoError(t, err)
		oh, ok := pf.OptionalHeader.(*pe.OptionalHeader64)
		require.True(t, ok, "%s is not a 64-bit PE image", f.Source)
		sec := oh.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
		assert.NotZero(t, sec.Size, "%s has no Authenticode signature", f.Source)
		pf.Close()
	}
}
