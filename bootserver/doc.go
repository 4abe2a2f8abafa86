// Package bootserver is the whole network boot server for KIWI NG KIS images as one value: a
// Server picks the build of each image from a Source (KIWI output folders, or an object
// store), verifies and unpacks it, stages its kernel and initrd into the TFTP root under
// boot/NAME.ARCH-VERSION/, writes the boot menus for pxelinux, GRUB and iPXE with the
// kiwi-overlay kernel command line (default and per machine), and serves TFTP, NBD (one export
// per build, named by its build ID) and AoE as one group with a single cleanup path. More
// protocol servers join the group as Services.
//
// A running Server rolls forward without a restart: Reload (or the watch) opens a new build,
// stages and exports it next to the old one, and rewrites the configs atomically, so new boots
// get it. A build that fails verification never replaces the running one. Every NBD
// connection stays on the build it attached to; an old build's export, staged files and
// unpacked image go only after its last client left and a grace period passed.
//
// Machines (by MAC address or prefix) get their own image and kernel options in configs for
// all three boot loaders; with NBDHost every machine's config names the NBD server (replica)
// chosen for its MAC, rendered when the machine asks for it.
//
// The boot configs netroot writes carry a marker line (Marker); a config without it is never
// overwritten unless Force is set, and per-client files that someone else wrote, which
// pxelinux prefers to the default, are reported.
package bootserver
