package nbd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFileBackends serves the package backend's file devices: pread/pwrite, whose large reads
// the server sends with sendfile and whose large writes it splices from the socket into the
// file, and the memory mapping, whose reads it sends straight from the mapping.
func TestFileBackends(t *testing.T) {
	const size = 4 << 20
	open := map[string]func(t *testing.T, path string) backend.Device{
		"file": func(t *testing.T, path string) backend.Device {
			f, err := backend.OpenFile(path, nil)
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			return f
		},
		"mmap": func(t *testing.T, path string) backend.Device {
			m, err := backend.OpenMmap(path, nil)
			require.NoError(t, err)
			t.Cleanup(func() { m.Close() })
			return m
		},
	}
	for name, openDev := range open {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			want := patterned(size).Bytes()
			require.NoError(t, os.WriteFile(path, want, 0o600))
			dev := openDev(t, path)
			addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "d", Device: dev, Writable: true})})
			for _, structured := range []bool{true, false} {
				c := coreDial(t, addr, "d", &nbd.DialOptions{NoStructuredReplies: !structured})
				got := make([]byte, size)
				_, err := c.ReadAt(got, 0)
				require.NoError(t, err)
				require.True(t, bytes.Equal(want, got))
				_, err = c.WriteAt([]byte("written"), 12345)
				require.NoError(t, err)
				copy(want[12345:], "written")
				require.NoError(t, c.Flush(context.Background()))
				small := make([]byte, 7)
				_, err = c.ReadAt(small, 12345)
				require.NoError(t, err)
				assert.Equal(t, "written", string(small))
				// Large writes, at an unaligned offset; then a small request, which must be
				// read from where the payload ended.
				big := patterned(3<<20 + 123).Bytes()
				for i := range big {
					big[i] ^= 0x5a
				}
				_, err = c.WriteAt(big, 777)
				require.NoError(t, err)
				copy(want[777:], big)
				got = make([]byte, size)
				_, err = c.ReadAt(got, 0)
				require.NoError(t, err)
				require.True(t, bytes.Equal(want, got))
				require.NoError(t, c.Close())
			}
			onDisk, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(want, onDisk), "file contents")
		})
	}
}

// TestFileShrinksUnderSendfile: a read reply sent with sendfile has promised its length before
// the file is read, so a file truncated underneath the export ends the connection instead of
// delivering a short or padded reply.
func TestFileShrinksUnderSendfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, patterned(4<<20).Bytes(), 0o600))
	f, err := backend.OpenFile(path, nil)
	require.NoError(t, err)
	defer f.Close()
	addr := coreServe(t, &nbd.Server{Exports: coreExports(t, &nbd.Export{Name: "d", Device: f})})
	r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
	r.goRaw("d", false)
	require.NoError(t, os.Truncate(path, 100<<10))
	r.request(nbd.Request{Type: nbd.CmdRead, Cookie: 7, Length: 1 << 20}, nil)
	errno, cookie := r.simpleReply()
	require.Zero(t, errno)
	require.Equal(t, uint64(7), cookie)
	n, err := io.ReadFull(r.br, make([]byte, 1<<20))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, 100<<10, n, "what the file still has, then the end of the connection")
}

// TestCutWriteLeavesNothing: a WRITE whose payload the client does not finish sending (it
// disconnects) changes nothing, whatever path serves it: inline from the read buffer, from
// memory, or spliced from the socket into a file, within the pipe or beyond.
func TestCutWriteLeavesNothing(t *testing.T) {
	const size = 8 << 20
	for _, dev := range []string{"file", "memory", "copy-on-write file"} {
		for _, n := range []int{4 << 10, 256 << 10, 4 << 20} {
			t.Run(fmt.Sprintf("%s/%d", dev, n), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "disk.img")
				want := patterned(size).Bytes()
				require.NoError(t, os.WriteFile(path, want, 0o600))
				e := &nbd.Export{Name: "d", Writable: true}
				var read func() []byte
				switch dev {
				case "memory":
					m := backend.NewMemoryFrom(bytes.Clone(want), false)
					e.Device, read = m, m.Bytes
				default:
					f, err := backend.OpenFile(path, nil)
					require.NoError(t, err)
					t.Cleanup(func() { f.Close() })
					e.Device = f
					read = func() []byte {
						b, err := os.ReadFile(path)
						require.NoError(t, err)
						return b
					}
					if dev == "copy-on-write file" {
						e.CopyOnWrite = nbd.CopyOnWritePerClient
					}
				}
				srv := &nbd.Server{Exports: coreExports(t, e)}
				addr := coreServe(t, srv)
				r := dialRaw(t, addr, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes)
				r.goRaw("d", false)
				payload := bytes.Repeat([]byte{0xee}, n)
				hdr, err := nbd.Request{Type: nbd.CmdWrite, Cookie: 1, Offset: 8192, Length: uint32(n)}.MarshalBinary()
				require.NoError(t, err)
				// Most of the payload, in two pieces so that part of it arrives after the header
				// was read, then the connection ends.
				r.write(append(hdr, payload[:n/4]...))
				time.Sleep(20 * time.Millisecond)
				r.write(payload[n/4 : n-100])
				time.Sleep(20 * time.Millisecond)
				require.NoError(t, r.c.Close())
				waitFor(t, func() bool { return srv.Stats().ActiveConnections == 0 })
				assert.True(t, bytes.Equal(want, read()), "the device is unchanged")
			})
		}
	}
}
