package nbdtest_test

import (
	"net"
	"testing"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdtest"
)

// A server's test runs the whole suite against it on a loopback port. For a server that
// deviates from the document's recommendations, Options.Expect states how (see the tests of
// this package against nbd-server and nbdkit).
func ExampleRun() {
	testServer := func(t *testing.T) {
		set, err := nbd.NewExportSet(&nbd.Export{Name: "scratch", Device: backend.NewMemory(64 << 20), Writable: true})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &nbd.Server{Exports: set}
		go srv.Serve(l)
		defer srv.Close()

		nbdtest.Run(t, l.Addr().String(), &nbdtest.Options{Export: "scratch", Size: 64 << 20})
	}
	_ = testServer
}
