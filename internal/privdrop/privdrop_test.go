package privdrop_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/internal/privdrop"
)

func TestLookup(t *testing.T) {
	id, err := privdrop.Lookup("nobody", "")
	require.NoError(t, err)
	assert.Equal(t, 65534, id.UID)
	assert.Equal(t, 65534, id.GID, "the user's primary group")

	id, err = privdrop.Lookup("nobody", "0")
	require.NoError(t, err)
	assert.Equal(t, 0, id.GID, "a group by number")

	id, err = privdrop.Lookup("4242", "4243")
	require.NoError(t, err)
	assert.Equal(t, 4242, id.UID)
	assert.Equal(t, 4243, id.GID)
	assert.Empty(t, id.Groups, "an unknown uid gets no supplementary groups")

	for _, tc := range []struct{ user, group, want string }{
		{"no-such-user-netroot", "", `privdrop: user "no-such-user-netroot": no such user`},
		{"nobody", "no-such-group-netroot", `privdrop: group "no-such-group-netroot": no such group`},
		{"root", "", `privdrop: user "root" is root (uid 0)`},
		{"0", "0", `privdrop: user "0" is root (uid 0)`},
		{"4242", "", "privdrop: user 4242 is a number no account has: give its group too"},
		{"", "", "privdrop: no user given"},
	} {
		_, err := privdrop.Lookup(tc.user, tc.group)
		require.Error(t, err, "%s:%s", tc.user, tc.group)
		assert.Contains(t, err.Error(), tc.want)
	}
}

// helperEnv makes the test binary, run again, drop privileges and report instead of testing.
const helperEnv = "PRIVDROP_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(helper(spec))
	}
	os.Exit(m.Run())
}

// helper drops to USER[:GROUP] while several goroutines sit on threads of their own, then
// prints every thread's Uid/Gid/Groups lines and whether setuid(0) works.
func helper(spec string) int {
	u, g, _ := strings.Cut(spec, ":")
	id, err := privdrop.Lookup(u, g)
	if err != nil {
		fmt.Println("lookup:", err)
		return 2
	}
	var ready, release sync.WaitGroup
	release.Add(1)
	for range 4 {
		ready.Add(1)
		go func() {
			runtime.LockOSThread()
			ready.Done()
			release.Wait()
		}()
	}
	ready.Wait()
	if err := privdrop.Drop(id); err != nil {
		fmt.Println("drop:", err)
		return 3
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	fmt.Printf("threads %d\n", len(tasks))
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") || strings.HasPrefix(l, "Groups:") {
				fmt.Println(strings.Join(strings.Fields(l), " "))
			}
		}
	}
	fmt.Println("setuid0", syscall.Setuid(0))
	fmt.Println("again", privdrop.Drop(id)) // as after an upgrade: already that user
	release.Done()
	return 0
}

func runHelper(t *testing.T, spec string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+spec)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return string(out), code
}

// A root process becomes nobody on every thread, with no supplementary groups left, and cannot
// become root again.
func TestDropAllThreads(t *testing.T) {
	peertest.Root(t, "only root can drop privileges")
	out, code := runHelper(t, "nobody")
	require.Equal(t, 0, code, out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var threads int
	_, err := fmt.Sscanf(lines[0], "threads %d", &threads)
	require.NoError(t, err, out)
	assert.GreaterOrEqual(t, threads, 5, "the goroutines hold threads of their own")
	var uids, gids, groups int
	for _, l := range lines[1:] {
		switch {
		case strings.HasPrefix(l, "Uid:"):
			uids++
			assert.Equal(t, "Uid: 65534 65534 65534 65534", l)
		case strings.HasPrefix(l, "Gid:"):
			gids++
			assert.Equal(t, "Gid: 65534 65534 65534 65534", l)
		case strings.HasPrefix(l, "Groups:"):
			groups++
			assert.Equal(t, "Groups: 65534", l, "root's groups are gone")
		}
	}
	assert.Equal(t, threads, uids)
	assert.Equal(t, threads, gids)
	assert.Equal(t, threads, groups)
	assert.Contains(t, out, "setuid0 operation not permitted")
	assert.Contains(t, out, "again <nil>")
}

// A group given by number replaces the primary group; an unknown uid keeps no groups.
func TestDropToNumbers(t *testing.T) {
	peertest.Root(t, "only root can drop privileges")
	out, code := runHelper(t, "4242:4243")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "Uid: 4242 4242 4242 4242")
	assert.Contains(t, out, "Gid: 4243 4243 4243 4243")
	assert.Contains(t, out, "Groups:\n")
	assert.Contains(t, out, "setuid0 operation not permitted")
}

// A process that is not root and not the user cannot switch.
func TestDropWithoutRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		id, err := privdrop.Lookup("nobody", "")
		require.NoError(t, err)
		// As root, Check (not Drop) tells that nothing was dropped.
		err = privdrop.Check(id)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "privdrop: uids are 0/0/0")
		return
	}
	id := privdrop.Identity{User: "other", Group: "other", UID: os.Geteuid() + 1, GID: os.Getegid() + 1}
	err := privdrop.Drop(id)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not root: cannot switch to user")
}
