package tftp_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/tftp"
)

var v4, v6 = netip.MustParseAddr("192.0.2.169"), netip.MustParseAddr("2001:db8::1")

func TestMapRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  string
		in     string
		op     tftp.Opcode
		client netip.Addr
		want   string
		refuse string // the message of a refusal, "-" for one without a message
	}{
		{"no rules", "", "a/b", tftp.OpRRQ, v4, "a/b", ""},
		{"replace", `r ^boot/ images/`, "boot/linux", tftp.OpRRQ, v4, "images/linux", ""},
		{"first match only", `r a b`, "aaa", tftp.OpRRQ, v4, "baa", ""},
		{"global", `rg \\ /`, `\a\b\c`, tftp.OpRRQ, v4, "/a/b/c", ""},
		{"longest match", `r a|ab X`, "abc", tftp.OpRRQ, v4, "Xc", ""},
		{"case-insensitive", `ri ^pxelinux\.0$ pxelinux.0`, "PXELinux.0", tftp.OpRRQ, v4, "pxelinux.0", ""},
		{"case-sensitive", `r ^pxelinux\.0$ x`, "PXELINUX.0", tftp.OpRRQ, v4, "PXELINUX.0", ""},
		{"subexpressions", `r ^(.*)/(.*)$ \2/\1/\0`, "a/b", tftp.OpRRQ, v4, "b/a/a/b", ""},
		{"client address", `r ^cfg$ cfg/\i`, "cfg", tftp.OpRRQ, v4, "cfg/192.0.2.169", ""},
		{"client address hex", `r ^cfg$ \x`, "cfg", tftp.OpRRQ, v4, "C00002A9", ""},
		{"IPv6 address", `r ^cfg$ \i/\x`, "cfg", tftp.OpRRQ, v6, "2001:db8::1/20010DB8000000000000000000000001", ""},
		{"mapped IPv4", `r4 ^cfg$ \i`, "cfg", tftp.OpRRQ, netip.MustParseAddr("::ffff:192.0.2.169"), "192.0.2.169", ""},
		{"upper and lower case", `r ^(.*)-(.*)$ \U\1\E-\L\2x`, "ab-CD", tftp.OpRRQ, v4, "AB-cdx", ""},
		{"escapes", `r ^a$ b\ c\#d\\e\q`, "a", tftp.OpRRQ, v4, `b c#d\eq`, ""},
		{"comment", "r ^a$ b # c\n# r ^b$ z", "a", tftp.OpRRQ, v4, "b", ""},
		{"end", "e ^a\nr a b", "a", tftp.OpRRQ, v4, "a", ""},
		{"end without a match", "e ^x\nr a b", "a", tftp.OpRRQ, v4, "b", ""},
		{"restart", "r ^y$ z\nrs ^x$ y", "x", tftp.OpRRQ, v4, "z", ""},
		{"abort", `a ^secret`, "secret/key", tftp.OpRRQ, v4, "", "-"},
		{"abort with a message", `a ^deny-(.*)$ no\ \1`, "deny-it", tftp.OpRRQ, v4, "", "no it"},
		{"inverted abort", `a~ ^[a-z/]+$ bad\ name`, "a b", tftp.OpRRQ, v4, "", "bad name"},
		{"inverted, matching", `a~ ^[a-z/]+$`, "ab", tftp.OpRRQ, v4, "ab", ""},
		{"get only", "rG ^a$ g\nrP ^a$ p", "a", tftp.OpRRQ, v4, "g", ""},
		{"put only", "rG ^a$ g\nrP ^a$ p", "a", tftp.OpWRQ, v4, "p", ""},
		{"IPv4 only", "r4 ^a$ v4\nr6 ^a$ v6", "a", tftp.OpRRQ, v6, "v6", ""},
		{"endless restart", `rs ^ x`, "a", tftp.OpRRQ, v4, "", "Remap table failure"},
		{"endless growth", `rg a aa`, "a", tftp.OpRRQ, v4, "", "Remap table failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tftp.ParseMapRules(strings.NewReader(tc.rules))
			require.NoError(t, err)
			got, err := m.Map(tc.in, tc.op, tc.client)
			if tc.refuse != "" {
				var ep *tftp.ErrorPacket
				require.ErrorAs(t, err, &ep)
				assert.Equal(t, tftp.ErrAccessViolation, ep.Code)
				if tc.refuse != "-" {
					assert.Equal(t, tc.refuse, ep.Message)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseMapRulesErrors(t *testing.T) {
	for _, tc := range []struct{ rules, err string }{
		{"x ^a b", `unknown letter 'x'`},
		{"r", "line 1: no regular expression"},
		{"\n\nr (", "line 3: regular expression"},
		{"r~ a b", "cannot be inverted"},
		{`r (a)\1 b`, "back-references"},
		{"rE a b", "E (rewrite only to existing files)"},
		{"rgg a b", "gg"},
		{"r a " + strings.Repeat("b", 20000), "longer than"},
	} {
		t.Run(tc.err, func(t *testing.T) {
			_, err := tftp.ParseMapRules(strings.NewReader(tc.rules))
			require.ErrorContains(t, err, tc.err)
			assert.True(t, strings.HasPrefix(err.Error(), "tftp: map file"))
		})
	}
	m, err := tftp.ParseMapRules(strings.NewReader("# only a comment\n\n   \nr a b\n"))
	require.NoError(t, err)
	assert.Equal(t, 1, m.Len())
}

// TestMapRulesHandler: the wrapped handler sees the mapped name (leading slashes dropped), a
// refusal reaches the client, and FileServer still confines what the rules produce.
func TestMapRulesHandler(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "boot/linux", []byte("kernel"))
	writeFile(t, dir, "cfg-127.0.0.1", []byte("for me"))
	m, err := tftp.ParseMapRules(strings.NewReader("rg \\\\ /\nr ^cfg$ /cfg-\\i\nr ^up$ ../etc/passwd\na ^secret nope"))
	require.NoError(t, err)
	addr := serve(t, &tftp.Server{Handler: m.Handler(tftp.FileServer(dir))})
	for _, tc := range []struct {
		name, want string
		code       tftp.ErrorCode
	}{
		{`\boot\linux`, "kernel", 0},
		{"cfg", "for me", 0},
		{"up", "", tftp.ErrAccessViolation},
		{"secret", "", tftp.ErrAccessViolation},
	} {
		got, _, err := get(t, &tftp.Client{}, addr, tc.name)
		if tc.code != 0 {
			require.ErrorIs(t, err, tc.code, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, string(got))
	}
}

// FuzzMapRules parses any map file and maps any name: no panic, and a result within the bounds.
func FuzzMapRules(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "interop.map"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b), `\Boot\PXELINUX.0`, true)
	f.Add("rg a aa\n", "aaaa", false)
	f.Add("rs ^ x\n", "a", true)
	f.Add("ri ^(.*)$ \\U\\1\\i\\x\\L\\0\\E\\\n", "Mixed/Case", false)
	f.Fuzz(func(t *testing.T, rules, name string, six bool) {
		m, err := tftp.ParseMapRules(strings.NewReader(rules))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tftp: map file") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		client := v4
		if six {
			client = v6
		}
		got, err := m.Map(name, tftp.OpRRQ, client)
		if err != nil {
			var ep *tftp.ErrorPacket
			if !errors.As(err, &ep) || ep.Code != tftp.ErrAccessViolation {
				t.Fatalf("refusal %v is not an access violation", err)
			}
			return
		}
		if len(got) > tftp.MaxMappedName && got != name {
			t.Fatalf("mapped name of %d bytes", len(got))
		}
	})
}

// TestInteropMapFile gives tftpd-hpa and our server the same map file and the same requests,
// and compares what the client gets: the same file, or the same error code (and message, for
// a rule's own).
func TestInteropMapFile(t *testing.T) {
	peertest.Root(t, "in.tftpd chroots into its directory")
	tftpd := peertest.Program(t, "in.tftpd", "tftpd-hpa")
	mapFile, err := filepath.Abs(filepath.Join("testdata", "interop.map"))
	require.NoError(t, err)
	dir := t.TempDir()
	for _, name := range []string{"ready", "pxelinux.0", "cfg-127.0.0.1", "hex-7F000001", "ABC", "stop/x",
		"target", "boot/bcd", "secretfile", "sub/file", "l1", "never-x"} {
		writeFile(t, dir, name, []byte("content of "+name))
	}
	require.NoError(t, os.Chmod(dir, 0o777))
	peer := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startPeer(t, tftpd, "--foreground", "--listen", "--address", peer, "--secure", "--user", "root",
		"--map-file", mapFile, dir)
	waitReady(t, peer, "ready")

	f, err := os.Open(mapFile)
	require.NoError(t, err)
	defer f.Close()
	m, err := tftp.ParseMapRules(f)
	require.NoError(t, err)
	ours := serve(t, &tftp.Server{Handler: m.Handler(tftp.FileServer(dir))})

	c := &tftp.Client{Timeout: 500 * time.Millisecond}
	for _, name := range []string{`\boot\bcd`, "/sub/file", "//sub/file", "PXELINUX.0", "PxeLinux.0", "cfg", "hex",
		"up-abc", "secretfile", "denyX", "stop/x", "alias", "loop-1", "bad name!", "missing", "pxelinux.0"} {
		t.Run(name, func(t *testing.T) {
			want, _, werr := get(t, c, peer, name)
			got, _, gerr := get(t, c, ours, name)
			t.Logf("tftpd-hpa: %q %v; ours: %q %v", want, werr, got, gerr)
			if werr == nil {
				require.NoError(t, gerr, "tftpd-hpa served %q", want)
				assert.Equal(t, string(want), string(got))
				return
			}
			var wp, gp *tftp.ErrorPacket
			require.ErrorAs(t, werr, &wp)
			require.ErrorAs(t, gerr, &gp, "tftpd-hpa: %v", werr)
			assert.Equal(t, wp.Code, gp.Code, "tftpd-hpa: %v; ours: %v", werr, gerr)
			if name == "denyX" {
				assert.Equal(t, wp.Message, gp.Message)
			}
		})
	}
}
