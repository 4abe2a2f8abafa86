package bootserver_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/bootserver"
)

func TestParseBuildID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bootserver.BuildID
		err  bool
	}{
		{"leap-diskless.x86_64-1.15.3", bootserver.BuildID{Name: "leap-diskless", Arch: "x86_64", Version: "1.15.3"}, false},
		{"my.image.aarch64-2.0.1", bootserver.BuildID{Name: "my.image", Arch: "aarch64", Version: "2.0.1"}, false},
		{"leap-diskless", bootserver.BuildID{}, true},
		{"leap.x86_64-1.0.0.kernel", bootserver.BuildID{}, true},
		{"", bootserver.BuildID{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			id, err := bootserver.ParseBuildID(tc.in)
			if tc.err {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.in)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, id)
			assert.Equal(t, tc.in, id.String())
		})
	}
}

func TestKIWIArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "ix86", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"} {
		assert.Equal(t, want, bootserver.KIWIArch(goarch), goarch)
	}
}

func infos(ids ...string) []bootserver.BuildInfo {
	var out []bootserver.BuildInfo
	for _, s := range ids {
		id, err := bootserver.ParseBuildID(s)
		if err != nil {
			panic(err)
		}
		out = append(out, bootserver.BuildInfo{ID: id})
	}
	return out
}

func TestChoose(t *testing.T) {
	all := infos("leap.x86_64-1.9.0", "leap.x86_64-1.10.0", "leap.aarch64-1.11.0", "tw.x86_64-2.0.0", "tw.aarch64-2.0.0")
	for _, tc := range []struct {
		name        string
		infos       []bootserver.BuildInfo
		image, arch string
		want        string
		err         []string
	}{
		{"newest of the name, numerically", all, "leap", "x86_64", "leap.x86_64-1.10.0", nil},
		{"never across architectures", all, "leap", "aarch64", "leap.aarch64-1.11.0", nil},
		{"build ID pins", all, "leap.x86_64-1.9.0", "x86_64", "leap.x86_64-1.9.0", nil},
		{"build ID of another arch is taken as asked", all, "tw.aarch64-2.0.0", "x86_64", "tw.aarch64-2.0.0", nil},
		{"only image of the arch", infos("leap.x86_64-1.0.0", "tw.aarch64-2.0.0"), "", "x86_64", "leap.x86_64-1.0.0", nil},
		{"several names refused and listed", all, "", "x86_64", "", []string{"several images", "leap, tw"}},
		{"no build for the arch", all, "", "s390x", "", []string{"no build for architecture s390x", "leap.x86_64-1.10.0"}},
		{"unknown name", all, "sles", "x86_64", "", []string{`no build of image "sles"`}},
		{"unknown ID", all, "leap.x86_64-3.0.0", "x86_64", "", []string{"build leap.x86_64-3.0.0 not found"}},
		{"no builds", nil, "", "x86_64", "", []string{"none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bootserver.Choose(tc.infos, tc.image, tc.arch)
			if tc.err != nil {
				require.Error(t, err)
				for _, s := range tc.err {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.ID.String())
		})
	}
}

func TestParseMachines(t *testing.T) {
	ms, err := bootserver.ParseMachines([]byte(`
[[machine]]
mac = "52:54:00:12:34:56"
image = "leap"
append = "console=ttyS1"
name = "lab-1"
loader = "ipxe"

[[machine]]
mac = "52-54-00"
image = "tw.x86_64-2.0.0"
`))
	require.NoError(t, err)
	require.Len(t, ms, 2)
	assert.Equal(t, net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}, ms[0].MAC)
	assert.False(t, ms[0].Prefix())
	assert.Equal(t, "console=ttyS1", ms[0].Append)
	assert.Equal(t, "ipxe", ms[0].Loader)
	assert.True(t, ms[1].Prefix())
	assert.True(t, ms[1].Matches(net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}))
	assert.False(t, ms[1].Matches(net.HardwareAddr{0x52, 0x55, 0, 1, 2, 3}))

	for _, tc := range []struct{ name, in, want string }{
		{"bad hex", "[[machine]]\nmac = \"52:zz\"\n", `"zz" is not a hex byte`},
		{"too long", "[[machine]]\nmac = \"1:2:3:4:5:6:7\"\n", "first 1 to 5 bytes"},
		{"duplicate", "[[machine]]\nmac = \"52:54:00\"\n[[machine]]\nmac = \"52-54-00\"\n", "machines 1 and 2 both have MAC 52:54:00"},
		{"unknown key", "[[machine]]\nmac = \"52:54:00\"\nimg = \"x\"\n", `unknown setting "machine.img"`},
		{"not toml", "[[machine", "machines:"},
		{"bad loader", "[[machine]]\nmac = \"52:54:00\"\nloader = \"grub\"\n", `machines: machine 1 (52:54:00): loader "grub": want auto, pxelinux, shim, ipxe or none`},
		{"loader not a string", "[[machine]]\nmac = \"52:54:00\"\nloader = 3\n", "loader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bootserver.ParseMachines([]byte(tc.in))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// FuzzParseMachines checks that a machines file either parses into valid machines or fails
// with a bootserver error, never panicking.
func FuzzParseMachines(f *testing.F) {
	f.Add("[[machine]]\nmac = \"52:54:00:12:34:56\"\nimage = \"leap\"\nappend = \"console=ttyS1\"\n")
	f.Add("[[machine]]\nmac = \"52-54-00\"\nloader = \"ipxe\"\n[[machine]]\nmac = \"aa\"\n")
	f.Add("[[machine]]\nmac = \"\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := bootserver.ParseMachines([]byte(s))
		if err != nil {
			assert.Regexp(t, "^bootserver: machines", err.Error())
			return
		}
		for _, m := range ms {
			assert.True(t, len(m.MAC) >= 1 && len(m.MAC) <= 6, "%v", m.MAC)
			assert.Equal(t, len(m.MAC) < 6, m.Prefix())
		}
	})
}
