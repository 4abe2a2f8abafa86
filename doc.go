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
// The binary in examples/netroot composes them: it stages a KIS build into a TFTP root, writes
// the boot configs with the right kernel command line, and serves TFTP, NBD and AoE. In outline:
//
//	builds, _ := kis.Find("/var/lib/kiwi/out")        // kernel, initrd, root image
//	root := overlaycmdline.Root{...NBD host and export...}
//	pxecfg.WriteDir(tftpRoot, cfg)                    // pxelinux.cfg/default with root.String()
//	go tftpServer.Serve(udpConn)                      // tftp.Server{Handler: tftp.FileServer(tftpRoot)}
//	go nbdServer.Serve(tcpListener)                   // nbd.Server serving the root image
//
// See each package's documentation and examples for the exact API.
package netroot
