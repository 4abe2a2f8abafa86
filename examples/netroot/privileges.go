package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/dhcp"
	"github.com/netroot/netroot/handoff"

	"github.com/netroot/netroot/internal/privdrop"
)

// privFlags are -user and -group: the account a command started as root switches to once its
// sockets (and the files only root may open) are open, as nbd-server (user=, group=) and
// tftpd-hpa (-u) do.
type privFlags struct {
	user, group string
	// from names where the user came from in messages ("-user", or an nbd-server config).
	from string
}

func (p *privFlags) register(fs *flag.FlagSet, tftpdAlias bool) {
	fs.StringVar(&p.user, "user", "", "after opening the sockets, switch from root to this user (name or number); its groups go with it")
	fs.StringVar(&p.group, "group", "", "with -user: switch to this group instead of the user's primary group")
	if tftpdAlias {
		fs.StringVar(&p.user, "u", "", "the same as -user (tftpd-hpa's -u)")
	}
}

// lookup resolves the account before any work starts: an unknown user or group fails at once.
// The zero Identity and false mean there is nothing to drop.
func (p *privFlags) lookup() (privdrop.Identity, bool, error) {
	if p.user == "" {
		if p.group != "" {
			return privdrop.Identity{}, false, usageError{fmt.Errorf("-group %q needs -user: switching only the group would keep root", p.group)}
		}
		return privdrop.Identity{}, false, nil
	}
	id, err := privdrop.Lookup(p.user, p.group)
	if err != nil {
		return id, false, usageError{fmt.Errorf("%s: %w", p.name(), err)}
	}
	return id, true, nil
}

func (p *privFlags) name() string {
	if p.from != "" {
		return p.from
	}
	return "-user"
}

// drop switches to id and checks that it took: every socket is open by now. writable are the
// directories the command writes into later (unpacked images, the TFTP root, leases); each must
// be writable by id, or the first reload would fail long after the start.
func (p *privFlags) drop(e *env, id privdrop.Identity, writable map[string]string) error {
	if err := privdrop.Drop(id); err != nil {
		return fmt.Errorf("%s %s: %w", p.name(), p.user, err)
	}
	for flagName, dir := range writable {
		if dir == "" {
			continue
		}
		// A directory not there yet is created later, so its parent must be writable.
		for {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) || filepath.Dir(dir) == dir {
				break
			}
			dir = filepath.Dir(dir)
		}
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("%s %q is not writable by user %s after dropping root (%v): give it to that user (chown, or StateDirectory= in a systemd unit) or run without %s",
				flagName, dir, id, err, p.name())
		}
	}
	e.log.Info("dropped root privileges", "user", id.User, "uid", id.UID, "group", id.Group, "gid", id.GID, "groups", fmt.Sprint(id.Groups))
	return nil
}

// dropper returns the function a command calls once its sockets are open: it drops to the
// account p names, or does nothing without -user. The account is looked up now, so an unknown
// user fails before anything else.
func (p *privFlags) dropper(e *env, writable map[string]string) (func() error, error) {
	id, ok, err := p.lookup()
	if err != nil || !ok {
		return func() error { return nil }, err
	}
	return func() error { return p.drop(e, id, writable) }, nil
}

// makeDirsFor creates the directories among dirs that do not exist yet and gives them to id,
// so the user can write what netroot puts there after the drop.
func makeDirsFor(id privdrop.Identity, dirs ...string) error {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, id.UID, id.GID); err != nil {
			return err
		}
	}
	return nil
}

// openDHCP opens the DHCP sockets of svc now (or takes them from the process this one
// replaces), so they exist before root is dropped, and returns the service that serves them.
// They are added to passOn for the next upgrade.
func openDHCP(e *env, inh *handoff.Inherited, svc *bootserver.DHCPService, passOn map[string]syscall.Conn) (bootserver.Service, error) {
	srv := svc.Server()
	ports := []int{dhcp.ServerPort}
	if srv.Lab == nil {
		ports = append(ports, dhcp.PXEPort)
	}
	var pcs []net.PacketConn
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	for _, port := range ports {
		name := fileDHCP + strconv.Itoa(port)
		pc, err := inh.PacketConn(name)
		if err == nil && pc == nil {
			pc, err = server4.NewIPv4UDPConn(srv.Interface, &net.UDPAddr{Port: port})
		}
		if err != nil {
			closeAll()
			return nil, privilegeHint(fmt.Sprintf("-dhcp: port %d of interface %q", port, srv.Interface), err, "CAP_NET_BIND_SERVICE and CAP_NET_RAW")
		}
		pcs = append(pcs, pc)
		if sc, ok := pc.(syscall.Conn); ok {
			passOn[name] = sc
		}
	}
	return bootserver.ServiceFuncs{
		ServiceName: "dhcp",
		ServeFunc: func(context.Context) error {
			e.log.Info("dhcp: answering on sockets opened before dropping root", "interface", srv.Interface, "ports", fmt.Sprint(ports))
			errc := make(chan error, len(pcs))
			for _, pc := range pcs {
				go func() { errc <- srv.Serve(pc) }()
			}
			err := <-errc
			if !errors.Is(err, dhcp.ErrServerClosed) {
				_ = srv.Close()
			}
			for range pcs[1:] {
				<-errc
			}
			return err
		},
		ShutdownFunc: srv.Shutdown,
		CloseFunc:    srv.Close,
		Closed:       dhcp.ErrServerClosed,
	}, nil
}
