// Package privdrop switches a process that started as root to an unprivileged user once it has
// opened what needs root (sockets on ports below 1024, raw sockets, root-owned files), as
// nbd-server (user=, group=), tftpd-hpa (-u) and other daemons do: supplementary groups first,
// then the group, then the user, for every thread of the process; then it checks that root
// cannot be regained.
package privdrop

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
)

// Identity is a user and group to run as, with the supplementary groups that go with them.
type Identity struct {
	User   string // name as given (or the number)
	Group  string // name of the group (or the number)
	UID    int
	GID    int
	Groups []int // supplementary groups; empty means none
}

func (id Identity) String() string {
	return fmt.Sprintf("%s(%d):%s(%d)", id.User, id.UID, id.Group, id.GID)
}

// Lookup resolves a user and an optional group, each a name or a number. Without group, the
// user's primary group is used. The supplementary groups are those the group database gives
// the user (as initgroups does); a numeric user unknown to the database gets none.
func Lookup(userName, groupName string) (Identity, error) {
	if userName == "" {
		return Identity{}, errors.New("privdrop: no user given")
	}
	id := Identity{User: userName}
	u, err := lookupUser(userName)
	if err != nil {
		return Identity{}, err
	}
	if u != nil {
		id.UID, _ = strconv.Atoi(u.Uid)
		id.GID, _ = strconv.Atoi(u.Gid)
		id.Group = u.Gid
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			id.Group = g.Name
		}
		if gids, err := u.GroupIds(); err == nil {
			for _, s := range gids {
				if n, err := strconv.Atoi(s); err == nil && !slices.Contains(id.Groups, n) {
					id.Groups = append(id.Groups, n)
				}
			}
		}
	} else {
		// A number the database does not know: allowed, as setuid takes any number.
		id.UID, _ = strconv.Atoi(userName)
		id.GID, id.Group = id.UID, userName
		if groupName == "" {
			return Identity{}, fmt.Errorf("privdrop: user %s is a number no account has: give its group too", userName)
		}
	}
	if groupName != "" {
		g, err := lookupGroup(groupName)
		if err != nil {
			return Identity{}, err
		}
		id.Group = groupName
		id.GID = g
	}
	if id.UID == 0 {
		return Identity{}, fmt.Errorf("privdrop: user %q is root (uid 0): that keeps every privilege", userName)
	}
	if len(id.Groups) > 0 && !slices.Contains(id.Groups, id.GID) {
		id.Groups = append([]int{id.GID}, id.Groups...)
	}
	return id, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	n, nerr := strconv.Atoi(name)
	if nerr != nil || n < 0 {
		return nil, fmt.Errorf("privdrop: user %q: no such user", name)
	}
	if u, err := user.LookupId(name); err == nil {
		return u, nil
	}
	return nil, nil
}

func lookupGroup(name string) (int, error) {
	if g, err := user.LookupGroup(name); err == nil {
		return strconv.Atoi(g.Gid)
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	return 0, fmt.Errorf("privdrop: group %q: no such group", name)
}
