//go:build linux

package backend_test

import (
	"fmt"
	"log"
	"net"
	"os"

	"github.com/netroot/netroot/backend"
)

// Export a window of a disk image, as vblade -o 1024 -l 4096 does, and ask where its data is.
func ExampleOpenFile() {
	path := exampleImage()
	defer os.Remove(path)

	d, err := backend.OpenFile(path, &backend.FileOptions{ReadOnly: true, Offset: 1024, Length: 4096})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	buf := make([]byte, 5)
	if _, err := d.ReadAt(buf, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("size %d, starts with %q\n", d.Size(), buf)
	_, err = d.WriteAt(buf, 0)
	fmt.Println(err)
	// Output:
	// size 4096, starts with "hello"
	// backend: device is read-only
}

// A server can send mapped bytes straight to a socket with writev, without copying them.
func ExampleMmap_Slice() {
	path := exampleImage()
	defer os.Remove(path)

	d, err := backend.OpenMmap(path, &backend.MmapOptions{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	data, err := d.Slice(1024, 5)
	if err != nil {
		log.Fatal(err)
	}
	client, server := net.Pipe()
	go func() {
		reply := net.Buffers{[]byte("data: "), data} // writev on a real socket
		reply.WriteTo(server)
		server.Close()
	}()
	buf := make([]byte, 11)
	if _, err := client.Read(buf[:6]); err != nil {
		log.Fatal(err)
	}
	if _, err := client.Read(buf[6:]); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", buf)
	// Output: data: hello
}

// exampleImage writes an 8 KiB image with "hello" at offset 1024 and returns its path.
func exampleImage() string {
	f, err := os.CreateTemp("", "example-*.img")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8192); err != nil {
		log.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello"), 1024); err != nil {
		log.Fatal(err)
	}
	return f.Name()
}
