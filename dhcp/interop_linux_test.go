package dhcp_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/dhcp"
	"github.com/netroot/netroot/internal/netns"
	"github.com/netroot/netroot/internal/peertest"
)

// segment is one Ethernet segment made of network namespaces: "site" holds a bridge with the
// site's DHCP server on it, and each other namespace is one host with an eth0 on the bridge.
type segment struct {
	ip  string
	id  string
	dir string
}

var segSeq atomic.Int32

func newSegment(t *testing.T) *segment {
	t.Helper()
	peertest.Root(t, "network namespaces, veth pairs and UDP port 67")
	s := &segment{ip: peertest.Program(t, "ip", "iproute2"), dir: t.TempDir()}
	s.id = fmt.Sprintf("%d%d", os.Getpid()%100000, segSeq.Add(1))
	s.addNS(t, s.ns("site"))
	s.run(t, "-n", s.ns("site"), "link", "add", "br0", "type", "bridge")
	s.run(t, "-n", s.ns("site"), "addr", "add", "192.0.2.2/24", "dev", "br0")
	s.run(t, "-n", s.ns("site"), "link", "set", "br0", "up")
	return s
}

func (s *segment) ns(name string) string { return "netroot-dhcp-" + s.id + "-" + name }

func (s *segment) addNS(t *testing.T, ns string) {
	t.Helper()
	s.run(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command(s.ip, "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
}

// host adds a namespace whose eth0 is on the bridge, with addr (a prefix) or no address.
func (s *segment) host(t *testing.T, name, addr string) string {
	t.Helper()
	ns := s.ns(name)
	s.addNS(t, ns)
	port := "d" + s.id + name[:1]
	s.run(t, "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", s.ns("site"))
	s.run(t, "-n", s.ns("site"), "link", "set", port, "master", "br0", "up")
	s.run(t, "-n", ns, "link", "set", "lo", "up")
	s.run(t, "-n", ns, "link", "set", "eth0", "up")
	if addr != "" {
		s.run(t, "-n", ns, "addr", "add", addr, "dev", "eth0")
	}
	return ns
}

func (s *segment) run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(s.ip, args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// startProxy runs a dhcp.Server on eth0 of namespace ns, on ports 67 and 4011.
func startProxy(t *testing.T, ns string, srv *dhcp.Server) {
	t.Helper()
	var pcs []net.PacketConn
	require.NoError(t, netns.Do(ns, func() error {
		for _, port := range []int{dhcp.ServerPort, dhcp.PXEPort} {
			pc, err := server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: port})
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	}))
	var wg sync.WaitGroup
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.ErrorIs(t, srv.Serve(pc), dhcp.ErrServerClosed)
		}()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		wg.Wait()
	})
}

// startDnsmasq runs dnsmasq as the site's DHCP server on the bridge: addresses only, no boot
// options at all, and no DNS.
func startDnsmasq(t *testing.T, s *segment) {
	t.Helper()
	bin := peertest.Program(t, "dnsmasq", "dnsmasq-base")
	log := &bytes.Buffer{}
	cmd := exec.Command(s.ip, "netns", "exec", s.ns("site"), bin, "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=br0", "--bind-interfaces", "--user=root", "--log-dhcp", "--log-facility=-",
		"--dhcp-range=192.0.2.100,192.0.2.149,255.255.255.0,10m",
		"--dhcp-leasefile="+filepath.Join(s.dir, "dnsmasq.leases"), "--pid-file="+filepath.Join(s.dir, "dnsmasq.pid"))
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", log)
		}
	})
}

// collectReplies listens on UDP port 68 in ns beside the real client (which reads through a
// raw socket) and returns the replies for hardware address mac that arrive until stop closes.
func collectReplies(t *testing.T, ns string, mac net.HardwareAddr) (stop func() []*dhcpv4.DHCPv4) {
	t.Helper()
	var pc net.PacketConn
	require.NoError(t, netns.Do(ns, func() error {
		var err error
		pc, err = server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcp.ClientPort})
		return err
	}))
	var (
		mu      sync.Mutex
		replies []*dhcpv4.DHCPv4
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if d, err := dhcpv4.FromBytes(buf[:n]); err == nil && bytes.Equal(d.ClientHWAddr, mac) {
				mu.Lock()
				replies = append(replies, d)
				mu.Unlock()
			}
		}
	}()
	return func() []*dhcpv4.DHCPv4 {
		pc.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return replies
	}
}

func hwaddr(t *testing.T, ns string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	require.NoError(t, netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}))
	return mac
}

// TestInteropProxyBesideDnsmasq puts netroot's proxyDHCP and a DHCP-only dnsmasq on one
// segment. ISC dhclient, sending a BIOS PXE vendor class and architecture, gets its address
// from dnsmasq (it requires a subnet mask, which the proxy's offer does not carry, as a PXE
// ROM requires an address); both offers reach the client; the proxy's offers no address and
// names pxelinux.0 on 192.0.2.1; and the PXE boot server request the client then sends to
// port 4011 is acknowledged with the same boot file.
func TestInteropProxyBesideDnsmasq(t *testing.T) {
	dhclient := peertest.Program(t, "dhclient", "isc-dhcp-client")
	s := newSegment(t)
	startDnsmasq(t, s)
	srvNS := s.host(t, "server", "192.0.2.1/24")
	cliNS := s.host(t, "client", "")
	srv := &dhcp.Server{Addr: netip.MustParseAddr("192.0.2.1")}
	startProxy(t, srvNS, srv)
	mac := hwaddr(t, cliNS)
	stop := collectReplies(t, cliNS, mac)

	conf := filepath.Join(s.dir, "dhclient.conf")
	require.NoError(t, os.WriteFile(conf, []byte(`option pxe-arch code 93 = unsigned integer 16;
send vendor-class-identifier "PXEClient:Arch:00000:UNDI:002001";
send pxe-arch 0;
require subnet-mask;
request subnet-mask, broadcast-address, routers, vendor-class-identifier, vendor-encapsulated-options, tftp-server-name, bootfile-name;
timeout 20;
`), 0o644))
	script := filepath.Join(s.dir, "dhclient-script")
	envOut := filepath.Join(s.dir, "env")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nenv >> "+envOut+"\necho ---- >> "+envOut+"\n"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pidFile := filepath.Join(s.dir, "dhclient.pid")
	t.Cleanup(func() {
		// dhclient goes to the background once bound; stop that process.
		if b, err := os.ReadFile(pidFile); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
				_ = unix.Kill(pid, unix.SIGTERM)
			}
		}
	})
	out, err := exec.CommandContext(ctx, s.ip, "netns", "exec", cliNS, dhclient, "-4", "-1", "-v",
		"-cf", conf, "-sf", script, "-lf", filepath.Join(s.dir, "dhclient.leases"), "-pf", pidFile, "eth0").CombinedOutput()
	t.Logf("dhclient:\n%s", out)
	require.NoError(t, err)
	require.Contains(t, string(out), "bound to 192.0.2.1", "dhclient got no lease")

	// dhclient logs every offer it receives: the proxy's (which it ignores, as it offers no
	// address) and dnsmasq's, which it takes.
	assert.Contains(t, string(out), "DHCPOFFER of 0.0.0.0 from 192.0.2.1")
	env, err := os.ReadFile(envOut)
	require.NoError(t, err)
	assert.Contains(t, string(env), "new_dhcp_server_identifier=192.0.2.2")
	var leased string
	for _, l := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(l, "new_ip_address="); ok {
			leased = v
		}
	}
	assert.Contains(t, string(out), "DHCPOFFER of "+leased+" from 192.0.2.2")
	require.True(t, strings.HasPrefix(leased, "192.0.2.1"), "dnsmasq leased %q", leased)
	assert.NotContains(t, string(env), "new_filename=", "dnsmasq was meant to hand out addresses only")

	// The proxy's offer as it arrived in the client's namespace (it is broadcast; dnsmasq's
	// is sent to the offered address and is not seen by this socket).
	var proxyOffer *dhcpv4.DHCPv4
	for _, r := range stop() {
		if r.MessageType() == dhcpv4.MessageTypeOffer && r.ServerIdentifier().String() == "192.0.2.1" {
			proxyOffer = r
		}
	}
	require.NotNil(t, proxyOffer, "the proxy's offer did not reach the client")
	assert.True(t, proxyOffer.YourIPAddr.IsUnspecified(), "proxy offered address %v", proxyOffer.YourIPAddr)
	assert.Equal(t, "pxelinux.0", proxyOffer.BootFileName)
	assert.Equal(t, "192.0.2.1", proxyOffer.ServerIPAddr.String())
	assert.Equal(t, "PXEClient", proxyOffer.ClassIdentifier())

	// The PXE client, now holding dnsmasq's address, asks the proxy on port 4011. (The
	// dhclient script only records the lease, so the address is configured here.)
	s.run(t, "-n", cliNS, "addr", "add", leased+"/24", "dev", "eth0")
	var c net.PacketConn
	require.NoError(t, netns.Do(cliNS, func() error {
		var err error
		c, err = net.ListenPacket("udp4", leased+":0")
		return err
	}))
	defer c.Close()
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP(leased)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(0)))
	require.NoError(t, err)
	_, err = c.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: dhcp.PXEPort})
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFrom(buf)
	require.NoError(t, err)
	assert.Equal(t, "192.0.2.1:4011", from.String())
	ack, err := dhcpv4.FromBytes(buf[:n])
	require.NoError(t, err)
	assert.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
	assert.Equal(t, req.TransactionID, ack.TransactionID)
	assert.Equal(t, "pxelinux.0", ack.BootFileName)
	assert.True(t, ack.YourIPAddr.IsUnspecified())

	st := srv.Stats()
	assert.GreaterOrEqual(t, st.Offers, uint64(1))
	assert.Equal(t, uint64(1), st.Acks)
}

// TestInteropProxyIgnoresPlainClients runs busybox udhcpc without a PXE vendor class beside
// the proxy and dnsmasq: it gets its address from dnsmasq, and the proxy answers nothing.
func TestInteropProxyIgnoresPlainClients(t *testing.T) {
	busybox := peertest.Program(t, "busybox", "busybox-static")
	s := newSegment(t)
	startDnsmasq(t, s)
	srvNS := s.host(t, "server", "192.0.2.1/24")
	cliNS := s.host(t, "client", "")
	srv := &dhcp.Server{Addr: netip.MustParseAddr("192.0.2.1")}
	startProxy(t, srvNS, srv)
	out := udhcpc(t, s, busybox, cliNS)
	assert.Contains(t, out, "serverid=192.0.2.2")
	assert.NotContains(t, out, "boot_file=")
	st := srv.Stats()
	assert.GreaterOrEqual(t, st.Ignored, uint64(1), "the proxy saw no request")
	assert.Zero(t, st.Offers+st.Acks)
}

// TestInteropLabUdhcpc runs the lab DHCP server alone on a segment: busybox udhcpc with a
// BIOS PXE vendor class and architecture option gets an address, the boot file and the next
// server, and after a restart of the server the same client gets the same address back from
// the lease file.
func TestInteropLabUdhcpc(t *testing.T) {
	busybox := peertest.Program(t, "busybox", "busybox-static")
	s := newSegment(t)
	srvNS := s.host(t, "server", "192.0.2.1/24")
	cliNS := s.host(t, "client", "")
	leases := filepath.Join(s.dir, "leases.json")
	lab := func() *dhcp.Server {
		return &dhcp.Server{Addr: netip.MustParseAddr("192.0.2.1"), Lab: &dhcp.Lab{
			Subnet: netip.MustParsePrefix("192.0.2.0/24"),
			Start:  netip.MustParseAddr("192.0.2.50"), End: netip.MustParseAddr("192.0.2.60"),
			Router: netip.MustParseAddr("192.0.2.1"), LeaseFile: leases,
		}}
	}
	srv := lab()
	var pc net.PacketConn
	require.NoError(t, netns.Do(srvNS, func() error {
		var err error
		pc, err = server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcp.ServerPort})
		return err
	}))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pc) }()
	out := udhcpc(t, s, busybox, cliNS, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
	assert.Contains(t, out, "ip=192.0.2.50")
	assert.Contains(t, out, "serverid=192.0.2.1")
	assert.Contains(t, out, "siaddr=192.0.2.1")
	assert.Contains(t, out, "boot_file=pxelinux.0")
	assert.Contains(t, out, "subnet=255.255.255.0")
	assert.Contains(t, out, "router=192.0.2.1")
	require.NoError(t, srv.Close())
	require.ErrorIs(t, <-done, dhcp.ErrServerClosed)

	// A new server process reads the lease file; a second client is given another address,
	// and the first one its old address again.
	s.run(t, "-n", cliNS, "addr", "flush", "dev", "eth0")
	srv = lab()
	require.NoError(t, netns.Do(srvNS, func() error {
		var err error
		pc, err = server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcp.ServerPort})
		return err
	}))
	go func() { done <- srv.Serve(pc) }()
	defer func() {
		srv.Close()
		<-done
	}()
	assert.Equal(t, 1, srv.Stats().ActiveLeases)
	other := s.host(t, "other", "")
	out = udhcpc(t, s, busybox, other, "-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010")
	assert.Contains(t, out, "ip=192.0.2.51")
	assert.Contains(t, out, "boot_file=http://192.0.2.1/bootx64.efi")
	out = udhcpc(t, s, busybox, cliNS)
	assert.Contains(t, out, "ip=192.0.2.50")
	assert.NotContains(t, out, "boot_file=", "a plain DHCP client gets no boot file")
}

// udhcpc runs busybox udhcpc once on eth0 of ns and returns the environment of its "bound"
// event.
func udhcpc(t *testing.T, s *segment, busybox, ns string, args ...string) string {
	t.Helper()
	envOut := filepath.Join(s.dir, "udhcpc-"+ns+".env")
	_ = os.Remove(envOut)
	script := filepath.Join(s.dir, "udhcpc-script")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nif [ \"$1\" = bound ]; then env > "+envOut+"; fi\n"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := append([]string{"netns", "exec", ns, busybox, "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "5", "-T", "2", "-s", script}, args...)
	out, err := exec.CommandContext(ctx, s.ip, cmd...).CombinedOutput()
	require.NoError(t, err, "udhcpc: %s", out)
	env, err := os.ReadFile(envOut)
	require.NoError(t, err, "udhcpc ran no bound event: %s", out)
	return string(env)
}
