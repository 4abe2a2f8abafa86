package tftptest_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/netroot/netroot/tftp"
	"github.com/netroot/netroot/tftp/tftptest"
)

// Fetch a file through a relay that drops a tenth of the packets.
func ExampleNewRelay() {
	s := tftptest.Start(&tftp.Server{
		Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
			_ = w.ServeContent(strings.NewReader("DEFAULT linux\n"), 14)
		}),
		Timeout: 50 * time.Millisecond,
		Retries: 10,
	})
	defer s.Close()
	relay, err := tftptest.NewRelay(s.Addr, tftptest.RelayConfig{Seed: 3, Drop: 0.1})
	if err != nil {
		panic(err)
	}
	defer relay.Close()

	var buf bytes.Buffer
	c := &tftp.Client{Timeout: 50 * time.Millisecond, Retries: 10}
	if _, err := c.Get(context.Background(), relay.Addr(), "pxelinux.cfg/default", &buf); err != nil {
		panic(err)
	}
	fmt.Print(buf.String())
	// Output: DEFAULT linux
}
