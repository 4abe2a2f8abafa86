package pxecfg_test

import (
	"bytes"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/pxecfg"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// netrootConfig is the menu netroot writes for a KIS build served over NBD and AoE.
func netrootConfig() *pxecfg.Config {
	nbd := pxecfg.NetbootEntry("leap-nbd", "boot/linux", []string{"boot/initrd"},
		"root=overlay:nbd=192.0.2.1:leap rd.driver.pre=nbd console=ttyS0,115200")
	nbd.MenuLabel = "openSUSE Leap (NBD)"
	aoe := pxecfg.NetbootEntry("leap-aoe", "boot/linux", []string{"boot/initrd", "boot/extra.img"},
		`root=overlay:aoe=e0.1 rd.driver.pre=aoe rd.root.overlay.size=2G "msg=hello world"`)
	aoe.MenuLabel = "openSUSE Leap (AoE) it's here"
	aoe.Help = "Root over ATA over Ethernet.\nNeeds the aoe driver."
	return &pxecfg.Config{
		Serial:  "0 115200",
		UI:      "menu.c32",
		Title:   "netroot",
		Default: "leap-nbd",
		Timeout: 5 * time.Second,
		Entries: []pxecfg.Entry{
			nbd, aoe,
			{Label: "local", MenuLabel: "Local disk", Directives: []pxecfg.Directive{{Keyword: "LOCALBOOT", Args: "0"}}},
		},
	}
}

func parseSite(t *testing.T) *pxecfg.Config {
	t.Helper()
	c, err := pxecfg.ParseFS(os.DirFS("testdata/site"), "pxelinux.cfg/default")
	require.NoError(t, err)
	return c
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		require.NoError(t, os.WriteFile(p, got, 0o644))
	}
	want, err := os.ReadFile(p)
	require.NoError(t, err, "run go test -update to create %s", p)
	assert.Equal(t, string(want), string(got), "golden file %s (refresh with -update)", p)
}

func TestWritersGolden(t *testing.T) {
	writers := map[string]func(io.Writer, *pxecfg.Config) error{
		"pxelinux": pxecfg.WritePXELinux, "grub": pxecfg.WriteGRUB, "ipxe": pxecfg.WriteIPXE,
	}
	configs := map[string]func(*testing.T) *pxecfg.Config{
		"netroot": func(*testing.T) *pxecfg.Config { return netrootConfig() },
		"site":    parseSite,
		"single": func(*testing.T) *pxecfg.Config {
			return &pxecfg.Config{Entries: []pxecfg.Entry{pxecfg.NetbootEntry("kis", "linux", []string{"initrd"}, "root=overlay:aoe=e1.2 rd.driver.pre=aoe")}}
		},
	}
	for cname, mk := range configs {
		for wname, write := range writers {
			t.Run(cname+"/"+wname, func(t *testing.T) {
				var b bytes.Buffer
				require.NoError(t, write(&b, mk(t)))
				golden(t, cname+"."+wname, b.Bytes())
			})
		}
	}
}

func TestParseSite(t *testing.T) {
	c := parseSite(t)
	assert.Equal(t, "0 115200", c.Serial)
	assert.Equal(t, "vesamenu.c32", c.UI)
	assert.Equal(t, "Lab network boot", c.Title)
	assert.Equal(t, "leap-nbd", c.Default)
	assert.False(t, c.Prompt)
	assert.Equal(t, 10*time.Second, c.Timeout)
	assert.Equal(t, "quiet", c.Append, "global APPEND from the included file")
	assert.Equal(t, []pxecfg.Directive{{Keyword: "MENU COLOR", Args: "border 30;44 #40ffffff #a0000000 std"}}, c.Directives)

	var labels []string
	for _, e := range c.Entries {
		labels = append(labels, e.Label)
	}
	assert.Equal(t, []string{"local", "memtest", "rescue", "leap-nbd", "leap-aoe"}, labels, "entries in file order through two INCLUDE levels")

	local, _ := c.Lookup("local")
	assert.Equal(t, "Boot from ^local disk", local.MenuLabel)
	assert.Equal(t, []pxecfg.Directive{{Keyword: "LOCALBOOT", Args: "0"}}, local.Directives)
	assert.Equal(t, "quiet", c.EffectiveAppend(local), "label without APPEND inherits the global one")

	memtest, _ := c.Lookup("memtest")
	assert.True(t, memtest.NoGlobalAppend)
	assert.Equal(t, "", c.EffectiveAppend(memtest), "APPEND - drops the global APPEND")
	assert.Equal(t, "KERNEL", memtest.KernelKeyword)

	rescue, _ := c.Lookup("rescue")
	assert.Equal(t, `initrd=boot/rescue/initrd rescue=1 "quoted arg=1"`, c.EffectiveAppend(rescue), "label APPEND replaces the global one")
	assert.Equal(t, []pxecfg.Directive{{Keyword: "MENU HIDE"}}, rescue.Directives)

	nbd, _ := c.Lookup("leap-nbd")
	assert.True(t, nbd.MenuDefault)
	assert.Equal(t, "KERNEL", nbd.KernelKeyword, "lower-case kernel keyword recorded upper-case")
	assert.Equal(t, "boot/leap/linux", nbd.Kernel)
	assert.Equal(t, pxecfg.IPAppendBootIF, nbd.IPAppend)
	assert.Equal(t, "Boots the read-only Leap image over NBD with a RAM overlay.", strings.TrimSpace(nbd.Help))

	aoe, _ := c.Lookup("leap-aoe")
	assert.Equal(t, []string{"boot/leap/initrd", "boot/leap/extra.img"}, aoe.Initrds)
	assert.Equal(t, "", aoe.KernelKeyword, "LINUX is the default keyword")
}

// TestRoundTrip reads real configurations, writes them, and reads them back unchanged; it also
// adds an entry to the site menu, as a tool would, without losing any.
func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"default", "01-52-54-00-12-34-56", "C0000264"} {
		t.Run(name, func(t *testing.T) {
			c, err := pxecfg.ParseFS(os.DirFS("testdata/site"), "pxelinux.cfg/"+name)
			require.NoError(t, err)
			var b bytes.Buffer
			require.NoError(t, pxecfg.WritePXELinux(&b, c))
			again, err := pxecfg.Parse(&b)
			require.NoError(t, err)
			assert.Equal(t, c, again)
		})
	}
	t.Run("add entry", func(t *testing.T) {
		c := parseSite(t)
		n := len(c.Entries)
		c.Add(pxecfg.NetbootEntry("new", "boot/new/linux", []string{"boot/new/initrd"}, "root=overlay:aoe=e0.2"))
		c.Add(pxecfg.Entry{Label: "local", MenuLabel: "Local", Directives: []pxecfg.Directive{{Keyword: "LOCALBOOT", Args: "-1"}}})
		var b bytes.Buffer
		require.NoError(t, pxecfg.WritePXELinux(&b, c))
		again, err := pxecfg.Parse(&b)
		require.NoError(t, err)
		assert.Len(t, again.Entries, n+1)
		assert.Equal(t, c, again)
		local, _ := again.Lookup("local")
		assert.Equal(t, "Local", local.MenuLabel, "Add replaces in place")
	})
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"include without fs", "INCLUDE other.cfg", "INCLUDE needs ParseFS"},
		{"timeout", "TIMEOUT soon", `config:1: TIMEOUT "soon" is not a number`},
		{"timeout range", "TIMEOUT 40000", "up to 35996"},
		{"ipappend", "LABEL a\n IPAPPEND x", `config:2: IPAPPEND "x" is not a number`},
		{"text", "LABEL a\nTEXT HELP\nno end", "TEXT HELP without ENDTEXT"},
		{"label", "LABEL", "LABEL without a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pxecfg.Parse(strings.NewReader(tc.in))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := pxecfg.Parse(strings.NewReader("include x"))
	assert.ErrorIs(t, err, pxecfg.ErrInclude)
}

func TestIncludeDepth(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) { require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644)) }
	// A file that includes itself recurses until the limit.
	write("loop.cfg", "LABEL x\n LINUX k\nINCLUDE loop.cfg\n")
	_, err := pxecfg.ParseFS(os.DirFS(dir), "loop.cfg")
	assert.ErrorContains(t, err, "nested deeper than 16 levels")
	// Exactly 16 levels below the top file are fine.
	for i := 0; i < 16; i++ {
		write("f"+string(rune('a'+i))+".cfg", "INCLUDE /f"+string(rune('a'+i+1))+".cfg\n")
	}
	write("fq.cfg", "LABEL deep\n LINUX k\n")
	c, err := pxecfg.ParseFS(os.DirFS(dir), "fa.cfg")
	require.NoError(t, err)
	assert.Equal(t, "deep", c.Entries[0].Label)
	_, err = pxecfg.ParseFS(os.DirFS(dir), "missing.cfg")
	assert.ErrorContains(t, err, "missing.cfg")
}

func TestValidate(t *testing.T) {
	ok := func() *pxecfg.Config { return netrootConfig() }
	for _, tc := range []struct {
		name   string
		modify func(c *pxecfg.Config)
		want   string
	}{
		{"newline in append", func(c *pxecfg.Config) { c.Entries[0].Append = "a\nLABEL evil" }, `label leap-nbd APPEND "a\nLABEL evil" contains a line break`},
		{"space in label", func(c *pxecfg.Config) { c.Entries[2].Label = "two words" }, `label "two words" contains whitespace`},
		{"trailing space", func(c *pxecfg.Config) { c.Title = "x " }, "trailing whitespace"},
		{"kernel space", func(c *pxecfg.Config) { c.Entries[0].Kernel = "boot/linux quiet" }, `kernel "boot/linux quiet" contains whitespace`},
		{"long file name", func(c *pxecfg.Config) { c.Entries[0].Initrds = []string{strings.Repeat("i", 256)} }, "is 256 bytes, pxelinux takes at most 255"},
		{"comma initrd", func(c *pxecfg.Config) { c.Entries[0].Initrds = []string{"a,b"} }, `initrd "a,b" contains ','`},
		{"cmdline budget", func(c *pxecfg.Config) { c.Entries[0].Append = strings.Repeat("x", 2000) }, "kernel command line of up to 2069 bytes (with what pxelinux adds) exceeds 2047"},
		{"serial port", func(c *pxecfg.Config) { c.Serial = "ttyS0 115200" }, `SERIAL "ttyS0 115200": "ttyS0" is not a number`},
		{"serial range", func(c *pxecfg.Config) { c.Serial = "10 115200" }, "port 10 is neither 0-3"},
		{"timeout unit", func(c *pxecfg.Config) { c.Timeout = 150 * time.Millisecond }, "not a multiple of 100ms"},
		{"timeout max", func(c *pxecfg.Config) { c.Timeout = 2 * time.Hour }, "outside 0..59m59.6s"},
		{"default", func(c *pxecfg.Config) { c.Default = "leap" }, `DEFAULT "leap" names no label`},
		{"append dash", func(c *pxecfg.Config) { c.Entries[0].Append = "-" }, "NoGlobalAppend"},
		{"ipappend bits", func(c *pxecfg.Config) { c.Entries[0].IPAppend = 4 }, "IPAPPEND 4 has bits"},
		{"help endtext", func(c *pxecfg.Config) { c.Entries[1].Help = "a\n endtext " }, "would end or break"},
		{"structural directive", func(c *pxecfg.Config) {
			c.Directives = []pxecfg.Directive{{Keyword: "INCLUDE", Args: "x"}}
		}, "directive INCLUDE cannot be kept verbatim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			require.NoError(t, c.Validate())
			tc.modify(c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Regexp(t, "^pxecfg: ", err.Error())
			assert.Error(t, pxecfg.WritePXELinux(io.Discard, c), "writer validates")
		})
	}
	// The budget counts BOOT_IMAGE=, initrd= and the IPAPPEND strings: 2047 bytes fit, 2048 do not.
	c := &pxecfg.Config{Entries: []pxecfg.Entry{pxecfg.NetbootEntry("a", "k", []string{"i"}, "")}}
	base := len(c.Cmdline(&c.Entries[0]))
	assert.Equal(t, "BOOT_IMAGE=k initrd=i BOOTIF=01-ff-ff-ff-ff-ff-ff", c.Cmdline(&c.Entries[0]))
	c.Entries[0].Append = strings.Repeat("y", pxecfg.MaxCmdline-1-base-1)
	require.NoError(t, c.Validate())
	c.Entries[0].Append += "y"
	require.Error(t, c.Validate())
}

func TestConfigNames(t *testing.T) {
	mac := net.HardwareAddr{0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd}
	got := pxecfg.ConfigNames("B8945908-D6A6-41A9-611D-74A6AB80B83D", mac, netip.MustParseAddr("192.0.2.91"))
	assert.Equal(t, []string{
		"pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d",
		"pxelinux.cfg/01-88-99-aa-bb-cc-dd",
		"pxelinux.cfg/C000025B", "pxelinux.cfg/C000025", "pxelinux.cfg/C00002", "pxelinux.cfg/C0000",
		"pxelinux.cfg/C000", "pxelinux.cfg/C00", "pxelinux.cfg/C0", "pxelinux.cfg/C",
		"pxelinux.cfg/default",
	}, got)
	assert.Equal(t, []string{"pxelinux.cfg/default"}, pxecfg.ConfigNames("", nil, netip.Addr{}))
	assert.Equal(t, []string{"pxelinux.cfg/default"}, pxecfg.ConfigNames("", nil, netip.MustParseAddr("fd00::1")), "pxelinux names no IPv6 files")
	assert.Equal(t, "pxelinux.cfg/C6336401", pxecfg.ConfigNames("", nil, netip.MustParseAddr("::ffff:198.51.100.1"))[0])
}

func TestClientConfigName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client pxecfg.Client
		want   string
		err    string
	}{
		{"mac", pxecfg.Client{MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}}, "pxelinux.cfg/01-52-54-00-12-34-56", ""},
		{"uuid wins", pxecfg.Client{UUID: "b8945908-d6a6-41a9-611d-74a6ab80b83d", MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}, "pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d", ""},
		{"ip", pxecfg.Client{IP: netip.MustParseAddr("192.0.2.100")}, "pxelinux.cfg/C0000264", ""},
		{"subnet", pxecfg.Client{IP: netip.MustParseAddr("198.51.100.0"), IPPrefix: 24}, "pxelinux.cfg/C63364", ""},
		{"bad prefix", pxecfg.Client{IP: netip.MustParseAddr("198.51.100.0"), IPPrefix: 23}, "", "prefix /23 is not a multiple of 4"},
		{"host bits", pxecfg.Client{IP: netip.MustParseAddr("198.51.100.1"), IPPrefix: 24}, "", "host bits set"},
		{"ipv6", pxecfg.Client{IP: netip.MustParseAddr("fd00::1")}, "", "not IPv4"},
		{"bad uuid", pxecfg.Client{UUID: "../../etc/passwd"}, "", `UUID "../../etc/passwd" is not 36 characters`},
		{"bad mac", pxecfg.Client{MAC: net.HardwareAddr{1, 2}}, "", "neither 6 nor 20 bytes"},
		{"empty", pxecfg.Client{}, "", "has no UUID, MAC or IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.client.ConfigName()
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestGRUBQuote(t *testing.T) {
	for in, want := range map[string]string{
		"root=overlay:nbd=192.0.2.1:x": "root=overlay:nbd=192.0.2.1:x",
		"a b":                          "'a b'",
		"it's":                         `'it'\''s'`,
		"${x}":                         "'${x}'",
		"":                             "''",
		"a;b":                          "'a;b'",
	} {
		assert.Equal(t, want, pxecfg.GRUBQuote(in), in)
	}
}

func TestLoaderSpecificErrors(t *testing.T) {
	c := netrootConfig()
	c.Entries[0].Append = `x=it's`
	assert.ErrorContains(t, pxecfg.WriteGRUB(io.Discard, c), `kernel argument "x=it's" contains a quote or backslash`)
	c.Entries[0].Append = "x=${net0/mac}"
	assert.ErrorContains(t, pxecfg.WriteIPXE(io.Discard, c), `contains ${…}, which iPXE expands`)
	c.Entries[0].Append = "a && b"
	assert.ErrorContains(t, pxecfg.WriteIPXE(io.Discard, c), "comment or command separator")
	c.Entries[0].Append = "#x"
	assert.ErrorContains(t, pxecfg.WriteIPXE(io.Discard, c), "comment or command separator")
	c = netrootConfig()
	c.Entries[0].KernelKeyword = "COM32"
	assert.ErrorContains(t, pxecfg.WriteGRUB(io.Discard, c), "uses COM32, which only pxelinux runs")
	assert.ErrorContains(t, pxecfg.WriteIPXE(io.Discard, c), "uses COM32, which only pxelinux runs")
	assert.ErrorContains(t, pxecfg.WriteIPXE(io.Discard, &pxecfg.Config{}), "no entry to boot")
}

func TestWriteDir(t *testing.T) {
	root := t.TempDir()
	c := netrootConfig()
	written, err := pxecfg.WriteDir(root, c, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"pxelinux.cfg/default", "grub/grub.cfg", "boot.ipxe"}, written)
	for _, name := range written {
		fi, err := os.Stat(filepath.Join(root, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	}
	back, err := pxecfg.ParseFS(os.DirFS(root), "pxelinux.cfg/default")
	require.NoError(t, err)
	assert.Equal(t, c, back)

	clients := []pxecfg.Client{
		{MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}},
		{IP: netip.MustParseAddr("192.0.2.0"), IPPrefix: 24},
	}
	written, err = pxecfg.WriteDir(root, c, &pxecfg.DirOptions{Clients: clients})
	require.NoError(t, err)
	assert.Equal(t, []string{"pxelinux.cfg/01-52-54-00-12-34-56", "pxelinux.cfg/C00002"}, written)

	_, err = pxecfg.WriteDir(root, c, &pxecfg.DirOptions{Clients: clients, Formats: pxecfg.FormatAll})
	assert.ErrorContains(t, err, "per-client files are pxelinux only")

	// An invalid config writes nothing and leaves the old files in place.
	before, err := os.ReadFile(filepath.Join(root, "pxelinux.cfg/default"))
	require.NoError(t, err)
	bad := netrootConfig()
	bad.Entries[0].Append = "x\ny"
	_, err = pxecfg.WriteDir(root, bad, nil)
	require.Error(t, err)
	after, err := os.ReadFile(filepath.Join(root, "pxelinux.cfg/default"))
	require.NoError(t, err)
	assert.Equal(t, before, after)

	_, err = pxecfg.WriteDir(root, c, &pxecfg.DirOptions{Formats: pxecfg.FormatIPXE, IPXEScript: "../escape.ipxe"})
	assert.ErrorContains(t, err, "leaves the root")

	// No temporary files are left behind.
	require.NoError(t, filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		require.NoError(t, err)
		assert.NotContains(t, d.Name(), ".tmp-", p)
		return nil
	}))
}

// TestWriteDirConcurrentReaders checks that a reader never sees a partly written file while the
// config is rewritten.
func TestWriteDirConcurrentReaders(t *testing.T) {
	root := t.TempDir()
	small := netrootConfig()
	big := netrootConfig()
	for i := 0; i < 200; i++ {
		big.Entries = append(big.Entries, pxecfg.NetbootEntry("e"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)), "k", nil, "quiet"))
	}
	var want [2][]byte
	for i, c := range []*pxecfg.Config{small, big} {
		var b bytes.Buffer
		require.NoError(t, pxecfg.WritePXELinux(&b, c))
		want[i] = b.Bytes()
	}
	_, err := pxecfg.WriteDir(root, small, &pxecfg.DirOptions{Formats: pxecfg.FormatPXELinux})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			c := small
			if i%2 == 0 {
				c = big
			}
			_, err := pxecfg.WriteDir(root, c, &pxecfg.DirOptions{Formats: pxecfg.FormatPXELinux})
			assert.NoError(t, err)
		}
	}()
	deadline := time.After(20 * time.Second)
	for reads := 0; ; reads++ {
		select {
		case <-done:
			return
		case <-deadline:
			t.Fatal("writer did not finish")
		default:
		}
		got, err := os.ReadFile(filepath.Join(root, "pxelinux.cfg/default"))
		require.NoError(t, err)
		if !bytes.Equal(got, want[0]) && !bytes.Equal(got, want[1]) {
			t.Fatalf("read %d: a partly written file of %d bytes", reads, len(got))
		}
	}
}

func BenchmarkParseFS(b *testing.B) {
	fsys := os.DirFS("testdata/site")
	for b.Loop() {
		if _, err := pxecfg.ParseFS(fsys, "pxelinux.cfg/default"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWritePXELinux(b *testing.B) {
	c := netrootConfig()
	for b.Loop() {
		if err := pxecfg.WritePXELinux(io.Discard, c); err != nil {
			b.Fatal(err)
		}
	}
}
