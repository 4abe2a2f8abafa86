package handoff_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/handoff"
	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/nbd"
)

// slowDevice makes every read take delay, so that a client is still reading when the test
// upgrades the server.
type slowDevice struct {
	backend.Device
	delay time.Duration
}

func (d slowDevice) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(d.delay)
	return d.Device.ReadAt(p, off)
}

// nbdServer serves the image $HANDOFF_TEST_IMAGE as export "root", slowed down by
// $HANDOFF_TEST_DELAY per read. On SIGUSR2 it upgrades: starts its successor with the listener,
// hands over its NBD connections (nbd.Server.Handoff) and exits. A process that resumed
// connections exits when the last one ends.
func nbdServer() error {
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	delay, _ := time.ParseDuration(os.Getenv("HANDOFF_TEST_DELAY"))
	f, err := backend.OpenFile(os.Getenv("HANDOFF_TEST_IMAGE"), &backend.FileOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	set, err := nbd.NewExportSet(&nbd.Export{Name: "root", Device: slowDevice{f, delay}})
	if err != nil {
		return err
	}
	srv := &nbd.Server{Exports: set, Logger: log}
	inh, err := handoff.Inherit()
	if err != nil {
		return err
	}
	ln, err := inh.Listener("nbd")
	if err != nil {
		return err
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		fmt.Printf("addr=%s\n", ln.Addr())
	}
	go func() { _ = srv.Serve(ln) }()
	conns, err := inh.Ready(context.Background(), 30*time.Second)
	if err != nil {
		return err
	}
	for _, hf := range conns {
		var st nbd.ConnState
		if err := st.UnmarshalBinary(hf.State); err != nil {
			return err
		}
		c, err := net.FileConn(hf.File)
		_ = hf.Close()
		if err != nil {
			return err
		}
		go func() { _ = srv.Resume(context.Background(), c, st) }()
	}
	log.Info("serving", "resumed", len(conns))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	limit := time.After(2 * time.Minute)
	for {
		select {
		case <-limit:
			return errors.New("still running after two minutes")
		case <-tick.C:
			if len(conns) > 0 && srv.Stats().ActiveConnections == 0 {
				log.Info("the last client left")
				return nil
			}
			continue
		case <-usr2:
		}
		lf, err := handoff.FileOf(ln.(*net.TCPListener))
		if err != nil {
			return err
		}
		succ, err := (&handoff.Upgrade{Logger: log}).Start(context.Background(), []handoff.File{{Name: "nbd", File: lf}})
		_ = lf.Close()
		if err != nil {
			continue // logged; still serving
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := srv.Handoff(ctx)
		cancel()
		if err != nil && res == nil {
			return err
		}
		var files []handoff.File
		for _, hc := range res.Conns {
			b, err := hc.State.MarshalBinary()
			if err != nil {
				return err
			}
			cf, err := handoff.FileOf(hc.Conn.(*net.TCPConn))
			if err != nil {
				return err
			}
			_ = hc.Conn.Close()
			files = append(files, handoff.File{Name: "nbd-conn", State: b, File: cf})
		}
		log.Info("handing over", "connections", len(files), "kept", res.Kept, "closed", res.Closed)
		if err := succ.Send(files); err != nil {
			return err
		}
		if err := succ.Finish(30 * time.Second); err != nil {
			return err
		}
		handoff.CloseFiles(files)
		return nil
	}
}

// TestUpgradeNBDWithNbdcopy: libnbd's nbdcopy reads a whole export while the server upgrades
// itself (SIGUSR2) in the middle; the copy is byte-exact, nbdcopy reports no error, and the old
// server has exited before the copy ends, so the new one served the rest.
func TestUpgradeNBDWithNbdcopy(t *testing.T) {
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	for _, tc := range []struct {
		name  string
		delay time.Duration
		args  []string
	}{
		// One request at a time: the handover falls between two requests.
		{"one request at a time", 8 * time.Millisecond, []string{"-C", "1", "-R", "1", "--request-size=65536"}},
		// Several connections with requests in flight: they are finished by the old server.
		{"four connections pipelined", 150 * time.Millisecond, []string{"-C", "4", "-R", "8", "--request-size=65536"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
			defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
			dir := t.TempDir()
			img := make([]byte, 16<<20)
			_, _ = rand.Read(img)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "root.img"), img, 0o644))

			stderr, err := os.Create(filepath.Join(dir, "stderr"))
			require.NoError(t, err)
			defer stderr.Close()
			srv := exec.Command(os.Args[0], "-test.run=^$")
			srv.Env = append(os.Environ(), envRole+"=nbd", "HANDOFF_TEST_IMAGE="+filepath.Join(dir, "root.img"), "HANDOFF_TEST_DELAY="+tc.delay.String())
			srv.Stderr = stderr
			out, err := srv.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, srv.Start())
			defer func() { _ = srv.Process.Kill() }()
			logs := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
			line, err := bufio.NewReader(out).ReadString('\n')
			require.NoError(t, err, "server: %s", logs())
			addr, _ := strings.CutPrefix(strings.TrimSpace(line), "addr=")

			copyOut := filepath.Join(dir, "copy.img")
			var copyErr bytes.Buffer
			cp := exec.Command(nbdcopy, append(tc.args, "nbd://"+addr+"/root", copyOut)...)
			cp.Stdout, cp.Stderr = &copyErr, &copyErr
			require.NoError(t, cp.Start())
			copyDone := make(chan error, 1)
			go func() { copyDone <- cp.Wait() }()

			// Upgrade once the copy is under way.
			time.Sleep(500 * time.Millisecond)
			require.NoError(t, srv.Process.Signal(syscall.SIGUSR2))
			oldDone := make(chan error, 1)
			go func() { oldDone <- srv.Wait() }()
			select {
			case err := <-oldDone:
				require.NoError(t, err, "old server: %s", logs())
			case err := <-copyDone:
				t.Fatalf("nbdcopy ended (%v) before the old server exited; server: %s", err, logs())
			case <-time.After(30 * time.Second):
				t.Fatalf("the old server did not exit; server: %s", logs())
			}
			select {
			case err := <-copyDone:
				require.NoError(t, err, "nbdcopy: %s\nserver: %s", copyErr.String(), logs())
			case <-time.After(60 * time.Second):
				_ = cp.Process.Kill()
				t.Fatalf("nbdcopy did not finish; server: %s", logs())
			}
			assert.Empty(t, copyErr.String(), "nbdcopy printed something")
			got, err := os.ReadFile(copyOut)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(img, got), "the copy differs from the image")

			// The new server resumed the connections and exits once nbdcopy has left.
			l := logs()
			oldPID := strconv.Itoa(srv.Process.Pid)
			assert.Contains(t, l, `msg="handing over" pid=`+oldPID)
			var newPID int
			for _, ln := range strings.Split(l, "\n") {
				if strings.Contains(ln, `msg=serving`) && !strings.Contains(ln, "resumed=0") {
					_, err := fmt.Sscanf(ln[strings.Index(ln, "pid="):], "pid=%d", &newPID)
					require.NoError(t, err, "line %q", ln)
				}
			}
			require.NotZero(t, newPID, "no process resumed connections: %s", l)
			assert.NotEqual(t, srv.Process.Pid, newPID)
			var ws unix.WaitStatus
			_, err = unix.Wait4(newPID, &ws, 0, nil)
			require.NoError(t, err)
			assert.True(t, ws.Exited() && ws.ExitStatus() == 0, "new server: %v; %s", ws, l)
			if t.Failed() {
				t.Logf("server log:\n%s", l)
			}
		})
	}
}
