//go:build linux

package backend_test

import (
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netroot/netroot/backend"
)

// benchSize is the image size for the read benchmarks.
const benchSize = 256 << 20

// BenchmarkRead compares File, File with O_DIRECT and Mmap on a 256 MiB image: sequential 1 MiB
// reads, 4 KiB reads at random aligned offsets, and the same from all CPUs at once. The image
// is written fully (no holes) and sits in the page cache, except for what O_DIRECT bypasses.
func BenchmarkRead(b *testing.B) {
	path := os.Getenv("NETROOT_BENCH_IMAGE") // bench/backend/run.sh shares its image with fio
	if path == "" {
		path = benchImage(b)
	} else if fi, err := os.Stat(path); err != nil || fi.Size() < benchSize {
		b.Fatalf("NETROOT_BENCH_IMAGE=%s: need a file of at least %d bytes", path, benchSize)
	}

	open := []struct {
		name string
		open func() (backend.Device, error)
	}{
		{"File", func() (backend.Device, error) {
			return backend.OpenFile(path, &backend.FileOptions{ReadOnly: true})
		}},
		{"FileDirect", func() (backend.Device, error) {
			return backend.OpenFile(path, &backend.FileOptions{ReadOnly: true, Direct: true})
		}},
		{"Mmap", func() (backend.Device, error) {
			return backend.OpenMmap(path, &backend.MmapOptions{ReadOnly: true})
		}},
	}
	for _, o := range open {
		d, err := o.open()
		if err != nil {
			b.Logf("%s: %v", o.name, err)
			continue
		}
		b.Run(o.name+"/seq1M", func(b *testing.B) {
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			var off int64
			for b.Loop() {
				if _, err := d.ReadAt(buf, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % benchSize
			}
		})
		b.Run(o.name+"/rand4k", func(b *testing.B) {
			buf := make([]byte, 4096)
			r := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := d.ReadAt(buf, r.Int64N(benchSize/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(o.name+"/rand4k-parallel", func(b *testing.B) {
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				r := rand.New(rand.NewPCG(rand.Uint64(), 2))
				for pb.Next() {
					if _, err := d.ReadAt(buf, r.Int64N(benchSize/4096)*4096); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		d.(io.Closer).Close()
	}
}

// benchImage writes a 256 MiB image without holes in b.TempDir.
func benchImage(b *testing.B) string {
	dir := b.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || int64(st.Bavail)*st.Bsize < 2*benchSize {
		b.Skipf("less than %d MiB free in %s", 2*benchSize>>20, dir)
	}
	f, err := os.CreateTemp(dir, "bench-*.img")
	if err != nil {
		b.Fatal(err)
	}
	chunk := randomBytes(1, 1<<20)
	for off := 0; off < benchSize; off += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return f.Name()
}
