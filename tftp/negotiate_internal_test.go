package tftp

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzNegotiate feeds arbitrary request packets to the option negotiation and checks the rules
// of RFC 2347, 2348, 2349 and 7440: only options the client sent are acknowledged, values stay
// within the protocol's and the server's limits, and the OACK parses back.
func FuzzNegotiate(f *testing.F) {
	f.Add([]byte("\x00\x01f\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00timeout\x003\x00"), int64(1000), 1500, uint16(0), uint8(0))
	f.Add([]byte("\x00\x02f\x00octet\x00BLKSIZE\x0099999\x00tsize\x00123\x00"), int64(-1), 0, uint16(1024), uint8(4))
	f.Add([]byte("\x00\x01f\x00netascii\x00windowsize\x00-1\x00blksize\x007\x00foo\x00bar\x00"), int64(0), 65536, uint16(8), uint8(255))
	f.Fuzz(func(t *testing.T, b []byte, size int64, mtu int, maxBlk uint16, maxWin uint8) {
		pkt, err := ParsePacket(b)
		if err != nil {
			return
		}
		req, ok := pkt.(*RequestPacket)
		if !ok {
			return
		}
		mtu = max(0, mtu%70000)
		// A small buffer budget, from maxWin, makes the window and blksize shrink to fit.
		srv := &Server{MaxBlockSize: int(maxBlk), MaxWindowSize: int(maxWin), MaxBufferBytes: int64(maxWin) * 4096}
		tr := &transfer{srv: srv, req: &Request{Op: req.Op, Options: req.Options}}
		tr.params = params{blksize: DefaultBlockSize, window: 1, timeout: time.Second}
		oack := tr.negotiate(size, mtu, 8192, 1024)
		p := tr.params
		// Beyond the budget only the floor: one block of at most FloorBlockSize, a block of
		// read-ahead.
		floor := int64(2*(FloorBlockSize+5) + 1024 + FloorBlockSize)
		if srv.MaxBufferBytes > 0 && tr.reserved > max(srv.MaxBufferBytes, floor) {
			t.Fatalf("reserved %d of a budget of %d (%+v, read-ahead %d)", tr.reserved, srv.MaxBufferBytes, p, tr.ahead)
		}
		if srv.buffered != tr.reserved || tr.ahead < 1 {
			t.Fatalf("reserved %d, counted %d, read-ahead %d", tr.reserved, srv.buffered, tr.ahead)
		}
		if _, asked := req.Option(OptBlockSize); asked && p.blksize != DefaultBlockSize {
			if p.blksize < MinBlockSize || p.blksize > MaxBlockSize || (maxBlk >= MinBlockSize && p.blksize > int(maxBlk)) {
				t.Fatalf("blksize %d out of bounds (server max %d)", p.blksize, maxBlk)
			}
			if mtu > 0 && p.blksize > max(MinBlockSize, mtu-32) {
				t.Fatalf("blksize %d above path MTU %d", p.blksize, mtu)
			}
		}
		if p.window < 1 || (maxWin > 0 && p.window > int(maxWin)) || (p.window > 1 && p.window*p.blksize > MaxWindowBytes) {
			t.Fatalf("windowsize %d out of bounds (server max %d, blksize %d)", p.window, maxWin, p.blksize)
		}
		if oack == nil {
			if p.blksize != DefaultBlockSize || p.window != 1 {
				t.Fatalf("values changed without an OACK: %+v", p)
			}
			return
		}
		back, err := ParsePacket(oack)
		if err != nil {
			t.Fatalf("OACK %x does not parse: %v", oack, err)
		}
		for _, o := range back.(*OAckPacket).Options {
			asked, ok := req.Option(o.Name)
			if !ok {
				t.Fatalf("OACK has %q, which the client did not send", o.Name)
			}
			v, err := strconv.ParseInt(o.Value, 10, 64)
			if err != nil {
				t.Fatalf("OACK value %s=%q is not a number", o.Name, o.Value)
			}
			a, _ := strconv.ParseInt(asked, 10, 64)
			switch strings.ToLower(o.Name) {
			case OptBlockSize, OptWindowSize:
				if v > a {
					t.Fatalf("OACK %s=%d above the requested %d", o.Name, v, a)
				}
			case OptTimeout:
				if v != a {
					t.Fatalf("OACK timeout %d, requested %d", v, a)
				}
			case OptTransferSize:
				if req.Op == OpRRQ && v != size || req.Op == OpWRQ && v != a {
					t.Fatalf("OACK tsize %d (size %d, requested %d)", v, size, a)
				}
			default:
				t.Fatalf("OACK has unknown option %q", o.Name)
			}
		}
	})
}
