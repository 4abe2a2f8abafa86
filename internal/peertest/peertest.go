// Package peertest is the one place where interop tests decide whether a real peer (nbdinfo,
// qemu-img, vblade, tftpd-hpa, ...) or a privilege they need is available.
//
// On a laptop a missing peer skips the test with a reason that names the program and the Debian
// package that provides it. Under NETROOT_REQUIRE_PEERS=1 (set by `make check` and CI) the same
// absence fails the test, so CI can never pass by skipping its interop tests.
package peertest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// EnvRequire is the environment variable that turns missing peers into failures.
const EnvRequire = "NETROOT_REQUIRE_PEERS"

// Required reports whether missing peers must fail tests rather than skip them.
func Required() bool {
	v := strings.TrimSpace(os.Getenv(EnvRequire))
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}

// Missing skips t with reason, or fails it when peers are required.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("required peer unavailable (%s=1): %s", EnvRequire, reason)
	}
	t.Skipf("peer unavailable: %s", reason)
}

// Program returns the absolute path of the named program, looked up in PATH and in the sbin
// folders where Debian installs daemons. pkg is the Debian package that provides it and is named
// in the skip or failure message.
func Program(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Missing(t, name+" not found in PATH (Debian package "+pkg+")")
	return ""
}

// File returns path when it exists, and otherwise skips or fails naming pkg.
func File(t testing.TB, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, path+" not found (Debian package "+pkg+")")
	}
	return path
}

// Root skips or fails t unless the test runs as root, which raw sockets, network namespaces and
// port 69 need. CI runs as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: "+why)
	}
}
