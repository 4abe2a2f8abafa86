package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/backend"
	"github.com/netroot/netroot/internal/peertest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/nbd/nbdconf"
	"github.com/netroot/netroot/nbd/nbdtest"
)

// Interop tests: netroot's Server driven by the real clients that boot machines and move images
// (libnbd's nbdinfo and nbdcopy, qemu-img, qemu-io, fio's nbd engine, nbd-client), on loopback.

const interopSize = 16 << 20

// interopServe serves set on a loopback port until the test ends and returns the address.
func interopServe(t *testing.T, srv *nbd.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		assert.ErrorIs(t, <-done, nbd.ErrServerClosed)
	})
	return l.Addr().String()
}

func interopExports(t *testing.T, exports ...*nbd.Export) *nbd.ExportSet {
	t.Helper()
	set, err := nbd.NewExportSet(exports...)
	require.NoError(t, err)
	return set
}

func interopRandom(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8(s).Read(b)
	return b
}

// interopRun runs a peer program, bounded in time, and returns its combined output; a failure
// fails the test with that output.
func interopRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := interopTry(t, bin, args...)
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), out)
	return out
}

func interopTry(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir() // fio, for one, leaves state files in its working directory
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// interopContents reads a device through its lock, so the race detector sees the server's
// writes ordered before the comparison.
func interopContents(t *testing.T, d backend.Device) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	_, err := d.ReadAt(b, 0)
	require.NoError(t, err)
	return b
}

func uri(addr, export string) string { return "nbd://" + addr + "/" + export }

func TestInteropNBDInfo(t *testing.T) {
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	data := interopRandom(1, interopSize)
	set := interopExports(t,
		&nbd.Export{Name: "root", Description: "KIWI root image", Device: backend.NewMemoryFrom(data, true)},
		&nbd.Export{Name: "scratch", Device: backend.NewMemory(interopSize), Writable: true},
	)
	addr := interopServe(t, &nbd.Server{Exports: set})

	type export struct {
		Name        string   `json:"export-name"`
		Description string   `json:"description"`
		Size        int64    `json:"export-size"`
		ReadOnly    bool     `json:"is_read_only"`
		CanFlush    bool     `json:"can_flush"`
		CanTrim     bool     `json:"can_trim"`
		CanZero     bool     `json:"can_zero"`
		CanMulti    bool     `json:"can_multi_conn"`
		Contexts    []string `json:"contexts"`
	}
	type info struct {
		Protocol   string   `json:"protocol"`
		TLS        bool     `json:"TLS"`
		Structured bool     `json:"structured"`
		Exports    []export `json:"exports"`
	}

	t.Run("json", func(t *testing.T) {
		var got info
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, nbdinfo, "--json", uri(addr, "root"))), &got))
		assert.Equal(t, "newstyle-fixed", got.Protocol)
		assert.False(t, got.TLS)
		assert.True(t, got.Structured)
		require.Len(t, got.Exports, 1)
		e := got.Exports[0]
		assert.Equal(t, "root", e.Name)
		assert.Equal(t, "KIWI root image", e.Description)
		assert.Equal(t, int64(interopSize), e.Size)
		assert.True(t, e.ReadOnly)
		assert.Contains(t, e.Contexts, nbd.MetaContextBaseAllocation)
	})
	t.Run("writable", func(t *testing.T) {
		var got info
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, nbdinfo, "--json", uri(addr, "scratch"))), &got))
		require.Len(t, got.Exports, 1)
		e := got.Exports[0]
		assert.False(t, e.ReadOnly)
		assert.True(t, e.CanFlush, "backend.Memory syncs")
		assert.True(t, e.CanTrim, "backend.Memory trims")
		assert.True(t, e.CanZero, "backend.Memory zeroes")
	})
	t.Run("list", func(t *testing.T) {
		var got info
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, nbdinfo, "--list", "--json", "nbd://"+addr)), &got))
		names := map[string]export{}
		for _, e := range got.Exports {
			names[e.Name] = e
		}
		require.Contains(t, names, "root")
		require.Contains(t, names, "scratch")
		assert.Equal(t, "KIWI root image", names["root"].Description)
		assert.Equal(t, int64(interopSize), names["scratch"].Size)
	})
	t.Run("size", func(t *testing.T) {
		out := interopRun(t, nbdinfo, "--size", uri(addr, "root"))
		assert.Equal(t, strconv.Itoa(interopSize), strings.TrimSpace(out))
	})
	t.Run("map", func(t *testing.T) {
		var got []struct {
			Offset int64 `json:"offset"`
			Length int64 `json:"length"`
			Type   int   `json:"type"`
		}
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, nbdinfo, "--map", "--json", uri(addr, "root"))), &got))
		require.NotEmpty(t, got)
		var next int64
		for _, e := range got {
			assert.Equal(t, next, e.Offset, "extents are contiguous")
			assert.Zero(t, e.Type, "memory is all data")
			next = e.Offset + e.Length
		}
		assert.Equal(t, int64(interopSize), next, "the map covers the export")
	})
	t.Run("map sparse file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sparse.img")
		f, err := os.Create(path)
		require.NoError(t, err)
		require.NoError(t, f.Truncate(interopSize))
		_, err = f.WriteAt(interopRandom(8, 1<<20), 4<<20)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		dev, err := backend.OpenFile(path, &backend.FileOptions{ReadOnly: true})
		require.NoError(t, err)
		defer dev.Close()
		addr := interopServe(t, &nbd.Server{Exports: interopExports(t, &nbd.Export{Name: "sparse", Device: dev})})

		type run struct{ Offset, Length, Type int64 }
		merge := func(runs []run) []run {
			var out []run
			for _, r := range runs {
				if n := len(out); n > 0 && out[n-1].Type == r.Type && out[n-1].Offset+out[n-1].Length == r.Offset {
					out[n-1].Length += r.Length
					continue
				}
				out = append(out, r)
			}
			return out
		}
		// What the backend itself reports (holes only where the file system keeps them) ...
		var want []run
		for off := int64(0); off < interopSize; {
			ext, err := dev.Extents(off, interopSize-off)
			require.NoError(t, err)
			require.NotEmpty(t, ext)
			for _, e := range ext {
				var typ int64
				if e.Hole {
					typ |= int64(nbd.StateHole)
				}
				if e.Zero {
					typ |= int64(nbd.StateZero)
				}
				want = append(want, run{e.Offset, e.Length, typ})
				off = e.Offset + e.Length
			}
		}
		// ... is what nbdinfo sees through base:allocation.
		var got []run
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, nbdinfo, "--map", "--json", uri(addr, "sparse"))), &got))
		assert.Equal(t, merge(want), merge(got))
		t.Logf("extents: %v", merge(got))
	})
	t.Run("unknown export", func(t *testing.T) {
		out, err := interopTry(t, nbdinfo, uri(addr, "nope"))
		require.Error(t, err, out)
		assert.Contains(t, out, "nope")
	})
}

func TestInteropNBDCopy(t *testing.T) {
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	src := interopRandom(2, interopSize)
	// Zero runs in the source exercise nbdcopy's zero detection on the way back.
	clear(src[1<<20 : 3<<20])
	dst := backend.NewMemory(interopSize)
	set := interopExports(t,
		&nbd.Export{Name: "src", Device: backend.NewMemoryFrom(src, true)},
		&nbd.Export{Name: "dst", Device: dst, Writable: true},
	)
	addr := interopServe(t, &nbd.Server{Exports: set})
	dir := t.TempDir()

	for _, conns := range []string{"1", "4"} {
		t.Run("from server connections "+conns, func(t *testing.T) {
			out := filepath.Join(dir, "out"+conns+".img")
			interopRun(t, nbdcopy, "-C", conns, uri(addr, "src"), out)
			got, err := os.ReadFile(out)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(src, got), "nbdcopy -C %s from the server changed the data", conns)
		})
		t.Run("to server connections "+conns, func(t *testing.T) {
			in := filepath.Join(dir, "in"+conns+".img")
			want := interopRandom(3+uint64(len(conns)), interopSize)
			clear(want[5<<20 : 6<<20])
			require.NoError(t, os.WriteFile(in, want, 0o644))
			interopRun(t, nbdcopy, "-C", conns, "--flush", in, uri(addr, "dst"))
			assert.True(t, bytes.Equal(want, interopContents(t, dst)), "nbdcopy -C %s to the server changed the data", conns)
		})
	}
	t.Run("server to server", func(t *testing.T) {
		interopRun(t, nbdcopy, uri(addr, "src"), uri(addr, "dst"))
		assert.True(t, bytes.Equal(src, interopContents(t, dst)))
	})
}

func TestInteropQemuImg(t *testing.T) {
	qemuImg := peertest.Program(t, "qemu-img", "qemu-utils")
	src := interopRandom(4, interopSize)
	dst := backend.NewMemory(interopSize)
	set := interopExports(t,
		&nbd.Export{Name: "src", Device: backend.NewMemoryFrom(src, true)},
		&nbd.Export{Name: "dst", Device: dst, Writable: true},
	)
	addr := interopServe(t, &nbd.Server{Exports: set})
	dir := t.TempDir()

	t.Run("info", func(t *testing.T) {
		var got struct {
			VirtualSize int64  `json:"virtual-size"`
			Format      string `json:"format"`
		}
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, qemuImg, "info", "--output=json", uri(addr, "src"))), &got))
		assert.Equal(t, int64(interopSize), got.VirtualSize)
		assert.Equal(t, "raw", got.Format)
	})
	t.Run("convert from server", func(t *testing.T) {
		out := filepath.Join(dir, "out.img")
		interopRun(t, qemuImg, "convert", "-f", "raw", "-O", "raw", uri(addr, "src"), out)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(src, got))
	})
	t.Run("convert to server", func(t *testing.T) {
		in := filepath.Join(dir, "in.img")
		want := interopRandom(5, interopSize)
		clear(want[:1<<20]) // qemu-img writes zeroes with WRITE_ZEROES or skips them
		require.NoError(t, os.WriteFile(in, want, 0o644))
		interopRun(t, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", in, uri(addr, "dst"))
		assert.True(t, bytes.Equal(want, interopContents(t, dst)))

		t.Run("compare", func(t *testing.T) {
			interopRun(t, qemuImg, "compare", "-f", "raw", "-F", "raw", in, uri(addr, "dst"))
			want[interopSize-1] ^= 0xff
			require.NoError(t, os.WriteFile(in, want, 0o644))
			out, err := interopTry(t, qemuImg, "compare", "-f", "raw", "-F", "raw", in, uri(addr, "dst"))
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, out)
			assert.Equal(t, 1, ee.ExitCode(), "qemu-img compare must see the difference: %s", out)
			assert.Contains(t, out, "Content mismatch at offset "+strconv.Itoa(interopSize-512), "qemu-img reports the sector")
		})
	})
}

func TestInteropQemuIO(t *testing.T) {
	qemuIO := peertest.Program(t, "qemu-io", "qemu-utils")
	dev := backend.NewMemoryFrom(interopRandom(6, interopSize), false)
	set := interopExports(t, &nbd.Export{Name: "disk", Device: dev, Writable: true})
	addr := interopServe(t, &nbd.Server{Exports: set})

	out := interopRun(t, qemuIO, "-f", "raw",
		"-c", "write -P 0xab 0 64k",
		"-c", "read -P 0xab 0 64k",
		"-c", "write -P 0xcd 65535 3",
		"-c", "read -P 0xcd 65535 3",
		"-c", "write -z 128k 64k",
		"-c", "read -P 0 128k 64k",
		"-c", "write -z -u 256k 64k",
		"-c", "read -P 0 256k 64k",
		"-c", "discard 512k 64k",
		"-c", "write -f -P 0x5a 1M 1M",
		"-c", "aio_write -P 0x11 2M 4k",
		"-c", "aio_write -P 0x22 3M 4k",
		"-c", "aio_flush",
		"-c", "read -P 0x11 2M 4k",
		"-c", "read -P 0x22 3M 4k",
		"-c", "flush",
		uri(addr, "disk"))
	assert.NotContains(t, out, "Pattern verification failed")
	assert.NotContains(t, out, "failed")

	// The server's device holds what qemu-io wrote.
	got := interopContents(t, dev)
	assert.Equal(t, bytes.Repeat([]byte{0xab}, 65535), got[:65535])
	assert.Equal(t, bytes.Repeat([]byte{0xcd}, 3), got[65535:65538])
	assert.Equal(t, make([]byte, 64<<10), got[128<<10:192<<10])
	assert.Equal(t, make([]byte, 64<<10), got[256<<10:320<<10])
	assert.Equal(t, bytes.Repeat([]byte{0x5a}, 1<<20), got[1<<20:2<<20])
	assert.Equal(t, bytes.Repeat([]byte{0x11}, 4096), got[2<<20:2<<20+4096])
	assert.Equal(t, bytes.Repeat([]byte{0x22}, 4096), got[3<<20:3<<20+4096])

	t.Run("copy-on-write", func(t *testing.T) {
		base := interopRandom(9, 1<<20)
		set := interopExports(t, &nbd.Export{Name: "cow", Device: backend.NewMemoryFrom(bytes.Clone(base), true),
			CopyOnWrite: nbd.CopyOnWritePerConnection})
		addr := interopServe(t, &nbd.Server{Exports: set})
		out := interopRun(t, qemuIO, "-f", "raw",
			"-c", "write -P 0x77 4k 8k", "-c", "read -P 0x77 4k 8k", "-c", "flush", uri(addr, "cow"))
		assert.NotContains(t, out, "failed")
		// A new connection gets a fresh overlay over the untouched base.
		out = interopRun(t, qemuIO, "-f", "raw", "-c", "read -v 4k 16", uri(addr, "cow"))
		assert.NotContains(t, out, "77 77 77 77")
		out, err := interopTry(t, qemuIO, "-f", "raw", "-c", "read -P 0x77 4k 8k", uri(addr, "cow"))
		assert.Error(t, err, "qemu-io exits non-zero on a pattern mismatch")
		assert.Contains(t, out, "Pattern verification failed")
	})
	t.Run("read-only", func(t *testing.T) {
		set := interopExports(t, &nbd.Export{Name: "ro", Device: backend.NewMemory(1 << 20)})
		addr := interopServe(t, &nbd.Server{Exports: set})
		out, err := interopTry(t, qemuIO, "-f", "raw", "-r", "-c", "read -P 0 0 64k", uri(addr, "ro"))
		require.NoError(t, err, out)
		out, _ = interopTry(t, qemuIO, "-f", "raw", "-c", "write -P 1 0 4k", uri(addr, "ro"))
		assert.Regexp(t, `(?i)read-only|not permitted|permission`, out)
	})
}

func TestInteropFio(t *testing.T) {
	fio := peertest.Program(t, "fio", "fio")
	if out, err := interopTry(t, fio, "--enghelp=nbd"); err != nil || !strings.Contains(out, "uri") {
		peertest.Missing(t, "fio without the nbd ioengine (Debian package fio): "+out)
	}
	dev := backend.NewMemory(interopSize)
	set := interopExports(t, &nbd.Export{Name: "fio", Device: dev, Writable: true})
	addr := interopServe(t, &nbd.Server{Exports: set})

	out := interopRun(t, fio,
		"--name=nbd-verify", "--ioengine=nbd", "--uri="+uri(addr, "fio"),
		"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size="+strconv.Itoa(interopSize),
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--randrepeat=0",
		"--output-format=json")
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Write struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"write"`
			Read struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	// fio prints notes before the JSON document.
	i := strings.Index(out, "{")
	require.GreaterOrEqual(t, i, 0, out)
	require.NoError(t, json.Unmarshal([]byte(out[i:]), &res), out)
	require.Len(t, res.Jobs, 1)
	assert.Zero(t, res.Jobs[0].Error)
	assert.Equal(t, int64(interopSize), res.Jobs[0].Write.IOBytes)
	assert.Equal(t, int64(interopSize), res.Jobs[0].Read.IOBytes, "fio read everything back to verify it")
	assert.NotEqual(t, make([]byte, interopSize), interopContents(t, dev))
}

func TestInteropNBDClientList(t *testing.T) {
	nbdClient := peertest.Program(t, "nbd-client", "nbd-client")
	set := interopExports(t,
		&nbd.Export{Name: "root", Device: backend.NewMemory(1 << 20)},
		&nbd.Export{Name: "swap", Device: backend.NewMemory(1 << 20), Writable: true},
	)
	addr := interopServe(t, &nbd.Server{Exports: set})
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	out := interopRun(t, nbdClient, "-l", host, port)
	var names []string
	for line := range strings.Lines(out) {
		names = append(names, strings.TrimSpace(line))
	}
	assert.Contains(t, names, "root")
	assert.Contains(t, names, "swap")

	t.Run("list refused", func(t *testing.T) {
		addr := interopServe(t, &nbd.Server{Exports: set, DisableList: true})
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		out, _ := interopTry(t, nbdClient, "-l", host, port)
		assert.NotContains(t, out, "root")
	})
}

func TestInteropTLS(t *testing.T) {
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	pki := nbdtest.NewPKI(t)
	certs := pki.Dir
	data := interopRandom(7, 4<<20)
	set := interopExports(t, &nbd.Export{Name: "root", Device: backend.NewMemoryFrom(data, true)})
	addr := interopServe(t, &nbd.Server{
		Exports:   set,
		TLSMode:   nbd.TLSRequired,
		TLSConfig: pki.ServerConfig(true),
	})
	tlsURI := "nbds://" + addr + "/root?tls-certificates=" + certs

	t.Run("nbdinfo", func(t *testing.T) {
		var got struct {
			TLS     bool `json:"TLS"`
			Exports []struct {
				Size int64 `json:"export-size"`
			} `json:"exports"`
		}
		require.NoError(t, json.Unmarshal([]byte(interopRun(t, nbdinfo, "--json", tlsURI)), &got))
		assert.True(t, got.TLS)
		require.Len(t, got.Exports, 1)
		assert.Equal(t, int64(len(data)), got.Exports[0].Size)
	})
	t.Run("nbdcopy", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.img")
		interopRun(t, nbdcopy, tlsURI, out)
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(data, got))
	})
	t.Run("nbd-client list", func(t *testing.T) {
		nbdClient := peertest.Program(t, "nbd-client", "nbd-client")
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		out := interopRun(t, nbdClient, "-l", host, port, "-x",
			"--cacertfile", filepath.Join(certs, "ca-cert.pem"),
			"--certfile", filepath.Join(certs, "client-cert.pem"),
			"--keyfile", filepath.Join(certs, "client-key.pem"),
			"--tlshostname", "127.0.0.1")
		assert.Contains(t, strings.Fields(out), "root")
	})
	t.Run("plain refused", func(t *testing.T) {
		out, err := interopTry(t, nbdinfo, uri(addr, "root"))
		require.Error(t, err, "a client without TLS must not reach a TLS-only server: %s", out)
	})
	t.Run("no client certificate", func(t *testing.T) {
		dir := t.TempDir()
		ca, err := os.ReadFile(filepath.Join(certs, "ca-cert.pem"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "ca-cert.pem"), ca, 0o600))
		out, err := interopTry(t, nbdinfo, "nbds://"+addr+"/root?tls-certificates="+dir)
		require.Error(t, err, "a client without a certificate must be refused: %s", out)
	})
}

func TestInteropAuthFile(t *testing.T) {
	nbdinfo := peertest.Program(t, "nbdinfo", "libnbd-bin")
	// An operator's authfile, read by the config reader, guards an export of the server.
	allowed, err := nbdconf.ParseAuthFile(strings.NewReader("# lab\n198.51.100.0/24\n"), "allow")
	require.NoError(t, err)
	loopback, err := nbdconf.ParseAuthFile(strings.NewReader("127.0.0.0/8\n"), "allow")
	require.NoError(t, err)
	set := interopExports(t,
		&nbd.Export{Name: "elsewhere", Device: backend.NewMemory(1 << 20), Allow: allowed},
		&nbd.Export{Name: "here", Device: backend.NewMemory(1 << 20), Allow: loopback},
	)
	addr := interopServe(t, &nbd.Server{Exports: set})
	assert.False(t, nbdconf.AuthAllows(allowed, netip.MustParseAddr("127.0.0.1")))
	_, err = interopTry(t, nbdinfo, uri(addr, "elsewhere"))
	var ee *exec.ExitError
	assert.True(t, errors.As(err, &ee), "a client outside the authfile must be refused")
	interopRun(t, nbdinfo, uri(addr, "here"))
}

// TestInteropNBDCopyMultiConn: nbdcopy (asked for four connections and four threads; it
// never opens more connections than threads) opens several connections only to exports that
// advertise NBD_FLAG_CAN_MULTI_CONN: read-only files and writable files (whose flush is an
// fsync of the one file all connections write), not per-connection copy-on-write exports. The
// copies are byte-exact either way.
func TestInteropNBDCopyMultiConn(t *testing.T) {
	nbdcopy := peertest.Program(t, "nbdcopy", "libnbd-bin")
	dir := t.TempDir()
	src := interopRandom(11, interopSize)
	open := func(name string, data []byte, readOnly bool) (*backend.File, string) {
		path := filepath.Join(dir, name+".img")
		require.NoError(t, os.WriteFile(path, data, 0o644))
		f, err := backend.OpenFile(path, &backend.FileOptions{ReadOnly: readOnly})
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f, path
	}
	ro, _ := open("ro", src, true)
	rw, rwPath := open("rw", make([]byte, interopSize), false)
	base, _ := open("base", src, true)
	srv := &nbd.Server{Exports: interopExports(t,
		&nbd.Export{Name: "ro", Device: ro},
		&nbd.Export{Name: "rw", Device: rw, Writable: true},
		&nbd.Export{Name: "cow", Device: base, CopyOnWrite: nbd.CopyOnWritePerConnection},
	)}
	addr := interopServe(t, srv)
	attached := func(f func()) int64 {
		before := srv.Stats().Attached
		f()
		return srv.Stats().Attached - before
	}

	t.Run("read-only file", func(t *testing.T) {
		out := filepath.Join(dir, "out-ro.img")
		n := attached(func() { interopRun(t, nbdcopy, "-C", "4", "-T", "4", uri(addr, "ro"), out) })
		assert.Equal(t, int64(4), n, "connections nbdcopy opened")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(src, got))
	})
	t.Run("writable file", func(t *testing.T) {
		in := filepath.Join(dir, "in.img")
		want := interopRandom(12, interopSize)
		clear(want[2<<20 : 3<<20])
		require.NoError(t, os.WriteFile(in, want, 0o644))
		n := attached(func() { interopRun(t, nbdcopy, "-C", "4", "-T", "4", "--flush", in, uri(addr, "rw")) })
		assert.Equal(t, int64(4), n, "connections nbdcopy opened")
		got, err := os.ReadFile(rwPath)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), "the file holds what nbdcopy wrote")
	})
	t.Run("per-connection copy-on-write", func(t *testing.T) {
		out := filepath.Join(dir, "out-cow.img")
		n := attached(func() { interopRun(t, nbdcopy, "-C", "4", "-T", "4", uri(addr, "cow"), out) })
		assert.Equal(t, int64(1), n, "no multi-conn: one connection")
		got, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(src, got))
	})
}
