package soak_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/internal/netns"
	"github.com/netroot/netroot/internal/peertest"
)

// vethPair is two network namespaces joined by a veth pair, deleted when the test ends: the
// AoE target's side A and the initiators' side B.
type vethPair struct {
	ip       string
	nsA, nsB string
	ifA, ifB string
}

func newVethPair(t *testing.T) *vethPair {
	t.Helper()
	p := &vethPair{ip: peertest.Program(t, "ip", "iproute2")}
	id := fmt.Sprint(os.Getpid() % 100000)
	p.nsA, p.nsB = "netroot-soak-"+id+"-a", "netroot-soak-"+id+"-b"
	p.ifA, p.ifB = "soak"+id+"a", "soak"+id+"b"
	for _, ns := range []string{p.nsA, p.nsB} {
		p.run(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command(p.ip, "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	p.run(t, "link", "add", p.ifA, "netns", p.nsA, "type", "veth", "peer", "name", p.ifB, "netns", p.nsB)
	p.run(t, "-n", p.nsA, "link", "set", p.ifA, "mtu", "9000", "up")
	p.run(t, "-n", p.nsB, "link", "set", p.ifB, "mtu", "9000", "up")
	return p
}

func (p *vethPair) run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(p.ip, args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// rawSocket is an AF_PACKET socket in namespace B that sends whole Ethernet frames (any source
// address) and receives every AoE frame on the interface, broadcasts included.
type rawSocket struct {
	fd      int
	ifindex int
}

func openRaw(t *testing.T, ns, ifname string) *rawSocket {
	t.Helper()
	r := &rawSocket{fd: -1}
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(aoe.EtherType)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(aoe.EtherType), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		r.fd, r.ifindex = fd, ifi.Index
		return nil
	})
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(r.fd) })
	return r
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send sends one Ethernet frame.
func (r *rawSocket) send(frame []byte) error {
	return unix.Sendto(r.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: r.ifindex, Halen: 6, Protocol: htons(aoe.EtherType)})
}

// recv returns the next frame within d, or nil.
func (r *rawSocket) recv(buf []byte, d time.Duration) []byte {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	_ = unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	n, _, err := unix.Recvfrom(r.fd, buf, 0)
	if err != nil || n <= 0 {
		return nil
	}
	return buf[:n]
}

// initiator is the legitimate AoE initiator in namespace B.
type initiator struct {
	c *aoe.Client
}

func newInitiator(t *testing.T, p *vethPair) *initiator {
	t.Helper()
	conn, err := aoetest.ListenIn(p.nsB, p.ifB)
	require.NoError(t, err)
	c := aoe.NewClient(conn, nil)
	t.Cleanup(func() { _ = c.Close() })
	return &initiator{c: c}
}

// readAll reads the whole device and returns its SHA-256.
func (i *initiator) readAll(ctx context.Context) ([32]byte, error) {
	d, err := i.c.Open(ctx, aoeShelf, aoeSlot)
	if err != nil {
		return [32]byte{}, err
	}
	buf := make([]byte, d.Size())
	const chunk = 1 << 20
	for off := int64(0); off < d.Size(); off += chunk {
		if _, err := d.ReadAtContext(ctx, buf[off:min(off+chunk, d.Size())], off); err != nil {
			return [32]byte{}, err
		}
	}
	return sha256.Sum256(buf), nil
}
