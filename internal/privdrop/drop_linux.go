package privdrop

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// Drop makes the process run as id: setgroups, setgid, then setuid, each on every thread (Go's
// syscall functions do that on Linux). It then checks that the real, effective and saved IDs
// and the groups are id's and that setuid(0) fails, so root cannot be regained.
//
// A process that already runs as id (restarted by an upgrade, or started as that user) only
// gets the check. A process that runs as another user that is not root cannot switch: that is
// an error.
func Drop(id Identity) error {
	if syscall.Geteuid() != 0 {
		if syscall.Getuid() == id.UID && syscall.Geteuid() == id.UID && syscall.Getgid() == id.GID {
			return Check(id)
		}
		return fmt.Errorf("privdrop: running as uid %d, not root: cannot switch to user %s", syscall.Geteuid(), id)
	}
	groups := id.Groups
	if groups == nil {
		groups = []int{}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("privdrop: setgroups %v: %w", groups, err)
	}
	if err := syscall.Setresgid(id.GID, id.GID, id.GID); err != nil {
		return fmt.Errorf("privdrop: setgid %d: %w", id.GID, err)
	}
	if err := syscall.Setresuid(id.UID, id.UID, id.UID); err != nil {
		return fmt.Errorf("privdrop: setuid %d: %w", id.UID, err)
	}
	return Check(id)
}

// Check reports an error unless the process runs as id (real, effective and saved user and
// group IDs, supplementary groups) and setuid(0) fails.
func Check(id Identity) error {
	ruid, euid, suid := unix.Getresuid()
	rgid, egid, sgid := unix.Getresgid()
	if ruid != id.UID || euid != id.UID || suid != id.UID {
		return fmt.Errorf("privdrop: uids are %d/%d/%d (real/effective/saved), want %d", ruid, euid, suid, id.UID)
	}
	if rgid != id.GID || egid != id.GID || sgid != id.GID {
		return fmt.Errorf("privdrop: gids are %d/%d/%d (real/effective/saved), want %d", rgid, egid, sgid, id.GID)
	}
	groups, err := syscall.Getgroups()
	if err != nil {
		return fmt.Errorf("privdrop: getgroups: %w", err)
	}
	want := slices.Clone(id.Groups)
	slices.Sort(groups)
	slices.Sort(want)
	if !slices.Equal(slices.Compact(groups), slices.Compact(want)) {
		return fmt.Errorf("privdrop: supplementary groups are %v, want %v", groups, want)
	}
	if err := syscall.Setuid(0); err == nil {
		return errors.New("privdrop: setuid(0) succeeded after dropping privileges: root was not given up")
	}
	return nil
}
