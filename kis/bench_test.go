package kis_test

import (
	"context"
	"os"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
)

func BenchmarkParseName(b *testing.B) {
	for b.Loop() {
		if _, err := kis.ParseName("LimeJeOS.x86_64-1.15.3-5.14.21-150500.55.19-default.kernel"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRaw(b *testing.B) {
	build, err := kistest.Write(b.TempDir(), kistest.Spec{Image: kistest.Image(8<<20, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(8 << 20)
	for b.Loop() {
		if err := kis.Verify(context.Background(), build, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnpack measures decompressing, checking and writing an .xz root image.
func BenchmarkUnpack(b *testing.B) {
	build, err := kistest.Write(b.TempDir(), kistest.Spec{Image: kistest.Image(4<<20, 1), Compressed: true})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4 << 20)
	for b.Loop() {
		cache := b.TempDir()
		if _, err := kis.Unpack(context.Background(), build, &kis.UnpackOptions{Dir: cache}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(cache)
		b.StartTimer()
	}
}
