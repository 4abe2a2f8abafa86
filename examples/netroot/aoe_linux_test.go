package main_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/internal/peertest"
)

// envAoEReader makes the test binary, started inside a network namespace, act as an AoE
// initiator: IFACE:SHELF:SLOT:MD5 reads the whole device and checks its MD5.
const envAoEReader = "NETROOT_TEST_AOE_READER"

func init() {
	spec := os.Getenv(envAoEReader)
	if spec == "" {
		return
	}
	if err := aoeRead(spec); err != nil {
		fmt.Println("AOE-READ FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("AOE-READ OK")
	os.Exit(0)
}

func aoeRead(spec string) error {
	f := strings.Split(spec, ":")
	if len(f) != 4 {
		return fmt.Errorf("bad spec %q", spec)
	}
	shelf, _ := strconv.Atoi(f[1])
	slot, _ := strconv.Atoi(f[2])
	conn, err := aoe.Listen(f[0])
	if err != nil {
		return err
	}
	c := aoe.NewClient(conn, nil)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Like a booting client, ask until the target answers.
	var d *aoe.Disk
	for d == nil {
		if d, err = c.Open(ctx, uint16(shelf), uint8(slot)); err != nil {
			if ctx.Err() != nil {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	h := md5.New()
	if _, err := io.Copy(h, io.NewSectionReader(d, 0, d.Size())); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f[3] {
		return fmt.Errorf("md5 %s, want %s (size %d)", got, f[3], d.Size())
	}
	return nil
}

// vethPair makes two network namespaces joined by a veth pair and removes them at cleanup.
func vethPair(t *testing.T) (ip, nsA, nsB string) {
	t.Helper()
	peertest.Root(t, "network namespaces and AF_PACKET sockets")
	ip = peertest.Program(t, "ip", "iproute2")
	id := strconv.Itoa(os.Getpid() % 100000)
	nsA, nsB = "nrbinA"+id, "nrbinB"+id
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(ip, args...).CombinedOutput()
		require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
	}
	run("netns", "add", nsA)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", nsA).Run() })
	run("netns", "add", nsB)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", nsB).Run() })
	run("link", "add", "nrvA"+id, "netns", nsA, "type", "veth", "peer", "name", "nrvB"+id, "netns", nsB)
	for _, ns := range []string{nsA, nsB} {
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", nsA, "link", "set", "nrvA"+id, "up")
	run("-n", nsB, "link", "set", "nrvB"+id, "up")
	return ip, nsA, nsB
}

func TestAoEInNetworkNamespaces(t *testing.T) {
	ip, nsA, nsB := vethPair(t)
	id := strings.TrimPrefix(nsA, "nrbinA")
	ifA, ifB := "nrvA"+id, "nrvB"+id

	readFrom := func(t *testing.T, shelf, slot int, sum string) {
		t.Helper()
		self, err := os.Executable()
		require.NoError(t, err)
		cmd := exec.Command(ip, "netns", "exec", nsB, self, "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d:%s", envAoEReader, ifB, shelf, slot, sum))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "AOE-READ OK")
	}

	t.Run("serve", func(t *testing.T) {
		initrd := []byte("initrd")
		kisDir, image, _ := fakeBuild(t, initrd)
		sum := md5.Sum(image)
		p := startIn(t, ip, nsA, "serve", "-kis", kisDir, "-tftp-root", t.TempDir(), "-tftp-addr", "127.0.0.1:0",
			"-no-bootloader", "-nbd=false", "-aoe-iface", ifA, "-aoe-shelf", "3", "-aoe-slot", "7", "-aoe-announce", "1s")
		p.waitLog(t, `msg="aoe serving"`)
		p.waitLog(t, `msg=ready`)
		readFrom(t, 3, 7, hex.EncodeToString(sum[:]))
		p.waitLog(t, `msg="aoe initiator discovered target".*device=e3.7`)
		cfg, err := os.ReadFile(filepath.Join(p.tftpRoot(t), "pxelinux.cfg", "default"))
		require.NoError(t, err)
		assert.Contains(t, string(cfg), "root=overlay:aoe=e3.7")
		assert.Contains(t, string(cfg), "rd.driver.pre=aoe")
		require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
		assert.NoError(t, p.wait(t))
	})

	t.Run("vblade arguments", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "disk.img")
		data := make([]byte, 3<<20)
		_, _ = rand.Read(data)
		require.NoError(t, os.WriteFile(img, data, 0o644))
		// -o 8 -l 2048: the export is 1 MiB starting 4 KiB into the file, as vblade counts sectors.
		window := data[8*512 : 8*512+2048*512]
		sum := md5.Sum(window)
		p := startIn(t, ip, nsA, "aoe", "-r", "-o", "8", "-l", "2048", "0", "1", ifA, img)
		p.waitLog(t, `msg="aoe serving"`)
		readFrom(t, 0, 1, hex.EncodeToString(sum[:]))
		require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
		assert.NoError(t, p.wait(t))
		after, err := os.ReadFile(img)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(data, after), "a read-only export leaves the file alone")
	})

	t.Run("vblade as nobody", func(t *testing.T) {
		// The raw socket and the file (in root's private temporary folder) are opened as root;
		// then the target runs as nobody.
		img := filepath.Join(t.TempDir(), "disk.img")
		data := make([]byte, 1<<20)
		_, _ = rand.Read(data)
		require.NoError(t, os.WriteFile(img, data, 0o600))
		sum := md5.Sum(data)
		p := startIn(t, ip, nsA, "aoe", "-r", "-user", "nobody", "0", "2", ifA, img)
		p.waitLog(t, `msg="dropped root privileges" user=nobody`)
		p.waitLog(t, `msg="aoe serving"`)
		assert.Equal(t, nobodyIDs, idLines(t, p.cmd.Process.Pid))
		readFrom(t, 0, 2, hex.EncodeToString(sum[:]))
		require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
		assert.NoError(t, p.wait(t))
	})
}

// startIn runs the binary inside network namespace ns.
func startIn(t *testing.T, ip, ns string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(ip, append([]string{"netns", "exec", ns, binary}, args...)...))
}

func (p *proc) tftpRoot(t *testing.T) string {
	t.Helper()
	for i, a := range p.cmd.Args {
		if a == "-tftp-root" && i+1 < len(p.cmd.Args) {
			return p.cmd.Args[i+1]
		}
	}
	t.Fatal("no -tftp-root")
	return ""
}
