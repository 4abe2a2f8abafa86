package soak_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/tftp"
)

// hostile replays the patterns of issue #17 against the soak's servers. Every loop is bounded
// by a count and by the context; every socket is closed by closeAll.
type hostile struct {
	t   *testing.T
	srv *child
	nw  *vethPair
	ini *initiator

	mu      sync.Mutex
	closers []io.Closer
	counts  sync.Map // pattern -> *atomic.Int64

	maxErrorPacket   atomic.Int64
	aoeBroadcastData atomic.Int64
	// idleAttached and idleCut count the idle clients of the export with an idle timeout, and
	// those the server disconnected in time.
	idleAttached, idleCut atomic.Int64
}

func (h *hostile) keep(c io.Closer) {
	h.mu.Lock()
	h.closers = append(h.closers, c)
	h.mu.Unlock()
}

func (h *hostile) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.closers {
		_ = c.Close()
	}
	h.closers = nil
}

func (h *hostile) count(pattern string) {
	v, _ := h.counts.LoadOrStore(pattern, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (h *hostile) summary() string {
	var parts []string
	h.counts.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	return strings.Join(parts, " ")
}

// start runs every pattern on its own goroutines until ctx ends.
func (h *hostile) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, p := range []func(context.Context){
		h.tftpManyOptions, h.tftpAbandoned, h.tftpNetascii, h.tftpLongNames, h.tftpRandom, h.tftpIdle,
		h.nbdUnreadReplies, h.nbdCutWrites, h.nbdIdle, h.nbdRandom, h.nbdExportTimeout,
		h.aoeGroupSources, h.aoeRandom, h.aoeSniff,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p(ctx)
		}()
	}
}

// udpFrom opens a UDP socket on a loopback address, kept until closeAll.
func (h *hostile) udpFrom(ip string) *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		h.t.Errorf("hostile: %v", err)
		return nil
	}
	h.keep(c)
	return c
}

func (h *hostile) tftpServer() *net.UDPAddr {
	a, _ := net.ResolveUDPAddr("udp4", h.srv.tftp)
	return a
}

func rrq(name, mode string, opts ...tftp.Option) []byte {
	b, _ := tftp.MarshalPacket(&tftp.RequestPacket{Op: tftp.OpRRQ, Filename: name, Mode: mode, Options: opts})
	return b
}

// drain reads and drops what arrives on c until ctx ends, answering each OACK with ACK 0 when
// ack0 is set (the abandoned transfers of defect 5), and recording ERROR packet sizes.
func (h *hostile) drain(ctx context.Context, c *net.UDPConn, ack0 bool) {
	buf := make([]byte, 70000)
	for ctx.Err() == nil {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if n >= 2 && tftp.Opcode(binary.BigEndian.Uint16(buf)) == tftp.OpERROR {
			for {
				old := h.maxErrorPacket.Load()
				if int64(n) <= old || h.maxErrorPacket.CompareAndSwap(old, int64(n)) {
					break
				}
			}
		}
		if ack0 && n >= 2 && tftp.Opcode(binary.BigEndian.Uint16(buf)) == tftp.OpOACK {
			b, _ := tftp.MarshalPacket(&tftp.AckPacket{Block: 0})
			_, _ = c.WriteToUDPAddrPort(b, from)
		}
	}
}

// Defect 1: 65 KB read requests with thousands of distinct options.
func (h *hostile) tftpManyOptions(ctx context.Context) {
	c := h.udpFrom("127.0.0.1")
	if c == nil {
		return
	}
	go h.drain(ctx, c, false)
	b := []byte("\x00\x01legit.bin\x00octet\x00")
	for i := 0; len(b) < 65_000; i++ {
		b = append(append(b, strconv.FormatInt(int64(i), 36)...), 0, '1', 0)
	}
	for i := 0; i < 2000 && ctx.Err() == nil; i++ {
		_, _ = c.WriteToUDP(b, h.tftpServer())
		h.count("tftp-many-options")
		time.Sleep(15 * time.Millisecond)
	}
}

// Defect 5: 300 requests for the largest windows, each answered with ACK 0 and abandoned.
func (h *hostile) tftpAbandoned(ctx context.Context) {
	opts := []tftp.Option{{Name: "blksize", Value: "65464"}, {Name: "windowsize", Value: "64"}, {Name: "timeout", Value: "255"}}
	for a := range 10 {
		c := h.udpFrom(fmt.Sprintf("127.0.0.%d", 10+a))
		if c == nil {
			return
		}
		go h.drain(ctx, c, true)
		for range 30 {
			if ctx.Err() != nil {
				return
			}
			_, _ = c.WriteToUDP(rrq("legit.bin", "octet", opts...), h.tftpServer())
			h.count("tftp-abandoned")
		}
	}
	<-ctx.Done()
}

// Defect 7: netascii reads of a large file, abandoned after the first block.
func (h *hostile) tftpNetascii(ctx context.Context) {
	c := h.udpFrom("127.0.0.20")
	if c == nil {
		return
	}
	go h.drain(ctx, c, false)
	for i := 0; i < 40 && ctx.Err() == nil; i++ {
		_, _ = c.WriteToUDP(rrq("big.txt", "netascii"), h.tftpServer())
		h.count("tftp-netascii")
		time.Sleep(100 * time.Millisecond)
	}
}

// Error messages must not echo names of any length.
func (h *hostile) tftpLongNames(ctx context.Context) {
	c := h.udpFrom("127.0.0.23")
	if c == nil {
		return
	}
	go h.drain(ctx, c, false)
	long := strings.Repeat("../x", 15_000)
	for i := 0; i < 100 && ctx.Err() == nil; i++ {
		_, _ = c.WriteToUDP(rrq(long[i%4:], "octet"), h.tftpServer())
		h.count("tftp-long-name")
		time.Sleep(50 * time.Millisecond)
	}
}

// Random datagrams to the request port.
func (h *hostile) tftpRandom(ctx context.Context) {
	c := h.udpFrom("127.0.0.21")
	if c == nil {
		return
	}
	go h.drain(ctx, c, false)
	r := rand.New(rand.NewPCG(21, 1))
	b := make([]byte, 1500)
	for i := 0; i < 20_000 && ctx.Err() == nil; i++ {
		n := r.IntN(len(b))
		for j := range n {
			b[j] = byte(r.Uint32())
		}
		if n >= 2 && r.IntN(2) == 0 {
			b[0], b[1] = 0, byte(1+r.IntN(6)) // a known opcode now and then
		}
		_, _ = c.WriteToUDP(b[:n], h.tftpServer())
		h.count("tftp-random")
		if i%100 == 99 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// An idle flood: requests from one address that are never acknowledged.
func (h *hostile) tftpIdle(ctx context.Context) {
	c := h.udpFrom("127.0.0.22")
	if c == nil {
		return
	}
	go h.drain(ctx, c, false)
	for i := 0; i < 200 && ctx.Err() == nil; i++ {
		_, _ = c.WriteToUDP(rrq("legit.bin", "octet"), h.tftpServer())
		h.count("tftp-idle")
		time.Sleep(20 * time.Millisecond)
	}
}

// nbdDialer dials from the loopback address from: hostile NBD clients never use 127.0.0.1,
// nbdcopy's address, so that per-address limits can tell them apart.
func nbdDialer(from string) *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
}

// nbdAttach connects from 127.0.0.31 and enters transmission on export with
// NBD_OPT_EXPORT_NAME; rcvbuf > 0 shrinks the socket's receive buffer first.
func (h *hostile) nbdAttach(ctx context.Context, export string, rcvbuf int) (net.Conn, error) {
	d := nbdDialer("127.0.0.31")
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		}
	}
	c, err := d.DialContext(ctx, "tcp4", h.srv.nbd)
	if err != nil {
		return nil, err
	}
	h.keep(c)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	hello := make([]byte, 18)
	if _, err := io.ReadFull(c, hello); err != nil {
		return nil, err
	}
	if string(hello[:8]) != "NBDMAGIC" || string(hello[8:16]) != "IHAVEOPT" {
		return nil, fmt.Errorf("nbd: greeting %q", hello)
	}
	msg := binary.BigEndian.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	msg = append(msg, "IHAVEOPT"...)
	msg = binary.BigEndian.AppendUint32(msg, 1) // NBD_OPT_EXPORT_NAME
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(export)))
	msg = append(msg, export...)
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, make([]byte, 10)); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func nbdRequest(cmd uint16, handle, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0x25609513)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, cmd)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// Defect 2: READs on a copy-on-write export whose replies are never read, on 12 connections
// (8 took the server from 11 to 525 MiB before the fix).
func (h *hostile) nbdUnreadReplies(ctx context.Context) {
	for i := range 12 {
		c, err := h.nbdAttach(ctx, "cow", 4096)
		if err != nil {
			h.t.Errorf("hostile nbd attach: %v", err)
			return
		}
		var reqs []byte
		for k := range 64 {
			reqs = append(reqs, nbdRequest(0, uint64(i<<8|k), uint64(k)<<20%(32<<20), 1<<20)...)
		}
		_, _ = c.Write(reqs)
		h.count("nbd-unread-replies")
	}
	<-ctx.Done()
}

// Defect 8: WRITEs of 1 MiB to a writable file export, cut off after 128 KiB.
func (h *hostile) nbdCutWrites(ctx context.Context) {
	payload := make([]byte, 128<<10)
	for i := range payload {
		payload[i] = 0xEE
	}
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		c, err := h.nbdAttach(ctx, "rw", 0)
		if err != nil {
			h.t.Errorf("hostile nbd attach: %v", err)
			return
		}
		_, _ = c.Write(append(nbdRequest(1, uint64(i), uint64(i)<<16, 1<<20), payload...))
		_ = c.Close()
		h.count("nbd-cut-write")
		time.Sleep(200 * time.Millisecond)
	}
}

// An idle flood: connections that never start the handshake, and attached ones that send
// nothing.
func (h *hostile) nbdIdle(ctx context.Context) {
	for i := 0; i < 200 && ctx.Err() == nil; i++ {
		c, err := nbdDialer("127.0.0.30").DialContext(ctx, "tcp4", h.srv.nbd)
		if err != nil {
			continue
		}
		h.keep(c)
		h.count("nbd-idle-handshake")
	}
	for i := 0; i < 50 && ctx.Err() == nil; i++ {
		if _, err := h.nbdAttach(ctx, "root", 0); err == nil {
			h.count("nbd-idle-attached")
		}
	}
	<-ctx.Done()
}

// Defect 3: idle clients of an export with its own idle timeout are disconnected after it.
func (h *hostile) nbdExportTimeout(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		c, err := h.nbdAttach(ctx, "timed", 0)
		if err != nil {
			h.t.Errorf("hostile nbd attach: %v", err)
			break
		}
		h.idleAttached.Add(1)
		h.count("nbd-idle-timed")
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_ = c.SetReadDeadline(start.Add(serverConfig.nbdExportIdle + 5*time.Second))
			if _, err := c.Read(make([]byte, 1)); err == io.EOF && time.Since(start) >= serverConfig.nbdExportIdle-time.Second {
				h.idleCut.Add(1)
			}
		}()
	}
	wg.Wait()
}

// Random bytes instead of a handshake, and random requests after one.
func (h *hostile) nbdRandom(ctx context.Context) {
	r := rand.New(rand.NewPCG(8, 1))
	b := make([]byte, 4096)
	for i := 0; i < 100 && ctx.Err() == nil; i++ {
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		var c net.Conn
		var err error
		if i%2 == 0 {
			c, err = nbdDialer("127.0.0.32").DialContext(ctx, "tcp4", h.srv.nbd)
			if err == nil {
				h.keep(c)
			}
		} else {
			c, err = h.nbdAttach(ctx, "root", 0)
		}
		if err != nil {
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(b)
		_ = c.Close()
		h.count("nbd-random")
		time.Sleep(100 * time.Millisecond)
	}
}

// cowWriters attaches to the copy-on-write export and writes, so that overlays exist when the
// server is killed; the caller closes the connections.
func (h *hostile) cowWriters(context.Context) []net.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cs []net.Conn
	for i := range 4 {
		c, err := h.nbdAttach(ctx, "cow", 0)
		if err != nil {
			h.t.Errorf("cow writer: %v", err)
			continue
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		data := make([]byte, 1<<20)
		_, _ = c.Write(append(nbdRequest(1, uint64(i), uint64(i)<<20, 1<<20), data...))
		// The simple reply: magic, error, handle.
		reply := make([]byte, 16)
		if _, err := io.ReadFull(c, reply); err != nil || binary.BigEndian.Uint32(reply[4:]) != 0 {
			h.t.Errorf("cow write %d: %v %x", i, err, reply)
		}
		cs = append(cs, c)
	}
	return cs
}

// aoeFrame returns an Ethernet frame from src to dst carrying m.
func aoeFrame(dst, src net.HardwareAddr, m *aoe.Message) []byte {
	b := append(append(append([]byte{}, dst...), src...), aoe.EtherType>>8, aoe.EtherType&0xff)
	b, _ = m.AppendBinary(b)
	return b
}

func (h *hostile) targetMAC() net.HardwareAddr {
	mac, err := net.ParseMAC(h.srv.aoeAddr)
	if err != nil {
		h.t.Errorf("target MAC %q: %v", h.srv.aoeAddr, err)
	}
	return mac
}

// Defect 6: READs from the broadcast address and from a multicast address.
func (h *hostile) aoeGroupSources(ctx context.Context) {
	r := openRaw(h.t, h.nw.nsB, h.nw.ifB)
	dst := h.targetMAC()
	for i := 0; i < 300 && ctx.Err() == nil; i++ {
		src := aoe.Broadcast
		if i%2 == 1 {
			src = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, byte(i)}
		}
		m := &aoe.Message{Header: aoe.Header{Version: 1, Major: aoeShelf, Minor: aoeSlot, Command: aoe.CommandATA, Tag: uint32(i)},
			Arg: &aoe.ATAArg{Extended: true, SectorCount: 2, CmdStatus: aoe.ATAReadSectorsExt, LBA: uint64(i)}}
		if err := r.send(aoeFrame(dst, src, m)); err != nil {
			h.t.Errorf("aoe send: %v", err)
			return
		}
		h.count("aoe-group-source")
		time.Sleep(20 * time.Millisecond)
	}
}

// Random AoE frames from random (unicast) addresses, each new to the target.
func (h *hostile) aoeRandom(ctx context.Context) {
	r := openRaw(h.t, h.nw.nsB, h.nw.ifB)
	dst := h.targetMAC()
	rnd := rand.New(rand.NewPCG(6, 1))
	for i := 0; i < 20_000 && ctx.Err() == nil; i++ {
		src := net.HardwareAddr{0x02, byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}
		to := dst
		if i%4 == 0 {
			to = aoe.Broadcast
		}
		frame := append(append(append([]byte{}, to...), src...), aoe.EtherType>>8, aoe.EtherType&0xff)
		n := 10 + rnd.IntN(1000)
		for range n {
			frame = append(frame, byte(rnd.Uint32()))
		}
		frame[14] = 0x10 // version 1, no flags: parsed as a request
		if i%3 == 0 {
			binary.BigEndian.PutUint16(frame[18:], aoeShelf)
			frame[20] = aoeSlot
		}
		_ = r.send(frame)
		h.count("aoe-random")
		if i%100 == 99 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// aoeSniff counts ATA responses with data that the target sends to the broadcast address.
func (h *hostile) aoeSniff(ctx context.Context) {
	r := openRaw(h.t, h.nw.nsB, h.nw.ifB)
	buf := make([]byte, 10000)
	for ctx.Err() == nil {
		f := r.recv(buf, 200*time.Millisecond)
		if len(f) < 14+10 || net.HardwareAddr(f[:6]).String() != aoe.Broadcast.String() {
			continue
		}
		var hd aoe.Header
		if hd.UnmarshalBinary(f[14:]) != nil || !hd.Response() || hd.Command != aoe.CommandATA {
			continue
		}
		if len(f) > 14+10+12 {
			h.aoeBroadcastData.Add(1)
		}
	}
}
