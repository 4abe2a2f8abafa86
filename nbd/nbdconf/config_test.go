package nbdconf_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/nbd/nbdconf"
)

const configFull = `# nbd-server configuration as an operator writes it
[generic]
	port = 10810
	listenaddr = 192.0.2.1, ::1,nbd.example
	allowlist = true
	certfile = /etc/nbd-server/cert.pem
	keyfile = /etc/nbd-server/key.pem
	cacertfile = /etc/nbd-server/ca.pem
	force_tls = false
	user = nbd
	group = nbd
	max_threads = 8
	splice = 1

[root]
	exportname = /srv/kiwi/root.raw
	readonly = true
	authfile = /etc/nbd-server/allow
	maxconnections = 200
	timeout = 30
	flush = true
	fua = true
	trim = 0
	rotational = false

[scratch]
  # comments are whole lines
	exportname = /srv/scratch\simage.raw
	copyonwrite = true
	cowdir = /var/tmp
	sparse_cow = true
	filesize = 1073741824
	tlsonly = true
	sync = true
`

func parseConfig(t *testing.T, text string) *nbdconf.ConfigFile {
	t.Helper()
	c, err := nbdconf.ParseConfigFile(strings.NewReader(text), "test.conf")
	require.NoError(t, err)
	return c
}

func TestParseConfigFile(t *testing.T) {
	c := parseConfig(t, configFull)
	assert.Empty(t, c.Warnings)
	assert.Equal(t, nbdconf.ConfigGeneric{
		Port:        "10810",
		ListenAddrs: []string{"192.0.2.1", "::1", "nbd.example"},
		AllowList:   true,
		CertFile:    "/etc/nbd-server/cert.pem",
		KeyFile:     "/etc/nbd-server/key.pem",
		CACertFile:  "/etc/nbd-server/ca.pem",
		User:        "nbd",
		Group:       "nbd",
		MaxThreads:  8,
		Splice:      true,
	}, c.Generic)
	require.Len(t, c.Exports, 2)
	assert.Equal(t, nbdconf.ConfigExport{
		Name: "root", File: "test.conf", Line: 15,
		Path:           "/srv/kiwi/root.raw",
		ReadOnly:       true,
		AuthFile:       "/etc/nbd-server/allow",
		MaxConnections: 200,
		IdleTimeout:    30 * time.Second,
		Flush:          true,
		FUA:            true,
	}, c.Exports[0])
	assert.Equal(t, nbdconf.ConfigExport{
		Name: "scratch", File: "test.conf", Line: 26,
		Path:        "/srv/scratch image.raw",
		CopyOnWrite: true,
		CowDir:      "/var/tmp",
		SparseCOW:   true,
		Size:        1 << 30,
		ForceTLS:    true,
		Sync:        true,
	}, c.Exports[1])
	assert.Same(t, &c.Exports[1], c.Export("scratch"))
	assert.Nil(t, c.Export("generic"))
	assert.Equal(t, []string{"192.0.2.1:10810", "[::1]:10810", "nbd.example:10810"}, c.Generic.Addrs())
}

func TestParseConfigFileMinimal(t *testing.T) {
	// The man page's smallest example; CRLF line ends as an editor on another system leaves them.
	c := parseConfig(t, "[generic]\r\n[export]\r\n    exportname = /export/blkdev\r\n")
	assert.Equal(t, nbdconf.ConfigGeneric{}, c.Generic)
	assert.Equal(t, []string{":10809"}, c.Generic.Addrs())
	require.Len(t, c.Exports, 1)
	assert.Equal(t, "export", c.Exports[0].Name)
	assert.Equal(t, "/export/blkdev", c.Exports[0].Path)
	assert.False(t, c.Exports[0].ReadOnly)
}

func TestParseConfigFileValues(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		check       func(t *testing.T, e nbdconf.ConfigExport)
	}{
		{"readonly", "true", func(t *testing.T, e nbdconf.ConfigExport) { assert.True(t, e.ReadOnly) }},
		{"readonly", "1", func(t *testing.T, e nbdconf.ConfigExport) { assert.True(t, e.ReadOnly) }},
		{"readonly", "false  ", func(t *testing.T, e nbdconf.ConfigExport) { assert.False(t, e.ReadOnly) }},
		{"readonly", "0", func(t *testing.T, e nbdconf.ConfigExport) { assert.False(t, e.ReadOnly) }},
		{"maxconnections", "+7 ", func(t *testing.T, e nbdconf.ConfigExport) { assert.Equal(t, 7, e.MaxConnections) }},
		{"timeout", "0", func(t *testing.T, e nbdconf.ConfigExport) { assert.Zero(t, e.IdleTimeout) }},
		{"authfile", `/etc/a\\b\tc `, func(t *testing.T, e nbdconf.ConfigExport) { assert.Equal(t, "/etc/a\\b\tc ", e.AuthFile) }},
		{"force_tls", "true", func(t *testing.T, e nbdconf.ConfigExport) { assert.True(t, e.ForceTLS) }},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			c := parseConfig(t, "[generic]\n[e]\nexportname=/img\n"+tc.name+" = "+tc.value+"\n")
			require.Len(t, c.Exports, 1)
			tc.check(t, c.Exports[0])
		})
	}
}

func TestParseConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		want       string
	}{
		{"no generic", "[e]\nexportname=/img\n", 0, "no [generic] section"},
		{"empty file", "", 0, "no [generic] section"},
		{"key before section", "port=1\n[generic]\n", 1, `key "port" before the first section`},
		{"not a key", "[generic]\nallowlist\n", 2, `line "allowlist" is not a section header`},
		{"empty key", "[generic]\n = 1\n", 2, "is not a section header"},
		{"open header", "[generic]\n[root\n", 2, "lacks its closing ]"},
		{"empty section", "[generic]\n[]\n", 2, "empty section name"},
		{"bracket in name", "[generic]\n[a]b]\n", 2, "holds [, ]"},
		{"second generic", "[generic]\n[generic]\n", 2, "second [generic] section"},
		{"repeated export", "[generic]\n[e]\nexportname=/a\n[e]\nexportname=/b\n", 4, "export section [e] repeats test.conf:2"},
		{"no exportname", "[generic]\n[e]\nreadonly=true\n[f]\nexportname=/f\n", 2, "export [e] has no exportname"},
		{"no exportname at end", "[generic]\n[e]\n", 2, "export [e] has no exportname"},
		{"relative exportname", "[generic]\n[e]\nexportname = img\n", 3, `exportname "img" is not an absolute path`},
		{"yes is no boolean", "[generic]\n[e]\nexportname=/a\nreadonly = yes\n", 4, `readonly value "yes": not true, false, 1 or 0`},
		{"True is no boolean", "[generic]\nallowlist = True\n", 2, `allowlist value "True"`},
		{"comment after value", "[generic]\n[e]\nexportname=/a\nreadonly = true # no\n", 4, `readonly value "true # no"`},
		{"bad integer", "[generic]\n[e]\nexportname=/a\nmaxconnections = x\n", 4, `maxconnections value "x"`},
		{"negative integer", "[generic]\n[e]\nexportname=/a\nmaxconnections = -1\n", 4, "maxconnections value -1 is below 0"},
		{"huge timeout", "[generic]\n[e]\nexportname=/a\ntimeout = 99999999999999\n", 4, "timeout 99999999999999 seconds is too long"},
		{"bad port", "[generic]\nport = 70000\n", 2, `port value "70000" is neither`},
		{"bad listenaddr", "[generic]\nlistenaddr = 192.0.2.1,,::1\n", 2, "has an empty address"},
		{"bad host", "[generic]\nlistenaddr = 1.2.3.4.5:6\n", 2, `"1.2.3.4.5:6" is neither an IP address nor a host name`},
		{"bad escape", "[generic]\ncertfile = /a\\q\n", 2, `invalid escape \q`},
		{"lone backslash", "[generic]\ncertfile = /a\\\n", 2, "lone backslash"},
		{"oldstyle", "[generic]\noldstyle = true\n", 2, "oldstyle negotiation is not supported"},
		{"invalid utf-8", "[generic]\n[e\xff]\n", 2, "not valid UTF-8"},
		{"long line", "[generic]\n" + strings.Repeat("x", 70<<10) + "\n", 2, "line longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := nbdconf.ParseConfigFile(strings.NewReader(tc.text), "test.conf")
			require.Error(t, err)
			assert.Nil(t, c)
			var ce *nbdconf.ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, "test.conf", ce.File)
			assert.Equal(t, tc.line, ce.Line, "line of %v", err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "nbdconf: config test.conf"), err.Error())
		})
	}
}

func TestParseConfigFileWarnings(t *testing.T) {
	c := parseConfig(t, `[generic]
frobnicate = 3
tlsprio = NORMAL
oldstyle = false
[root]
exportname = /srv/%s/root.raw
multifile = false
prerun =
treefiles = true
colour = blue
readonly = true
readonly = false
`)
	// Nothing is lost: the known keys still apply.
	require.Len(t, c.Exports, 1)
	assert.False(t, c.Exports[0].ReadOnly, "the last value wins")
	type w struct {
		line     int
		sec, key string
		reason   string
	}
	var got []w
	for _, x := range c.Warnings {
		got = append(got, w{x.Line, x.Section, x.Key, x.Reason})
		assert.Equal(t, "test.conf", x.File)
		assert.Contains(t, x.String(), "nbdconf: config test.conf:")
		assert.Contains(t, x.String(), `"`+x.Key+`"`)
	}
	assert.Equal(t, []w{
		{2, "generic", "frobnicate", "unknown key; ignored"},
		{3, "generic", "tlsprio", "GnuTLS priority strings do not apply to crypto/tls; ignored"},
		{9, "root", "treefiles", "tree-file exports are not supported; ignored"},
		{10, "root", "colour", "unknown key; ignored"},
		{12, "root", "readonly", "repeats line 11; the last value wins"},
		{6, "root", "exportname", "per-client file names (%s, virtstyle) are not supported; the path is used as written"},
	}, got)
}

func TestReadConfigFileIncludeDir(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "conf.d")
	require.NoError(t, os.Mkdir(inc, 0o755))
	main := filepath.Join(dir, "config")
	write := func(name, text string) {
		require.NoError(t, os.WriteFile(name, []byte(text), 0o644))
	}
	write(main, "[generic]\nincludedir = "+inc+"\n[a]\nexportname = /a\n")
	write(filepath.Join(inc, "20-c.conf"), "[c]\nexportname = /c\nweird = 1\n")
	write(filepath.Join(inc, "10-b.conf"), "[b]\nexportname = /b\n")
	write(filepath.Join(inc, "ignored.txt"), "[x]\nexportname = /x\n")

	c, err := nbdconf.ReadConfigFile(main)
	require.NoError(t, err)
	var names, files []string
	for _, e := range c.Exports {
		names = append(names, e.Name)
		files = append(files, filepath.Base(e.File))
	}
	assert.Equal(t, []string{"a", "b", "c"}, names)
	assert.Equal(t, []string{"config", "10-b.conf", "20-c.conf"}, files)
	require.Len(t, c.Warnings, 1)
	assert.Equal(t, filepath.Join(inc, "20-c.conf"), c.Warnings[0].File)
	assert.Equal(t, "weird", c.Warnings[0].Key)

	t.Run("generic in include", func(t *testing.T) {
		write(filepath.Join(inc, "30-bad.conf"), "[generic]\n")
		defer os.Remove(filepath.Join(inc, "30-bad.conf"))
		_, err := nbdconf.ReadConfigFile(main)
		var ce *nbdconf.ConfigError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, filepath.Join(inc, "30-bad.conf"), ce.File)
		assert.Equal(t, 1, ce.Line)
	})
	t.Run("export repeated across files", func(t *testing.T) {
		write(filepath.Join(inc, "30-dup.conf"), "\n[a]\nexportname = /a2\n")
		defer os.Remove(filepath.Join(inc, "30-dup.conf"))
		_, err := nbdconf.ReadConfigFile(main)
		require.ErrorContains(t, err, "30-dup.conf:2: export section [a] repeats "+main+":3")
	})
	t.Run("missing includedir", func(t *testing.T) {
		write(main, "[generic]\nincludedir = "+filepath.Join(dir, "nope")+"\n")
		_, err := nbdconf.ReadConfigFile(main)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := nbdconf.ReadConfigFile(filepath.Join(dir, "absent"))
		require.ErrorIs(t, err, fs.ErrNotExist)
		assert.Contains(t, err.Error(), "nbdconf: config")
	})
}

func TestParseAuthFile(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"man page example", "127.0.0.1\n192.168.0.0/8\n192.168.1.1\n", []string{"127.0.0.1/32", "192.0.0.0/8", "192.168.1.1/32"}},
		{"empty denies all", "", []string{}},
		{"comments and blanks", "# allow the lab\n\n  198.51.100.0/24   # lab\n\t\n", []string{"198.51.100.0/24"}},
		{"ipv6", "fd00::/8\n2001:db8::1\nfe80::1%eth0\n", []string{"fd00::/8", "2001:db8::1/128", "fe80::1/128"}},
		{"mapped becomes ipv4", "::ffff:192.0.2.7\n::ffff:192.0.2.0/120\n", []string{"192.0.2.7/32", "192.0.2.0/24"}},
		{"duplicates folded", "192.0.2.1\n192.0.2.1/32\n", []string{"192.0.2.1/32"}},
		{"zero length", "0.0.0.0/0\n", []string{"0.0.0.0/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nbdconf.ParseAuthFile(strings.NewReader(tc.text), "allow")
			require.NoError(t, err)
			require.NotNil(t, got)
			strs := []string{}
			for _, p := range got {
				strs = append(strs, p.String())
			}
			assert.Equal(t, tc.want, strs)
		})
	}
}

func TestParseAuthFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		want       string
	}{
		{"host name", "127.0.0.1\nlocalhost\n", 2, `authfile entry "localhost" is not an address or prefix`},
		{"bad length", "192.0.2.0/33\n", 1, `bad prefix length "33" for a 32-bit address`},
		{"empty length", "\n\n192.0.2.0/\n", 3, `bad prefix length ""`},
		{"negative length", "fd00::/-1\n", 1, `bad prefix length "-1" for a 128-bit address`},
		{"two addresses", "192.0.2.1 192.0.2.2\n", 1, `"192.0.2.1 192.0.2.2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := nbdconf.ParseAuthFile(strings.NewReader(tc.text), "allow")
			var ce *nbdconf.ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tc.line, ce.Line)
			assert.Contains(t, err.Error(), "nbdconf: config allow:")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestReadAuthFile(t *testing.T) {
	dir := t.TempDir()
	_, err := nbdconf.ReadAuthFile(filepath.Join(dir, "absent"))
	require.ErrorIs(t, err, fs.ErrNotExist, "a missing file is distinguishable: nbd-server then allows everyone")

	path := filepath.Join(dir, "allow")
	require.NoError(t, os.WriteFile(path, []byte("192.0.2.0/24\n"), 0o644))
	got, err := nbdconf.ReadAuthFile(path)
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, got)
}

func TestAuthAllows(t *testing.T) {
	list := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name  string
		allow []netip.Prefix
		addr  string
		want  bool
	}{
		{"no authfile allows all", nil, "198.51.100.1", true},
		{"empty authfile denies all", []netip.Prefix{}, "192.0.2.1", false},
		{"ipv4 in prefix", list, "192.0.2.200", true},
		{"ipv4 outside", list, "192.0.3.1", false},
		{"mapped ipv4 on an ipv6 socket", list, "::ffff:192.0.2.9", true},
		{"ipv6 with zone", list, "fd12::1%veth0", true},
		{"ipv6 outside", list, "2001:db8::1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, nbdconf.AuthAllows(tc.allow, netip.MustParseAddr(tc.addr)))
		})
	}
}

func FuzzParseConfigFile(f *testing.F) {
	f.Add(configFull)
	f.Add("[generic]\n[e]\nexportname=/a\nreadonly = 1\n")
	f.Add("[generic]\nlistenaddr = ::1, 192.0.2.1\nport = nbd\n[x]\nexportname=/x\\s\\t\n")
	f.Add("[generic]\n[e]\nexportname = rel\n")
	f.Add("[e]\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := nbdconf.ParseConfigFile(strings.NewReader(text), "fuzz.conf")
		if err != nil {
			var ce *nbdconf.ConfigError
			require.ErrorAs(t, err, &ce)
			require.Nil(t, c)
			require.True(t, strings.HasPrefix(err.Error(), "nbdconf: config fuzz.conf"))
			return
		}
		seen := map[string]bool{}
		for _, e := range c.Exports {
			require.NotEmpty(t, e.Name)
			require.NotEqual(t, "generic", e.Name)
			require.False(t, seen[e.Name], "duplicate export %q", e.Name)
			seen[e.Name] = true
			require.True(t, filepath.IsAbs(e.Path), "export path %q", e.Path)
			require.GreaterOrEqual(t, e.MaxConnections, 0)
			require.GreaterOrEqual(t, e.IdleTimeout, time.Duration(0))
			require.GreaterOrEqual(t, e.Size, int64(0))
		}
		require.NotEmpty(t, c.Generic.Addrs())
		for _, w := range c.Warnings {
			require.Positive(t, w.Line)
		}
	})
}

func FuzzParseAuthFile(f *testing.F) {
	f.Add("127.0.0.1\n192.168.0.0/8\n192.168.1.1\n")
	f.Add("# c\n\nfd00::/8 # lab\n::ffff:192.0.2.0/120\n")
	f.Add("fe80::1%eth0/64\n")
	f.Add("1.2.3.4/\n")
	f.Fuzz(func(t *testing.T, text string) {
		list, err := nbdconf.ParseAuthFile(strings.NewReader(text), "allow")
		if err != nil {
			var ce *nbdconf.ConfigError
			require.ErrorAs(t, err, &ce)
			require.Positive(t, ce.Line)
			return
		}
		require.NotNil(t, list)
		for _, p := range list {
			require.True(t, p.IsValid())
			require.Equal(t, p.Masked(), p, "prefix %v keeps host bits", p)
			require.False(t, p.Addr().Is4In6())
			require.True(t, nbdconf.AuthAllows(list, p.Addr()), "%v does not allow its own address", p)
		}
	})
}

func TestConfigErrorUnwrap(t *testing.T) {
	_, err := nbdconf.ParseConfigFile(strings.NewReader("[generic]\nmax_threads = many\n"), "c")
	var ce *nbdconf.ConfigError
	require.ErrorAs(t, err, &ce)
	assert.NotNil(t, errors.Unwrap(ce))
	assert.Equal(t, "nbdconf: config c:2: max_threads value \"many\": strconv.ParseInt: parsing \"many\": invalid syntax", err.Error())
}

func ExampleParseConfigFile() {
	const text = `[generic]
	allowlist = true
[root]
	exportname = /srv/kiwi/root.raw
	readonly = true
	authfile = /etc/nbd-server/allow
	prerun = /usr/local/bin/announce %s
`
	c, err := nbdconf.ParseConfigFile(strings.NewReader(text), "/etc/nbd-server/config")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Generic.Addrs())
	for _, e := range c.Exports {
		fmt.Printf("%s: %s read-only=%v authfile=%s\n", e.Name, e.Path, e.ReadOnly, e.AuthFile)
	}
	for _, w := range c.Warnings {
		fmt.Println(w)
	}
	// Output:
	// [:10809]
	// root: /srv/kiwi/root.raw read-only=true authfile=/etc/nbd-server/allow
	// nbdconf: config /etc/nbd-server/config:7: [root] "prerun": prerun commands are not run; ignored
}

func ExampleParseAuthFile() {
	allow, err := nbdconf.ParseAuthFile(strings.NewReader("# lab clients\n192.0.2.0/24\n2001:db8::7\n"), "allow")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(allow)
	fmt.Println(nbdconf.AuthAllows(allow, netip.MustParseAddr("192.0.2.10")))
	fmt.Println(nbdconf.AuthAllows(allow, netip.MustParseAddr("198.51.100.1")))
	// Output:
	// [192.0.2.0/24 2001:db8::7/128]
	// true
	// false
}
