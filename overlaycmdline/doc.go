// Package overlaycmdline builds, parses and validates the kernel command line that KIWI's
// kiwi-overlay dracut module (Debian package kiwi-dracut-overlay, folder 90kiwi-overlay) reads to
// find a network or local read-only root and put overlayfs on top of it.
//
// The specification is the module's own shell code, parse-kiwi-overlay.sh and
// kiwi-overlay-root.sh, together with dracut's command line rules (dracut.cmdline(7): getarg
// returns the last occurrence of a key, getargbool treats 0, no and off as false) and the
// kernel's argument splitting (Documentation/admin-guide/kernel-parameters.rst: spaces separate
// arguments, double quotes group them).
//
// The module understands these roots:
//
//	root=overlay:nbd=HOST:EXPORT   nbd-client HOST /dev/nbd0 -name EXPORT (port 10809)
//	root=overlay:aoe=e0.1          mounts /dev/etherd/e0.1
//	root=overlay:UUID=…            local disk, likewise PARTUUID= and LABEL=
//
// and these options: rd.root.overlay.write=DEVICE, rd.root.overlay.readonly,
// rd.root.overlay.size=SIZE, rd.kiwi.debug and rootflags=. Its splitting is naive (cut on '='
// and ':'), so [Root.Validate] rejects everything it would misread: a port or an IPv6 literal as
// NBD host, ':' in an export name, an interface name as AoE target, whitespace or quotes in any
// value.
//
// The module copies nbd.ko and aoe.ko into the initrd but never loads them, so a network root
// waits forever for its device unless the command line preloads the driver;
// [Cmdline.String] therefore renders rd.driver.pre=nbd or rd.driver.pre=aoe unless
// [Options.NoDriverPreload] is set.
package overlaycmdline
