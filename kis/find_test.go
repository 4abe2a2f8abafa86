package kis_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func write(t *testing.T, dir string, s kistest.Spec) kis.Build {
	t.Helper()
	b, err := kistest.Write(dir, s)
	require.NoError(t, err)
	return b
}

func TestFind(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []kistest.Spec
	}{
		{"plain", []kistest.Spec{{Append: "root=UUID=1234 console=ttyS0"}}},
		{"compressed", []kistest.Spec{{Compressed: true}}},
		{"plain with bundle and lists", []kistest.Spec{{Bundle: true, Packages: true, Append: "root=UUID=1"}}},
		{"bundle only", []kistest.Spec{{BundleOnly: true}}},
		{"compressed bundle only", []kistest.Spec{{BundleOnly: true, Compressed: true}}},
		{"result json", []kistest.Spec{{Bundle: true, Packages: true, Result: true}}},
		{"kiwi-ng result bundle --id", []kistest.Spec{{BundleOnly: true, BundleID: "Build7.1", Packages: true}}},
		{"dotted name", []kistest.Spec{{Name: "my.image-v2.name", Arch: "aarch64"}}},
		{"xz initrd name of kiwi's own initrd", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var want []kis.Build
			for _, s := range tc.specs {
				want = append(want, write(t, dir, s))
			}
			if tc.specs == nil {
				b := write(t, dir, kistest.Spec{})
				xzInitrd := b.Initrd + ".xz"
				require.NoError(t, os.Rename(b.Initrd, xzInitrd))
				b.Initrd = xzInitrd
				want = append(want, b)
			}
			got, err := kis.Find(dir)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestFindSortsVersionsAsNumbers(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []kistest.Spec{
		{Version: "1.15.3"}, {Version: "1.9.0"}, {Version: "1.15.10"}, {Name: "other", Version: "1.15.4", BundleOnly: true},
		{Arch: "aarch64", Version: "1.15.10"},
	} {
		write(t, dir, s)
	}
	builds, err := kis.Find(dir)
	require.NoError(t, err)
	var ids []string
	for _, b := range builds {
		ids = append(ids, b.ID())
	}
	assert.Equal(t, []string{
		"netroot-test.aarch64-1.15.10", "netroot-test.x86_64-1.15.10", "other.x86_64-1.15.4",
		"netroot-test.x86_64-1.15.3", "netroot-test.x86_64-1.9.0",
	}, ids)

	for _, tc := range []struct{ name, want string }{
		{"", "netroot-test.aarch64-1.15.10"},
		{"netroot-test", "netroot-test.aarch64-1.15.10"},
		{"other", "other.x86_64-1.15.4"},
	} {
		t.Run("newest "+tc.name, func(t *testing.T) {
			b, err := kis.Newest(builds, tc.name)
			require.NoError(t, err)
			assert.Equal(t, tc.want, b.ID())
		})
	}
	_, err = kis.Newest(builds, "missing")
	assert.ErrorIs(t, err, kis.ErrNotFound)
	assert.ErrorContains(t, err, `no build of image "missing" among netroot-test.aarch64-1.15.10, `)
	_, err = kis.Newest(nil, "")
	assert.ErrorIs(t, err, kis.ErrNotFound)
}

func TestFindBroken(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    kistest.Spec
		break_  func(t *testing.T, b kis.Build)
		found   []string
		missing []string
		ambig   []string
	}{
		{
			name:   "missing initrd",
			spec:   kistest.Spec{},
			break_: func(t *testing.T, b kis.Build) { require.NoError(t, os.Remove(b.Initrd)) },
			found: []string{"kernel netroot-test.x86_64-1.0.0-6.1.0-13-amd64.kernel", "image netroot-test.x86_64-1.0.0",
				"md5 netroot-test.x86_64-1.0.0.md5"},
			missing: []string{"initrd (netroot-test.x86_64-1.0.0.initrd)",
				"or instead of them all the bundle (netroot-test.x86_64-1.0.0.tar.xz)"},
		},
		{
			name: "only a kernel and an append",
			spec: kistest.Spec{Append: "root=UUID=1"},
			break_: func(t *testing.T, b kis.Build) {
				for _, p := range []string{b.Initrd, b.Image, b.MD5} {
					require.NoError(t, os.Remove(p))
				}
			},
			found: []string{"kernel netroot-test.x86_64-1.0.0-6.1.0-13-amd64.kernel", "append netroot-test.x86_64-1.0.0.append"},
			missing: []string{"initrd (netroot-test.x86_64-1.0.0.initrd)",
				"root image (netroot-test.x86_64-1.0.0 or netroot-test.x86_64-1.0.0.xz)",
				"or instead of them all the bundle (netroot-test.x86_64-1.0.0.tar.xz)"},
		},
		{
			name: "two kernels",
			spec: kistest.Spec{Bundle: true},
			break_: func(t *testing.T, b kis.Build) {
				require.NoError(t, os.WriteFile(filepath.Join(b.Dir, b.ID()+"-6.2.0-1-amd64.kernel"), []byte("k2"), 0o644))
			},
			found: []string{"kernel netroot-test.x86_64-1.0.0-6.1.0-13-amd64.kernel",
				"kernel netroot-test.x86_64-1.0.0-6.2.0-1-amd64.kernel", "initrd netroot-test.x86_64-1.0.0.initrd",
				"image netroot-test.x86_64-1.0.0", "md5 netroot-test.x86_64-1.0.0.md5", "bundle netroot-test.x86_64-1.0.0.tar.xz"},
			ambig: []string{"2 kernels: netroot-test.x86_64-1.0.0-6.1.0-13-amd64.kernel, netroot-test.x86_64-1.0.0-6.2.0-1-amd64.kernel"},
		},
		{
			name: "bundle named in kiwi.result.json is gone",
			spec: kistest.Spec{Bundle: true, Result: true, Packages: true},
			break_: func(t *testing.T, b kis.Build) {
				require.NoError(t, os.Remove(b.Bundle))
				require.NoError(t, os.Remove(b.Initrd))
			},
			found: []string{"kernel netroot-test.x86_64-1.0.0-6.1.0-13-amd64.kernel",
				"image netroot-test.x86_64-1.0.0", "md5 netroot-test.x86_64-1.0.0.md5", "packages netroot-test.x86_64-1.0.0.packages",
				"changes netroot-test.x86_64-1.0.0.changes", "verified netroot-test.x86_64-1.0.0.verified"},
			missing: []string{"bundle netroot-test.x86_64-1.0.0.tar.xz (named in kiwi.result.json)",
				"initrd (netroot-test.x86_64-1.0.0.initrd)",
				"or instead of them all the bundle (netroot-test.x86_64-1.0.0.tar.xz)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			good := write(t, dir, kistest.Spec{Name: "good"})
			b := write(t, dir, tc.spec)
			tc.break_(t, b)

			builds, err := kis.Find(dir)
			assert.Equal(t, []kis.Build{good}, builds, "the usable build is still returned")
			require.Error(t, err)
			var ie *kis.IncompleteError
			require.True(t, errors.As(err, &ie), "%v", err)
			assert.Equal(t, dir, ie.Dir)
			assert.Equal(t, "netroot-test.x86_64-1.0.0", ie.ID)
			assert.Equal(t, tc.found, ie.Found)
			assert.Equal(t, tc.missing, ie.Missing)
			assert.Equal(t, tc.ambig, ie.Ambiguous)
			assert.Contains(t, err.Error(), "kis: build netroot-test.x86_64-1.0.0 in "+dir+" is not usable: found ")
		})
	}
}

func TestFindNothing(t *testing.T) {
	dir := t.TempDir()
	_, err := kis.Find(dir)
	assert.ErrorIs(t, err, kis.ErrNotFound)
	assert.ErrorContains(t, err, "(found nothing)")

	// what other image types leave behind is not a KIS build
	for _, n := range []string{"LimeJeOS.x86_64-1.2.3.raw", "LimeJeOS.x86_64-1.2.3.packages", "kiwi.result", "notes.txt"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "LimeJeOS.x86_64-1.2.3"), 0o755))
	_, err = kis.Find(dir)
	assert.ErrorIs(t, err, kis.ErrNotFound)
	assert.ErrorContains(t, err, "(found LimeJeOS.x86_64-1.2.3, LimeJeOS.x86_64-1.2.3.packages, LimeJeOS.x86_64-1.2.3.raw, kiwi.result, notes.txt)")

	_, err = kis.Find(filepath.Join(dir, "absent"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.ErrorContains(t, err, "kis: ")
}

func TestFindFollowsSymlinks(t *testing.T) {
	src, dir := t.TempDir(), t.TempDir()
	b := write(t, src, kistest.Spec{})
	for _, p := range []string{b.Kernel, b.Initrd, b.Image, b.MD5} {
		require.NoError(t, os.Symlink(p, filepath.Join(dir, filepath.Base(p))))
	}
	got, err := kis.Find(dir)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, filepath.Join(dir, filepath.Base(b.Kernel)), got[0].Kernel)
}

// A kernel version that looks like ARCH-VERSION makes the kernel's file name split wrongly by
// the naming rules alone; kiwi.result.json records the image name and arch, and Find uses them.
func TestFindUsesResultNames(t *testing.T) {
	spec := kistest.Spec{Name: "base", Arch: "aarch64", KernelVersion: "6.4.0-rc1.x86_64-1-default", Bundle: true}

	dir := t.TempDir()
	write(t, dir, spec)
	builds, err := kis.Find(dir)
	var ie *kis.IncompleteError
	require.True(t, errors.As(err, &ie), "without kiwi.result.json the kernel's name splits at x86_64-1: %v", err)
	assert.Equal(t, "base.aarch64-1.0.0-6.4.0-rc1.x86_64-1", ie.ID)
	assert.Equal(t, []string{"kernel base.aarch64-1.0.0-6.4.0-rc1.x86_64-1-default.kernel"}, ie.Found)
	require.Len(t, builds, 1, "the rest of the build is usable through its bundle")
	assert.Empty(t, builds[0].Kernel)

	spec.Result = true
	dir = t.TempDir()
	want := write(t, dir, spec)
	got, err := kis.Find(dir)
	require.NoError(t, err)
	assert.Equal(t, []kis.Build{want}, got)
	assert.Equal(t, "6.4.0-rc1.x86_64-1-default", got[0].KernelVersion)
}

// The result of another image type (here KIWI's oem disk) is not a broken KIS build.
func TestFindOtherImageTypeResult(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"LimeJeOS.x86_64-1.15.3.raw", "LimeJeOS.x86_64-1.15.3.packages"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, kis.ResultFile), []byte(`{
    "disk_image": {"compress": true, "filename": "/b/LimeJeOS.x86_64-1.15.3.raw", "shasum": true, "use_for_bundle": true},
    "image_packages": {"compress": false, "filename": "/b/LimeJeOS.x86_64-1.15.3.packages", "shasum": false, "use_for_bundle": true}
}`), 0o644))
	_, err := kis.Find(dir)
	assert.ErrorIs(t, err, kis.ErrNotFound)
	var ie *kis.IncompleteError
	assert.False(t, errors.As(err, &ie), "%v", err)

	good := write(t, dir, kistest.Spec{Version: "2.0.0"})
	builds, err := kis.Find(dir)
	require.NoError(t, err)
	assert.Equal(t, []kis.Build{good}, builds)
}

func TestFindBadResult(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, kistest.Spec{})
	require.NoError(t, os.WriteFile(filepath.Join(dir, kis.ResultFile), []byte("{"), 0o644))
	_, err := kis.Find(dir)
	assert.ErrorContains(t, err, "kis: kiwi.result.json: ")
	assert.ErrorContains(t, err, "(in "+filepath.Join(dir, kis.ResultFile)+")")
}

func TestParseResult(t *testing.T) {
	data := []byte(`{
    "bundle_format": {"pattern": "%N-%v", "tags": {"A": "x86_64", "N": "LimeJeOS", "M": 1, "m": 15, "p": 3}},
    "image_changes": {"compress": true, "filename": "/build/LimeJeOS.x86_64-1.15.3.changes", "shasum": false, "use_for_bundle": true},
    "kis_archive": {"compress": false, "filename": "/build/LimeJeOS.x86_64-1.15.3.tar.xz", "shasum": true, "use_for_bundle": true},
    "xen_hypervisor": ["/build/LimeJeOS.x86_64-1.15.3-xen.gz", true, false, true],
    "other": {"filename": "/build/something.else"}
}`)
	files, err := kis.ParseResult(data)
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Kind.String()+" "+f.String())
	}
	assert.Equal(t, []string{"changes LimeJeOS.x86_64-1.15.3.changes", "bundle LimeJeOS.x86_64-1.15.3.tar.xz",
		"hypervisor LimeJeOS.x86_64-1.15.3-xen.gz"}, names)

	_, err = kis.ParseResult([]byte(`{"kis_archive": 3}`))
	assert.ErrorContains(t, err, `kis: kiwi.result.json: entry "kis_archive" has no file name`)
}

func FuzzParseResult(f *testing.F) {
	f.Add([]byte(`{"kis_archive": {"filename": "/b/LimeJeOS.x86_64-1.15.3.tar.xz"}}`))
	f.Add([]byte(`{"bundle_format": {"tags": {"N": "a.b", "A": "x"}}, "k": ["/a.b.x-1.2.3.md5", true]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := kis.ParseResult(data)
		if err != nil {
			return
		}
		for _, fn := range files {
			if fn.Kind == kis.KindUnknown || fn.Name == "" || fn.Arch == "" || fn.Version == "" {
				t.Fatalf("ParseResult gave an incomplete name %+v", fn)
			}
		}
	})
}
