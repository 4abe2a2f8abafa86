package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File is a named descriptor and the state its owner attaches to it. Name says what the
// descriptor is for ("nbd" for the NBD listener, "nbd-conn" for an established NBD connection,
// ...); State is opaque to this package.
type File struct {
	Name  string
	State []byte
	File  *os.File
}

// Close closes f's descriptor.
func (f File) Close() error {
	if f.File == nil {
		return nil
	}
	return f.File.Close()
}

// CloseFiles closes every descriptor in files.
func CloseFiles(files []File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// Limits of one message on the channel. The kernel passes at most 253 descriptors in one
// SCM_RIGHTS message (SCM_MAX_FD); a batch of files longer than maxBatch goes in several
// messages.
const (
	maxBatch   = 64
	maxMessage = 1 << 20
)

// Message types, in the order they are exchanged.
const (
	msgListeners = "listeners" // old → new: the listening sockets
	msgReady     = "ready"     // new → old: servers started, send the connections
	msgConns     = "conns"     // old → new: a batch of established connections
	msgDone      = "done"      // old → new: no more connections; Count says how many were sent
	msgAck       = "ack"       // new → old: Count connections received, the new process owns them
)

// message is the JSON header of one channel message; its descriptors travel beside it.
type message struct {
	Type   string   `json:"type"`
	Names  []string `json:"names,omitempty"`
	States [][]byte `json:"states,omitempty"`
	PID    int      `json:"pid,omitempty"`
	Count  int      `json:"count,omitempty"`
}

// channel is one end of the SOCK_SEQPACKET socketpair between the two processes.
type channel struct {
	c *net.UnixConn
}

// socketpair returns two connected channel ends as files, close-on-exec.
func socketpair() (a, b *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "handoff"), os.NewFile(uintptr(fds[1]), "handoff"), nil
}

// newChannel takes over f (closing it) as a channel end.
func newChannel(f *os.File) (*channel, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: channel descriptor %d: %w", f.Fd(), err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("handoff: channel descriptor is a %T, not a unix socket", c)
	}
	return &channel{c: uc}, nil
}

func (ch *channel) Close() error { return ch.c.Close() }

// send writes one message with files' descriptors attached. It does not close them.
func (ch *channel) send(m message, files []File) error {
	if len(files) > 0 {
		m.Names, m.States = make([]string, len(files)), make([][]byte, len(files))
	}
	fds := make([]int, len(files))
	for i, f := range files {
		m.Names[i], m.States[i] = f.Name, f.State
		fds[i] = int(f.File.Fd())
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("handoff: %s message: %w", m.Type, err)
	}
	if len(b) > maxMessage {
		return fmt.Errorf("handoff: %s message of %d bytes exceeds %d", m.Type, len(b), maxMessage)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_ = ch.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _, err = ch.c.WriteMsgUnix(b, oob, nil)
	for _, f := range files {
		runtime.KeepAlive(f.File)
	}
	if err != nil {
		return fmt.Errorf("handoff: send %s: %w", m.Type, err)
	}
	return nil
}

// recv reads one message and its descriptors, waiting until deadline. A peer that closed its
// end gives io.EOF.
func (ch *channel) recv(deadline time.Time) (message, []File, error) {
	var m message
	_ = ch.c.SetReadDeadline(deadline)
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*maxBatch))
	n, oobn, flags, _, err := ch.c.ReadMsgUnix(buf, oob)
	fds, perr := parseRights(oob[:oobn])
	files := make([]File, len(fds))
	for i, fd := range fds {
		files[i].File = os.NewFile(uintptr(fd), "handoff")
	}
	fail := func(err error) (message, []File, error) {
		CloseFiles(files)
		return m, nil, err
	}
	switch {
	case err != nil:
		return fail(fmt.Errorf("handoff: receive: %w", err))
	case perr != nil:
		return fail(perr)
	case n == 0 && oobn == 0:
		return fail(io.EOF)
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0:
		return fail(fmt.Errorf("handoff: receive: message truncated (%d bytes, %d descriptors)", n, len(fds)))
	}
	if m, err = decodeMessage(buf[:n], len(files)); err != nil {
		return fail(err)
	}
	for i := range files {
		files[i].Name = m.Names[i]
		if m.States != nil {
			files[i].State = m.States[i]
		}
	}
	return m, files, nil
}

// decodeMessage parses a message header that came with nfiles descriptors.
func decodeMessage(b []byte, nfiles int) (message, error) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return message{}, fmt.Errorf("handoff: bad message: %w", err)
	}
	if len(m.Names) != nfiles || (m.States != nil && len(m.States) != nfiles) {
		return message{}, fmt.Errorf("handoff: %s message names %d descriptors and carries %d", m.Type, len(m.Names), nfiles)
	}
	return m, nil
}

// expect receives one message of type want.
func (ch *channel) expect(want string, deadline time.Time) (message, []File, error) {
	m, files, err := ch.recv(deadline)
	if err != nil {
		return m, nil, err
	}
	if m.Type != want {
		CloseFiles(files)
		return m, nil, fmt.Errorf("handoff: got %q message, want %q", m.Type, want)
	}
	return m, files, nil
}

// parseRights returns the descriptors in a control message buffer.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: control message: %w", err)
	}
	var fds []int
	var errs []error
	for _, c := range cmsgs {
		r, err := unix.ParseUnixRights(&c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, r...)
	}
	if len(errs) > 0 {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, fmt.Errorf("handoff: control message: %w", errors.Join(errs...))
	}
	return fds, nil
}

// sendBatches sends files as messages of type typ, at most maxBatch descriptors each.
func (ch *channel) sendBatches(typ string, files []File) error {
	for len(files) > 0 {
		n := min(len(files), maxBatch)
		if err := ch.send(message{Type: typ}, files[:n]); err != nil {
			return err
		}
		files = files[n:]
	}
	return nil
}

// FileOf returns a duplicate of the descriptor behind c (a *net.TCPListener, *net.UDPConn,
// *net.TCPConn, *os.File, ...) as a close-on-exec file. c stays open and usable; closing c later
// does not close the socket while the duplicate (or a copy in another process) lives.
func FileOf(c syscall.Conn) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("handoff: %T: %w", c, err)
	}
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("handoff: %T: %w", c, err)
	}
	if derr != nil {
		return nil, fmt.Errorf("handoff: dup %T: %w", c, derr)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("%T", c)), nil
}
