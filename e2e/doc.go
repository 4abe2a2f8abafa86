// Package e2e holds the end-to-end network-boot test of netroot: qemu boots a guest PXE-style
// (iPXE, then syslinux's pxelinux.0 as described in its pxelinux.txt) with a Debian kernel and a
// dracut initrd carrying KIWI NG's kiwi-overlay module, whose root filesystem comes over NBD
// (the NetworkBlockDevice project's protocol document) or AoE (AoEr11) and is put under overlayfs.
//
// The test is the script run.sh (`make e2e` runs `bash e2e/run.sh`; it needs root and the Debian
// packages in .ci/packages/e2e.txt). The Go test in this folder only wraps it and is built with
// the e2e build tag, so `go test ./...` does not run it:
//
//	sudo go test -tags e2e -v -timeout 40m ./e2e/
//
// run.sh compares netroot with the reference servers it replaces (tftpd-hpa, nbd-server, vblade)
// and prints the time from power-on to the guest's marker and the bytes served per protocol.
//
// kiwi.sh (TestKIWIBoot) boots, through `netroot serve`, a KIS image that KIWI NG itself built
// from the image description in kiwi/ (a Debian bookworm image; kiwi/build.sh runs `kiwi-ng
// system build` with Debian's kiwi package and caches the result outside the clone; packages in
// .ci/packages/kiwi.txt), over NBD and AoE, up to systemd's multi-user target.
package e2e
