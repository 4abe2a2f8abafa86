#!/bin/bash
# rollforward.sh checks that `netroot serve` rolls forward to a new KIS build and upgrades its
# own binary without taking the root away from a machine that runs on the old build:
#
#   1. guest A network-boots build 1.0.0 (pxelinux over TFTP, root over NBD, kiwi-overlay), prints
#      a first marker and waits for a go-ahead byte on its second serial port (ttyS1);
#   2. while A waits, build 1.1.0 is published into the KIWI output folder and netroot gets
#      SIGHUP (systemctl reload); netroot verifies, stages and exports it, rewrites the configs;
#   3. a second build of the netroot binary replaces the file netroot was started as and netroot
#      gets SIGUSR2: the new binary starts, takes over the listeners and A's NBD connection, and
#      the old process exits (the serving PID changes; the new process runs the new file);
#   4. A gets the go-ahead, reads every file of its root (a manifest of MD5 sums made with the
#      image, including a 16 MiB file of random data that is not in A's page cache yet) and all
#      of /dev/nbd0, and prints a second marker with the result: its NBD connection must still
#      serve build 1.0.0 byte-exact, and its kernel must log no I/O or NBD error;
#   5. guest B boots after the reload and must get build 1.1.0, from the upgraded process.
#
# It reuses e2e/run.sh's guest kernel and initrd (built once by e2e/build-guest.sh and cached in
# E2E_CACHE) and runs in a network namespace it creates and removes, like run.sh. Settings:
# E2E_TIMEOUT (seconds per guest until its last marker, default 400), E2E_ACCEL (default tcg),
# E2E_KEEP=1 (keep the work folder), E2E_UPGRADE=0 (skip step 3). Needs root; Debian packages as
# in .ci/packages/e2e.txt.
# Run it under the e2e lock: flock /tmp/netroot-e2e.lock bash e2e/rollforward.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

E2E_TIMEOUT=${E2E_TIMEOUT:-400}
E2E_ACCEL=${E2E_ACCEL:-tcg}
E2E_KEEP=${E2E_KEEP:-0}
E2E_UPGRADE=${E2E_UPGRADE:-1}

SERVER_IP=192.0.2.1
NETMASK=255.255.255.0
DHCP_RANGE=192.0.2.100,192.0.2.150
MAC_A=52:54:00:e2:e1:0a
MAC_B=52:54:00:e2:e1:0b
IMAGE_NAME=netroot-rollforward
V1=1.0.0
V2=1.1.0
APPEND_BASE="console=ttyS0 rd.shell=0 rd.emergency=poweroff"

log() { printf 'rollforward: %s\n' "$*" >&2; }
. "$HERE/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, tap device)"
need qemu-system-x86_64 qemu-system-x86
need dnsmasq dnsmasq-base
need mksquashfs squashfs-tools
need debootstrap debootstrap
need ip iproute2
need factor coreutils
need go golang
[[ -x /bin/busybox ]] && [[ $(/bin/busybox --list 2>/dev/null | grep -cxE 'md5sum|stty|head') == 3 ]] ||
	die "/bin/busybox not found or not static (Debian package busybox-static)"
[[ -f /usr/lib/PXELINUX/pxelinux.0 ]] || die "pxelinux.0 not found (Debian package pxelinux)"
[[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ]] || die "ldlinux.c32 not found (Debian package syslinux-common)"

RUN=$(mktemp -d /tmp/netroot-rollforward.XXXXXX)
chmod 755 "$RUN"
PIDS=()
NS=""
ok=0

stop_all() {
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
	if [[ -n $NS ]]; then
		for p in $(ip netns pids "$NS" 2>/dev/null); do
			kill -KILL "$p" 2>/dev/null || true
		done
		ip netns del "$NS" 2>/dev/null || true
		NS=""
	fi
}

sweep_namespaces netroot-rf-

finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_all
	if ((rc != 0 || ok == 0)) || [[ $E2E_KEEP == 1 ]]; then
		[[ $E2E_KEEP == 1 ]] || find "$RUN" -type f \( -name '*.kernel' -o -name '*.initrd*' -o -name linux \
			-o -name initrd -o -name "$IMAGE_NAME.*" -o -name 'netroot*' -o -name random.bin \) -delete 2>/dev/null || true
		log "logs kept in $RUN"
	else
		rm -rf "$RUN"
	fi
	exit "$rc"
}
trap finish EXIT
trap 'log "interrupted"; exit 130' INT TERM

guest=$(bash "$HERE/build-guest.sh" | tail -1)
[[ -s $guest/vmlinuz && -s $guest/initrd ]] || die "build-guest.sh gave no kernel/initrd"
kver=$(awk '$1 == "kernel" { print $2 }' "$guest/versions.txt")
log "guest: $guest (kernel $kver)"

MARKER="NETROOT-RF-$(date +%s)-$$-$RANDOM"

md5_blocks() { # KIWI's block list: blocksize = product of the smallest prime factors <= 8192
	local size=$1 bs=1 f
	for f in $(factor "$size" | cut -d: -f2); do
		((bs * f > 8192)) && break
		bs=$((bs * f))
	done
	echo "$((size / bs)) $bs"
}

# make_build VERSION OUTDIR: a KIS build whose init prints the markers, waits for a go-ahead
# byte on ttyS1 (the host writes it to a pipe; a guest without it goes on at once), then checks
# every file of the root against the manifest made here and prints the MD5 of the whole root
# device.
make_build() {
	local version=$1 out=$2 tree=$RUN/rootfs-$1 base=$IMAGE_NAME.x86_64-$1
	mkdir -p "$tree"/{bin,sbin,dev,proc,sys,run,tmp,etc,mnt,root,data} "$out"
	cp /bin/busybox "$tree/bin/busybox"
	ln -s busybox "$tree/bin/sh"
	head -c $((16 << 20)) /dev/urandom >"$tree/data/random.bin"
	printf 'build %s\n' "$version" >"$tree/etc/netroot-build"
	cat >"$tree/sbin/init" <<-EOF
		#!/bin/sh
		exec >/dev/console 2>&1 </dev/console
		/bin/busybox mount -t proc proc /proc 2>/dev/null
		echo "$MARKER BOOTED \$(/bin/busybox cat /etc/netroot-build)"
		echo "cmdline: \$(/bin/busybox cat /proc/cmdline)"
		# The go-ahead: opened (and the UART's FIFO cleared) before WAITING is printed, so the
		# host's byte cannot be lost; raw so that one byte without a newline ends the read.
		if [ -c /dev/ttyS1 ] && exec 3</dev/ttyS1 && /bin/busybox stty -F /dev/ttyS1 raw -echo; then
			echo "$MARKER WAITING"
			/bin/busybox head -c 1 <&3 >/dev/null
			exec 3<&-
			echo "$MARKER GO"
		fi
		cd /
		if /bin/busybox md5sum -c /etc/manifest >/tmp/check.log 2>&1; then
			echo "$MARKER CHECK OK \$(/bin/busybox wc -l </etc/manifest) files"
		else
			echo "$MARKER CHECK FAILED"
			/bin/busybox grep -v ': OK\$' /tmp/check.log | /bin/busybox head -20
		fi
		rootdev=\$(/bin/busybox awk '\$3 == "squashfs" { print \$1; exit }' /proc/mounts)
		echo "$MARKER ROOTDEV \$rootdev \$(/bin/busybox md5sum <\$rootdev | /bin/busybox cut -d' ' -f1)"
		echo "$MARKER END"
		/bin/busybox sync
		/bin/busybox poweroff -f
		/bin/busybox sleep 5
		echo o >/proc/sysrq-trigger
	EOF
	chmod 755 "$tree/sbin/init"
	printf 'ID=netroot-e2e\nNAME="netroot roll-forward test root"\nVERSION_ID=%s\n' "$version" >"$tree/etc/os-release"
	(cd "$tree" && find . -type f ! -path ./etc/manifest -exec /bin/busybox md5sum {} + >etc/manifest)
	mksquashfs "$tree" "$out/$base" -noappend -quiet -all-root -no-progress >"$RUN/mksquashfs-$version.log" 2>&1 ||
		die "mksquashfs failed: $(cat "$RUN/mksquashfs-$version.log")"
	cp "$guest/vmlinuz" "$out/$base-$kver.kernel"
	cp "$guest/initrd" "$out/$base.initrd.xz"
	echo "$(md5sum <"$out/$base" | cut -d' ' -f1) $(md5_blocks "$(stat -c %s "$out/$base")")" >"$out/$base.md5"
}

kis=$RUN/kis
next=$RUN/next # built beside, moved into kis/ when published
make_build "$V1" "$kis"
make_build "$V2" "$next"
log "builds $V1 (in $kis) and $V2 (published later) ready, marker $MARKER"

log "building examples/netroot"
(cd "$REPO" && go build -o "$RUN/netroot" ./examples/netroot) >"$RUN/go-build.log" 2>&1 ||
	die "go build ./examples/netroot failed: $(tail -20 "$RUN/go-build.log")"
if [[ $E2E_UPGRADE == 1 ]]; then
	# The binary netroot upgrades to: a second build (-trimpath makes it a different file).
	(cd "$REPO" && go build -trimpath -o "$RUN/netroot.next" ./examples/netroot) >>"$RUN/go-build.log" 2>&1 ||
		die "go build -trimpath ./examples/netroot failed: $(tail -20 "$RUN/go-build.log")"
	sum_v1=$(sha256sum <"$RUN/netroot" | cut -d' ' -f1)
	sum_v2=$(sha256sum <"$RUN/netroot.next" | cut -d' ' -f1)
	[[ $sum_v1 != "$sum_v2" ]] || die "the second netroot build is the same file as the first"
fi

NS=netroot-rf-$$
TAP=nrrf0
ip netns add "$NS"
in_ns ip link set lo up
in_ns ip tuntap add dev "$TAP" mode tap
in_ns ip addr add "$SERVER_IP/24" dev "$TAP"
in_ns ip link set "$TAP" up

# wait_log SECONDS FILE REGEX: wait until FILE has a line matching REGEX (extended).
wait_log() {
	local limit=$1 file=$2 re=$3 i
	for ((i = 0; i < limit * 5; i++)); do
		# (grep reads all of it: with pipefail, grep -q stopping early would fail the pipe.)
		[[ -f $file && -n $(tr -d '\r' <"$file" | grep -E -- "$re") ]] && return 0
		sleep 0.2
	done
	log "timed out after ${limit}s waiting for /$re/ in $file"
	tr -d '\r' <"$file" 2>/dev/null | sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; /^[[:space:]]*$/d' | tail -15 | sed 's/^/    /' >&2
	return 1
}

start dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv \
	--no-hosts --user=root --group=root --interface="$TAP" --bind-interfaces \
	--dhcp-range="$DHCP_RANGE,$NETMASK,1h" --dhcp-boot="pxelinux.0,,$SERVER_IP" \
	--dhcp-leasefile="$RUN/dnsmasq.leases" --log-dhcp --log-facility=-
mkdir -p "$RUN/tftp"
start netroot "$RUN/netroot" serve -kis "$kis" -tftp-root "$RUN/tftp" -server-ip "$SERVER_IP" \
	-append "$APPEND_BASE" -pxelinux-serial "0 115200" -grace 5s
NETROOT_PID=${PIDS[-1]}
wait_log 120 "$RUN/netroot.log" 'msg=ready' || exit 1
grep -q "nbd=$SERVER_IP:$IMAGE_NAME.x86_64-$V1" "$RUN/tftp/pxelinux.cfg/default" || die "pxelinux.cfg/default does not name $V1"

qemu() { # qemu NAME MAC: ttyS0 logs to serial-NAME.log; ttyS1 reads from the pipe go-NAME.in
	mkfifo "$RUN/go-$1.in" "$RUN/go-$1.out"
	start "qemu-$1" qemu-system-x86_64 -accel "$E2E_ACCEL" -m 1024 -smp 1 -boot n \
		-display none -monitor none -device sga -serial "file:$RUN/serial-$1.log" \
		-serial "pipe:$RUN/go-$1" \
		-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$2" -no-reboot
}
running() { # running PID: the process exists and is not a zombie waiting for us
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z ]]
}
go_ahead() { # go_ahead NAME: let guest NAME go on (qemu holds the pipe open, so this cannot block)
	printf g >"$RUN/go-$1.in"
}
# serial_ok NAME: guest NAME's kernel logged no I/O error and no NBD failure.
serial_ok() {
	local bad
	bad=$(tr -d '\r' <"$RUN/serial-$1.log" | grep -E 'I/O error|nbd[0-9]+: (Receive|Send|Connection|Dead|Possible)|block nbd[0-9]+: .*(error|timed out|shutting down)|SQUASHFS error' || true)
	[[ -z $bad ]] || { log "guest $1's kernel logged errors:"; printf '    %s\n' "$bad" >&2; return 1; }
}

t0=$SECONDS
log "guest A boots build $V1"
qemu a "$MAC_A"
wait_log "$E2E_TIMEOUT" "$RUN/serial-a.log" "^$MARKER BOOTED build $V1\$" || exit 1
wait_log 60 "$RUN/serial-a.log" "^$MARKER WAITING\$" || die "guest A does not wait for the go-ahead (no /dev/ttyS1?)"
log "guest A runs on $V1 after $((SECONDS - t0)) s; publishing $V2 and reloading"

for f in "$next"/*.kernel "$next"/*.initrd.xz "$next/$IMAGE_NAME.x86_64-$V2" "$next"/*.md5; do
	mv "$f" "$kis/" # same file system: each file appears whole; the .md5 last
done
kill -HUP "$NETROOT_PID"
wait_log 120 "$RUN/netroot.log" "msg=\"serving build\" build=$IMAGE_NAME.x86_64-$V2" || exit 1
grep -q "nbd=$SERVER_IP:$IMAGE_NAME.x86_64-$V2" "$RUN/tftp/pxelinux.cfg/default" || die "pxelinux.cfg/default does not name $V2 after the reload"
grep -q "msg=\"build retired\" build=$IMAGE_NAME.x86_64-$V1" "$RUN/netroot.log" && die "$V1 was retired while guest A runs on it"
kill -0 "$NETROOT_PID" || die "netroot exited on SIGHUP"
log "netroot serves $V2 to new boots after $((SECONDS - t0)) s"

SERVING_PID=$NETROOT_PID
if [[ $E2E_UPGRADE == 1 ]]; then
	mv "$RUN/netroot.next" "$RUN/netroot" # what netroot re-executes: its argv[0]
	t_up=$SECONDS
	kill -USR2 "$NETROOT_PID"
	wait_log 120 "$RUN/netroot.log" 'msg="upgrade: handed over; stopping"' || die "netroot did not hand over on SIGUSR2"
	handed=$(grep 'msg="upgrade: handed over; stopping"' "$RUN/netroot.log" | tail -1)
	SERVING_PID=$(grep -oE 'new_pid=[0-9]+' <<<"$handed" | cut -d= -f2)
	[[ -n $SERVING_PID && $SERVING_PID != "$NETROOT_PID" ]] || die "no new PID in: $handed"
	PIDS+=("$SERVING_PID") # not our child, but stop_all signals it
	grep -E 'nbd_connections=1( |$)' <<<"$handed" >/dev/null || die "the old process did not hand over guest A's NBD connection: $handed"
	for ((i = 0; i < 300; i++)); do
		running "$NETROOT_PID" || break
		sleep 0.1
	done
	running "$NETROOT_PID" && die "the old netroot (PID $NETROOT_PID) still runs 30 s after handing over"
	rc=0
	wait "$NETROOT_PID" || rc=$?
	((rc == 0)) || die "the old netroot (PID $NETROOT_PID) exited with status $rc"
	running "$SERVING_PID" || die "the new netroot (PID $SERVING_PID) is not running"
	[[ $(sha256sum <"/proc/$SERVING_PID/exe" | cut -d' ' -f1) == "$sum_v2" ]] ||
		die "the new process (PID $SERVING_PID) does not run the second build"
	wait_log 30 "$RUN/netroot.log" 'msg="upgrade: took over" nbd_connections=1 ' ||
		die "the new netroot did not take over guest A's NBD connection"
	log "netroot upgraded on SIGUSR2 in $((SECONDS - t_up)) s: PID $NETROOT_PID -> $SERVING_PID, guest A's connection handed over"
fi

go_ahead a
wait_log "$E2E_TIMEOUT" "$RUN/serial-a.log" "^$MARKER END\$" || exit 1
tr -d '\r' <"$RUN/serial-a.log" | grep -E "^$MARKER GO\$" >/dev/null || die "guest A did not wait for the go-ahead"
tr -d '\r' <"$RUN/serial-a.log" | grep -E "^$MARKER CHECK OK" >/dev/null ||
	die "guest A's root did not read back byte-exact across the reload: $(tr -d '\r' <"$RUN/serial-a.log" | grep -A20 "$MARKER CHECK" | head -20)"
md5_v1=$(cut -d' ' -f1 "$kis/$IMAGE_NAME.x86_64-$V1.md5")
tr -d '\r' <"$RUN/serial-a.log" | grep -E "^$MARKER ROOTDEV /dev/nbd0 $md5_v1\$" >/dev/null ||
	die "guest A's /dev/nbd0 is not build $V1 byte for byte (want md5 $md5_v1): $(tr -d '\r' <"$RUN/serial-a.log" | grep "$MARKER ROOTDEV")"
serial_ok a || die "guest A saw errors on its root device"
log "guest A read every file of $V1 and all of /dev/nbd0 byte-exact after the reload$([[ $E2E_UPGRADE == 1 ]] && echo " and the upgrade") ($(tr -d '\r' <"$RUN/serial-a.log" | grep -o "CHECK OK.*"), md5 $md5_v1)"

log "guest B boots after the reload"
t_b=$SECONDS
qemu b "$MAC_B"
wait_log "$E2E_TIMEOUT" "$RUN/serial-b.log" "^$MARKER WAITING\$" || exit 1
go_ahead b
wait_log "$E2E_TIMEOUT" "$RUN/serial-b.log" "^$MARKER END\$" || exit 1
tr -d '\r' <"$RUN/serial-b.log" | grep -E "^$MARKER BOOTED build $V2\$" >/dev/null || die "guest B did not boot $V2"
tr -d '\r' <"$RUN/serial-b.log" | grep -E "^$MARKER CHECK OK" >/dev/null || die "guest B's root did not check"
tr -d '\r' <"$RUN/serial-b.log" | grep -E "^cmdline: .*root=overlay:nbd=$SERVER_IP:$IMAGE_NAME.x86_64-$V2" >/dev/null ||
	die "guest B's kernel command line does not name the $V2 export"
md5_v2=$(cut -d' ' -f1 "$kis/$IMAGE_NAME.x86_64-$V2.md5")
tr -d '\r' <"$RUN/serial-b.log" | grep -E "^$MARKER ROOTDEV /dev/nbd0 $md5_v2\$" >/dev/null ||
	die "guest B's /dev/nbd0 is not build $V2 byte for byte (want md5 $md5_v2)"
serial_ok b || die "guest B saw errors on its root device"
running "$SERVING_PID" || die "netroot (PID $SERVING_PID) is no longer running"
log "guest B booted $V2 in $((SECONDS - t_b)) s (total $((SECONDS - t0)) s)"
ok=1
log "passed: a running machine kept its root across a roll-forward$([[ $E2E_UPGRADE == 1 ]] && echo " and a binary upgrade"), a new boot got the new build (script total $SECONDS s)"
