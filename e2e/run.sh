#!/bin/bash
# run.sh boots a qemu guest PXE-style with its root filesystem served over the network, the way
# an operator boots a KIWI "KIS" image, and checks that it came up on the network root:
#
#   dnsmasq (DHCP only) -> iPXE -> pxelinux.0 over TFTP -> kernel + dracut initrd with KIWI's
#   kiwi-overlay module -> root squashfs over NBD (/dev/nbd0) or AoE (/dev/etherd/e0.1)
#   -> overlayfs -> /sbin/init prints a marker and /proc/mounts -> poweroff
#
# Everything runs in a network namespace this script creates, on a tap device inside it
# (192.0.2.1/24 server side), and is removed again on success, failure or interrupt. The guest
# kernel and initrd come from e2e/build-guest.sh (cached outside the clone).
#
# Servers (E2E_SERVER, a space or comma separated list):
#   reference  tftpd-hpa, nbd-server and vblade with a hand-written pxelinux.cfg
#   netroot    `netroot serve` from ./examples/netroot (TFTP, NBD, AoE and its own pxelinux.cfg)
#   auto       (default) netroot and reference when ./examples/netroot exists, else reference
# Boots (E2E_BOOTS): nbd, aoe, nbd-ro (NBD with rd.root.overlay.readonly); default all three.
#
# Other settings: E2E_TIMEOUT (seconds per boot until the marker, default 300), E2E_ACCEL (qemu
# accelerator, default tcg), E2E_CACHE (guest cache, default /var/cache/netroot-e2e), E2E_KEEP=1
# (keep the work folder even on success), E2E_NETROOT_FLAGS (extra flags for `netroot serve`).
#
# Prints per boot: the time from qemu start to the marker and the bytes served per protocol.
# Exit status 0 only when every boot passed. Needs root; the Debian packages are listed in
# .ci/packages/e2e.txt.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

E2E_SERVER=${E2E_SERVER:-auto}
E2E_BOOTS=${E2E_BOOTS:-nbd aoe nbd-ro}
E2E_TIMEOUT=${E2E_TIMEOUT:-300}
E2E_ACCEL=${E2E_ACCEL:-tcg}
E2E_KEEP=${E2E_KEEP:-0}
E2E_NETROOT_FLAGS=${E2E_NETROOT_FLAGS:-}

SERVER_IP=192.0.2.1
NETMASK=255.255.255.0
DHCP_RANGE=192.0.2.100,192.0.2.150
GUEST_MAC=52:54:00:e2:e0:01
AOE_SHELF=0
AOE_SLOT=1
NBD_EXPORT=root
IMAGE_NAME=netroot-e2e
IMAGE_VERSION=1.0.0
APPEND_BASE="console=ttyS0 rd.shell=0 rd.emergency=poweroff"

log() { printf 'e2e: %s\n' "$*" >&2; }
. "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# Preconditions

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, tap device, AoE raw sockets)"

need qemu-system-x86_64 qemu-system-x86
need dnsmasq dnsmasq-base
need mksquashfs squashfs-tools
need debootstrap debootstrap
need ip iproute2
need factor coreutils
# (No grep -q after a pipe anywhere here: with pipefail, a writer killed by SIGPIPE when grep
# stops reading early would turn a match into a failure.)
[[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -x poweroff >/dev/null ||
	die "/bin/busybox not found or not static (Debian package busybox-static)"
[[ -f /usr/lib/ipxe/qemu/pxe-virtio.rom || -f /usr/lib/ipxe/qemu/efi-virtio.rom ]] ||
	die "iPXE option ROMs not found (Debian package ipxe-qemu)"
PXELINUX=/usr/lib/PXELINUX/pxelinux.0
LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
[[ -f $PXELINUX ]] || die "$PXELINUX not found (Debian package pxelinux)"
[[ -f $LDLINUX ]] || die "$LDLINUX not found (Debian package syslinux-common)"
HAVE_NFT=0
command -v nft >/dev/null 2>&1 && HAVE_NFT=1

servers=()
for s in ${E2E_SERVER//,/ }; do
	case $s in
	auto)
		if compgen -G "$REPO/examples/netroot/*.go" >/dev/null; then
			servers+=(netroot reference)
		else
			log "examples/netroot does not exist yet: running the reference servers only"
			servers+=(reference)
		fi
		;;
	netroot | reference) servers+=("$s") ;;
	*) die "E2E_SERVER: unknown server \"$s\" (want netroot, reference or auto)" ;;
	esac
done
boots=()
for b in ${E2E_BOOTS//,/ }; do
	case $b in
	nbd | aoe | nbd-ro) boots+=("$b") ;;
	*) die "E2E_BOOTS: unknown boot \"$b\" (want nbd, aoe or nbd-ro)" ;;
	esac
done
for s in "${servers[@]}"; do
	if [[ $s == reference ]]; then
		need in.tftpd tftpd-hpa
		need nbd-server nbd-server
		need vblade vblade
	fi
	if [[ $s == netroot ]]; then
		need go golang
	fi
done

# ---------------------------------------------------------------------------------------------
# Cleanup: every process by PID, the namespace (and with it the tap) by name.

RUN=$(mktemp -d /tmp/netroot-e2e.XXXXXX)
chmod 755 "$RUN" # tftpd-hpa serves as an unprivileged user
PIDS=()
NS=""
failed=0

stop_pids() {
	local p i
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	PIDS=()
}

stop_boot() {
	stop_pids
	if [[ -n $NS ]]; then
		kill_ns_pids "$NS"
		ip netns del "$NS" 2>/dev/null || true
		NS=""
	fi
}

sweep_namespaces netroot-e2e-

finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_boot
	if ((rc != 0 || failed != 0)) || [[ $E2E_KEEP == 1 ]]; then
		# Keep logs (serial, servers, configs), drop the large copies of kernel, initrd, image.
		if [[ $E2E_KEEP != 1 ]]; then
			find "$RUN" -type f \( -name '*.kernel' -o -name '*.initrd*' -o -name linux \
				-o -name initrd -o -name "$IMAGE_NAME.*-$IMAGE_VERSION" -o -name netroot \) \
				-delete 2>/dev/null || true
		fi
		log "logs kept in $RUN"
	else
		rm -rf "$RUN"
	fi
	exit "$rc"
}
trap finish EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Guest kernel and initrd, root image, KIS build folder

guest=$(bash "$HERE/build-guest.sh" | tail -1)
[[ -s $guest/vmlinuz && -s $guest/initrd ]] || die "build-guest.sh gave no kernel/initrd"
kver=$(awk '$1 == "kernel" { print $2 }' "$guest/versions.txt")
log "guest: $guest (kernel $kver)"

MARKER="NETROOT-E2E-$(date +%s)-$$-$RANDOM"
tree=$RUN/rootfs
mkdir -p "$tree"/{bin,sbin,dev,proc,sys,run,tmp,etc,mnt,root}
cp /bin/busybox "$tree/bin/busybox"
ln -s busybox "$tree/bin/sh"
cat >"$tree/sbin/init" <<EOF
#!/bin/sh
# Test init: show that the network root came up, then power off.
exec >/dev/console 2>&1 </dev/console
/bin/busybox mount -t proc proc /proc 2>/dev/null
echo "$MARKER BEGIN"
echo "cmdline: \$(/bin/busybox cat /proc/cmdline)"
/bin/busybox cat /proc/mounts
echo "$MARKER END"
/bin/busybox sync
/bin/busybox poweroff -f
/bin/busybox sleep 5
echo o >/proc/sysrq-trigger
EOF
chmod 755 "$tree/sbin/init"
# systemd's switch-root refuses a new root without os-release ("does not seem to be an OS tree").
printf 'ID=netroot-e2e\nNAME="netroot e2e test root"\nVERSION_ID=%s\n' "$IMAGE_VERSION" >"$tree/etc/os-release"

# KIWI's KIS names: <name>.<arch>-<version> (the filesystem image), <...>-<kver>.kernel,
# <...>.initrd (with dracut; xz here, gzip from KIWI), <...>.md5 ("md5 blocks blocksize").
# e2e/kiwi.sh boots a build KIWI made itself.
kis=$RUN/kis
mkdir -p "$kis"
base=$IMAGE_NAME.x86_64-$IMAGE_VERSION
image=$kis/$base
mksquashfs "$tree" "$image" -noappend -quiet -all-root -no-progress >"$RUN/mksquashfs.log" 2>&1 ||
	die "mksquashfs failed: $(cat "$RUN/mksquashfs.log")"
cp "$guest/vmlinuz" "$kis/$base-$kver.kernel"
cp "$guest/initrd" "$kis/$base.initrd"
md5_blocks() { # KIWI's block list: blocksize = product of the smallest prime factors <= 8192
	local size=$1 bs=1 f
	for f in $(factor "$size" | cut -d: -f2); do
		((bs * f > 8192)) && break
		bs=$((bs * f))
	done
	echo "$((size / bs)) $bs"
}
echo "$(md5sum <"$image" | cut -d' ' -f1) $(md5_blocks "$(stat -c %s "$image")")" >"$kis/$base.md5"
log "KIS build: $kis ($(stat -c %s "$image") byte squashfs root, marker $MARKER)"

# ---------------------------------------------------------------------------------------------
# One boot

if [[ " ${servers[*]} " == *" netroot "* ]]; then
	log "building examples/netroot"
	(cd "$REPO" && go build -o "$RUN/netroot" ./examples/netroot) >"$RUN/go-build.log" 2>&1 ||
		die "go build ./examples/netroot failed: $(tail -20 "$RUN/go-build.log")"
fi

n=0
results=()
declare -A times
ROW='%-10s %-7s %-5s %9s %9s %10s %10s %11s %10s %10s'

listening() { # listening tcp|udp PORT
	[[ -n $(in_ns ss -Hln --"$1" "sport = :$2") ]]
}

counter_bytes() {
	if ((HAVE_NFT)); then
		in_ns nft list counter netdev e2e "$1" 2>/dev/null | grep -o 'bytes [0-9]*' | cut -d' ' -f2 || echo n/a
	else
		echo n/a
	fi
}

setup_net() { # setup_net TAP
	local tap=$1
	NS=netroot-e2e-$$-$n
	ip netns add "$NS"
	in_ns ip link set lo up
	in_ns ip tuntap add dev "$tap" mode tap
	in_ns ip addr add "$SERVER_IP/24" dev "$tap"
	in_ns ip link set "$tap" up
	if ((HAVE_NFT)); then
		# Bytes sent to the guest per protocol, counted on the tap's egress.
		in_ns nft -f - <<-EOF || { log "nft egress counters unavailable"; HAVE_NFT=0; }
			table netdev e2e {
				counter tftp {}
				counter nbd {}
				counter aoe {}
				counter dhcp {}
				chain egress {
					type filter hook egress device "$tap" priority 0; policy accept;
					ether type 0x88a2 counter name aoe
					tcp sport 10809 counter name nbd
					udp sport 67 counter name dhcp
					udp sport != 67 counter name tftp
				}
			}
		EOF
	fi
}

alive() { # fail when a started server already died
	local p
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || {
			log "a server exited early; see $bdir/*.log"
			return 1
		}
	done
}

# reference_servers BOOT TAP: tftpd-hpa + nbd-server or vblade, hand-written pxelinux.cfg.
reference_servers() {
	local boot=$1 tap=$2 root extra=""
	local tftp=$bdir/tftp
	mkdir -p "$tftp/boot" "$tftp/pxelinux.cfg"
	cp "$PXELINUX" "$LDLINUX" "$tftp/"
	ln "$kis/$base-$kver.kernel" "$tftp/boot/linux" 2>/dev/null || cp "$kis/$base-$kver.kernel" "$tftp/boot/linux"
	ln "$kis/$base.initrd" "$tftp/boot/initrd" 2>/dev/null || cp "$kis/$base.initrd" "$tftp/boot/initrd"
	case $boot in
	nbd) root="root=overlay:nbd=$SERVER_IP:$NBD_EXPORT rd.driver.pre=nbd" ;;
	nbd-ro) root="root=overlay:nbd=$SERVER_IP:$NBD_EXPORT rd.driver.pre=nbd" extra=rd.root.overlay.readonly ;;
	aoe) root="root=overlay:aoe=e$AOE_SHELF.$AOE_SLOT rd.driver.pre=aoe" ;;
	esac
	cat >"$tftp/pxelinux.cfg/default" <<-EOF
		SERIAL 0 115200
		DEFAULT netroot
		PROMPT 0
		TIMEOUT 0
		LABEL netroot
		  KERNEL boot/linux
		  APPEND initrd=boot/initrd $root $APPEND_BASE${extra:+ $extra}
	EOF
	chmod -R a+rX "$bdir"

	start tftpd in.tftpd --foreground --address "$SERVER_IP:69" --secure --verbose "$tftp"
	case $boot in
	nbd | nbd-ro)
		cat >"$bdir/nbd-server.conf" <<-EOF
			[generic]
			    user = root
			    group = root
			    listenaddr = $SERVER_IP
			    allowlist = true
			[$NBD_EXPORT]
			    exportname = $image
			    readonly = true
		EOF
		start nbd-server nbd-server -d -C "$bdir/nbd-server.conf"
		wait_for 10 "nbd-server on :10809" listening tcp 10809 || return 1
		;;
	aoe)
		start vblade vblade -r "$AOE_SHELF" "$AOE_SLOT" "$tap" "$image"
		;;
	esac
	wait_for 10 "tftpd-hpa on :69" listening udp 69 || return 1
}

# netroot_servers BOOT TAP: `netroot serve` stages the KIS build, writes the pxelinux config
# (an NBD and an AoE entry, -default picking the one this boot tests) and serves TFTP, NBD and AoE.
netroot_servers() {
	local boot=$1 tap=$2 flags=()
	local tftp=$bdir/tftp
	mkdir -p "$tftp"
	case $boot in
	nbd) flags=(-default nbd) ;;
	nbd-ro) flags=(-default nbd -overlay-readonly) ;;
	aoe) flags=(-default aoe) ;;
	esac
	# shellcheck disable=SC2086 # E2E_NETROOT_FLAGS is a list of words
	start netroot "$RUN/netroot" serve -kis "$kis" -tftp-root "$tftp" -server-ip "$SERVER_IP" \
		-aoe-iface "$tap" -aoe-shelf "$AOE_SHELF" -aoe-slot "$AOE_SLOT" "${flags[@]}" \
		-append "$APPEND_BASE" -pxelinux-serial "0 115200" $E2E_NETROOT_FLAGS
	wait_for 60 "netroot's pxelinux.cfg/default" test -s "$tftp/pxelinux.cfg/default" || return 1
	wait_for 30 "netroot TFTP on :69" listening udp 69 || return 1
	wait_for 30 "netroot NBD on :10809" listening tcp 10809 || return 1
}

# check_mounts BOOT: the marker block must show the root image from the network block device
# as the lower layer of an overlayfs root.
check_mounts() {
	local boot=$1 out=$bdir/guest-output.txt dev
	tr -d '\r' <"$bdir/serial.log" | sed -n "/^$MARKER BEGIN\$/,/^$MARKER END\$/p" >"$out"
	case $boot in
	nbd | nbd-ro) dev=/dev/nbd0 ;;
	aoe) dev=/dev/etherd/e$AOE_SHELF.$AOE_SLOT ;;
	esac
	grep -Eq "^${dev//./\\.} [^ ]+ squashfs ro[, ]" "$out" ||
		{ log "$boot: /proc/mounts shows no read-only squashfs from $dev"; return 1; }
	grep -Eq '^[^ ]+ / overlay ' "$out" ||
		{ log "$boot: / is not an overlayfs"; return 1; }
	if [[ $boot == nbd-ro ]]; then
		grep -q 'rd.root.overlay.readonly' "$out" ||
			{ log "$boot: rd.root.overlay.readonly missing from the kernel command line"; return 1; }
	fi
}

# ktime PATTERN: the guest kernel's timestamp (seconds since its start) of the first serial log
# line matching the extended regular expression PATTERN, or "-".
ktime() {
	awk -v re="$1" '{ sub(/\r$/, "") }
		$0 ~ re && match($0, /\[ *[0-9]+\.[0-9]+\]/) {
			t = substr($0, RSTART + 1, RLENGTH - 2); printf "%.1f\n", t; found = 1; exit
		}
		END { if (!found) print "-" }' "$bdir/serial.log" 2>/dev/null || echo -
}

# boot_one SERVER BOOT: one guest boot; appends a line to results.
boot_one() {
	local server=$1 boot=$2 tap status=FAIL secs=- kernel=- t0 t1 qpid i
	n=$((n + 1))
	tap=nre2e$n
	bdir=$RUN/$server-$boot
	mkdir -p "$bdir"
	log "[$server/$boot] starting"
	setup_net "$tap"
	start dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv \
		--no-hosts --user=root --group=root --interface="$tap" --bind-interfaces \
		--dhcp-range="$DHCP_RANGE,$NETMASK,1h" --dhcp-boot="pxelinux.0,,$SERVER_IP" \
		--dhcp-leasefile="$bdir/dnsmasq.leases" --log-dhcp --log-facility=- \
		--pid-file="$bdir/dnsmasq.pid"

	if "${server}_servers" "$boot" "$tap" && wait_for 10 "dnsmasq on :67" listening udp 67 && alive; then
		t0=$(date +%s.%N)
		start qemu qemu-system-x86_64 -accel "$E2E_ACCEL" -m 1024 -smp 1 -boot n \
			-display none -monitor none -device sga -serial "file:$bdir/serial.log" \
			-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
			-device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC" -no-reboot
		qpid=${PIDS[-1]}
		for ((i = 0; i < E2E_TIMEOUT * 5; i++)); do
			# PXE, pxelinux and the TFTP transfers are done when the kernel starts printing.
			if [[ $kernel == - ]] && grep -q '] Linux version ' "$bdir/serial.log" 2>/dev/null; then
				kernel=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
			fi
			if grep -Eq "^$MARKER END"$'\r?$' "$bdir/serial.log" 2>/dev/null; then
				t1=$(date +%s.%N)
				secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
				break
			fi
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.2
		done
		if [[ $secs == - ]]; then
			if kill -0 "$qpid" 2>/dev/null; then
				log "[$server/$boot] no marker after ${E2E_TIMEOUT}s"
			else
				log "[$server/$boot] qemu exited without the marker"
			fi
			log "[$server/$boot] last serial lines:"
			# Without the sga adapter's cursor movements and colours.
			[[ -f $bdir/serial.log ]] && tr -d '\r' <"$bdir/serial.log" |
				sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; /^[[:space:]]*$/d' | tail -15 | sed 's/^/    /' >&2
		else
			# The guest powers itself off; give it a moment before stopping qemu.
			for ((i = 0; i < 100; i++)); do
				kill -0 "$qpid" 2>/dev/null || break
				sleep 0.1
			done
			check_mounts "$boot" && status=ok
		fi
	fi

	# When the root device appeared, by the guest's clock; for AoE also how long the guest's
	# aoe driver waited for the target after it loaded (vblade: until the driver's next
	# discovery, up to a minute).
	local tftp nbd aoe rootdev="-" aoewait="-" drv
	tftp=$(counter_bytes tftp)
	nbd=$(counter_bytes nbd)
	aoe=$(counter_bytes aoe)
	case $boot in
	nbd | nbd-ro) rootdev=$(ktime 'nbd0: detected capacity change from 0') ;;
	aoe)
		rootdev=$(ktime "aoe: .*e$AOE_SHELF[.]$AOE_SLOT .*has [0-9]+ sectors")
		drv=$(ktime 'aoe: AoE v[0-9]+ initialised')
		if [[ $rootdev != - && $drv != - ]]; then
			aoewait=$(awk -v a="$drv" -v b="$rootdev" 'BEGIN { printf "%.1f", b - a }')
		fi
		;;
	esac
	stop_boot
	[[ $status == ok ]] || failed=1
	results+=("$(printf "$ROW" "$server" "$boot" "$status" "$secs" "$kernel" "$rootdev" "$aoewait" "$tftp" "$nbd" "$aoe")")
	times["$server/$boot"]=$secs
	log "[$server/$boot] $status, time to marker ${secs}s, kernel started after ${kernel}s," \
		"root device at ${rootdev}s guest time," \
		"aoe wait ${aoewait}s (bytes sent: tftp $tftp, nbd $nbd, aoe $aoe)"
}

total_start=$SECONDS
# Each boot with every server in turn, so the runs compared ran close together in time (the
# machine's load drifts); the first boot of a run tends to be a little slower.
for boot in "${boots[@]}"; do
	for server in "${servers[@]}"; do
		boot_one "$server" "$boot"
	done
done

echo
echo "marker-s: qemu start to the guest's marker; kernel-s: qemu start to the kernel's first line"
echo "(PXE, pxelinux, TFTP of kernel and initrd); both by the host's clock. rootdev-s: root block"
echo "device attached, by the guest's clock; aoe-wait-s: guest aoe driver loaded to target found."
echo "*-bytes: bytes sent to the guest per protocol (counted on the tap)."
printf "$ROW\n" server boot result marker-s kernel-s rootdev-s aoe-wait-s tftp-bytes nbd-bytes aoe-bytes
printf '%s\n' "${results[@]}"
for boot in "${boots[@]}"; do
	a=${times[netroot/$boot]:--} b=${times[reference/$boot]:--}
	if [[ $a != - && $b != - ]]; then
		awk -v boot="$boot" -v a="$a" -v b="$b" 'BEGIN {
			printf "%-7s time to marker: netroot %.1f s, reference %.1f s, ratio %.2f (netroot %+.1f s)\n", boot, a, b, a / b, a - b }'
	fi
done
echo "total $((SECONDS - total_start)) s"
if ((failed)); then
	log "FAILED"
	exit 1
fi
log "all boots passed"
