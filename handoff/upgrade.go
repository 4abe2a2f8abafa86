package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// EnvFD is the environment variable that tells a process started by [Upgrade.Start] which of
// its file descriptors is the channel to its predecessor.
const EnvFD = "NETROOT_HANDOFF_FD"

// DefaultReadyTimeout is how long [Upgrade.Start] waits for the new process to report ready
// when Upgrade.ReadyTimeout is zero.
const DefaultReadyTimeout = 30 * time.Second

// Upgrade starts the new binary of a running server. The zero value starts the program as it
// was invoked, with the same arguments and environment.
type Upgrade struct {
	// Path is the program to start. Empty means the one this process was started as: argv[0]
	// (looked up in PATH when it has no slash), resolved again at each upgrade so that a binary
	// replaced on disk or a symlink moved to a new version takes effect; os.Executable when
	// argv[0] cannot be found.
	Path string
	// Args are the arguments after argv[0]; nil means os.Args[1:].
	Args []string
	// Env is the new process's environment (EnvFD is added); nil means os.Environ().
	Env []string
	// Stdout and Stderr of the new process; nil means this process's own.
	Stdout, Stderr io.Writer
	// ReadyTimeout bounds the wait for the new process to report ready; zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives what happens to the new process; nil means silence.
	Logger *slog.Logger
}

// Successor is a new process that reported ready and waits for the established connections.
type Successor struct {
	cmd    *exec.Cmd
	ch     *channel
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed
	sent   int
	log    *slog.Logger
}

// path returns the program to start.
func (u *Upgrade) path() (string, error) {
	if u.Path != "" {
		return u.Path, nil
	}
	if arg0 := os.Args[0]; arg0 != "" {
		if strings.Contains(arg0, "/") {
			if _, err := os.Stat(arg0); err == nil {
				return filepath.Abs(arg0)
			}
		} else if p, err := exec.LookPath(arg0); err == nil {
			return p, nil
		}
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("handoff: finding the program to start: %w", err)
	}
	return p, nil
}

// Start starts the new process, passes it listeners (which stay open here too) and waits until
// it reports ready, ctx ends or ReadyTimeout passes. On any failure the new process is killed
// and waited for, and the error says why; the caller keeps serving as before. On success the
// caller stops accepting on its listeners, hands over its connections with Send and calls
// Finish.
func (u *Upgrade) Start(ctx context.Context, listeners []File) (*Successor, error) {
	log := u.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := u.path()
	if err != nil {
		return nil, err
	}
	args := u.Args
	if args == nil {
		args = os.Args[1:]
	}
	env := u.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(withoutEnv(env, EnvFD), EnvFD+"=3")
	ours, theirs, err := socketpair()
	if err != nil {
		return nil, err
	}
	ch, err := newChannel(ours)
	if err != nil {
		_ = theirs.Close()
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, u.Stdout, u.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.ExtraFiles = []*os.File{theirs} // descriptor 3
	err = cmd.Start()
	_ = theirs.Close() // the child has its copy; its exit must read as EOF here
	if err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("handoff: starting %s: %w", path, err)
	}
	s := &Successor{cmd: cmd, ch: ch, exited: make(chan struct{}), log: log.With("new_pid", cmd.Process.Pid)}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	s.log.Info("upgrade: started the new process", "path", path)

	timeout := u.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { _ = ch.c.SetReadDeadline(time.Now()) })
	defer stop()
	if err := ch.send(message{Type: msgListeners}, listeners); err != nil {
		return nil, s.kill(err)
	}
	m, files, err := ch.expect(msgReady, deadline)
	CloseFiles(files)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("handoff: new process %d not ready within %v", cmd.Process.Pid, timeout)
		}
		return nil, s.kill(err)
	}
	if m.PID != cmd.Process.Pid {
		s.log.Warn("upgrade: ready message names another process", "named", m.PID)
	}
	s.log.Info("upgrade: the new process is ready")
	return s, nil
}

// kill ends a new process that failed, waits for it and returns cause with its exit status.
func (s *Successor) kill(cause error) error {
	_ = s.ch.Close()
	if errors.Is(cause, io.EOF) {
		// The new process closed the channel: most likely it is exiting; say how.
		select {
		case <-s.exited:
			cause = fmt.Errorf("handoff: new process %d exited before it was ready: %v", s.cmd.Process.Pid, s.err)
		case <-time.After(2 * time.Second):
		}
	}
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.log.Warn("upgrade failed; the old process keeps serving", "err", cause)
	return cause
}

// PID is the new process's id.
func (s *Successor) PID() int { return s.cmd.Process.Pid }

// Send passes established connections (or any descriptors with state) to the new process. The
// descriptors stay open here until Finish; the new process starts serving none of them before
// Finish.
func (s *Successor) Send(files []File) error {
	if err := s.ch.sendBatches(msgConns, files); err != nil {
		return err
	}
	s.sent += len(files)
	return nil
}

// Finish tells the new process that every connection was sent and waits (up to timeout) until
// it confirms that it owns them. Under systemd it then names the new process the service's
// main process (MAINPID=). After a nil error the caller closes its copies of the sent
// descriptors and exits once its other work (transfers in progress) is done.
//
// On an error the new process has been killed: the caller still owns every connection it sent
// and may go on serving them. Only when the error is [ErrUnconfirmed] is it unknown whether the
// new process had begun to serve them; the caller must then close them.
func (s *Successor) Finish(timeout time.Duration) error {
	if err := s.ch.send(message{Type: msgDone, Count: s.sent}, nil); err != nil {
		return s.kill(err)
	}
	m, files, err := s.ch.expect(msgAck, time.Now().Add(timeout))
	CloseFiles(files)
	if err == nil && m.Count != s.sent {
		err = fmt.Errorf("handoff: new process confirmed %d connections of %d", m.Count, s.sent)
	}
	if err != nil {
		return s.kill(fmt.Errorf("%w: %w", ErrUnconfirmed, err))
	}
	_ = s.ch.Close()
	s.log.Info("upgrade: handed over", "connections", s.sent)
	if ok, err := daemon.SdNotify(false, "MAINPID="+strconv.Itoa(s.cmd.Process.Pid)); err != nil {
		s.log.Warn("upgrade: sd_notify MAINPID", "err", err)
	} else if ok {
		s.log.Debug("upgrade: told systemd the new main process")
	}
	return nil
}

// Abort kills the new process before Finish; the caller keeps every descriptor it holds.
func (s *Successor) Abort(reason error) error { return s.kill(reason) }

// ErrUnconfirmed is wrapped by Finish's error when the new process was told that it owns the
// connections but did not confirm it.
var ErrUnconfirmed = errors.New("handoff: the new process did not confirm the handover")

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}
