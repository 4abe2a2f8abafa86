package overlaycmdline_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/overlaycmdline"
)

const (
	moduleDir = "/usr/lib/dracut/modules.d/90kiwi-overlay"
	dracutDir = "/usr/lib/dracut"
)

// runModule runs the real kiwi-overlay module (and dracut's real getarg) over cmdline in a
// private mount namespace and returns the lines the harness recorded.
func runModule(t *testing.T, cmdline string) []string {
	t.Helper()
	peertest.File(t, filepath.Join(moduleDir, "parse-kiwi-overlay.sh"), "kiwi-dracut-overlay")
	peertest.File(t, filepath.Join(moduleDir, "kiwi-overlay-root.sh"), "kiwi-dracut-overlay")
	peertest.File(t, filepath.Join(moduleDir, "kiwi-generator.sh"), "kiwi-dracut-overlay")
	peertest.File(t, filepath.Join(dracutDir, "modules.d/99kiwi-lib/kiwi-filesystem-lib.sh"), "kiwi-dracut-lib")
	peertest.File(t, filepath.Join(dracutDir, "modules.d/99base/dracut-lib.sh"), "dracut-core")
	peertest.File(t, filepath.Join(dracutDir, "dracut-util"), "dracut-core")
	bash := peertest.Program(t, "bash", "bash")
	unshare := peertest.Program(t, "unshare", "util-linux")
	peertest.Root(t, "a private mount namespace keeps the module's writes to /etc and /run off the host")

	dir := t.TempDir()
	cmdFile := filepath.Join(dir, "cmdline")
	outFile := filepath.Join(dir, "out")
	require.NoError(t, os.WriteFile(cmdFile, []byte(cmdline+"\n"), 0o644))
	require.NoError(t, os.WriteFile(outFile, nil, 0o644))
	harness, err := filepath.Abs("testdata/kiwi-harness.sh")
	require.NoError(t, err)
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", bash, harness, outFile, cmdFile)
	cmd.Env = append(os.Environ(), "DRACUT_BASE="+dracutDir)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "harness output:\n%s", b)
	rec, err := os.ReadFile(outFile)
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(rec)), "\n")
}

func value(lines []string, key string) (string, bool) {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			return v, true
		}
		if l == key {
			return "", true
		}
	}
	return "", false
}

// TestModuleConformance renders command lines and checks that the module's own shell code
// extracts the same host, export, device, options and drivers.
func TestModuleConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    overlaycmdline.Cmdline
	}{
		{"nbd ip", overlaycmdline.Cmdline{Root: overlaycmdline.NBD("192.0.2.10", "kis-root")}},
		{"nbd hostname with options", overlaycmdline.Cmdline{
			Root:    overlaycmdline.NBD("boot.example.net", "images/leap=15.6"),
			Options: overlaycmdline.Options{Size: "2G", Debug: true, RootFlags: "noatime", Write: "/dev/vdb1"},
			Extra:   []string{"console=ttyS0,115200", "ip=eth0:dhcp"},
		}},
		{"nbd readonly write", overlaycmdline.Cmdline{
			Root:    overlaycmdline.NBD("198.51.100.7", "root"),
			Options: overlaycmdline.Options{Write: "/dev/disk/by-label/persist", ReadOnly: true},
		}},
		{"nbd no preload", overlaycmdline.Cmdline{
			Root:    overlaycmdline.NBD("192.0.2.1", "r"),
			Options: overlaycmdline.Options{NoDriverPreload: true},
		}},
		{"aoe", overlaycmdline.Cmdline{Root: overlaycmdline.AoE(0, 1)}},
		{"aoe max", overlaycmdline.Cmdline{
			Root:    overlaycmdline.AoE(overlaycmdline.MaxShelf, overlaycmdline.MaxSlot),
			Options: overlaycmdline.Options{Size: "75%", Write: "/dev/sda2"},
		}},
		{"uuid", overlaycmdline.Cmdline{Root: overlaycmdline.UUID("0d8f9f3a-4b3c-4e5a-9a1b-2c3d4e5f6a7b")}},
		{"partuuid", overlaycmdline.Cmdline{Root: overlaycmdline.PARTUUID("1a2b3c4d-02"), Options: overlaycmdline.Options{Debug: true}}},
		{"label with slash", overlaycmdline.Cmdline{Root: overlaycmdline.Label("kiwi/root"), Options: overlaycmdline.Options{Size: "512m"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			require.NoError(t, c.Validate())
			line := c.String()
			got := runModule(t, line)
			t.Logf("%s\n%s", line, strings.Join(got, "\n"))

			parsed, err := overlaycmdline.Parse(line)
			require.NoError(t, err)
			assert.Equal(t, &c, parsed, "Parse(String()) round trip")

			assert.Contains(t, got, "parse_rc 0")
			assert.Contains(t, got, "rootok 1")
			assert.Contains(t, got, "root block:"+c.Root.Device())
			assert.Contains(t, got, "premount_rc 0")
			assert.Contains(t, got, "read_only "+map[bool]string{true: c.Root.Device(), false: ""}[c.Root.Kind.Network()],
				"read-only device")

			hasIP := false
			for _, e := range c.Extra {
				hasIP = hasIP || strings.HasPrefix(e, "ip=")
			}
			if c.Root.Kind.Network() {
				assert.Contains(t, got, "generated rd.neednet=1")
				if hasIP {
					assert.NotContains(t, got, "generated ip=dhcp")
				} else {
					assert.Contains(t, got, "generated ip=dhcp")
				}
				if c.Options.NoDriverPreload {
					assert.NotContains(t, got, "modprobe "+c.Root.Kind.Driver())
				} else {
					assert.Contains(t, got, "modprobe "+c.Root.Kind.Driver(), "driver preloaded by dracut's rd.driver.pre")
				}
				assert.Contains(t, got, "write "+c.Options.Write)
			} else {
				assert.NotContains(t, got, "generated rd.neednet=1")
				// For local roots the module writes to the root partition itself.
				assert.Contains(t, got, "write "+c.Root.Device())
			}
			if c.Root.Kind == overlaycmdline.KindNBD {
				assert.Contains(t, got, "nbd-client "+c.Root.Host+" /dev/nbd0 -name "+c.Root.Export)
			} else {
				_, ok := value(got, "nbd-client")
				assert.False(t, ok, "no nbd-client for %v", c.Root.Kind)
			}

			size := c.Options.Size
			if size == "" {
				size = "50%"
			}
			assert.Contains(t, got, "mount -t tmpfs -o size="+size+" tmpfs /run/overlay")
			persistent := "mount " + c.Options.Write + " /run/overlay/overlayfs"
			if c.Root.Kind.Network() && c.Options.Write != "" && !c.Options.ReadOnly {
				assert.Contains(t, got, persistent)
			} else {
				assert.NotContains(t, got, persistent)
			}
			_, debug := value(got, "debug")
			assert.Equal(t, c.Options.Debug, debug, "rd.kiwi.debug")
			unit, ok := value(got, "unit")
			require.True(t, ok, "generator wrote sysroot.mount")
			assert.True(t, strings.HasPrefix(unit, "Options="+c.Options.RootFlags+",lowerdir="), "rootflags in %q", unit)
		})
	}
}

// TestModuleMisreads shows that what Parse and Validate reject is really misread by the
// module: it runs the raw command line through the module and checks it gets something else.
func TestModuleMisreads(t *testing.T) {
	for _, tc := range []struct {
		name, cmdline, want string
	}{
		{"port taken as export", "root=overlay:nbd=192.0.2.1:10809:root", "nbd-client 192.0.2.1 /dev/nbd0 -name 10809"},
		{"colon in export", "root=overlay:nbd=192.0.2.1:site:root", "nbd-client 192.0.2.1 /dev/nbd0 -name site"},
		{"ipv6 literal", "root=overlay:nbd=fd00::1:root", "nbd-client fd00 /dev/nbd0 -name "},
		{"interface as aoe target", "root=overlay:aoe=eth0", "read_only /dev/etherd/eth0"},
		{"last root wins", "root=overlay:aoe=e1.2 root=overlay:nbd=192.0.2.1:r", "nbd-client 192.0.2.1 /dev/nbd0 -name r"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runModule(t, tc.cmdline)
			assert.Contains(t, got, tc.want, "module output:\n%s", strings.Join(got, "\n"))
			c, err := overlaycmdline.Parse(tc.cmdline)
			if tc.name == "last root wins" {
				require.NoError(t, err)
				assert.Equal(t, overlaycmdline.NBD("192.0.2.1", "r"), c.Root)
				return
			}
			assert.Error(t, err, "Parse must reject what the module misreads")
		})
	}
}

// TestModuleAppendMerge merges the overlay arguments into a KIWI .append line that has its own
// root= and checks that the module boots the merged root.
func TestModuleAppendMerge(t *testing.T) {
	kiwi := `root=overlay:LABEL=ROOT console=ttyS0 "rd.kiwi.term=vt100" rd.kiwi.debug=0`
	c := overlaycmdline.Cmdline{Root: overlaycmdline.NBD("192.0.2.1", "kis"), Options: overlaycmdline.Options{Debug: true}}
	merged := overlaycmdline.Append(kiwi, c.Args()...)
	got := runModule(t, merged)
	assert.Contains(t, got, "nbd-client 192.0.2.1 /dev/nbd0 -name kis", "merged line: %s", merged)
	assert.Contains(t, got, "modprobe nbd")
	assert.Contains(t, got, "debug on", "rd.kiwi.debug=0 was replaced")
	back, err := overlaycmdline.Parse(merged)
	require.NoError(t, err)
	assert.Equal(t, c.Root, back.Root)
	assert.Equal(t, []string{"console=ttyS0", `"rd.kiwi.term=vt100"`}, back.Extra)
}
