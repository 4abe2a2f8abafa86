package handoff

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// stateName is the FDNAME of the memfd that holds the states of the connections in systemd's
// file descriptor store.
const stateName = "netroot-handoff-state"

// connPrefix starts the FDNAME of every connection in the fd store; anything else systemd
// passes is a listener (socket units name theirs by FileDescriptorName=, by default the unit's
// name).
const connPrefix = "netroot-conn."

// storedConn maps a connection's name in the fd store to what [File] it was.
type storedConn struct {
	FDName string `json:"fdname"`
	Name   string `json:"name"`
	State  []byte `json:"state,omitempty"`
}

// FDStoreEnabled reports whether the service manager keeps descriptors for this service across
// a restart: systemd (254 and later) sets $FDSTORE to FileDescriptorStoreMax= when that is not
// zero; the unit may set it itself for older versions. NOTIFY_SOCKET must be set too.
func FDStoreEnabled() bool {
	n, err := strconv.Atoi(os.Getenv("FDSTORE"))
	return err == nil && n > 0 && os.Getenv("NOTIFY_SOCKET") != ""
}

// Store puts listeners and established connections into systemd's file descriptor store
// (sd_notify FDSTORE=1), so that the next process of the service, after a restart, gets them
// from Inherit. The connection states go into a memfd stored beside them. Storing a listener
// that is already stored (or comes from a socket unit) is harmless: systemd drops duplicates.
// The caller then closes its copies and exits. Without NOTIFY_SOCKET it does nothing and
// returns an error.
func Store(listeners, conns []File) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return fmt.Errorf("handoff: NOTIFY_SOCKET not set: not running under systemd")
	}
	c, err := dialNotify(sock)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, l := range listeners {
		if err := notifyFD(c, l.Name, l.File); err != nil {
			return err
		}
	}
	if len(conns) == 0 {
		return nil
	}
	stored := make([]storedConn, len(conns))
	for i, f := range conns {
		stored[i] = storedConn{FDName: connPrefix + strconv.Itoa(i), Name: f.Name, State: f.State}
	}
	b, err := json.Marshal(stored)
	if err != nil {
		return fmt.Errorf("handoff: states: %w", err)
	}
	mfd, err := unix.MemfdCreate(stateName, unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("handoff: memfd: %w", err)
	}
	mf := os.NewFile(uintptr(mfd), stateName)
	defer mf.Close()
	if _, err := mf.Write(b); err != nil {
		return fmt.Errorf("handoff: memfd: %w", err)
	}
	// The state first: a new process that finds connections without it closes them.
	if err := notifyFD(c, stateName, mf); err != nil {
		return err
	}
	for i, f := range conns {
		if err := notifyFD(c, stored[i].FDName, f.File); err != nil {
			return err
		}
	}
	return nil
}

// notifySocket sends datagrams, with descriptors, to systemd's notify socket.
type notifySocket struct {
	fd   int
	addr *unix.SockaddrUnix
}

func dialNotify(path string) (*notifySocket, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("handoff: notify socket: %w", err)
	}
	// SockaddrUnix turns a leading '@' into an abstract address, as systemd means it.
	return &notifySocket{fd: fd, addr: &unix.SockaddrUnix{Name: path}}, nil
}

func (n *notifySocket) send(msg string, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(n.fd, []byte(msg), oob, n.addr, 0)
}

func (n *notifySocket) Close() error { return unix.Close(n.fd) }

// notifyFD stores one descriptor under name.
func notifyFD(c *notifySocket, name string, f *os.File) error {
	if name == "" || len(name) > 255 || strings.ContainsFunc(name, func(r rune) bool { return r == ':' || r < ' ' || r > '~' }) {
		return fmt.Errorf("handoff: %q is not a valid FDNAME", name)
	}
	err := c.send("FDSTORE=1\nFDNAME="+name, int(f.Fd()))
	runtime.KeepAlive(f)
	if err != nil {
		return fmt.Errorf("handoff: storing %q with systemd: %w", name, err)
	}
	return nil
}

// fromSystemd returns the descriptors systemd passed (socket units and the fd store), or nil.
// Connections stored by Store are returned with their state; the rest are listeners.
func fromSystemd() (*Inherited, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	h := &Inherited{systemd: true}
	type key struct{ dev, ino uint64 }
	sockets := map[key]bool{}
	seen := func(f *os.File) bool {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) != nil {
			return false
		}
		k := key{uint64(st.Dev), st.Ino}
		if sockets[k] {
			return true
		}
		sockets[k] = true
		return false
	}
	var state *os.File
	byName := map[string]*os.File{}
	for _, f := range files {
		switch {
		case f.Name() == stateName:
			state = f
		case strings.HasPrefix(f.Name(), connPrefix):
			byName[f.Name()] = f
		case seen(f):
			// A socket unit's socket that an earlier process also put in the store.
			_ = f.Close()
		default:
			h.listeners = append(h.listeners, File{Name: f.Name(), File: f})
		}
	}
	var stored []storedConn
	if state != nil {
		h.removeNames = append(h.removeNames, stateName)
		_, err := state.Seek(0, io.SeekStart)
		if err == nil {
			var b []byte
			if b, err = io.ReadAll(io.LimitReader(state, 64<<20)); err == nil {
				stored, err = parseStored(b)
			}
		}
		_ = state.Close()
		if err != nil {
			for _, f := range byName {
				_ = f.Close()
			}
			CloseFiles(h.listeners)
			return nil, fmt.Errorf("handoff: connection states from the fd store: %w", err)
		}
	}
	for _, s := range stored {
		f, ok := byName[s.FDName]
		if !ok {
			continue // the connection ended while systemd held it, or was never stored
		}
		delete(byName, s.FDName)
		h.removeNames = append(h.removeNames, s.FDName)
		h.conns = append(h.conns, File{Name: s.Name, State: s.State, File: f})
	}
	for name, f := range byName {
		// A stored connection without a state cannot be resumed.
		h.removeNames = append(h.removeNames, name)
		_ = f.Close()
	}
	return h, nil
}

// parseStored parses the state memfd's contents.
func parseStored(b []byte) ([]storedConn, error) {
	var stored []storedConn
	if err := json.Unmarshal(b, &stored); err != nil {
		return nil, err
	}
	return stored, nil
}

// removeStored drops names from the fd store: they are this process's now.
func removeStored(names []string) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" || len(names) == 0 {
		return nil
	}
	c, err := dialNotify(sock)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, n := range names {
		if err := c.send("FDSTOREREMOVE=1\nFDNAME=" + n); err != nil {
			return fmt.Errorf("handoff: removing %q from the fd store: %w", n, err)
		}
	}
	return nil
}
