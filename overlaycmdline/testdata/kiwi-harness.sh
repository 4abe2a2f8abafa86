#!/bin/bash
# Runs KIWI's kiwi-overlay dracut module over a fixed kernel command line and records what it
# would do. Usage, inside a private mount namespace (unshare --mount), as root:
#
#   kiwi-harness.sh OUT CMDLINE_FILE
#
# The module's own files are sourced unchanged, together with dracut's real dracut-lib.sh (getarg,
# getargbool, getargs over /proc/cmdline and /etc/cmdline.d) and dracut-util (dracut-getarg).
# Only the commands that would touch devices are shell functions that record their arguments.
# Tmpfs mounts over /etc and /run, and a bind mount of CMDLINE_FILE over /proc/cmdline, keep
# everything the module writes inside the namespace.

out=$1
cmdline_file=$2
dracut_base=${DRACUT_BASE:-/usr/lib/dracut}
overlay_dir=$dracut_base/modules.d/90kiwi-overlay
kiwi_lib_dir=$dracut_base/modules.d/99kiwi-lib
util=$dracut_base/dracut-util

rec() { printf '%s\n' "$*" >> "$out"; }

mount -t tmpfs netroot-test /etc || exit 91
mount -t tmpfs netroot-test /run || exit 92
mount --bind "$cmdline_file" /proc/cmdline || exit 93
mkdir -p /etc/cmdline.d
if [ -d /usr/lib/modprobe.d ]; then
    mount -t tmpfs netroot-test /usr/lib/modprobe.d || exit 94
fi

# dracut-util must be called through a link named after the tool; the module resets PATH, so
# the tools are functions rather than PATH entries.
bindir=$(mktemp -d /run/harness-bin.XXXXXX)
ln -s "$util" "$bindir/dracut-getarg"
ln -s "$util" "$bindir/dracut-getargs"
dracut-getarg() { "$bindir/dracut-getarg" "$@"; }
dracut-getargs() { "$bindir/dracut-getargs" "$@"; }

# Device-touching commands record and succeed.
modprobe() { rec "modprobe $*"; }
nbd-client() { rec "nbd-client $*"; }
mount() { rec "mount $*"; }
mountpoint() { return 1; }
lsblk() { :; }
need_shutdown() { rec "need_shutdown"; }
wait_for_dev() { rec "wait_for_dev $*"; }
die() { rec "die $*"; exit 1; }

export DRACUT_SYSTEMD=1 # warn/info to stdout/stderr, never /dev/kmsg
. "$dracut_base/modules.d/99base/dracut-lib.sh"
. "$kiwi_lib_dir/kiwi-filesystem-lib.sh"

# dracut's kernel-modules hook: loads every rd.driver.pre module.
( . "$dracut_base/modules.d/90kernel-modules/parse-kernel.sh" ) >/dev/null 2>&1

# cmdline hook.
unset root rootok
. "$overlay_dir/parse-kiwi-overlay.sh"
rec "parse_rc $?"
rec "root $root"
rec "rootok ${rootok:-}"
if [ -e /etc/cmdline.d/kiwi-generated.conf ]; then
    while read -r line; do rec "generated $line"; done < /etc/cmdline.d/kiwi-generated.conf
fi
[ "${rootok:-}" = 1 ] || exit 0

# pre-mount hook, in a subshell because setupDebugMode redirects the shell's output.
(
    . "$overlay_dir/kiwi-overlay-root.sh"
    rec "premount_rc $?"
    rec "read_only ${read_only_partition:-}"
    rec "write ${write_partition:-}"
    if getargbool 0 rd.kiwi.debug; then rec "debug on"; fi
)
if [ -e /run/initramfs/log/boot.kiwi ]; then rec "debug_log yes"; fi

# systemd generator: the overlay mount unit.
gendir=$(mktemp -d /run/harness-gen.XXXXXX)
( set -- "" "$gendir"; . "$overlay_dir/kiwi-generator.sh" ) >/dev/null 2>&1
if [ -e "$gendir/sysroot.mount" ]; then
    rec "unit $(grep '^Options=' "$gendir/sysroot.mount")"
fi
exit 0
