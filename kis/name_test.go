package kis_test

import (
	"strings"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		file          string
		name, arch    string
		version       string
		kind          kis.Kind
		kernelVersion string
	}{
		{"LimeJeOS.x86_64-1.15.3", "LimeJeOS", "x86_64", "1.15.3", kis.KindImage, ""},
		{"LimeJeOS.x86_64-1.15.3.xz", "LimeJeOS", "x86_64", "1.15.3", kis.KindCompressedImage, ""},
		{"LimeJeOS.x86_64-1.15.3.md5", "LimeJeOS", "x86_64", "1.15.3", kis.KindChecksum, ""},
		{"LimeJeOS.x86_64-1.15.3.append", "LimeJeOS", "x86_64", "1.15.3", kis.KindAppend, ""},
		{"LimeJeOS.x86_64-1.15.3.initrd", "LimeJeOS", "x86_64", "1.15.3", kis.KindInitrd, ""},
		{"LimeJeOS.x86_64-1.15.3.initrd.xz", "LimeJeOS", "x86_64", "1.15.3", kis.KindInitrd, ""},
		{"LimeJeOS.x86_64-1.15.3.tar.xz", "LimeJeOS", "x86_64", "1.15.3", kis.KindBundle, ""},
		{"LimeJeOS.x86_64-1.15.3.tar", "LimeJeOS", "x86_64", "1.15.3", kis.KindBundle, ""},
		{"LimeJeOS.x86_64-1.15.3.packages", "LimeJeOS", "x86_64", "1.15.3", kis.KindPackages, ""},
		{"LimeJeOS.x86_64-1.15.3.changes", "LimeJeOS", "x86_64", "1.15.3", kis.KindChanges, ""},
		{"LimeJeOS.x86_64-1.15.3.verified", "LimeJeOS", "x86_64", "1.15.3", kis.KindVerified, ""},
		{"LimeJeOS.x86_64-1.15.3-xen.gz", "LimeJeOS", "x86_64", "1.15.3", kis.KindHypervisor, ""},
		{"LimeJeOS.x86_64-1.15.3-6.1.0-13-amd64.kernel", "LimeJeOS", "x86_64", "1.15.3", kis.KindKernel, "6.1.0-13-amd64"},
		{"LimeJeOS.x86_64-1.15.3-5.14.21-150500.55.19-default.kernel", "LimeJeOS", "x86_64", "1.15.3", kis.KindKernel,
			"5.14.21-150500.55.19-default"},
		{"kiwi-test-image-pxe.aarch64-2.0.10-6.4.0-1-default.kernel", "kiwi-test-image-pxe", "aarch64", "2.0.10",
			kis.KindKernel, "6.4.0-1-default"},
		{"my.image.name.ppc64le-1.2.3.md5", "my.image.name", "ppc64le", "1.2.3", kis.KindChecksum, ""},
		{"LimeJeOS.x86_64-1.15.3-Build1.2.tar.xz", "LimeJeOS", "x86_64", "1.15.3", kis.KindBundle, ""},
		{"LimeJeOS.x86_64-1.15.3-Build1.2.packages", "LimeJeOS", "x86_64", "1.15.3", kis.KindPackages, ""},
		// a dot and dash in the name that look like ARCH-VERSION
		{"openSUSE.Leap-15.6.x86_64-1.2.3", "openSUSE.Leap-15.6", "x86_64", "1.2.3", kis.KindImage, ""},
		// an arch KIWI does not know still parses
		{"img.mips64el-1.0.0.initrd", "img", "mips64el", "1.0.0", kis.KindInitrd, ""},
		{"img.ix86-10.0", "img", "ix86", "10.0", kis.KindImage, ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := kis.ParseName(tc.file)
			require.NoError(t, err)
			assert.Equal(t, tc.name, f.Name)
			assert.Equal(t, tc.arch, f.Arch)
			assert.Equal(t, tc.version, f.Version)
			assert.Equal(t, tc.kind, f.Kind)
			assert.Equal(t, tc.kernelVersion, f.KernelVersion)
			assert.Equal(t, tc.file, f.String())
			assert.Equal(t, tc.name+"."+tc.arch+"-"+tc.version, f.ID())
			if strings.Contains(tc.file, "-Build1.2.") {
				assert.Equal(t, "Build1.2", f.BundleID)
			} else {
				assert.Empty(t, f.BundleID)
			}
		})
	}
}

func TestParseNameRejects(t *testing.T) {
	for _, file := range []string{
		"", "kiwi.result", "kiwi.result.json", "LimeJeOS.x86_64", "LimeJeOS.x86_64-", "LimeJeOS-1.15.3",
		".x86_64-1.2.3", "LimeJeOS.x86_64-1.15.3.raw", "LimeJeOS.x86_64-1.15.3.kernel",
		"LimeJeOS.x86_64-1.15.3-.kernel", "LimeJeOS.x86_64-1.15.3.sha256", "LimeJeOS.86-1.2.3",
		"Lime JeOS.x86_64-1.15.3", "LimeJeOS.x86_64-1.15.3.kis-unpacked", "LimeJeOS.x86_64-v1.2",
		"LimeJeOS.x86_64-1.15.3-.tar.xz", "LimeJeOS.x86_64-1.15.3-Build1.2.tar.xz.sha256", "LimeJeOS.x86_64-1.15.3-a b.tar",
	} {
		t.Run(file, func(t *testing.T) {
			_, err := kis.ParseName(file)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "kis: ")
		})
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.15.3", "1.15.10", -1},
		{"1.15.10", "1.15.3", 1},
		{"1.2.3", "1.2.3", 0},
		{"1.02.3", "1.2.3", 0},
		{"2.0.0", "10.0.0", -1},
		{"1.2", "1.2.0", -1},
		{"99999999999999999999.0", "100000000000000000000.0", -1},
		{"1.a", "1.b", -1},
	} {
		t.Run(tc.a+"_vs_"+tc.b, func(t *testing.T) {
			assert.Equal(t, tc.want, kis.CompareVersions(tc.a, tc.b))
			assert.Equal(t, -tc.want, kis.CompareVersions(tc.b, tc.a))
		})
	}
}

func TestKindString(t *testing.T) {
	assert.Equal(t, "kernel", kis.KindKernel.String())
	assert.Equal(t, "compressed image", kis.KindCompressedImage.String())
	assert.Equal(t, "Kind(99)", kis.Kind(99).String())
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{
		"LimeJeOS.x86_64-1.15.3", "LimeJeOS.x86_64-1.15.3-6.1.0-13-amd64.kernel", "a.b.c.x86_64-1.2.3.tar.xz",
		"openSUSE.Leap-15.6.x86_64-1.2.3.initrd.xz", "x.y-1.2.3-xen.gz", "kiwi.result.json",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := kis.ParseName(s)
		if err != nil {
			return
		}
		if n.String() != s {
			t.Fatalf("ParseName(%q).String() = %q", s, n.String())
		}
		if n.Name == "" || n.Arch == "" || n.Version == "" || n.Kind == kis.KindUnknown {
			t.Fatalf("ParseName(%q) = %+v: empty part", s, n)
		}
		if (n.Kind == kis.KindKernel) != (n.KernelVersion != "") {
			t.Fatalf("ParseName(%q) = %+v: kernel version and kind disagree", s, n)
		}
		again, err := kis.ParseName(n.String())
		if err != nil || again != n {
			t.Fatalf("ParseName not stable for %q: %+v then %+v, %v", s, n, again, err)
		}
	})
}
