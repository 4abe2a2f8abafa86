package soak_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"time"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/aoe/aoetest"
	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// The child process: TestSoak runs the test binary again with envChild set to its work
// directory; the child then serves instead of testing.
const (
	envChild = "NETROOT_SOAK_CHILD"
	envNS    = "NETROOT_SOAK_NS"
	envIf    = "NETROOT_SOAK_IF"
)

// AoE device address of the soak's target.
const (
	aoeShelf = 7
	aoeSlot  = 1
)

// serverConfig is what the child serves with; the values the soak states.
var serverConfig = struct {
	tftpMaxIdle      time.Duration
	nbdHandshake     time.Duration
	tftpMaxTransfers int
	nbdExportIdle    time.Duration
}{
	// Abandoned transfers (timeout 255) are given up after this; the default is a minute.
	tftpMaxIdle: 5 * time.Second,
	// Idle handshakes are cut after this; the default is 30 s.
	nbdHandshake: 5 * time.Second,
	// The default cap of concurrent TFTP transfers.
	tftpMaxTransfers: tftp.DefaultMaxTransfers,
	// The idle timeout of the export "timed".
	nbdExportIdle: 3 * time.Second,
}

// childStats is what the child reports on "stats".
type childStats struct {
	Goroutines int
	TFTP       tftp.Stats
	NBD        nbd.Stats
	AoE        map[string]uint64
}

// runChild serves until stdin says "stop" or ends. It never returns.
func runChild(dir string) {
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	tsrv := &tftp.Server{Handler: tftp.FileServer(filepath.Join(dir, "tftp")), MaxIdle: serverConfig.tftpMaxIdle,
		MaxTransfers: serverConfig.tftpMaxTransfers}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go func() { _ = tsrv.Serve(pc) }()

	root, err := backend.OpenFile(filepath.Join(dir, "root.img"), &backend.FileOptions{ReadOnly: true})
	if err != nil {
		fail(err)
	}
	rw, err := backend.OpenFile(filepath.Join(dir, "rw.img"), nil)
	if err != nil {
		fail(err)
	}
	cowDir := filepath.Join(dir, "cow")
	set, err := nbd.NewExportSet(
		&nbd.Export{Name: "root", Device: root},
		&nbd.Export{Name: "cow", Device: root, CopyOnWrite: nbd.CopyOnWritePerConnection,
			NewOverlay: func(base backend.Device) (backend.Device, error) {
				return backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{TempDir: cowDir})
			}},
		&nbd.Export{Name: "rw", Device: rw, Writable: true},
		// Defect 3: an export's own idle timeout (nbd-server's per-export timeout).
		&nbd.Export{Name: "timed", Device: root, IdleTimeout: serverConfig.nbdExportIdle},
	)
	if err != nil {
		fail(err)
	}
	nsrv := &nbd.Server{Exports: set, HandshakeTimeout: serverConfig.nbdHandshake}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go func() { _ = nsrv.Serve(ln) }()

	adev, err := backend.OpenFile(filepath.Join(dir, "aoe.img"), &backend.FileOptions{ReadOnly: true})
	if err != nil {
		fail(err)
	}
	ac, err := aoetest.ListenIn(os.Getenv(envNS), os.Getenv(envIf))
	if err != nil {
		fail(err)
	}
	tgt := &aoe.Target{Devices: []*aoe.Device{{Shelf: aoeShelf, Slot: aoeSlot, Backend: adev, ReadOnly: true}}}
	go func() { _ = tgt.Serve(ac) }()

	fmt.Printf("ready %s %s %s\n", pc.LocalAddr(), ln.Addr(), ac.HardwareAddr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "stats":
			st := childStats{Goroutines: runtime.NumGoroutine(), TFTP: tsrv.Stats(), NBD: nsrv.Stats(), AoE: map[string]uint64{}}
			// By reflection, so that counters added on other branches (GroupSource) show.
			v := reflect.ValueOf(tgt.Stats())
			for i := range v.NumField() {
				if v.Field(i).CanUint() {
					st.AoE[v.Type().Field(i).Name] = v.Field(i).Uint()
				}
			}
			b, _ := json.Marshal(st)
			fmt.Println(string(b))
		case "stop":
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = tsrv.Shutdown(ctx)
			_ = nsrv.Shutdown(ctx)
			_ = tgt.Shutdown(ctx)
			cancel()
			os.Exit(0)
		}
	}
	os.Exit(0)
}
