package nbd_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
)

// Serve a read-only root image and a writable scratch disk, then read the image back with the
// package's client.
func Example() {
	image := backend.NewMemoryFrom([]byte("KIWI root filesystem image......"), true)
	exports, err := nbd.NewExportSet(
		&nbd.Export{Name: "root", Description: "KIS root image", Device: image},
		&nbd.Export{Name: "scratch", Device: backend.NewMemory(1 << 20), Writable: true},
	)
	if err != nil {
		log.Fatal(err)
	}
	srv := &nbd.Server{Exports: exports}
	l, err := net.Listen("tcp", "127.0.0.1:0") // production: srv.ListenAndServe() on :10809
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	ctx := context.Background()
	c, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	list, err := c.List(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range list {
		fmt.Printf("export %q %q\n", e.Name, e.Description)
	}
	info, err := c.Go(ctx, "root")
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 20)
	if _, err := c.ReadAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes, read-only %v: %s\n", info.Size, info.Flags&nbd.FlagReadOnly != 0, buf)
	// Output:
	// export "root" "KIS root image"
	// export "scratch" ""
	// 32 bytes, read-only true: KIWI root filesystem
}

// Give every client address its own copy-on-write overlay over one shared base image, for
// clients that write to their root device instead of putting overlayfs on top of it.
func ExampleExport_copyOnWrite() {
	base := backend.NewMemoryFrom(make([]byte, 4096), true)
	e := &nbd.Export{Name: "root", Device: base, CopyOnWrite: nbd.CopyOnWritePerClient}
	exports, _ := nbd.NewExportSet(e)
	srv := &nbd.Server{Exports: exports}
	sc, cc := net.Pipe()
	go srv.ServeConn(context.Background(), sc)

	ctx := context.Background()
	c, err := nbd.NewClient(ctx, cc, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Go(ctx, "root"); err != nil {
		log.Fatal(err)
	}
	if _, err := c.WriteAt([]byte("private"), 0); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 7)
	c.ReadAt(buf, 0)
	c.Close()
	fmt.Printf("client sees %q, base still zero: %v\n", buf, base.Bytes()[0] == 0)
	// Output: client sees "private", base still zero: true
}

// Hand a client's connection from one server to another, as a binary upgrade does across two
// processes: the old server stops between two requests and passes the socket and its state;
// the new one goes on, and the client does not notice.
func ExampleServer_Handoff() {
	image := backend.NewMemoryFrom([]byte("KIWI root filesystem image......"), true)
	exports, _ := nbd.NewExportSet(&nbd.Export{Name: "root", Device: image})
	old, next := &nbd.Server{Exports: exports}, &nbd.Server{Exports: exports}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go old.Serve(l)
	defer next.Close()

	ctx := context.Background()
	c, err := nbd.Dial(ctx, "tcp", l.Addr().String(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Go(ctx, "root"); err != nil {
		log.Fatal(err)
	}

	// The old process.
	res, err := old.Handoff(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, hc := range res.Conns {
		state, _ := hc.State.MarshalBinary() // with the descriptor of hc.Conn, to the new process
		// The new process.
		var st nbd.ConnState
		if err := st.UnmarshalBinary(state); err != nil {
			log.Fatal(err)
		}
		go next.Resume(ctx, hc.Conn, st)
	}

	buf := make([]byte, 20)
	if _, err := c.ReadAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("handed over %d, kept %d; read %s\n", len(res.Conns), res.Kept, buf)
	// Output: handed over 1, kept 0; read KIWI root filesystem
}
