package kis_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
)

// The whole path from a KIWI build directory to files a network boot can use.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kis-example-")
	defer os.RemoveAll(dir)
	buildDir, tftpRoot := filepath.Join(dir, "build"), filepath.Join(dir, "tftp")
	os.Mkdir(buildDir, 0o755)
	// A compressed build whose loose files were removed: only the bundle is left.
	if _, err := kistest.Write(buildDir, kistest.Spec{
		Name: "LimeJeOS", Version: "1.15.3", Compressed: true, BundleOnly: true,
		Append: "root=UUID=0b6a5d0f console=ttyS0",
	}); err != nil {
		log.Fatal(err)
	}

	builds, err := kis.Find(buildDir)
	if err != nil {
		log.Fatal(err)
	}
	b, err := kis.Newest(builds, "LimeJeOS")
	if err != nil {
		log.Fatal(err)
	}
	if err := kis.Verify(ctx, b, nil); err != nil {
		log.Fatal(err)
	}
	b, err = kis.Unpack(ctx, b, &kis.UnpackOptions{Dir: filepath.Join(dir, "cache")})
	if err != nil {
		log.Fatal(err)
	}
	staged, err := kis.Stage(ctx, b, tftpRoot, nil)
	if err != nil {
		log.Fatal(err)
	}
	_, options, err := kis.ReadAppend(b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("build:", b.ID(), "kernel", b.KernelVersion)
	fmt.Println("export:", filepath.Base(b.Image))
	fmt.Println("kernel:", staged.Kernel.Path, staged.Kernel.Method)
	fmt.Println("initrd:", staged.Initrd.Path, staged.Initrd.Method)
	fmt.Println("options:", strings.Join(options, " "))
	// Output:
	// build: LimeJeOS.x86_64-1.15.3 kernel 6.1.0-13-amd64
	// export: LimeJeOS.x86_64-1.15.3
	// kernel: boot/linux link
	// initrd: boot/initrd link
	// options: console=ttyS0
}

func ExampleParseName() {
	f, err := kis.ParseName("LimeJeOS.x86_64-1.15.3-6.1.0-13-amd64.kernel")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.Name, f.Arch, f.Version, f.Kind, f.KernelVersion)
	// Output: LimeJeOS x86_64 1.15.3 kernel 6.1.0-13-amd64
}

func ExampleParseChecksum() {
	c, err := kis.ParseChecksum("0cc175b9c0f1b6a831c399e269772661 12800 8192 2731 3\n")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Sum(), c.Size(), c.CompressedSize())
	// Output: 0cc175b9c0f1b6a831c399e269772661 104857600 8193
}

func ExampleParseAppend() {
	root, options, err := kis.ParseAppend(`root=UUID=0b6a5d0f console=ttyS0,115200 dyndbg="file net/* +p"`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(root)
	fmt.Println(strings.Join(options, " "))
	// Output:
	// UUID=0b6a5d0f
	// console=ttyS0,115200 dyndbg="file net/* +p"
}

func ExampleCompareVersions() {
	fmt.Println(kis.CompareVersions("1.15.3", "1.15.10"))
	// Output: -1
}
