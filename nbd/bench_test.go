package nbd_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/nbd"
	"github.com/stretchr/testify/require"
)

// benchDevices opens the same image as each kind of backend device.
func benchDevices(b *testing.B, size int) map[string]backend.Device {
	path := filepath.Join(b.TempDir(), "bench.img")
	require.NoError(b, os.WriteFile(path, patterned(size).Bytes(), 0o600))
	f, err := backend.OpenFile(path, nil)
	require.NoError(b, err)
	b.Cleanup(func() { f.Close() })
	m, err := backend.OpenMmap(path, nil)
	require.NoError(b, err)
	b.Cleanup(func() { m.Close() })
	return map[string]backend.Device{"memory": patterned(size), "file": f, "mmap": m}
}

// BenchmarkServer measures reads and writes through the server and the package's client over
// loopback TCP, with 16 requests in flight, for each backend device. The mmap device's reads
// are written from the mapping (writev), the file device's with pread into a buffer.
func BenchmarkServer(b *testing.B) {
	const size = 64 << 20
	for _, kind := range []string{"memory", "file", "mmap"} {
		for _, bs := range []int{4 << 10, 256 << 10} {
			for _, op := range []string{"read", "write"} {
				b.Run(fmt.Sprintf("%s/%s/%dK", kind, op, bs>>10), func(b *testing.B) {
					dev := benchDevices(b, size)[kind]
					addr := coreServe(b, &nbd.Server{Exports: coreExports(b, &nbd.Export{Name: "b", Device: dev, Writable: true})})
					c := coreDial(b, addr, "b", nil)
					b.SetBytes(int64(bs))
					const depth = 16
					var wg sync.WaitGroup
					next := make(chan int64, depth)
					for range depth {
						wg.Go(func() {
							buf := make([]byte, bs)
							for off := range next {
								var err error
								if op == "read" {
									_, err = c.ReadAt(buf, off)
								} else {
									_, err = c.WriteAt(buf, off)
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					b.ResetTimer()
					for i := range b.N {
						next <- int64(i*bs) % (size - int64(bs))
					}
					close(next)
					wg.Wait()
				})
			}
		}
	}
}

// BenchmarkReadPath compares the ways a server can send a read reply of a file's data to a TCP
// socket, without the protocol around it: pread into a buffer then write, writev from a memory
// mapping, and sendfile(2) after the header.
func BenchmarkReadPath(b *testing.B) {
	const size = 64 << 20
	path := filepath.Join(b.TempDir(), "img")
	require.NoError(b, os.WriteFile(path, patterned(size).Bytes(), 0o600))
	f, err := os.Open(path)
	require.NoError(b, err)
	defer f.Close()
	m, err := backend.OpenMmap(path, &backend.MmapOptions{ReadOnly: true})
	require.NoError(b, err)
	defer m.Close()

	for _, bs := range []int{4 << 10, 64 << 10, 1 << 20} {
		paths := map[string]func(w *net.TCPConn, hdr []byte, off int64, buf []byte) error{
			"pread+writev": func(w *net.TCPConn, hdr []byte, off int64, buf []byte) error {
				if _, err := f.ReadAt(buf, off); err != nil {
					return err
				}
				bufs := net.Buffers{hdr, buf}
				_, err := bufs.WriteTo(w)
				return err
			},
			"mmap+writev": func(w *net.TCPConn, hdr []byte, off int64, buf []byte) error {
				s, err := m.Slice(off, int64(len(buf)))
				if err != nil {
					return err
				}
				bufs := net.Buffers{hdr, s}
				_, err = bufs.WriteTo(w)
				return err
			},
			"write+sendfile": func(w *net.TCPConn, hdr []byte, off int64, buf []byte) error {
				if _, err := w.Write(hdr); err != nil {
					return err
				}
				rc, err := w.SyscallConn()
				if err != nil {
					return err
				}
				left := len(buf)
				var serr error
				err = rc.Write(func(fd uintptr) bool {
					for left > 0 {
						n, err := syscall.Sendfile(int(fd), int(f.Fd()), &off, left)
						if err == syscall.EAGAIN {
							return false
						}
						if err != nil {
							serr = err
							return true
						}
						left -= n
					}
					return true
				})
				if err == nil {
					err = serr
				}
				return err
			},
		}
		for _, name := range []string{"pread+writev", "mmap+writev", "write+sendfile"} {
			send := paths[name]
			b.Run(fmt.Sprintf("%s/%dK", name, bs>>10), func(b *testing.B) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(b, err)
				defer l.Close()
				drained := make(chan struct{})
				go func() {
					defer close(drained)
					c, err := l.Accept()
					if err != nil {
						return
					}
					defer c.Close()
					io.Copy(io.Discard, c)
				}()
				c, err := net.Dial("tcp", l.Addr().String())
				require.NoError(b, err)
				w := c.(*net.TCPConn)
				hdr := make([]byte, nbd.SimpleReplyHeaderSize)
				binary.BigEndian.PutUint32(hdr, nbd.SimpleReplyMagic)
				buf := make([]byte, bs)
				b.SetBytes(int64(bs))
				b.ResetTimer()
				for i := range b.N {
					if err := send(w, hdr, int64(i*bs)%(size-int64(bs)), buf); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				w.Close()
				<-drained
			})
		}
	}
}

// BenchmarkIdleConnections reports the memory an idle connection in transmission costs the
// server (heap and goroutine stacks), over 500 connections.
func BenchmarkIdleConnections(b *testing.B) {
	const conns = 500
	for range b.N {
		srv := &nbd.Server{Exports: coreExports(b, &nbd.Export{Name: "x", Device: patterned(4096)})}
		addr := coreServe(b, srv)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		clients := make([]*nbd.Client, 0, conns)
		for range conns {
			c, err := nbd.Dial(context.Background(), "tcp", addr, &nbd.DialOptions{})
			require.NoError(b, err)
			_, err = c.Go(context.Background(), "x")
			require.NoError(b, err)
			clients = append(clients, c)
		}
		require.Eventually(b, func() bool { return srv.Stats().Attached == conns }, 10*time.Second, time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&after)
		// Both ends live in this process: subtract the clients' share, measured the same way.
		perConn := float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / conns
		for _, c := range clients {
			c.Close()
		}
		b.ReportMetric(perConn, "B/conn(server+client)")
	}
}
