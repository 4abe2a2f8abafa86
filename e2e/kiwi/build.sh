#!/bin/bash
# build.sh builds (once) and caches the KIS image that KIWI NG itself makes from the image
# description in this folder, for e2e/kiwi.sh: `kiwi-ng system build` from Debian's kiwi package,
# profile ext4 (default) or squashfs.
#
# The Debian mirror is the one this machine's apt uses (E2E_MIRROR overrides it); nothing in the
# description names a host. The cache lives outside the clone (E2E_CACHE, default
# /var/cache/netroot-e2e) in a folder named after the profile and a hash of this folder, the
# mirror, and the versions of kiwi, debootstrap and the image's packages, so a change to the
# description or a package update rebuilds it. On success it prints the cache folder: KIWI's
# target directory as KIWI left it (kernel, initrd, root image, .md5, for ext4 .append, the
# .tar.xz bundle, kiwi.result, .packages, ...), except that build/image-root, the unpacked root
# tree, is removed.
#
# Usage: bash e2e/kiwi/build.sh [ext4|squashfs]   (root; Debian packages in .ci/packages/kiwi.txt)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${E2E_CACHE:-/var/cache/netroot-e2e}
PROFILE=${1:-ext4}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf 'kiwi-build: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (kiwi-ng builds in a chroot)"
case $PROFILE in
ext4 | squashfs) ;;
*) die "unknown profile \"$PROFILE\" (want ext4 or squashfs)" ;;
esac
need() { # need PROGRAM PACKAGE
	command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]] ||
		die "$1 not found (Debian package $2; see .ci/packages/kiwi.txt)"
}
need kiwi-ng kiwi
need debootstrap debootstrap
need rsync rsync
need gpg gpg
need mkfs.ext4 e2fsprogs
need mksquashfs squashfs-tools
need xz xz-utils
[[ -f $KEYRING ]] || die "$KEYRING not found (Debian package debian-archive-keyring)"

# The Debian mirror apt is configured with on this machine (deb822 or one-line format); the
# first one that is not a security archive.
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
	echo "$m"
}
MIRROR=${E2E_MIRROR:-$(mirror)}
[[ -n $MIRROR ]] || die "no Debian mirror found in /etc/apt/sources.list(.d); set E2E_MIRROR"

# The description as KIWI will read it, in a temporary folder: the mirror in place of @MIRROR@,
# bootstrap/ packed as the bootstrap archive (owned by root whoever checked the clone out).
desc=$(mktemp -d /tmp/netroot-kiwi-description.XXXXXX)
trap 'rm -rf "$desc"' EXIT
cp -a "$HERE/config.sh" "$HERE/root" "$HERE/kiwi.yml" "$desc/"
sed "s|@MIRROR@|$MIRROR|" "$HERE/config.xml" >"$desc/config.xml"
chown -R 0:0 "$desc"
tar -C "$HERE/bootstrap" --owner=0 --group=0 --numeric-owner --sort=name --mtime=@0 \
	-cf "$desc/bootstrap.tar" .

# The cache key: RECIPE (bump it when a change to this script changes the result), the profile,
# every file of the description and its x bits (what git keeps of modes), and the versions of
# the builder and of the image's packages as apt would pick them now.
RECIPE=1
pkgs=$(grep -o '<package name="[^"]*"' "$desc/config.xml" | cut -d'"' -f2 | sort -u)
# One apt-cache call for all: each loads the whole package cache (seconds on a busy machine).
# shellcheck disable=SC2086 # pkgs is a list of words
versions=$(apt-cache policy kiwi debootstrap $pkgs 2>/dev/null |
	awk '/^[^ ].*:$/ { p = substr($0, 1, length($0) - 1) } /Candidate:/ { print p, $2 }')
files=$(cd "$desc" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
modes=$(cd "$desc" && find . -type f -perm -u+x | LC_ALL=C sort)
key=$(printf '%s\n' "recipe $RECIPE" "$PROFILE" "$versions" "$files" "$modes" | sha256sum | cut -c1-16)
out=$CACHE/kiwi-$PROFILE-$key

done_build() { [[ -f $out/kiwi.result ]]; }
if done_build; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.kiwi.lock"
flock 9
if done_build; then
	echo "$out"
	exit 0
fi

# Work folders left by a killed build (we hold the lock, so none is in use). KIWI mounts the
# kernel file systems and its cache into the root tree: unmount whatever is left below it first,
# and never let rm cross into another filesystem.
for old in "$CACHE"/kiwi-work.*; do
	[[ -d $old ]] || continue
	awk -v p="$old/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$old"
done
work=$(mktemp -d "$CACHE/kiwi-work.XXXXXX")
cleanup() {
	awk -v p="$work/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$work" "$desc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# KIWI imports the signing keys with gpg, which needs a home of its own.
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"

start=$SECONDS
log "kiwi-ng system build, profile $PROFILE, from $MIRROR (several minutes; log $work/kiwi.log)"
if ! kiwi-ng --profile "$PROFILE" --config "$desc/kiwi.yml" --logfile "$work/kiwi.log" system build \
	--description "$desc" --target-dir "$work/target" --signing-key "$KEYRING" >"$work/kiwi.out" 2>&1; then
	# kiwi.log has KIWI's own messages; a Python traceback only reaches kiwi.out.
	grep -E 'ERROR|Error|error|Traceback' "$work/kiwi.log" "$work/kiwi.out" | tail -20 >&2 || true
	tail -20 "$work/kiwi.out" >&2
	cat "$work/kiwi.log" "$work/kiwi.out" >"$CACHE/kiwi-$PROFILE-failed.log" 2>/dev/null || true
	die "kiwi-ng system build failed (log kept in $CACHE/kiwi-$PROFILE-failed.log)"
fi
log "kiwi-ng done in $((SECONDS - start)) s"

# The unpacked root tree is large and of no use to the boot.
rm -rf --one-file-system "$work/target/build/image-root"
cp "$work/kiwi.log" "$work/target/build/kiwi.log" 2>/dev/null || true
rm -rf "$out"
mv "$work/target" "$out"
# Older builds of this profile (other package versions or descriptions) are of no further use.
for old in "$CACHE"/kiwi-"$PROFILE"-*; do
	[[ -d $old && $old != "$out" ]] && rm -rf --one-file-system "$old"
done
log "built $out in $((SECONDS - start)) s"
echo "$out"
