package bootserver

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/kis"
)

// BuildID names one build the way KIWI names its files: NAME.ARCH-VERSION. It is also the NBD
// export name and the folder the build's kernel and initrd are staged in.
type BuildID struct {
	Name, Arch, Version string
}

// String returns NAME.ARCH-VERSION.
func (id BuildID) String() string { return id.Name + "." + id.Arch + "-" + id.Version }

// IsZero reports whether id is the zero BuildID.
func (id BuildID) IsZero() bool { return id == BuildID{} }

// ParseBuildID parses NAME.ARCH-VERSION as `netroot inspect` prints it.
func ParseBuildID(s string) (BuildID, error) {
	f, err := kis.ParseName(s)
	if err != nil || f.Suffix != "" || f.Version == "" {
		return BuildID{}, fmt.Errorf("bootserver: %q is not a build ID NAME.ARCH-VERSION", s)
	}
	return BuildID{Name: f.Name, Arch: f.Arch, Version: f.Version}, nil
}

// KIWIArch returns KIWI's name for a Go architecture (GOARCH): amd64 is x86_64, arm64 is
// aarch64, 386 is ix86; others (ppc64le, s390x, riscv64) are spelled the same.
func KIWIArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "ix86"
	case "arm":
		return "armv7l"
	}
	return goarch
}

// HostArch is KIWIArch(runtime.GOARCH): the architecture a Server serves when Arch is empty.
func HostArch() string { return KIWIArch(runtime.GOARCH) }

// BuildInfo is what a Source lists about one build, before it is opened.
type BuildInfo struct {
	ID BuildID
	// Stamp changes when the build's files change under the same ID (a copy still being
	// written, a rebuild); "" means it never does. A build that failed to open is tried again
	// by the watch only when its Stamp changed (Reload always tries again).
	Stamp string
}

// Source is where a Server's builds come from: KIWI output folders ([KISSource]) or an object
// store. Implementations must be safe for concurrent use.
type Source interface {
	// Builds lists the builds the source holds now. It is called at start, on every Reload
	// and on every watch tick, so it should be cheap: no verification, no unpacking. A non-nil
	// error together with builds reports builds that could not be listed; the server logs it
	// and uses the others.
	Builds(ctx context.Context) ([]BuildInfo, error)
	// Open makes one build ready to serve: verified, unpacked, its root device open. An error
	// means the build must not be served (a failed checksum, a missing file); the server then
	// keeps serving what it served before. The server calls the Image's Close when it stops
	// serving the build, and then Discard when the build was retired for a newer one.
	Open(ctx context.Context, b BuildInfo) (*Image, error)
}

// Image is an opened build, ready to be staged and exported.
type Image struct {
	ID BuildID
	// KernelVersion is the kernel release, when known (for logs).
	KernelVersion string
	// Kernel and Initrd are staged into the TFTP root under boot/ID/.
	Kernel, Initrd Content
	// Options are the kernel options the build suggests (KIWI's .append without its root=),
	// each as written, quotes included.
	Options []string
	// Root is the root file system image, exported read-only over NBD and AoE.
	Root backend.Device
	// Close, when not nil, is called once when the server stops serving the image: at
	// shutdown, or when the build was retired. It closes Root.
	Close func() error
	// Discard, when not nil, is called after Close when the build was retired (a newer build
	// replaced it, its last client left and the grace period passed): it removes what Open
	// created, such as an unpacked image, which a restart would otherwise reuse.
	Discard func() error
}

// Content is a file of an image: a local file (Path), hard linked, reflinked or copied into
// the TFTP root, or any io.ReaderAt of Size bytes, copied.
type Content struct {
	Path string
	R    io.ReaderAt
	Size int64
}

// sourceError prefixes errors of sources the package does not own.
func sourceError(op string, err error) error {
	if err == nil || strings.HasPrefix(err.Error(), "bootserver: ") || strings.HasPrefix(err.Error(), "kis: ") {
		return err
	}
	return fmt.Errorf("bootserver: %s: %w", op, err)
}
