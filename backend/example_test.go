package backend_test

import (
	"fmt"
	"io"
	"log"

	"github.com/netroot/netroot/backend"
)

// A server finds out what a device can do by type assertion, and advertises only that.
func Example_abilities() {
	var d backend.Device = backend.ReadOnly(backend.NewMemory(1 << 20))
	_, trims := d.(backend.Trimmer)
	_, extents := d.(backend.Extenter)
	fmt.Println("writable:", backend.IsWritable(d), "trim:", trims, "extents:", extents)
	// Output: writable: false trim: false extents: true
}

// Many diskless clients share one read-only root image; each gets its own copy-on-write
// device, so their writes stay private and the image is never modified.
func ExampleNewCopyOnWrite() {
	image := backend.NewMemoryFrom([]byte("hostname=shared-host"), true)

	client, err := backend.NewCopyOnWrite(image, nil, nil) // overlay in memory
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	if _, err := client.WriteAt([]byte("client-0007"), 9); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, image.Size())
	if _, err := client.ReadAt(buf, 0); err != nil && err != io.EOF {
		log.Fatal(err)
	}
	fmt.Printf("client sees: %s\n", buf)
	fmt.Printf("image holds: %s\n", image.Bytes())
	// Output:
	// client sees: hostname=client-0007
	// image holds: hostname=shared-host
}

// Out-of-range requests fail with a *RangeError that names the request and the device size.
func ExampleRangeError() {
	d := backend.NewMemory(4096)
	_, err := d.WriteAt(make([]byte, 512), 3840)
	fmt.Println(err)
	// Output: backend: write 3840+512 beyond size 4096
}
