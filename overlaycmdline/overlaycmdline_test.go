package overlaycmdline_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/overlaycmdline"
)

func TestRootString(t *testing.T) {
	for _, tc := range []struct {
		root   overlaycmdline.Root
		want   string
		device string
	}{
		{overlaycmdline.NBD("192.0.2.1", "root"), "overlay:nbd=192.0.2.1:root", "/dev/nbd0"},
		{overlaycmdline.NBDAddr(netip.MustParseAddr("198.51.100.2"), "x"), "overlay:nbd=198.51.100.2:x", "/dev/nbd0"},
		{overlaycmdline.AoE(0, 1), "overlay:aoe=e0.1", "/dev/etherd/e0.1"},
		{overlaycmdline.AoE(65534, 254), "overlay:aoe=e65534.254", "/dev/etherd/e65534.254"},
		{overlaycmdline.UUID("abcd"), "overlay:UUID=abcd", "/dev/disk/by-uuid/abcd"},
		{overlaycmdline.PARTUUID("ef-01"), "overlay:PARTUUID=ef-01", "/dev/disk/by-partuuid/ef-01"},
		{overlaycmdline.Label("a/b"), "overlay:LABEL=a/b", `/dev/disk/by-label/a\x2fb`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.root.String())
			assert.Equal(t, tc.device, tc.root.Device())
			require.NoError(t, tc.root.Validate())
			back, err := overlaycmdline.ParseRoot(tc.want)
			require.NoError(t, err)
			assert.Equal(t, tc.root, back)
		})
	}
}

func TestRootValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		root overlaycmdline.Root
		want string // substring of the error
	}{
		{"zero", overlaycmdline.Root{}, "root kind Kind(0)"},
		{"port", overlaycmdline.NBD("192.0.2.1:10810", "r"), `NBD host "192.0.2.1:10810" carries port 10810`},
		{"ipv6", overlaycmdline.NBD("fd00::1", "r"), `NBD host "fd00::1" is an IPv6 literal`},
		{"ipv6 bracketed port", overlaycmdline.NBD("[fd00::1]:10809", "r"), "carries port 10809"},
		{"bad hostname", overlaycmdline.NBD("boot_server", "r"), `NBD host "boot_server" is neither`},
		{"label too long", overlaycmdline.NBD("a"+string(make([]byte, 63))+".b", "r"), "outside printable ASCII"},
		{"empty host", overlaycmdline.NBD("", "r"), "empty NBD host"},
		{"empty export", overlaycmdline.NBD("h", ""), "empty NBD export name"},
		{"colon export", overlaycmdline.NBD("h", "a:b"), `NBD export name "a:b" contains ':'; the module takes field 3 of root= split on ':' and would read "a"`},
		{"space export", overlaycmdline.NBD("h", "a b"), "contains whitespace"},
		{"quote export", overlaycmdline.NBD("h", `a"b`), "double quote"},
		{"utf8 export", overlaycmdline.NBD("h", "räume"), "outside printable ASCII"},
		{"shelf", overlaycmdline.AoE(65535, 0), "AoE shelf 65535 above 65534"},
		{"slot", overlaycmdline.AoE(0, 255), "AoE slot 255 above 254"},
		{"empty uuid", overlaycmdline.UUID(""), "empty UUID root"},
		{"label space", overlaycmdline.Label("my root"), `LABEL root "my root" contains whitespace`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.root.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Regexp(t, "^overlaycmdline: ", err.Error())
		})
	}
}

func TestParseRoot(t *testing.T) {
	for _, tc := range []struct {
		in, err string
	}{
		{"/dev/sda2", "not an overlay root"},
		{"overlay:", "names no device"},
		{"overlay:iscsi=x", `no device kind "iscsi"`},
		{"overlay:uuid=x", `no device kind "uuid"`},
		{"overlay:nbd=192.0.2.1", "has no export name"},
		{"overlay:nbd=[fd00::1]:r", "IPv6 literal"},
		{"overlay:aoe=eth0", `AoE target "eth0" is not an AoE device name (it looks like a network interface name`},
		{"overlay:aoe=enp1s0", "network interface name"},
		{"overlay:aoe=e1.x", `has slot "x", not a decimal number`},
		{"overlay:aoe=e01.1", `has shelf "01"`},
		{"overlay:aoe=e65535.1", "shelf 65535 above 65534"},
		{"overlay:aoe=e1.255", "slot 255 above 254"},
		{"overlay:aoe=e+1.2", `shelf "+1"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := overlaycmdline.ParseRoot(tc.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
	_, err := overlaycmdline.ParseRoot("/dev/sda2")
	assert.ErrorIs(t, err, overlaycmdline.ErrNotOverlay)
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     overlaycmdline.Cmdline
	}{
		{
			name: "nbd with everything",
			in:   `BOOT_IMAGE=linux  root=overlay:nbd=192.0.2.1:root rd.driver.pre=nbd console=ttyS0 rd.root.overlay.write=/dev/vdb rd.root.overlay.readonly rd.root.overlay.size=1g rd.kiwi.debug=1 rootflags=noatime quiet`,
			want: overlaycmdline.Cmdline{
				Root:    overlaycmdline.NBD("192.0.2.1", "root"),
				Options: overlaycmdline.Options{Write: "/dev/vdb", ReadOnly: true, Size: "1g", Debug: true, RootFlags: "noatime"},
				Extra:   []string{"BOOT_IMAGE=linux", "console=ttyS0", "quiet"},
			},
		},
		{
			name: "last root wins and quotes",
			in:   "root=/dev/sda1 \"root=overlay:aoe=e3.4\" rd.driver.pre=aoe,e1000 rd.kiwi.debug=off\trd.root.overlay.readonly=no",
			want: overlaycmdline.Cmdline{
				Root:    overlaycmdline.AoE(3, 4),
				Options: overlaycmdline.Options{NoDriverPreload: true},
				Extra:   []string{"rd.driver.pre=aoe,e1000"},
			},
		},
		{
			name: "quoted value",
			in:   `root="overlay:LABEL=root" rd.driver.pre=nbd foo="a b"`,
			want: overlaycmdline.Cmdline{
				Root:  overlaycmdline.Label("root"),
				Extra: []string{"rd.driver.pre=nbd", `foo="a b"`},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := overlaycmdline.Parse(tc.in)
			require.NoError(t, err)
			assert.Equal(t, &tc.want, got)
			again, err := overlaycmdline.Parse(got.String())
			require.NoError(t, err)
			assert.Equal(t, got, again)
		})
	}
}

func TestParseErrors(t *testing.T) {
	_, err := overlaycmdline.Parse("quiet console=ttyS0")
	assert.ErrorIs(t, err, overlaycmdline.ErrNoRoot)
	_, err = overlaycmdline.Parse("root=overlay:nbd=192.0.2.1:r root=/dev/sda2")
	assert.ErrorIs(t, err, overlaycmdline.ErrNotOverlay)
	_, err = overlaycmdline.Parse("root=overlay:UUID=x rd.root.overlay.write=/dev/sdb1")
	assert.ErrorContains(t, err, "ignored for a UUID root")
	_, err = overlaycmdline.Parse("root=overlay:aoe=e0.1 rd.root.overlay.size=lots")
	assert.ErrorContains(t, err, `rd.root.overlay.size="lots" is not a tmpfs size`)
	_, err = overlaycmdline.Parse("root=overlay:aoe=e0.1 rd.root.overlay.size=150%")
	assert.ErrorContains(t, err, "between 1% and 100%")
	_, err = overlaycmdline.Parse(`root=overlay:aoe=e0.1 "rootflags=a b"`)
	assert.ErrorContains(t, err, `rootflags "a b" contains whitespace`)
}

func TestCmdlineString(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    overlaycmdline.Cmdline
		want string
	}{
		{"nbd default preload", overlaycmdline.Cmdline{Root: overlaycmdline.NBD("192.0.2.1", "r")},
			"root=overlay:nbd=192.0.2.1:r rd.driver.pre=nbd"},
		{"aoe all options", overlaycmdline.Cmdline{
			Root:    overlaycmdline.AoE(1, 2),
			Options: overlaycmdline.Options{Write: "/dev/sdb1", ReadOnly: true, Size: "50%", Debug: true, RootFlags: "ro"},
			Extra:   []string{"quiet"}},
			"root=overlay:aoe=e1.2 rd.driver.pre=aoe rd.root.overlay.write=/dev/sdb1 rd.root.overlay.readonly rd.root.overlay.size=50% rootflags=ro rd.kiwi.debug quiet"},
		{"no preload", overlaycmdline.Cmdline{Root: overlaycmdline.AoE(1, 2), Options: overlaycmdline.Options{NoDriverPreload: true}},
			"root=overlay:aoe=e1.2"},
		{"local has no driver", overlaycmdline.Cmdline{Root: overlaycmdline.UUID("u")}, "root=overlay:UUID=u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.c.Validate())
			assert.Equal(t, tc.want, tc.c.String())
		})
	}
	bad := overlaycmdline.Cmdline{Root: overlaycmdline.AoE(1, 2), Extra: []string{"rd.kiwi.debug"}}
	assert.ErrorContains(t, bad.Validate(), `extra argument "rd.kiwi.debug" duplicates`)
}

func TestAppend(t *testing.T) {
	for _, tc := range []struct {
		name, base string
		args       []string
		want       string
	}{
		{"replace kiwi root", "root=overlay:LABEL=x console=ttyS0 quiet",
			[]string{"root=overlay:nbd=192.0.2.1:r", "rd.driver.pre=nbd"},
			"console=ttyS0 quiet root=overlay:nbd=192.0.2.1:r rd.driver.pre=nbd"},
		{"multi keys kept", "console=tty0 rd.driver.pre=e1000 ip=eth0:dhcp",
			[]string{"console=ttyS0,115200", "rd.driver.pre=nbd", "ip=eth0:dhcp"},
			"console=tty0 rd.driver.pre=e1000 console=ttyS0,115200 rd.driver.pre=nbd ip=eth0:dhcp"},
		// KIWI's .append joined with the operator's options (issue 20): the exact duplicate is
		// merged; another console= value stays, after it (the kernel registers ttyS0 once and
		// keeps the first options, 115200).
		{"kiwi append and operator console", "root=UUID=0b1c console=ttyS0,115200 rd.shell=0",
			[]string{"root=overlay:nbd=192.0.2.1:r", "rd.driver.pre=nbd", "console=ttyS0,115200", "console=ttyS0"},
			"rd.shell=0 root=overlay:nbd=192.0.2.1:r rd.driver.pre=nbd console=ttyS0,115200 console=ttyS0"},
		{"flag replaced by value", "quiet rd.kiwi.debug", []string{"rd.kiwi.debug=0"}, "quiet rd.kiwi.debug=0"},
		{"quoting and spacing", `  a="x  y"   b `, []string{"c=d e"}, `a="x  y" b c="d e"`},
		{"empty base", "", []string{"quiet"}, "quiet"},
		{"repeated key in args", "", []string{"a=1", "a=2"}, "a=2"},
		{"unclosed quote stays last", `root=x a="b c`, []string{"root=overlay:aoe=e0.1"}, `root=overlay:aoe=e0.1 a="b c`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, overlaycmdline.Append(tc.base, tc.args...))
		})
	}
}

func TestFieldsAndSplitArg(t *testing.T) {
	assert.Equal(t, []string{`a="b c"`, `"d e"`, "f", `g"h i"j`}, overlaycmdline.Fields("\t a=\"b c\"  \"d e\"\nf g\"h i\"j "))
	for _, tc := range []struct {
		in   string
		want overlaycmdline.Arg
	}{
		{"quiet", overlaycmdline.Arg{Key: "quiet"}},
		{"a=", overlaycmdline.Arg{Key: "a", HasValue: true}},
		{"a=b=c", overlaycmdline.Arg{Key: "a", Value: "b=c", HasValue: true}},
		{`a="b c"`, overlaycmdline.Arg{Key: "a", Value: "b c", HasValue: true}},
		{`"a=b c"`, overlaycmdline.Arg{Key: "a", Value: "b c", HasValue: true}},
		{`"a b"`, overlaycmdline.Arg{Key: "a b"}},
		{`"a="b""`, overlaycmdline.Arg{Key: "a", Value: `b"`, HasValue: true}},
		{`a="`, overlaycmdline.Arg{Key: "a", HasValue: true}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			assert.Equal(t, tc.want, overlaycmdline.SplitArg(tc.in))
		})
	}
}

func BenchmarkParse(b *testing.B) {
	s := "BOOT_IMAGE=boot/linux initrd=boot/initrd root=overlay:nbd=192.0.2.1:leap rd.driver.pre=nbd console=ttyS0,115200 rd.root.overlay.size=2G quiet BOOTIF=01-52-54-00-12-34-56"
	for b.Loop() {
		if _, err := overlaycmdline.Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}
