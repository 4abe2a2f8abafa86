package tftp_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/netroot/netroot/tftp"
)

// FuzzParsePacket checks that any input parses without panicking, fails with a "tftp: " error,
// or round-trips: parse, marshal and parse again give the same packet.
func FuzzParsePacket(f *testing.F) {
	for _, tc := range packetCases {
		b, err := tftp.MarshalPacket(tc.p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x00\x01f\x00octet\x00tsize\x000\x00\x00"))
	f.Add([]byte("\x00\x05\x00\x01no end"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := tftp.ParsePacket(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tftp: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		enc, err := tftp.MarshalPacket(p)
		if err != nil {
			t.Fatalf("parsed %#v but cannot marshal it: %v", p, err)
		}
		p2, err := tftp.ParsePacket(enc)
		if err != nil {
			t.Fatalf("re-parse of %x: %v", enc, err)
		}
		if !reflect.DeepEqual(normalize(p), normalize(p2)) {
			t.Fatalf("round trip changed %#v into %#v", p, p2)
		}
	})
}

// normalize makes empty and nil slices compare equal.
func normalize(p tftp.Packet) tftp.Packet {
	switch v := p.(type) {
	case *tftp.DataPacket:
		if len(v.Data) == 0 {
			return &tftp.DataPacket{Block: v.Block}
		}
	case *tftp.RequestPacket:
		if len(v.Options) == 0 {
			c := *v
			c.Options = nil
			return &c
		}
	case *tftp.OAckPacket:
		if len(v.Options) == 0 {
			return &tftp.OAckPacket{}
		}
	}
	return p
}
