// Package netroot is the overview of a module that network-boots Linux machines whose root
// filesystem is served over NBD or AoE, as KIWI NG's KIS images and its kiwi-overlay dracut module
// expect.
//
// The packages, each usable on its own:
//
//   - backend: block storage (pread/pwrite files, mmap, copy-on-write, memory) behind small
//     io interfaces, shared by the block servers.
//   - nbd: a fixed-newstyle NBD server and client (the NetworkBlockDevice protocol document).
//   - aoe: an ATA-over-Ethernet target and initiator (AoEr11) over AF_PACKET.
//   - tftp: a TFTP server and client (RFC 1350, 2347, 2348, 2349, 7440).
//   - pxecfg: pxelinux, GRUB and iPXE boot configurations.
//   - overlaycmdline: the kiwi-overlay kernel command line (root=overlay:nbd=…, root=overlay:aoe=…).
//   - kis: finding, verifying, unpacking and staging KIWI KIS build results.
//
// The binary in examples/netroot composes them; in outline (errors elided):
//
//	builds, _ := kis.Find("/var/lib/kiwi/out")             // newest first
//	b, _ := kis.Unpack(ctx, builds[0], nil)                // raw root image for the export
//	staged, _ := kis.Stage(ctx, b, "/srv/tftpboot", nil)   // boot/linux, boot/initrd
//
//	root := overlaycmdline.NBD("192.0.2.1", b.ID())        // root=overlay:nbd=192.0.2.1:NAME
//	line := (&overlaycmdline.Cmdline{Root: root}).String() // adds rd.driver.pre=nbd
//	entry := pxecfg.NetbootEntry("netroot", staged.Kernel.Path, []string{staged.Initrd.Path}, line)
//	pxecfg.WriteDir("/srv/tftpboot", &pxecfg.Config{Default: "netroot", Entries: []pxecfg.Entry{entry}}, nil)
//
//	img, _ := backend.OpenFile(b.Image, &backend.FileOptions{ReadOnly: true})
//	exports, _ := nbd.NewExportSet(&nbd.Export{Name: b.ID(), Device: img})
//	go (&nbd.Server{Exports: exports}).ListenAndServe()                // TCP 10809
//	go (&tftp.Server{Handler: tftp.FileServer("/srv/tftpboot")}).ListenAndServe(":69")
//
// See each package's documentation and examples for the exact API.
package netroot
