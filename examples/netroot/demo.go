package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/kis"
	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// runDemo builds a tiny KIS build in a temporary directory and serves it over TFTP and NBD on
// loopback, exactly as `netroot serve` would, then prints what was generated and how to try it.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "demo", "[-duration D] [-no-self-check]")
	duration := fs.Duration("duration", 0, "stop by itself after this long (default: run until Ctrl-C)")
	noCheck := fs.Bool("no-self-check", false, "skip fetching the files back with netroot's own TFTP and NBD clients")
	keep := fs.Bool("keep", false, "keep the temporary directory")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "netroot-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	kisDir, tftpRoot := filepath.Join(dir, "kiwi-out"), filepath.Join(dir, "tftpboot")
	for _, d := range []string{kisDir, tftpRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	image := kistest.Image(4<<20, 2026)
	spec := kistest.Spec{
		Name: "netroot-demo", Arch: bootserver.HostArch(), Version: "1.0.0", Image: image,
		Kernel: []byte("stand-in kernel: a real KIS build has a bzImage here\n"),
		Initrd: []byte("stand-in initrd: a real KIS build has KIWI's dracut initrd with kiwi-overlay here\n"),
		Append: "root=UUID=0d6a3a2c-demo rd.kiwi.install.pass.bootparam quiet",
	}
	if _, err := kistest.Write(kisDir, spec); err != nil {
		return fmt.Errorf("demo build: %w", err)
	}
	sum := md5.Sum(image)
	fmt.Fprintf(e.stdout, "netroot demo: a tiny KIWI KIS build in %s\n\n", kisDir)

	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	c := &serveConfig{
		kis:             kisFlags{dirs: stringList{kisDir}},
		stage:           stageFlags{tftpRoot: tftpRoot, kernel: kis.DefaultKernelPath, initrd: kis.DefaultInitrdPath},
		pxe:             pxeFlags{label: "netroot", formats: "pxelinux,grub,ipxe"},
		serverIP:        "127.0.0.1",
		tftpAddr:        "127.0.0.1:0",
		nbd:             true,
		nbdAddr:         "127.0.0.1:0",
		extraAppend:     "console=ttyS0,115200",
		shutdownTimeout: 5 * time.Second,
		demo:            true,
	}
	return serve(ctx, e, c, func(r *running) {
		printDemo(e, r, tftpRoot)
		if !*noCheck {
			selfCheck(ctx, e, r, hex.EncodeToString(sum[:]))
		}
		fmt.Fprintln(e.stdout, "\nServing until Ctrl-C.")
	})
}

func printDemo(e *env, r *running, tftpRoot string) {
	w := e.stdout
	fmt.Fprintln(w, "TFTP root:")
	_ = filepath.WalkDir(tftpRoot, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(tftpRoot, p)
			fi, _ := d.Info()
			fmt.Fprintf(w, "  %-28s %s\n", rel, humanBytes(fi.Size()))
		}
		return nil
	})
	if cfg, err := os.ReadFile(filepath.Join(tftpRoot, "pxelinux.cfg", "default")); err == nil {
		fmt.Fprintf(w, "\npxelinux.cfg/default:\n%s", indent(string(cfg)))
	}
	tftpHost, tftpPort := splitAddr(r.tftpAddr)
	_, nbdPort := splitAddr(r.nbdAddr)
	fmt.Fprintf(w, `
Servers (loopback; a real setup uses TFTP port 69 and NBD port 10809 on the server's address):
  TFTP %s    NBD %s, export %q

Try them:
  curl -s tftp://%s:%s/pxelinux.cfg/default
  curl -s tftp://%s:%s/boot/linux
  nbdinfo nbd://127.0.0.1:%s/%s
  nbdcopy nbd://127.0.0.1:%s/%s - | md5sum
  netroot cmdline -parse "$(grep -m1 APPEND %s | sed 's/^ *APPEND //')"
`, r.tftpAddr, r.nbdAddr, r.export, tftpHost, tftpPort, tftpHost, tftpPort, nbdPort, r.export, nbdPort, r.export,
		filepath.Join(tftpRoot, "pxelinux.cfg", "default"))
}

// selfCheck fetches the boot files and the root image back with netroot's own clients.
func selfCheck(ctx context.Context, e *env, r *running, wantMD5 string) {
	w := e.stdout
	fmt.Fprintln(w, "\nSelf-check with netroot's own clients:")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tc := &tftp.Client{BlockSize: 1468, TransferSize: true}
	for _, f := range []string{"pxelinux.cfg/default", "boot/linux", "boot/initrd"} {
		var buf bytes.Buffer
		ti, err := tc.Get(cctx, r.tftpAddr, f, &buf)
		if err != nil {
			fmt.Fprintf(w, "  TFTP %-22s FAILED: %v\n", f, err)
			continue
		}
		fmt.Fprintf(w, "  TFTP %-22s %d bytes in %v\n", f, ti.Bytes, ti.Duration.Round(time.Microsecond))
	}
	c, err := nbd.Dial(cctx, "tcp", r.nbdAddr, nil)
	if err != nil {
		fmt.Fprintf(w, "  NBD  dial FAILED: %v\n", err)
		return
	}
	defer c.Close()
	info, err := c.Go(cctx, r.export)
	if err != nil {
		fmt.Fprintf(w, "  NBD  %s FAILED: %v\n", r.export, err)
		return
	}
	h := md5.New()
	start := time.Now()
	if _, err := io.Copy(h, io.NewSectionReader(c, 0, info.Size)); err != nil {
		fmt.Fprintf(w, "  NBD  read FAILED: %v\n", err)
		return
	}
	got := hex.EncodeToString(h.Sum(nil))
	verdict := "matches the build's .md5"
	if got != wantMD5 {
		verdict = "DOES NOT MATCH the build's .md5 " + wantMD5
	}
	fmt.Fprintf(w, "  NBD  %-22s %s in %v, md5 %s %s\n", r.export, humanBytes(info.Size), time.Since(start).Round(time.Microsecond), got, verdict)
}

func splitAddr(a string) (host, port string) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return a, ""
	}
	return a[:i], a[i+1:]
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}
