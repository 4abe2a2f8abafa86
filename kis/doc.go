// Package kis finds, verifies, unpacks and stages the results of a KIWI NG "kis" (or legacy
// "pxe") image build: the kernel, initrd and root filesystem image that a network-booted
// machine loads by TFTP and attaches over NBD or AoE.
//
// There is no formal specification; the file names and formats follow KIWI NG's own builder
// (kiwi/builder/kis.py, kiwi/utils/checksum.py, kiwi/system/result.py). For an image named NAME,
// built for ARCH at version VERSION, KIWI writes into its target directory:
//
//	NAME.ARCH-VERSION                       root filesystem image (raw)
//	NAME.ARCH-VERSION.xz                    the same, xz-compressed (compressed="true")
//	NAME.ARCH-VERSION.md5                   "MD5 BLOCKS BLOCKSIZE [CBLOCKS CBLOCKSIZE]"
//	NAME.ARCH-VERSION-KERNELVERSION.kernel  kernel
//	NAME.ARCH-VERSION.initrd                initrd, mode 0600: dracut's (gzip, its default:
//	                                        KIWI passes no compression option); ".initrd.xz"
//	                                        only from KIWI's legacy initrd_system="kiwi"
//	NAME.ARCH-VERSION-xen.gz                Xen hypervisor (optional)
//	NAME.ARCH-VERSION.append                suggested kernel options, no trailing newline:
//	                                        "root=UUID=... [kernelcmdline]"; only for a root
//	                                        file system with a UUID (ext4, xfs, ...), so none
//	                                        for squashfs
//	NAME.ARCH-VERSION.tar.xz                bundle of kernel, md5, initrd, image and append
//	                                        (a plain ".tar" when the image is compressed)
//	NAME.ARCH-VERSION.packages, .changes, .verified, kiwi.result, kiwi.result.json
//	build/                                  KIWI's work folder (build/image-root: the root tree)
//
// The MD5 is always taken over the uncompressed image; the block counts multiply to the
// uncompressed size and, when present, to the size of the compressed file.
//
// The usual sequence is [Find], [Newest], [Verify], [Unpack] (which yields the raw image an NBD
// or AoE export needs) and [Stage] (which puts kernel and initrd into a TFTP root), with
// [ReadAppend] giving the kernel options to carry into the boot entry.
//
// Verify and Unpack decompress .xz files with the xz program (xz-utils) where it is on PATH:
// it is several times faster than the built-in pure-Go decoder, and with KIWI's multi-block
// files it uses every core. Without it they fall back to the built-in decoder; both check the
// whole xz stream, its index and footer included.
package kis
