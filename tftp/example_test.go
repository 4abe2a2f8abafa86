package tftp_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netroot/netroot/tftp"
)

// Serve a boot directory read-only, and log each completed transfer.
func ExampleFileServer() {
	root, _ := os.MkdirTemp("", "tftproot")
	defer os.RemoveAll(root)
	_ = os.MkdirAll(filepath.Join(root, "pxelinux.cfg"), 0o755)
	_ = os.WriteFile(filepath.Join(root, "pxelinux.cfg", "default"), []byte("DEFAULT linux\n"), 0o644)

	done := make(chan struct{})
	srv := &tftp.Server{
		Handler: tftp.FileServer(root),
		OnTransferDone: func(i tftp.TransferInfo) {
			if i.Err == nil {
				fmt.Printf("client fetched %s (%d bytes)\n", i.Filename, i.Bytes)
			}
			close(done)
		},
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // ":69" for PXE
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(pc)
	defer srv.Close()

	var buf bytes.Buffer
	if _, err := (&tftp.Client{}).Get(context.Background(), pc.LocalAddr().String(), "pxelinux.cfg/default", &buf); err != nil {
		log.Fatal(err)
	}
	<-done
	fmt.Print(buf.String())
	// Output:
	// client fetched pxelinux.cfg/default (14 bytes)
	// DEFAULT linux
}

// Generate a pxelinux config for each client from its address.
func ExampleHandlerFunc() {
	h := tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		if !strings.HasPrefix(r.Filename, "pxelinux.cfg/") {
			w.Error(tftp.ErrFileNotFound, "no such file")
			return
		}
		cfg := fmt.Sprintf("DEFAULT linux\nAPPEND ip=%s\n", r.RemoteAddr.Addr())
		_ = w.ServeContent(strings.NewReader(cfg), int64(len(cfg)))
	})
	srv := &tftp.Server{Handler: h}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(pc)
	defer srv.Close()

	var buf bytes.Buffer
	if _, err := (&tftp.Client{}).Get(context.Background(), pc.LocalAddr().String(), "pxelinux.cfg/default", &buf); err != nil {
		log.Fatal(err)
	}
	fmt.Print(buf.String())
	// Output:
	// DEFAULT linux
	// APPEND ip=127.0.0.1
}

// Fetch a file with large blocks, a window of 16 and the size announced in advance.
func ExampleClient_Get() {
	content := bytes.Repeat([]byte("kernel"), 100_000)
	srv := &tftp.Server{Handler: tftp.HandlerFunc(func(w tftp.ResponseWriter, r *tftp.Request) {
		_ = w.ServeContent(bytes.NewReader(content), int64(len(content)))
	})}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(pc)
	defer srv.Close()

	c := &tftp.Client{BlockSize: 1468, WindowSize: 16, TransferSize: true}
	var buf bytes.Buffer
	info, err := c.Get(context.Background(), pc.LocalAddr().String(), "boot/linux", &buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Size, info.BlockSize, info.WindowSize, bytes.Equal(buf.Bytes(), content))
	// Output: 600000 1468 16 true
}

// Accept uploads into a directory, up to 1 MiB each.
func ExampleUploadServer() {
	dir, _ := os.MkdirTemp("", "uploads")
	defer os.RemoveAll(dir)
	srv := &tftp.Server{WriteHandler: tftp.UploadServer(dir, &tftp.UploadConfig{MaxSize: 1 << 20})}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(pc)
	defer srv.Close()

	msg := "hello from the client\n"
	if _, err := (&tftp.Client{}).Put(context.Background(), pc.LocalAddr().String(), "hello.txt", strings.NewReader(msg), int64(len(msg))); err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "hello.txt"))
	fmt.Print(string(b))
	// Output: hello from the client
}

// Map names as a tftpd-hpa map file does: Windows separators to slashes, a per-client config
// by the client's address, and nothing under private/.
func ExampleMapRules() {
	rules, err := tftp.ParseMapRules(strings.NewReader(`
rg \\ /                      # Windows separators
r ^pxelinux\.cfg/default$ pxelinux.cfg/\i
a ^private/.*$ not\ here
`))
	if err != nil {
		log.Fatal(err)
	}
	client := netip.MustParseAddr("192.0.2.10")
	for _, name := range []string{`boot\x86\linux`, "pxelinux.cfg/default", "private/key"} {
		mapped, err := rules.Map(name, tftp.OpRRQ, client)
		fmt.Printf("%s -> %q %v\n", name, mapped, err)
	}
	// A server applies them in front of its handler:
	_ = &tftp.Server{Handler: rules.Handler(tftp.FileServer("/srv/tftp"))}
	// Output:
	// boot\x86\linux -> "boot/x86/linux" <nil>
	// pxelinux.cfg/default -> "pxelinux.cfg/192.0.2.10" <nil>
	// private/key -> "" tftp: access violation: not here
}

// Limit what any client can take, and keep transfer ports in a range a firewall lets through.
func ExampleServer_limits() {
	ports, err := tftp.ParsePortRange("50000:50100")
	if err != nil {
		log.Fatal(err)
	}
	srv := &tftp.Server{
		Handler:               tftp.FileServer("/srv/tftp"),
		MaxTransfers:          256,      // server-wide
		MaxTransfersPerClient: 4,        // per IPv4 address or IPv6 /64
		MaxBufferBytes:        32 << 20, // windows and read-ahead of all transfers
		MaxIdle:               30 * time.Second,
		PortRange:             ports,
	}
	fmt.Println(srv.PortRange, srv.Stats().BufferedBytes)
	// Output: 50000:50100 0
}
