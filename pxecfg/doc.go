// Package pxecfg models network boot menus and writes them for the three boot loaders a PXE
// client may run: pxelinux (BIOS) and syslinux.efi (UEFI), GRUB (UEFI, including the signed
// network image for Secure Boot), and iPXE.
//
// The pxelinux format follows syslinux's documentation (doc/pxelinux.txt and doc/syslinux.txt
// of syslinux 6.04, the version Debian ships): the per-client search order of configuration
// file names, the keywords, their global or label scope, INCLUDE, IPAPPEND and the limits of
// the kernel command line. GRUB scripts follow the GRUB manual's shell-like quoting, and iPXE
// scripts follow ipxe.org/scripting (whitespace-split arguments, ${…} setting expansion with no
// escape).
//
// A [Config] is one menu. [WritePXELinux], [WriteGRUB] and [WriteIPXE] render it; [Parse] and
// [ParseFS] read an existing pxelinux configuration, INCLUDE files and all, so that a tool can
// add an entry to a site's menu and write it back. [WriteDir] writes the files of a TFTP root
// atomically, [ConfigNames] lists the names pxelinux asks for, and [BootFiles] with
// [InstallBootFiles] put the boot loader binaries that each firmware needs into place.
package pxecfg
