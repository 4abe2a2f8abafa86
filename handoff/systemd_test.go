package handoff_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/handoff"
)

// fdstoreChild plays the process systemd starts after a restart. The test, standing in for
// systemd, passes LISTEN_FDS and LISTEN_FDNAMES; LISTEN_PID is set here because only systemd
// knows the pid between fork and exec.
func fdstoreChild() error {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	inh, err := handoff.Inherit()
	if err != nil {
		return err
	}
	// The test passes the listener twice, as a socket unit and from the store: once is kept.
	if names := inh.Names(); len(names) != 1 {
		return fmt.Errorf("listeners %q, want one", names)
	}
	ln, err := inh.Listener("lines")
	if err != nil || ln == nil {
		return fmt.Errorf("no listener %q (have %q): %v", "lines", inh.Names(), err)
	}
	conns, err := inh.Ready(context.Background(), time.Second)
	if err != nil {
		return err
	}
	for _, f := range conns {
		c, err := net.FileConn(f.File)
		if err != nil {
			return err
		}
		_ = f.Close()
		fmt.Fprintf(c, "resumed %s as %s by %d\n", f.State, f.Name, os.Getpid())
		_ = c.Close()
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	fmt.Fprintf(c, "accepted by %d\n", os.Getpid())
	return c.Close()
}

// fakeSystemd is the notify socket of a service manager: it keeps what FDSTORE=1 stores and
// records the other messages.
type fakeSystemd struct {
	c     *net.UnixConn
	names []string
	files []*os.File
	other []string
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	path := t.TempDir() + "/notify"
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &fakeSystemd{c: c}
}

// drain reads the messages sent so far.
func (s *fakeSystemd) drain(t *testing.T) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*16))
	for {
		require.NoError(t, s.c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
		n, oobn, _, _, err := s.c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		var fds []int
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			require.NoError(t, err)
			for _, cm := range cms {
				r, err := unix.ParseUnixRights(&cm)
				require.NoError(t, err)
				fds = append(fds, r...)
			}
		}
		if name, ok := strings.CutPrefix(msg, "FDSTORE=1\nFDNAME="); ok {
			require.Len(t, fds, 1, "message %q", msg)
			s.names = append(s.names, name)
			s.files = append(s.files, os.NewFile(uintptr(fds[0]), name))
			continue
		}
		require.Empty(t, fds, "message %q", msg)
		s.other = append(s.other, msg)
	}
}

// TestStoreAndInheritFromSystemd stores a listener and two connections with state in a fake
// systemd's fd store, closes them here as an exiting process would, starts a process with
// them as systemd does after a restart, and checks that it answers on both connections with
// their state and accepts on the listener, and that it took the connections out of the store.
func TestStoreAndInheritFromSystemd(t *testing.T) {
	sd := newFakeSystemd(t)
	t.Setenv("FDSTORE", "16")
	assert.True(t, handoff.FDStoreEnabled())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	var clients []net.Conn
	var conns []handoff.File
	for _, state := range []string{"alpha", "beta"} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		clients = append(clients, c)
		s, err := ln.Accept()
		require.NoError(t, err)
		f, err := handoff.FileOf(s.(*net.TCPConn))
		require.NoError(t, err)
		require.NoError(t, s.Close())
		conns = append(conns, handoff.File{Name: "line-conn", State: []byte(state), File: f})
	}
	lf, err := handoff.FileOf(ln.(*net.TCPListener))
	require.NoError(t, err)
	require.NoError(t, handoff.Store([]handoff.File{{Name: "lines", File: lf}}, conns))
	// The old process exits: its copies close.
	require.NoError(t, lf.Close())
	require.NoError(t, ln.Close())
	handoff.CloseFiles(conns)

	sd.drain(t)
	assert.Equal(t, []string{"lines", "netroot-handoff-state", "netroot-conn.0", "netroot-conn.1"}, sd.names)
	// systemd does not promise an order: pass them reversed, after the listener as a socket
	// unit would pass it.
	slices.Reverse(sd.names)
	slices.Reverse(sd.files)
	unitCopy, err := handoff.FileOf(sd.files[len(sd.files)-1])
	require.NoError(t, err)
	sd.names = append([]string{"lines"}, sd.names...)
	sd.files = append([]*os.File{unitCopy}, sd.files...)

	stderr, err := os.Create(t.TempDir() + "/stderr")
	require.NoError(t, err)
	defer stderr.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=fdstore", "LISTEN_FDS="+strconv.Itoa(len(sd.files)), "LISTEN_FDNAMES="+strings.Join(sd.names, ":"))
	cmd.ExtraFiles = sd.files
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	for _, f := range sd.files {
		_ = f.Close()
	}
	defer func() { _ = cmd.Process.Kill() }()

	for i, want := range []string{"alpha", "beta"} {
		require.NoError(t, clients[i].SetReadDeadline(time.Now().Add(10*time.Second)))
		l, err := bufio.NewReader(clients[i]).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("resumed %s as line-conn by %d\n", want, cmd.Process.Pid), l)
	}
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err, "the stored listener still listens")
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	l, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("accepted by %d\n", cmd.Process.Pid), l)
	err = cmd.Wait()
	b, _ := os.ReadFile(stderr.Name())
	require.NoError(t, err, "child stderr: %s", b)

	sd.drain(t)
	assert.ElementsMatch(t, []string{
		"FDSTOREREMOVE=1\nFDNAME=netroot-handoff-state",
		"FDSTOREREMOVE=1\nFDNAME=netroot-conn.0",
		"FDSTOREREMOVE=1\nFDNAME=netroot-conn.1",
	}, sd.other)
}

func TestStoreNeedsSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	assert.False(t, handoff.FDStoreEnabled())
	assert.ErrorContains(t, handoff.Store(nil, nil), "NOTIFY_SOCKET not set")
}
