#!/bin/bash
# kiwi.sh boots, through `netroot serve`, a KIS image that KIWI NG itself built (e2e/kiwi/: a
# small Debian bookworm image built by Debian's kiwi and kiwi-dracut-overlay packages), PXE-style
# in qemu, and checks that it came up on the network root:
#
#   dnsmasq (DHCP only) -> iPXE -> pxelinux.0 over TFTP -> KIWI's kernel and dracut initrd
#   (kiwi-overlay) -> KIWI's root image over NBD (/dev/nbd0) or AoE (/dev/etherd/e0.1)
#   -> overlayfs -> systemd -> netroot-e2e-marker.service prints a marker and /proc/mounts
#   -> poweroff
#
# netroot serve gets KIWI's target directory as it is (kiwi.result, build/, .packages, the
# 0600 initrd, the .append with root=UUID=... and KIWI's kernelcmdline) and builds the boot
# entries from it; the marker reaches the guest through -append.
#
# Everything runs in a network namespace this script creates, on a tap device inside it
# (192.0.2.1/24 server side), and is removed again on success, failure or interrupt. The KIS
# build comes from e2e/kiwi/build.sh (cached outside the clone; the first build takes several
# minutes).
#
# Settings: E2E_KIWI_PROFILES (KIWI image profiles, space or comma separated: ext4, squashfs;
# default ext4: the squashfs image is a second KIWI build of many minutes; an ext4 root is not
# booted over AoE, see e2e/kiwi/README.md), E2E_BOOTS (nbd, aoe; default both), E2E_TIMEOUT (seconds per boot until the
# marker, default 600), E2E_ACCEL (qemu accelerator, default tcg), E2E_CACHE (build cache,
# default /var/cache/netroot-e2e), E2E_KEEP=1 (keep the work folder even on success),
# E2E_NETROOT_FLAGS (extra flags for `netroot serve`), E2E_KIWI_TARGET (boot this KIWI target
# directory, a KIS build of an image like e2e/kiwi/'s, instead of building one; one profile only).
#
# Prints per boot the time from qemu start to the marker, and the time the KIWI build took (or
# that it was cached). Exit status 0 only when every boot passed. Needs root; the Debian
# packages are listed in .ci/packages/e2e.txt and .ci/packages/kiwi.txt. Run qemu boots under
# `flock /tmp/netroot-e2e.lock` when other e2e runs may share the machine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

E2E_KIWI_PROFILES=${E2E_KIWI_PROFILES:-ext4}
E2E_BOOTS=${E2E_BOOTS:-nbd aoe}
E2E_TIMEOUT=${E2E_TIMEOUT:-600}
E2E_ACCEL=${E2E_ACCEL:-tcg}
E2E_KEEP=${E2E_KEEP:-0}
E2E_NETROOT_FLAGS=${E2E_NETROOT_FLAGS:-}
E2E_KIWI_TARGET=${E2E_KIWI_TARGET:-}

SERVER_IP=192.0.2.1
NETMASK=255.255.255.0
DHCP_RANGE=192.0.2.100,192.0.2.150
GUEST_MAC=52:54:00:e2:e0:02
AOE_SHELF=0
AOE_SLOT=1
# console=ttyS0,115200 is also in the image's kernelcmdline (KIWI's .append, ext4 only):
# netroot merges the exact duplicate. A squashfs build has no .append, so -append must carry
# the console itself.
APPEND_BASE="console=ttyS0,115200 rd.shell=0 rd.emergency=poweroff"

log() { printf 'e2e-kiwi: %s\n' "$*" >&2; }
. "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# Preconditions

[[ $(id -u) -eq 0 ]] || die "must run as root (KIWI build, network namespace, tap device, AoE raw sockets)"

need qemu-system-x86_64 qemu-system-x86
need dnsmasq dnsmasq-base
need ip iproute2
need go golang
[[ -f /usr/lib/ipxe/qemu/pxe-virtio.rom || -f /usr/lib/ipxe/qemu/efi-virtio.rom ]] ||
	die "iPXE option ROMs not found (Debian package ipxe-qemu)"
[[ -f /usr/lib/PXELINUX/pxelinux.0 ]] || die "pxelinux.0 not found (Debian package pxelinux)"
[[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ]] || die "ldlinux.c32 not found (Debian package syslinux-common)"
HAVE_NFT=0
command -v nft >/dev/null 2>&1 && HAVE_NFT=1

profiles=()
for p in ${E2E_KIWI_PROFILES//,/ }; do
	case $p in
	ext4 | squashfs) profiles+=("$p") ;;
	*) die "E2E_KIWI_PROFILES: unknown profile \"$p\" (want ext4 or squashfs)" ;;
	esac
done
boots=()
for b in ${E2E_BOOTS//,/ }; do
	case $b in
	nbd | aoe) boots+=("$b") ;;
	*) die "E2E_BOOTS: unknown boot \"$b\" (want nbd or aoe)" ;;
	esac
done

# ---------------------------------------------------------------------------------------------
# Cleanup: every process by PID, the namespace (and with it the tap) by name.

RUN=$(mktemp -d /tmp/netroot-e2e-kiwi.XXXXXX)
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

sweep_namespaces netroot-kiwi-

finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_boot
	if ((rc != 0 || failed != 0)) || [[ $E2E_KEEP == 1 ]]; then
		# Keep logs (serial, servers, configs), drop the staged kernel and initrd copies.
		if [[ $E2E_KEEP != 1 ]]; then
			find "$RUN" -type f \( -name linux -o -name initrd -o -name netroot \) -delete 2>/dev/null || true
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
# KIWI builds (cached) and the server

declare -A kisdir buildtime
for p in "${profiles[@]}"; do
	t=$SECONDS
	if [[ -n $E2E_KIWI_TARGET ]]; then
		((${#profiles[@]} == 1)) || die "E2E_KIWI_TARGET needs exactly one profile in E2E_KIWI_PROFILES"
		kisdir[$p]=$E2E_KIWI_TARGET
	else
		kisdir[$p]=$(bash "$HERE/kiwi/build.sh" "$p" | tail -1)
	fi
	buildtime[$p]=$((SECONDS - t))
	[[ -d ${kisdir[$p]} ]] || die "no KIWI target directory for profile $p (${kisdir[$p]})"
	log "KIWI build $p: ${kisdir[$p]} (${buildtime[$p]} s)"
done

log "building examples/netroot"
(cd "$REPO" && go build -o "$RUN/netroot" ./examples/netroot) >"$RUN/go-build.log" 2>&1 ||
	die "go build ./examples/netroot failed: $(tail -20 "$RUN/go-build.log")"

# ---------------------------------------------------------------------------------------------
# One boot

n=0
results=()
ROW='%-9s %-5s %-5s %9s %9s %10s %10s %11s %10s %10s'


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
	NS=netroot-kiwi-$$-$n
	ip netns add "$NS"
	in_ns ip link set lo up
	in_ns ip tuntap add dev "$tap" mode tap
	in_ns ip addr add "$SERVER_IP/24" dev "$tap"
	in_ns ip link set "$tap" up
	if ((HAVE_NFT)); then
		in_ns nft -f - <<-EOF || { log "nft egress counters unavailable"; HAVE_NFT=0; }
			table netdev e2e {
				counter tftp {}
				counter nbd {}
				counter aoe {}
				chain egress {
					type filter hook egress device "$tap" priority 0; policy accept;
					ether type 0x88a2 counter name aoe
					tcp sport 10809 counter name nbd
					udp sport != 67 counter name tftp
				}
			}
		EOF
	fi
}

alive() {
	local p
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || {
			log "a server exited early; see $bdir/*.log"
			return 1
		}
	done
}

# netroot_servers PROFILE BOOT TAP: `netroot serve` on KIWI's target directory as it is.
netroot_servers() {
	local profile=$1 boot=$2 tap=$3
	local tftp=$bdir/tftp
	mkdir -p "$tftp"
	# shellcheck disable=SC2086 # E2E_NETROOT_FLAGS is a list of words
	start netroot "$RUN/netroot" serve -kis "${kisdir[$profile]}" -tftp-root "$tftp" \
		-server-ip "$SERVER_IP" -aoe-iface "$tap" -aoe-shelf "$AOE_SHELF" -aoe-slot "$AOE_SLOT" \
		-default "$boot" -append "$APPEND_BASE netroot.e2e.marker=$MARKER" \
		-pxelinux-serial "0 115200" $E2E_NETROOT_FLAGS
	# netroot verifies the image's MD5 before it serves: allow for a large image.
	wait_for 300 "netroot's pxelinux.cfg/default" test -s "$tftp/pxelinux.cfg/default" || return 1
	wait_for 30 "netroot TFTP on :69" listening udp 69 || return 1
	wait_for 30 "netroot NBD on :10809" listening tcp 10809 || return 1
}

# check_boot PROFILE BOOT: the marker block must show KIWI's root image from the network block
# device as the lower layer of an overlayfs root, and the command line KIWI's options with the
# operator's merged (one console=ttyS0,115200 only).
check_boot() {
	local profile=$1 boot=$2 out=$bdir/guest-output.txt dev fstype cmdline
	tr -d '\r' <"$bdir/serial.log" | sed -n "/^$MARKER BEGIN\$/,/^$MARKER END\$/p" >"$out"
	case $boot in
	nbd) dev=/dev/nbd0 ;;
	aoe) dev=/dev/etherd/e$AOE_SHELF.$AOE_SLOT ;;
	esac
	fstype=$profile
	grep -Eq "^${dev//./\\.} [^ ]+ $fstype ro[, ]" "$out" ||
		{ log "$profile/$boot: /proc/mounts shows no read-only $fstype from $dev"; return 1; }
	grep -Eq '^[^ ]+ / overlay ' "$out" ||
		{ log "$profile/$boot: / is not an overlayfs"; return 1; }
	cmdline=$(sed -n 's/^cmdline: //p' "$out")
	if [[ $profile == ext4 ]]; then
		# KIWI's .append had root=UUID=... and rd.shell=0 (its kernelcmdline): root= replaced,
		# the rest kept.
		[[ " $cmdline " != *" root=UUID="* ]] ||
			{ log "$profile/$boot: KIWI's root=UUID= reached the guest: $cmdline"; return 1; }
	fi
	local n
	n=$(grep -o 'console=ttyS0,115200' <<<"$cmdline" | wc -l)
	((n == 1)) || { log "$profile/$boot: console=ttyS0,115200 $n times on the command line: $cmdline"; return 1; }
}

ktime() { # ktime PATTERN: the guest kernel's timestamp of the first serial line matching PATTERN
	awk -v re="$1" '{ sub(/\r$/, "") }
		$0 ~ re && match($0, /\[ *[0-9]+\.[0-9]+\]/) {
			t = substr($0, RSTART + 1, RLENGTH - 2); printf "%.1f\n", t; found = 1; exit
		}
		END { if (!found) print "-" }' "$bdir/serial.log" 2>/dev/null || echo -
}

boot_one() { # boot_one PROFILE BOOT
	local profile=$1 boot=$2 tap status=FAIL secs=- kernel=- t0 t1 qpid i
	n=$((n + 1))
	tap=nrkiwi$n
	bdir=$RUN/$profile-$boot
	mkdir -p "$bdir"
	MARKER="NETROOT-KIWI-$(date +%s)-$$-$RANDOM"
	log "[$profile/$boot] starting"
	setup_net "$tap"
	start dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv \
		--no-hosts --user=root --group=root --interface="$tap" --bind-interfaces \
		--dhcp-range="$DHCP_RANGE,$NETMASK,1h" --dhcp-boot="pxelinux.0,,$SERVER_IP" \
		--dhcp-leasefile="$bdir/dnsmasq.leases" --log-dhcp --log-facility=- \
		--pid-file="$bdir/dnsmasq.pid"

	if netroot_servers "$profile" "$boot" "$tap" && wait_for 10 "dnsmasq on :67" listening udp 67 && alive; then
		t0=$(date +%s.%N)
		start qemu qemu-system-x86_64 -accel "$E2E_ACCEL" -m 1024 -smp 1 -boot n \
			-display none -monitor none -device sga -serial "file:$bdir/serial.log" \
			-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
			-device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC" -no-reboot
		qpid=${PIDS[-1]}
		for ((i = 0; i < E2E_TIMEOUT * 5; i++)); do
			if [[ $kernel == - ]] && grep -q '] Linux version ' "$bdir/serial.log" 2>/dev/null; then
				kernel=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
			fi
			if grep -Eq "^$MARKER END"$'\r?$' "$bdir/serial.log" 2>/dev/null; then
				t1=$(date +%s.%N)
				secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
				break
			fi
			kill -0 "$qpid" 2>/dev/null || break
			# A failed boot halts (rd.emergency=poweroff ends in a halt under systemd): stop
			# waiting then rather than at the timeout.
			grep -q '] reboot: System halted' "$bdir/serial.log" 2>/dev/null && break
			sleep 0.2
		done
		if [[ $secs == - ]]; then
			if kill -0 "$qpid" 2>/dev/null; then
				log "[$profile/$boot] no marker after ${E2E_TIMEOUT}s"
			else
				log "[$profile/$boot] qemu exited without the marker"
			fi
			log "[$profile/$boot] last serial lines:"
			[[ -f $bdir/serial.log ]] && tr -d '\r' <"$bdir/serial.log" |
				sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; /^[[:space:]]*$/d' | tail -15 | sed 's/^/    /' >&2
		else
			for ((i = 0; i < 100; i++)); do
				kill -0 "$qpid" 2>/dev/null || break
				sleep 0.1
			done
			check_boot "$profile" "$boot" && status=ok
		fi
	fi

	local tftp nbd aoe rootdev="-"
	tftp=$(counter_bytes tftp)
	nbd=$(counter_bytes nbd)
	aoe=$(counter_bytes aoe)
	case $boot in
	nbd) rootdev=$(ktime 'nbd0: detected capacity change from 0') ;;
	aoe) rootdev=$(ktime "aoe: .*e$AOE_SHELF[.]$AOE_SLOT .*has [0-9]+ sectors") ;;
	esac
	stop_boot
	[[ $status == ok ]] || failed=1
	results+=("$(printf "$ROW" "$profile" "$boot" "$status" "$secs" "$kernel" "$rootdev" "${buildtime[$profile]}" "$tftp" "$nbd" "$aoe")")
	log "[$profile/$boot] $status, time to marker ${secs}s, kernel started after ${kernel}s," \
		"root device at ${rootdev}s guest time (bytes sent: tftp $tftp, nbd $nbd, aoe $aoe)"
}

total_start=$SECONDS
for p in "${profiles[@]}"; do
	for boot in "${boots[@]}"; do
		# kiwi-overlay mounts the root device without -o ro. NBD marks the device read-only
		# (the export is), so ext4 mounts read-only; the aoe driver has no read-only flag, ext4
		# writes its superblock at mount, the target refuses the write and the mount fails
		# ("I/O error while writing superblock"). Over AoE only a squashfs root boots.
		if [[ $p == ext4 && $boot == aoe ]]; then
			log "[ext4/aoe] skipped: kiwi-overlay mounts an ext4 root read-write, which a read-only AoE target cannot take"
			continue
		fi
		boot_one "$p" "$boot"
	done
done

echo
echo "marker-s: qemu start to the guest's marker (systemd's multi-user boot included); kernel-s:"
echo "qemu start to the kernel's first line; both by the host's clock. rootdev-s: root block device"
echo "attached, by the guest's clock. build-s: e2e/kiwi/build.sh (seconds when cached)."
echo "*-bytes: bytes sent to the guest per protocol (counted on the tap)."
printf "$ROW\n" profile boot result marker-s kernel-s rootdev-s build-s tftp-bytes nbd-bytes aoe-bytes
printf '%s\n' "${results[@]}"
echo "total $((SECONDS - total_start)) s of boots"
if ((failed)); then
	log "FAILED"
	exit 1
fi
log "all boots passed"
