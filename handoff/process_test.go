package handoff_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/handoff"
)

// envRole makes the test binary, started again by a test or by an upgrade, play a server
// process instead of running the tests.
const envRole = "HANDOFF_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "":
		os.Exit(m.Run())
	case "server":
		if err := lineServer(); err != nil {
			fmt.Fprintln(os.Stderr, "line server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "nbd":
		if err := nbdServer(); err != nil {
			fmt.Fprintln(os.Stderr, "nbd server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "fdstore":
		if err := fdstoreChild(); err != nil {
			fmt.Fprintln(os.Stderr, "fdstore child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "exit":
		// A new binary that fails at start.
		_, _ = handoff.Inherit()
		fmt.Fprintln(os.Stderr, "refusing to start")
		os.Exit(3)
	case "hang":
		// A new binary that never reports ready.
		_, _ = handoff.Inherit()
		time.Sleep(time.Minute)
		os.Exit(4)
	}
	os.Exit(5)
}

// lineState is what a connection of the line server carries across an upgrade: how many lines
// it answered and the bytes of the line it has read only in part.
type lineState struct {
	Count   int
	Pending []byte
}

// lineServer answers each line of its one client with "PID COUNT". On SIGUSR2 it starts its
// successor with handoff.Upgrade and passes it the listener and the connection with its state.
// It exits when the client hangs up, after a handover, or after a minute.
func lineServer() error {
	// Before anything: an unhandled SIGUSR2 is ignored, and the test may signal as soon as it
	// got answers.
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	inh, err := handoff.Inherit()
	if err != nil {
		return err
	}
	ln, err := inh.Listener("lines")
	if err != nil {
		return err
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		fmt.Printf("addr=%s\n", ln.Addr())
	}
	var (
		stopping atomic.Bool
		mu       sync.Mutex
		conns    = map[net.Conn]chan lineState{} // a stopped handler's state comes back here
		finished = make(chan error, 1)
	)
	serve := func(c net.Conn, st lineState) {
		back := make(chan lineState, 1)
		mu.Lock()
		conns[c] = back
		mu.Unlock()
		go func() {
			st, err := answerLines(c, st, &stopping)
			if stopping.Load() {
				back <- st
				return
			}
			_ = c.Close()
			if errors.Is(err, io.EOF) {
				err = nil // the client hung up
			}
			finished <- err
		}()
	}
	handed, err := inh.Ready(context.Background(), 10*time.Second)
	if err != nil {
		return err
	}
	for _, f := range handed {
		c, err := net.FileConn(f.File)
		_ = f.Close()
		if err != nil {
			return err
		}
		var st lineState
		if err := json.Unmarshal(f.State, &st); err != nil {
			return err
		}
		serve(c, st)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c, lineState{})
		}
	}()
	for {
		select {
		case err := <-finished:
			return err
		case <-time.After(time.Minute):
			return errors.New("no client for a minute")
		case <-usr2:
		}
		lf, err := handoff.FileOf(ln.(*net.TCPListener))
		if err != nil {
			return err
		}
		succ, err := (&handoff.Upgrade{ReadyTimeout: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}).Start(context.Background(), []handoff.File{{Name: "lines", File: lf}})
		_ = lf.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "upgrade failed, still serving:", err)
			continue
		}
		// Stop accepting and stop every handler between two reads.
		_ = ln.Close()
		stopping.Store(true)
		mu.Lock()
		var files []handoff.File
		for c, back := range conns {
			_ = c.SetReadDeadline(time.Now())
			st := <-back
			b, _ := json.Marshal(st)
			f, err := handoff.FileOf(c.(*net.TCPConn))
			if err != nil {
				return err
			}
			files = append(files, handoff.File{Name: "line-conn", State: b, File: f})
		}
		mu.Unlock()
		if err := succ.Send(files); err != nil {
			return err
		}
		if err := succ.Finish(10 * time.Second); err != nil {
			return err
		}
		handoff.CloseFiles(files)
		return nil
	}
}

// answerLines answers complete lines until the connection ends or stopping is set (with a read
// deadline to wake the reader); it returns the state to carry on from.
func answerLines(c net.Conn, st lineState, stopping *atomic.Bool) (lineState, error) {
	buf := st.Pending
	tmp := make([]byte, 4096)
	pid := os.Getpid()
	for {
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			st.Count++
			buf = buf[i+1:]
			if _, err := fmt.Fprintf(c, "%d %d\n", pid, st.Count); err != nil {
				return st, err
			}
		}
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			st.Pending = bytes.Clone(buf)
			if stopping.Load() {
				return st, nil
			}
			return st, err
		}
	}
}

// TestUpgradeKeepsConnection starts the line server, talks to it, signals an upgrade while
// bytes (among them half a line) wait unread, and checks that the same connection goes on being
// answered, with no line lost or answered twice, by another process.
func TestUpgradeKeepsConnection(t *testing.T) {
	// The new server is the old one's child; once the old one exits it becomes ours, so that
	// its exit status can be checked.
	require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()

	// Both servers write to a file, not a pipe: cmd.Wait would wait for the new server to
	// close a pipe it inherited.
	stderr, err := os.Create(t.TempDir() + "/stderr")
	require.NoError(t, err)
	defer stderr.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=server")
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	oldPID := cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		b, _ := os.ReadFile(stderr.Name())
		t.Logf("servers' stderr:\n%s", b)
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr=")
	require.True(t, ok, "first line %q", line)

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	r := bufio.NewReader(c)
	expect := func(count int) (pid int) {
		t.Helper()
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		var n int
		_, err = fmt.Sscanf(l, "%d %d\n", &pid, &n)
		require.NoError(t, err, "reply %q", l)
		require.Equal(t, count, n, "reply %q: every line is answered once, in order", l)
		return pid
	}
	_, err = c.Write([]byte("a\nb\nc\n"))
	require.NoError(t, err)
	for i := 1; i <= 3; i++ {
		assert.Equal(t, oldPID, expect(i))
	}

	// Bytes in flight across the upgrade: two lines and half of a third, then the signal, then
	// the rest, without waiting for answers.
	_, err = c.Write([]byte("d\ne\nf"))
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Signal(syscall.SIGUSR2))
	_, err = c.Write([]byte("\ng\n"))
	require.NoError(t, err)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		require.NoError(t, err, "the old server exits cleanly after the handover")
	case <-time.After(30 * time.Second):
		t.Fatal("the old server did not exit after SIGUSR2")
	}
	_, err = c.Write([]byte("h\ni\n"))
	require.NoError(t, err)
	var newPID int
	for i := 4; i <= 9; i++ {
		newPID = expect(i)
	}
	assert.NotEqual(t, oldPID, newPID, "the last lines are answered by the new process")

	// A process started by an upgrade upgrades in turn.
	require.NoError(t, syscall.Kill(newPID, syscall.SIGUSR2))
	_, err = c.Write([]byte("j\n"))
	require.NoError(t, err)
	waitExit(t, newPID, "the second server after SIGUSR2")
	_, err = c.Write([]byte("k\n"))
	require.NoError(t, err)
	expect(10)
	thirdPID := expect(11)
	assert.NotContains(t, []int{oldPID, newPID}, thirdPID, "a third process answers")

	// The last server exits when its client hangs up.
	require.NoError(t, c.Close())
	waitExit(t, thirdPID, "the third server after its client left")
}

// waitExit waits for pid, a child of this process (it is a subreaper), to exit with status 0.
func waitExit(t *testing.T, pid int, who string) {
	t.Helper()
	var ws unix.WaitStatus
	done := make(chan error, 1)
	go func() {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
		assert.True(t, ws.Exited() && ws.ExitStatus() == 0, "%s: %v", who, ws)
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("%s did not exit", who)
	}
}

// TestUpgradeFailures starts successors that cannot take over; the old process (this one) must
// get an error saying why and keep its listener.
func TestUpgradeFailures(t *testing.T) {
	for _, tc := range []struct {
		name, role, path string
		want             string
	}{
		{"new binary missing", "", "/nonexistent/netroot", "starting /nonexistent/netroot"},
		{"new process exits", "exit", "", "exited before it was ready: exit status 3"},
		{"new process never ready", "hang", "", "not ready within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			lf, err := handoff.FileOf(ln.(*net.TCPListener))
			require.NoError(t, err)
			defer lf.Close()
			up := &handoff.Upgrade{
				Path:         tc.path,
				Args:         []string{"-test.run=^$"},
				Env:          append(os.Environ(), envRole+"="+tc.role),
				ReadyTimeout: 300 * time.Millisecond,
				Stderr:       &bytes.Buffer{},
			}
			start := time.Now()
			succ, err := up.Start(context.Background(), []handoff.File{{Name: "lines", File: lf}})
			require.Error(t, err)
			assert.Nil(t, succ)
			assert.ErrorContains(t, err, tc.want)
			assert.Less(t, time.Since(start), 10*time.Second)

			// Still listening here, and nobody else answers.
			c, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, ln.(*net.TCPListener).SetDeadline(time.Now().Add(5*time.Second)))
			a, err := ln.Accept()
			require.NoError(t, err)
			require.NoError(t, a.Close())
		})
	}
}

// TestInheritWithoutUpgrade: a process started normally inherits nothing, and the nil value
// answers like an empty one.
func TestInheritWithoutUpgrade(t *testing.T) {
	t.Setenv(handoff.EnvFD, "")
	os.Unsetenv(handoff.EnvFD)
	inh, err := handoff.Inherit()
	require.NoError(t, err)
	require.Nil(t, inh)
	l, err := inh.Listener("nbd")
	assert.NoError(t, err)
	assert.Nil(t, l)
	conns, err := inh.Ready(context.Background(), time.Second)
	assert.NoError(t, err)
	assert.Empty(t, conns)
}

func TestInheritBadDescriptor(t *testing.T) {
	t.Setenv(handoff.EnvFD, "x")
	_, err := handoff.Inherit()
	assert.ErrorContains(t, err, `NETROOT_HANDOFF_FD="x"`)
	t.Setenv(handoff.EnvFD, strconv.Itoa(1000))
	_, err = handoff.Inherit()
	assert.Error(t, err)
}
