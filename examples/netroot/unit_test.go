package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
)

// TestSystemdUnits has systemd-analyze verify the example units (with ExecStart pointing at an
// existing program) and checks the settings the binary upgrade relies on.
func TestSystemdUnits(t *testing.T) {
	analyze := peertest.Program(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	units := []string{"netroot.service", "netroot-nbd.socket", "netroot-tftp.socket"}
	var service string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		require.NoError(t, err)
		s := string(b)
		if u == "netroot.service" {
			service = s
			s = strings.ReplaceAll(s, "ExecStart=/usr/local/bin/netroot ", "ExecStart=/bin/true ")
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, u), []byte(s), 0o644))
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, units...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify has remarks")

	for _, want := range []string{
		"Type=notify\n",
		"NotifyAccess=all\n",        // the SIGUSR2 successor notifies before it is the main process
		"FileDescriptorStoreMax=",   // restart keeps NBD connections
		"ExecReload=/bin/kill -HUP", // reload rolls images forward; SIGUSR2 upgrades the binary
		"DynamicUser=yes\n",         // never root; the state directory is the dynamic user's
		"StateDirectory=netroot netroot/tftpboot\n",
	} {
		assert.Contains(t, service, want)
	}
	// A dynamic user is not root, and netroot's -user would fail: systemd drops privileges.
	exec := regexp.MustCompile(`(?m)^ExecStart=.*$`).FindString(service)
	assert.NotRegexp(t, ` -(user|group) `, exec)
}
