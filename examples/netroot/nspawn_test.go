package main_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
)

// nspawnScript runs inside the container, as a unit of its systemd: it starts netroot from the
// example units, and while nbdcopy reads the root export (paced by pace.py) it restarts the
// service (fd store), upgrades it with SIGUSR2 and reloads it (SIGHUP); it writes what happened
// to /opt/w, stops the service and powers the container off.
const nspawnScript = `#!/bin/sh
W=/opt/w
step() { echo "$*" >> $W/steps; echo "$(date +%s.%N) $*" >> $W/times; }
exec >> $W/script.log 2>&1
mainpid() { systemctl show -p MainPID --value netroot.service; }
progress() { cat $W/progress 2>/dev/null || echo 0; }
until_bytes() { n=0; while [ "$(progress)" -lt "$1" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done; }
until_pid_changes() { n=0; while [ "$(mainpid)" = "$1" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; }
finish() { step "end active=$(systemctl is-active netroot.service)"; systemctl stop netroot.service; step "stopped"; journalctl --no-pager -o short-unix -u netroot.service > $W/journal; systemctl poweroff; exit 0; }

if ! systemctl start netroot.service; then step "start failed"; finish; fi
p0=$(mainpid); step "started pid=$p0"
step "ids $(grep -E '^(Uid|Gid):' /proc/$p0/status | tr -s '\t' ' ' | tr '\n' ';')"
step "cache uid=$(stat -c %u /var/lib/netroot/EXPORT) tftp uid=$(stat -c %u /var/lib/netroot/tftpboot/pxelinux.cfg/default)"
( nbdcopy -C 1 -R 1 --request-size=65536 nbd://127.0.0.1/EXPORT - 2> $W/nbdcopy.err; echo $? > $W/nbdcopy.rc ) | python3 /opt/t/pace.py $W/copy.img $W/progress &
until_bytes 1048576
systemctl restart netroot.service; rc=$?
p1=$(mainpid); step "restart rc=$rc pid=$p1 active=$(systemctl is-active netroot.service) at=$(progress)"
until_bytes 2097152
systemctl kill -s USR2 --kill-who=main netroot.service
until_pid_changes "$p1"
p2=$(mainpid); step "usr2 pid=$p2 active=$(systemctl is-active netroot.service) at=$(progress)"
until_bytes 3145728
systemctl reload netroot.service; rc=$?
step "reload rc=$rc pid=$(mainpid) at=$(progress)"
wait
step "nbdcopy rc=$(cat $W/nbdcopy.rc) bytes=$(progress)"
finish
`

// pacePy copies its input to a file about 1.6 MB/s, keeping the count of bytes in a file.
const pacePy = `import sys, time
out, progress = open(sys.argv[1], "wb"), sys.argv[2]
n = 0
while True:
    b = sys.stdin.buffer.read(16384)
    if not b:
        break
    out.write(b)
    n += len(b)
    with open(progress + ".tmp", "w") as p:
        p.write(str(n))
    import os
    os.replace(progress + ".tmp", progress)
    time.sleep(0.01)
out.close()
`

// TestSystemdKeepsClientsInNspawn boots a real systemd (the host's, in a systemd-nspawn
// container over a volatile copy of / with a private network) with the example units, and
// checks that an NBD client reading the root image sees no error while the service is
// restarted (`systemctl restart`: connections go through the fd store), upgraded
// (`systemctl kill -s USR2`: MAINPID moves to the new process) and reloaded (`systemctl
// reload`: SIGHUP), and that it reads the image byte-exact.
func TestSystemdKeepsClientsInNspawn(t *testing.T) {
	peertest.Root(t, "systemd-nspawn boots a container")
	nspawn := peertest.Program(t, "systemd-nspawn", "systemd-container")
	peertest.Program(t, "nbdcopy", "libnbd-bin")
	peertest.Program(t, "python3", "python3")

	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	for _, d := range []string{"bin", "units", "t", "w", "tftp"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	require.NoError(t, os.Chmod(filepath.Join(dir, "tftp"), 0o777))
	b, err := os.ReadFile(binary)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "netroot"), b, 0o755))
	kisDir, image, spec := fakeBuild(t, []byte("initrd"))
	require.NoError(t, os.Chmod(kisDir, 0o755))
	export := spec.Name + ".x86_64-" + spec.Version
	require.NoError(t, os.WriteFile(filepath.Join(dir, "image.raw"), image, 0o644))

	// The example units, pointed at this test's directories.
	units := []string{"netroot.service", "netroot-nbd.socket", "netroot-tftp.socket"}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		require.NoError(t, err)
		s := strings.NewReplacer(
			"/usr/local/bin/netroot", "/opt/netroot/bin/netroot",
			"/var/lib/kiwi/out", "/opt/kis",
			"-server-ip 192.0.2.1", "-server-ip 127.0.0.1 -allow-loopback -no-bootloader",
			// Nothing in the container brings the network online: waiting for it takes
			// two minutes.
			"network-online.target", "network.target",
		).Replace(string(b))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "units", u), []byte(s), 0o644))
	}
	script := strings.ReplaceAll(nspawnScript, "EXPORT", export)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t", "test.sh"), []byte(script), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t", "pace.py"), []byte(pacePy), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "units", "netroot-test.service"), []byte(
		"[Unit]\nDescription=netroot upgrade test\nAfter=basic.target\n[Service]\nType=oneshot\nExecStart=/opt/t/test.sh\n"), 0o644))

	args := []string{"-q", "--keep-unit", "--register=no", "-D", "/", "--volatile=yes", "--private-network",
		"--console=pipe", "--bind=" + dir + ":/opt/netroot", "--bind-ro=" + filepath.Join(dir, "t") + ":/opt/t",
		"--bind=" + filepath.Join(dir, "w") + ":/opt/w", "--bind-ro=" + kisDir + ":/opt/kis"}
	for _, u := range append(units, "netroot-test.service") {
		args = append(args, "--bind-ro="+filepath.Join(dir, "units", u)+":/etc/systemd/system/"+u)
	}
	args = append(args, "-b", "--", "systemd.firstboot=off", "systemd.unit=netroot-test.service")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var console bytes.Buffer
	cmd := exec.CommandContext(ctx, nspawn, args...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &console, &console, nil
	t0 := time.Now()
	err = cmd.Run()
	t.Logf("the container ran for %v", time.Since(t0).Round(time.Millisecond))
	read := func(name string) string { b, _ := os.ReadFile(filepath.Join(dir, "w", name)); return string(b) }
	steps, journal := read("steps"), read("journal")
	defer func() {
		if t.Failed() {
			t.Logf("steps:\n%s\ntimes:\n%s\nscript:\n%s\nnbdcopy:\n%s\njournal:\n%s\nconsole (tail):\n%s", steps, read("times"), read("script.log"), read("nbdcopy.err"), journal, tail(console.String(), 3000))
		}
	}()
	require.NoError(t, err, "systemd-nspawn")

	pids := regexp.MustCompile(`(?m)^(?:started|restart rc=0|usr2) pid=(\d+)`).FindAllStringSubmatch(steps, -1)
	require.Len(t, pids, 3, "steps")
	assert.NotEqual(t, pids[0][1], pids[1][1], "restart: a new main process")
	assert.NotEqual(t, pids[1][1], pids[2][1], "SIGUSR2: MAINPID moved to the new process")
	// The unit's DynamicUser: systemd starts netroot as a user of its own, never root.
	ids := regexp.MustCompile(`(?m)^ids Uid: (\d+) (\d+) (\d+) (\d+);Gid: (\d+) (\d+) (\d+) (\d+);$`).FindStringSubmatch(steps)
	require.NotNil(t, ids, "steps")
	for _, id := range ids[1:] {
		assert.NotEqual(t, "0", id, "netroot.service runs without root")
	}
	assert.Contains(t, steps, "cache uid="+ids[1]+" tftp uid="+ids[1]+"\n", "the state directory is the dynamic user's")
	assert.Contains(t, steps, "restart rc=0 pid="+pids[1][1]+" active=active")
	assert.Contains(t, steps, "usr2 pid="+pids[2][1]+" active=active")
	assert.Regexp(t, `reload rc=0 pid=`+pids[2][1], steps)
	assert.Contains(t, steps, "nbdcopy rc=0")
	assert.Contains(t, steps, "end active=active")
	assert.Contains(t, steps, "stopped")
	assert.Contains(t, journal, "netroot.service: Deactivated successfully.", "systemctl stop ends the service cleanly")
	assert.Empty(t, read("nbdcopy.err"))
	assert.True(t, bytes.Equal(image, []byte(read("copy.img"))), "nbdcopy read the image byte-exact")
	assert.Contains(t, journal, "restart: connections stored with systemd")
	assert.Contains(t, journal, "upgrade: handed over; stopping")
	assert.Equal(t, 2, strings.Count(journal, `msg="upgrade: took over" nbd_connections=1 failed=0`), "resumed after the restart and after SIGUSR2")
	assert.NotContains(t, journal, "names=tftp,nbd,nbd", "sockets from both the socket units and the store are taken once")
	assert.Contains(t, journal, "SIGHUP: looking for new builds")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
