package handoff_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/netroot/netroot/handoff"
)

// A process started normally inherits nothing; the nil *Inherited answers like an empty one,
// so a server can always ask it first.
func ExampleInherit() {
	inh, err := handoff.Inherit()
	if err != nil {
		log.Fatal(err)
	}
	ln, _ := inh.Listener("web")
	fmt.Println(inh == nil, ln == nil)
	// Output: true true
}

// A server that upgrades itself on SIGUSR2: the new process takes the listener and the
// connections, each with its state (here a greeting counter).
func Example_upgrade() {
	inh, err := handoff.Inherit()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := inh.Listener("web")
	if err != nil {
		log.Fatal(err)
	}
	if ln == nil { // started normally
		if ln, err = net.Listen("tcp", "127.0.0.1:8080"); err != nil {
			log.Fatal(err)
		}
	}
	// ... serve ln ...
	conns, err := inh.Ready(context.Background(), 30*time.Second)
	if err != nil {
		log.Print(err)
	}
	for _, f := range conns {
		c, _ := net.FileConn(f.File)
		f.Close()
		_ = c // ... serve c from state f.State ...
	}

	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	<-usr2
	lf, _ := handoff.FileOf(ln.(*net.TCPListener))
	succ, err := (&handoff.Upgrade{}).Start(context.Background(), []handoff.File{{Name: "web", File: lf}})
	if err != nil {
		log.Print("still serving: ", err) // the new binary failed; nothing changed
		return
	}
	ln.Close() // the new process accepts from now on
	var handed []handoff.File
	// ... stop each connection between two requests; handed = append(handed,
	// handoff.File{Name: "web-conn", State: state, File: dup}) ...
	if err := succ.Send(handed); err != nil {
		log.Print(err)
	}
	if err := succ.Finish(30 * time.Second); err != nil {
		log.Print(err)
	}
	os.Exit(0)
}
