#!/bin/bash
# build-guest.sh builds (once) and caches the guest kernel and initrd used by e2e/run.sh:
# a Debian bookworm minbase chroot with linux-image-amd64, dracut, dracut-network, KIWI's
# kiwi-dracut-overlay module, nbd-client, procps, systemd and systemd-sysv, and a generic (non-hostonly) dracut initrd
# with bash instead of dash and network-legacy instead of systemd-networkd, xz-compressed (our
# choice, for a smaller TFTP transfer: KIWI 9.24's own dracut call passes no compression option,
# so dracut's default, gzip, and names it <image>.initrd; e2e/kiwi/ builds a real one).
#
# The cache lives outside the clone (E2E_CACHE, default /var/cache/netroot-e2e) in a folder named
# after a hash of this script and of the candidate versions of the guest packages, so a package
# update or a change here rebuilds it. On success it prints the cache folder, which holds
# vmlinuz, initrd and versions.txt.
#
# Usage: bash e2e/build-guest.sh   (root; needs debootstrap)
set -euo pipefail

CACHE=${E2E_CACHE:-/var/cache/netroot-e2e}
SUITE=bookworm
# systemd is not in the issue's list but is needed: kiwi-overlay mounts the overlay root only from
# its systemd generator (sysroot.mount); without systemd in the initrd dracut's shell init mounts
# the squashfs itself as / and no overlay is made.
# systemd-sysv provides the poweroff that rd.emergency=poweroff calls in a systemd initrd.
PKGS=(linux-image-amd64 dracut dracut-network kiwi-dracut-overlay nbd-client procps systemd systemd-sysv)

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap not found (Debian package debootstrap)"

# The Debian mirror apt is configured with on this machine (deb822 or one-line format).
mirror() {
	local m=""
	if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
		m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
			/etc/apt/sources.list.d/*.sources)
	fi
	if [[ -z $m && -f /etc/apt/sources.list ]]; then
		m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
			/etc/apt/sources.list)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${E2E_MIRROR:-$(mirror)}

# The recipe: what goes into the guest. Bump RECIPE when a build step below changes in a way
# that changes the result; the cache key covers it, the package list, the dracut arguments, the
# suite and mirror, and the candidate versions of the guest packages.
RECIPE=1
DRACUT_ARGS=(--force --xz --no-hostonly --add "bash kiwi-overlay network-legacy"
	--omit "dash plymouth" --install /usr/sbin/poweroff)
versions=$(for p in "${PKGS[@]}"; do
	printf '%s %s\n' "$p" "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
done)
key=$(printf '%s\n' "recipe $RECIPE" "$SUITE $MIRROR" "${PKGS[*]}" "${DRACUT_ARGS[*]}" "$versions" |
	sha256sum | cut -c1-16)
out=$CACHE/guest-$key

if [[ -s $out/vmlinuz && -s $out/initrd ]]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ -s $out/vmlinuz && -s $out/initrd ]]; then
	echo "$out"
	exit 0
fi

# Work folders left by a killed build (we hold the lock, so none is in use).
# Unmount first what it may have left mounted (ours and debootstrap's), and never let rm cross
# into another filesystem.
for old in "$CACHE"/work.*; do
	[[ -d $old ]] || continue
	for m in dev/pts dev sys proc; do
		umount -l "$old/root/$m" 2>/dev/null || true
	done
	rm -rf --one-file-system "$old"
done
work=$(mktemp -d "$CACHE/work.XXXXXX")
root=$work/root
mounted=()
cleanup() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount -l "${mounted[i]}" 2>/dev/null || true
	done
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$SECONDS
log "debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
	{ tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done in $((SECONDS - start)) s"

for m in proc sys dev; do
	case $m in
	proc) mount -t proc proc "$root/proc" ;;
	sys) mount -t sysfs sys "$root/sys" ;;
	dev) mount --bind /dev "$root/dev" ;;
	esac
	mounted+=("$root/$m")
done

# Debian's dracut would pick systemd-networkd (which needs dbus): use network-legacy.
mkdir -p "$root/etc/dracut.conf.d"
echo 'add_dracutmodules+=" network-legacy "' >"$root/etc/dracut.conf.d/90-netroot-e2e.conf"
# No daemon may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

t=$SECONDS
log "installing ${PKGS[*]} (INITRD=No)"
chroot "$root" env DEBIAN_FRONTEND=noninteractive INITRD=No \
	apt-get install -y --no-install-recommends "${PKGS[@]}" >"$work/apt.log" 2>&1 ||
	{ tail -20 "$work/apt.log" >&2; die "apt-get install in the chroot failed"; }
log "packages done in $((SECONDS - t)) s"

kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -1)")
[[ -n $kver ]] || die "no kernel modules found in the chroot"

t=$SECONDS
log "dracut for kernel $kver"
chroot "$root" dracut "${DRACUT_ARGS[@]}" --kver "$kver" /tmp/initrd >"$work/dracut.log" 2>&1 ||
	{ tail -20 "$work/dracut.log" >&2; die "dracut failed"; }
log "dracut done in $((SECONDS - t)) s"

mkdir -p "$out.tmp"
cp "$root/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
cp "$root/tmp/initrd" "$out.tmp/initrd"
chmod 644 "$out.tmp/vmlinuz" "$out.tmp/initrd"
{
	echo "suite $SUITE"
	echo "mirror $MIRROR"
	echo "kernel $kver"
	chroot "$root" dpkg-query -W "${PKGS[@]}" bash
} >"$out.tmp/versions.txt"
rm -rf "$out"
mv "$out.tmp" "$out"
# Older builds (other package versions or recipes) are of no further use.
for old in "$CACHE"/guest-*; do
	[[ $old == "$out" ]] || rm -rf "$old"
done
log "built $out in $((SECONDS - start)) s ($(du -h "$out/initrd" | cut -f1) initrd)"
echo "$out"
