package backend_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/netroot/netroot/backend"
)

// FuzzCopyOnWrite drives a CopyOnWrite over a Memory base with operations decoded from the
// input (5 bytes each: kind, offset, length) and checks every result against a byte-slice
// model, and that the base never changes.
func FuzzCopyOnWrite(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 0, 0, 2, 0, 0, 100, 0, 16, 3, 0, 0, 19, 136})
	f.Add([]byte{2, 1, 1, 255, 16, 0, 2, 0, 200, 4, 0, 0, 0, 0, 0, 19, 136, 0, 0, 0, 9, 0})
	f.Add([]byte{3, 3, 19, 100, 0, 200, 4, 19, 0, 1, 0, 2, 0, 0, 19, 137, 1, 19, 130, 0, 50})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > 5*200 {
			return
		}
		const size = 5000 // not a multiple of any block size
		init := randomBytes(uint64(in[0]), size)
		base := backend.NewMemoryFrom(bytes.Clone(init), true)
		d, err := backend.NewCopyOnWrite(base, nil, &backend.CopyOnWriteOptions{BlockSize: 512 << (in[0] % 4)})
		if err != nil {
			t.Fatal(err)
		}
		model := bytes.Clone(init)
		for i, rec := 0, in[1:]; len(rec) >= 5; i, rec = i+1, rec[5:] {
			off := int64(binary.BigEndian.Uint16(rec[1:])) % (size + 64)
			n := int64(binary.BigEndian.Uint16(rec[3:])) % 9000
			inRange := off+n <= size
			var rangeErr *backend.RangeError
			switch rec[0] % 5 {
			case 0:
				p := make([]byte, n)
				got, err := d.ReadAt(p, off)
				want, wantErr := expectRead(model, off, int(n))
				if (wantErr == io.EOF) != errors.Is(err, io.EOF) || (wantErr == nil && err != nil) {
					t.Fatalf("op %d: read %d+%d: error %v, want %v", i, off, n, err, wantErr)
				}
				if got != len(want) || !bytes.Equal(p[:got], want) {
					t.Fatalf("op %d: read %d+%d: wrong data", i, off, n)
				}
			case 1, 2:
				p := bytes.Repeat([]byte{byte(i) | 1}, int(n))
				_, err := d.WriteAt(p, off)
				if !inRange {
					if !errors.As(err, &rangeErr) {
						t.Fatalf("op %d: write %d+%d beyond %d: %v", i, off, n, size, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("op %d: write %d+%d: %v", i, off, n, err)
				}
				copy(model[off:], p)
			case 3, 4:
				fn := d.Trim
				if rec[0]%5 == 4 {
					fn = d.ZeroAt
				}
				err := fn(off, n)
				if !inRange {
					if !errors.As(err, &rangeErr) {
						t.Fatalf("op %d: trim/zero %d+%d beyond %d: %v", i, off, n, size, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("op %d: trim/zero %d+%d: %v", i, off, n, err)
				}
				clear(model[off : off+n])
			}
		}
		got := make([]byte, size)
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatal("device differs from model")
		}
		exts, err := d.Extents(0, size)
		if err != nil {
			t.Fatal(err)
		}
		pos := int64(0)
		for _, e := range exts {
			if e.Offset != pos || e.Length <= 0 || (e.Zero && !allBytes(model[e.Offset:e.Offset+e.Length], 0)) {
				t.Fatalf("bad extent %+v at %d in %v", e, pos, exts)
			}
			pos += e.Length
		}
		if pos != size {
			t.Fatalf("extents cover %d of %d", pos, size)
		}
		if !bytes.Equal(base.Bytes(), init) {
			t.Fatal("base modified")
		}
	})
}
