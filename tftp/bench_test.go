package tftp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/netroot/netroot/tftp"
)

// BenchmarkGet measures one loopback transfer of 8 MiB with our server and client.
func BenchmarkGet(b *testing.B) {
	content := randomBytes(8<<20, 1)
	srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(bytes.NewReader(content), int64(len(content)))
	})}
	addr := serve(b, srv)
	for _, tc := range []struct{ blk, win int }{{512, 1}, {1468, 1}, {8192, 1}, {1468, 16}, {8192, 16}, {65464, 8}} {
		b.Run(fmt.Sprintf("blksize=%d/windowsize=%d", tc.blk, tc.win), func(b *testing.B) {
			c := &tftp.Client{BlockSize: tc.blk, WindowSize: tc.win}
			b.SetBytes(int64(len(content)))
			for b.Loop() {
				if _, err := c.Get(context.Background(), addr, "f", io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParsePacket(b *testing.B) {
	pkt := []byte("\x00\x01boot/initrd\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00")
	for b.Loop() {
		if _, err := tftp.ParsePacket(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
