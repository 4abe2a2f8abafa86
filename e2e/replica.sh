#!/bin/bash
# replica.sh checks that a qemu guest PXE-boots its root from a `netroot serve -store` replica
# whose only storage is an S3-compatible object store (a real Ceph RGW):
#
#   1. a throw-away single-node Ceph cluster with radosgw comes up (.ci/ceph-rgw) inside a
#      network namespace this script creates;
#   2. `netroot image push` uploads a KIS build (kernel, initrd, the root squashfs in chunks,
#      manifest, tag) into it; the KIS folder is then deleted, so no local copy is left;
#   3. `netroot serve -store s3://…` (no -kis, no disk cache) serves TFTP and NBD from the store;
#   4. the guest boots (dnsmasq DHCP -> iPXE -> pxelinux -> kernel + kiwi-overlay initrd -> root
#      over NBD), checks every file of its root against a manifest of MD5 sums made with the
#      image, prints the MD5 of all of /dev/nbd0 and a marker; the script compares that MD5 with
#      the build's, checks the kernel command line names the build's export, that the root is
#      an overlay over a squashfs from /dev/nbd0, and that the guest's kernel logged no I/O error;
#   5. AoE multipath (E2E_REPLICA_BOOTS has aoe): two replicas of the same store export the same
#      shelf.slot on the guest's segment (a bridge in the namespace, each replica on its own veth,
#      so two MACs answer); a second guest boots with root=overlay:aoe=e0.1, waits for a
#      go-ahead on ttyS1, drops its caches and reads every file and all of /dev/etherd/e0.1
#      again; while it reads, the script kills (SIGKILL) the replica that sent more AoE bytes:
#      the kernel's aoe driver must fail over to the other MAC with no I/O error.
#
# It reuses e2e/run.sh's guest kernel and initrd (e2e/build-guest.sh, cached in E2E_CACHE).
# Settings: E2E_REPLICA_BOOTS (default "nbd aoe"), E2E_TIMEOUT (seconds until the marker,
# default 400), E2E_ACCEL (default tcg),
# E2E_KEEP=1 (keep the work folder). Needs root; Debian packages in .ci/packages/e2e.txt and
# .ci/packages/store.txt. Run it under the e2e lock: flock /tmp/netroot-e2e.lock bash e2e/replica.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

E2E_TIMEOUT=${E2E_TIMEOUT:-400}
E2E_ACCEL=${E2E_ACCEL:-tcg}
E2E_KEEP=${E2E_KEEP:-0}
E2E_REPLICA_BOOTS=${E2E_REPLICA_BOOTS:-nbd aoe}

SERVER_IP=192.0.2.1
NETMASK=255.255.255.0
DHCP_RANGE=192.0.2.100,192.0.2.150
GUEST_MAC=52:54:00:e2:e2:01
GUEST_MAC_AOE=52:54:00:e2:e2:02
AOE_SHELF=0
AOE_SLOT=1
IMAGE_NAME=netroot-replica
VERSION=1.0.0
BUILD=$IMAGE_NAME.x86_64-$VERSION
STORE_URL=s3://netroot-e2e/site
APPEND_BASE="console=ttyS0 rd.shell=0 rd.emergency=poweroff"

log() { printf 'replica: %s\n' "$*" >&2; }
. "$HERE/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, tap device)"
export PATH="$PATH:/usr/sbin:/sbin"
need qemu-system-x86_64 qemu-system-x86
need dnsmasq dnsmasq-base
need mksquashfs squashfs-tools
need debootstrap debootstrap
need ip iproute2
need factor coreutils
need bridge iproute2
need go golang
need ceph-mon ceph-mon
need ceph-osd ceph-osd
need radosgw radosgw
need ceph ceph-common
[[ -x /bin/busybox ]] && [[ $(/bin/busybox --list 2>/dev/null | grep -cxE 'md5sum|awk|cut') == 3 ]] ||
	die "/bin/busybox not found or not static (Debian package busybox-static)"
[[ -f /usr/lib/PXELINUX/pxelinux.0 ]] || die "pxelinux.0 not found (Debian package pxelinux)"
[[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ]] || die "ldlinux.c32 not found (Debian package syslinux-common)"

RUN=$(mktemp -d /tmp/netroot-replica.XXXXXX)
chmod 755 "$RUN"
PIDS=()
NS=""
CEPH=""
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
	if [[ -n $CEPH ]]; then
		# Keep the cluster's logs when the run failed.
		if ((ok == 0)) || [[ $E2E_KEEP == 1 ]]; then
			CEPH_RGW_KEEP=1 "$REPO/.ci/ceph-rgw" stop "$CEPH" || true
		else
			"$REPO/.ci/ceph-rgw" stop "$CEPH" || true
		fi
		CEPH=""
	fi
	if [[ -n $NS ]]; then
		for p in $(ip netns pids "$NS" 2>/dev/null); do
			kill -KILL "$p" 2>/dev/null || true
		done
		ip netns del "$NS" 2>/dev/null || true
		NS=""
	fi
}

sweep_namespaces netroot-rep-

finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_all
	if ((rc != 0 || ok == 0)) || [[ $E2E_KEEP == 1 ]]; then
		[[ $E2E_KEEP == 1 ]] || find "$RUN" -type f \( -name '*.kernel' -o -name '*.initrd*' -o -name linux \
			-o -name initrd -o -name "$IMAGE_NAME.*" -o -name netroot -o -name random.bin \) -delete 2>/dev/null || true
		log "logs kept in $RUN"
	else
		rm -rf "$RUN"
	fi
	exit "$rc"
}
trap finish EXIT
trap 'log "interrupted"; exit 130' INT TERM

t_all=$SECONDS
guest=$(bash "$HERE/build-guest.sh" | tail -1)
[[ -s $guest/vmlinuz && -s $guest/initrd ]] || die "build-guest.sh gave no kernel/initrd"
kver=$(awk '$1 == "kernel" { print $2 }' "$guest/versions.txt")
log "guest: $guest (kernel $kver)"

MARKER="NETROOT-REP-$(date +%s)-$$-$RANDOM"

md5_blocks() { # KIWI's block list: blocksize = product of the smallest prime factors <= 8192
	local size=$1 bs=1 f
	for f in $(factor "$size" | cut -d: -f2); do
		((bs * f > 8192)) && break
		bs=$((bs * f))
	done
	echo "$((size / bs)) $bs"
}

# The KIS build: an init that prints the build, checks every file of the root against the
# manifest made here, prints the MD5 of the whole root device and powers off.
kis=$RUN/kis
tree=$RUN/rootfs
mkdir -p "$tree"/{bin,sbin,dev,proc,sys,run,tmp,etc,mnt,root,data} "$kis"
cp /bin/busybox "$tree/bin/busybox"
ln -s busybox "$tree/bin/sh"
head -c $((16 << 20)) /dev/urandom >"$tree/data/random.bin"
printf 'build %s\n' "$VERSION" >"$tree/etc/netroot-build"
cat >"$tree/sbin/init" <<EOF
#!/bin/sh
exec >/dev/console 2>&1 </dev/console
/bin/busybox mount -t proc proc /proc 2>/dev/null
echo "$MARKER BOOTED \$(/bin/busybox cat /etc/netroot-build)"
echo "cmdline: \$(/bin/busybox cat /proc/cmdline)"
echo "$MARKER MOUNTS BEGIN"
/bin/busybox cat /proc/mounts
echo "$MARKER MOUNTS END"
if /bin/busybox grep -q netroot_e2e_wait /proc/cmdline; then
	# The AoE multipath pass: show the paths the aoe driver knows, wait for the go-ahead byte on
	# ttyS1 (the host kills a replica first), then read everything from the device again.
	/bin/busybox mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
	for f in /sys/kernel/debug/aoe/e*; do [ -f "\$f" ] && echo "$MARKER PATHS \$f: \$(/bin/busybox tr '\\n' ' ' <"\$f")"; done
	exec 3</dev/ttyS1 && /bin/busybox stty -F /dev/ttyS1 raw -echo
	echo "$MARKER WAITING"
	/bin/busybox head -c 1 <&3 >/dev/null
	exec 3<&-
	echo 3 >/proc/sys/vm/drop_caches
	echo "$MARKER GO \$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
fi
cd /
if /bin/busybox md5sum -c /etc/manifest >/tmp/check.log 2>&1; then
	echo "$MARKER CHECK OK \$(/bin/busybox wc -l </etc/manifest) files at \$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
else
	echo "$MARKER CHECK FAILED"
	/bin/busybox grep -v ': OK\$' /tmp/check.log | /bin/busybox head -20
fi
rootdev=\$(/bin/busybox awk '\$3 == "squashfs" { print \$1; exit }' /proc/mounts)
echo "$MARKER ROOTDEV \$rootdev \$(/bin/busybox md5sum <\$rootdev | /bin/busybox cut -d' ' -f1)"
for f in /sys/kernel/debug/aoe/e*; do [ -f "\$f" ] && echo "$MARKER PATHS-AFTER \$f: \$(/bin/busybox tr '\\n' ' ' <"\$f")"; done
echo "$MARKER END \$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
/bin/busybox sync
/bin/busybox poweroff -f
/bin/busybox sleep 5
echo o >/proc/sysrq-trigger
EOF
chmod 755 "$tree/sbin/init"
printf 'ID=netroot-e2e\nNAME="netroot replica test root"\nVERSION_ID=%s\n' "$VERSION" >"$tree/etc/os-release"
(cd "$tree" && find . -type f ! -path ./etc/manifest -exec /bin/busybox md5sum {} + >etc/manifest)
mksquashfs "$tree" "$kis/$BUILD" -noappend -quiet -all-root -no-progress >"$RUN/mksquashfs.log" 2>&1 ||
	die "mksquashfs failed: $(cat "$RUN/mksquashfs.log")"
cp "$guest/vmlinuz" "$kis/$BUILD-$kver.kernel"
cp "$guest/initrd" "$kis/$BUILD.initrd.xz"
md5_image=$(md5sum <"$kis/$BUILD" | cut -d' ' -f1)
echo "$md5_image $(md5_blocks "$(stat -c %s "$kis/$BUILD")")" >"$kis/$BUILD.md5"
log "KIS build $BUILD ready ($(stat -c %s "$kis/$BUILD") byte root, md5 $md5_image, marker $MARKER)"

log "building examples/netroot"
(cd "$REPO" && go build -o "$RUN/netroot" ./examples/netroot) >"$RUN/go-build.log" 2>&1 ||
	die "go build ./examples/netroot failed: $(tail -20 "$RUN/go-build.log")"

NS=netroot-rep-$$
TAP=nrrep0
ip netns add "$NS"
in_ns ip link set lo up
in_ns ip tuntap add dev "$TAP" mode tap
in_ns ip addr add "$SERVER_IP/24" dev "$TAP"
in_ns ip link set "$TAP" up

# The object store, inside the namespace (its gateway listens on the namespace's 127.0.0.1).
t=$SECONDS
CEPH=$RUN/ceph
in_ns "$REPO/.ci/ceph-rgw" start "$CEPH" >"$RUN/ceph-rgw.log" 2>&1 ||
	die "ceph-rgw start failed: $(tail -20 "$RUN/ceph-rgw.log")"
set -a
# shellcheck disable=SC1091 # written by ceph-rgw
. "$CEPH/env"
set +a
log "Ceph RGW up in $((SECONDS - t)) s at $AWS_ENDPOINT_URL_S3"

t=$SECONDS
in_ns "$RUN/netroot" image push -create-bucket "$kis" "$STORE_URL" >"$RUN/push.log" 2>&1 ||
	die "netroot image push failed: $(tail -20 "$RUN/push.log")"
log "pushed in $((SECONDS - t)) s: $(tr '\n' ';' <"$RUN/push.log")"
grep -q "^tag $IMAGE_NAME.x86_64 -> $BUILD\$" "$RUN/push.log" || die "the push moved no tag to $BUILD"
# No local copy of the image from here on.
rm -rf "$kis" "$tree"

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

# stop_pids PID...: SIGTERM, then SIGKILL after 5 s; the PIDs leave PIDS.
stop_pids() {
	local p i keep=()
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "$@"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		[[ " $* " == *" $p "* ]] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
}

dnsmasq_on() { # dnsmasq_on INTERFACE
	start "dnsmasq-$1" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv \
		--no-hosts --user=root --group=root --interface="$1" --bind-interfaces \
		--dhcp-range="$DHCP_RANGE,$NETMASK,1h" --dhcp-boot="pxelinux.0,,$SERVER_IP" \
		--dhcp-leasefile="$RUN/dnsmasq.leases" --log-dhcp --log-facility=-
}

if [[ " $E2E_REPLICA_BOOTS " == *" nbd "* ]]; then
	dnsmasq_on "$TAP"
	mkdir -p "$RUN/tftp"
	t=$SECONDS
	start netroot "$RUN/netroot" serve -store "$STORE_URL" -tftp-root "$RUN/tftp" -server-ip "$SERVER_IP" \
		-append "$APPEND_BASE" -pxelinux-serial "0 115200"
	NETROOT_PID=${PIDS[-1]}
	wait_log 120 "$RUN/netroot.log" 'msg=ready' || die "netroot serve -store did not get ready"
	grep -q "nbd=$SERVER_IP:$BUILD" "$RUN/tftp/pxelinux.cfg/default" || die "pxelinux.cfg/default does not name $BUILD"
	log "replica ready in $((SECONDS - t)) s"

	t0=$SECONDS
	start qemu qemu-system-x86_64 -accel "$E2E_ACCEL" -m 1024 -smp 1 -boot n \
		-display none -monitor none -device sga -serial "file:$RUN/serial.log" \
		-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC" -no-reboot
	wait_log "$E2E_TIMEOUT" "$RUN/serial.log" "^$MARKER END( |\$)" || die "no marker from the guest"
	boot_s=$((SECONDS - t0))
	out=$(tr -d '\r' <"$RUN/serial.log")
	grep -E "^$MARKER BOOTED build $VERSION\$" <<<"$out" >/dev/null || die "the guest did not boot $BUILD"
	grep -E "^cmdline: .*root=overlay:nbd=$SERVER_IP:$BUILD( |\$)" <<<"$out" >/dev/null ||
		die "the guest's kernel command line does not name the $BUILD export"
	mounts=$(sed -n "/^$MARKER MOUNTS BEGIN\$/,/^$MARKER MOUNTS END\$/p" <<<"$out")
	grep -Eq '^/dev/nbd0 [^ ]+ squashfs ro[, ]' <<<"$mounts" || die "/proc/mounts shows no read-only squashfs from /dev/nbd0"
	grep -Eq '^[^ ]+ / overlay ' <<<"$mounts" || die "/ is not an overlayfs"
	grep -E "^$MARKER CHECK OK" <<<"$out" >/dev/null ||
		die "the guest's root did not check: $(grep -A20 "$MARKER CHECK" <<<"$out" | head -20)"
	grep -E "^$MARKER ROOTDEV /dev/nbd0 $md5_image\$" <<<"$out" >/dev/null ||
		die "the guest's /dev/nbd0 is not the pushed build byte for byte (want md5 $md5_image): $(grep "$MARKER ROOTDEV" <<<"$out")"
	bad=$(grep -E 'I/O error|nbd[0-9]+: (Receive|Send|Connection|Dead|Possible)|block nbd[0-9]+: .*(error|timed out|shutting down)|SQUASHFS error' <<<"$out" || true)
	[[ -z $bad ]] || die "the guest's kernel logged errors: $bad"
	kill -0 "$NETROOT_PID" 2>/dev/null || die "netroot serve -store exited"
	log "nbd passed: the guest booted $BUILD from the store replica in ${boot_s} s and read it byte-exact" \
		"($(grep -o 'CHECK OK.*' <<<"$out"), md5 $md5_image)"
	stop_pids "${PIDS[@]}"
fi

if [[ " $E2E_REPLICA_BOOTS " == *" aoe "* ]]; then
	# The guest's segment becomes a bridge: the tap, and one veth per replica (two MACs).
	BR=nrrepbr0
	in_ns ip addr flush dev "$TAP"
	in_ns ip link add "$BR" type bridge
	in_ns ip link set "$BR" type bridge stp_state 0 forward_delay 0
	in_ns ip link set "$TAP" master "$BR"
	in_ns ip addr add "$SERVER_IP/24" dev "$BR"
	in_ns ip link set "$BR" up
	for r in a b; do
		in_ns ip link add "nrrep$r" type veth peer name "nrrep${r}p"
		in_ns ip link set "nrrep${r}p" master "$BR"
		in_ns ip link set "nrrep${r}p" up
		in_ns ip link set "nrrep$r" up
	done
	dnsmasq_on "$BR"
	# Replica a serves TFTP (and NBD) to the guest; replica b only AoE (its TFTP and NBD stay
	# on loopback). Both export the store's build as e$AOE_SHELF.$AOE_SLOT.
	mkdir -p "$RUN/tftp-a" "$RUN/tftp-b"
	t=$SECONDS
	start netroot-a "$RUN/netroot" serve -store "$STORE_URL" -tftp-root "$RUN/tftp-a" -server-ip "$SERVER_IP" \
		-aoe-iface nrrepa -aoe-shelf "$AOE_SHELF" -aoe-slot "$AOE_SLOT" -default aoe \
		-append "$APPEND_BASE netroot_e2e_wait" -pxelinux-serial "0 115200"
	PID_A=${PIDS[-1]}
	start netroot-b "$RUN/netroot" serve -store "$STORE_URL" -tftp-root "$RUN/tftp-b" -server-ip "$SERVER_IP" \
		-tftp-addr 127.0.0.1:1069 -nbd=false \
		-aoe-iface nrrepb -aoe-shelf "$AOE_SHELF" -aoe-slot "$AOE_SLOT" -default aoe \
		-append "$APPEND_BASE netroot_e2e_wait" -pxelinux-serial "0 115200"
	PID_B=${PIDS[-1]}
	wait_log 120 "$RUN/netroot-a.log" 'msg=ready' || die "replica a did not get ready"
	wait_log 120 "$RUN/netroot-b.log" 'msg=ready' || die "replica b did not get ready"
	grep -q "root=overlay:aoe=e$AOE_SHELF.$AOE_SLOT" "$RUN/tftp-a/pxelinux.cfg/default" ||
		die "replica a's pxelinux.cfg/default does not boot from AoE e$AOE_SHELF.$AOE_SLOT"
	log "two AoE replicas ready in $((SECONDS - t)) s"

	mkfifo "$RUN/go-aoe.in" "$RUN/go-aoe.out"
	t0=$SECONDS
	start qemu-aoe qemu-system-x86_64 -accel "$E2E_ACCEL" -m 1024 -smp 1 -boot n \
		-display none -monitor none -device sga -serial "file:$RUN/serial-aoe.log" \
		-serial "pipe:$RUN/go-aoe" \
		-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC_AOE" -no-reboot
	wait_log "$E2E_TIMEOUT" "$RUN/serial-aoe.log" "^$MARKER WAITING\$" || die "the AoE guest did not boot to the go-ahead"
	boot_s=$((SECONDS - t0))
	out=$(tr -d '\r' <"$RUN/serial-aoe.log")
	grep -E "^cmdline: .*root=overlay:aoe=e$AOE_SHELF[.]$AOE_SLOT( |\$)" <<<"$out" >/dev/null ||
		die "the AoE guest's kernel command line does not name e$AOE_SHELF.$AOE_SLOT"
	mounts=$(sed -n "/^$MARKER MOUNTS BEGIN\$/,/^$MARKER MOUNTS END\$/p" <<<"$out")
	grep -Eq "^/dev/etherd/e$AOE_SHELF[.]$AOE_SLOT [^ ]+ squashfs ro[, ]" <<<"$mounts" ||
		die "/proc/mounts shows no read-only squashfs from /dev/etherd/e$AOE_SHELF.$AOE_SLOT"
	paths=$(grep -E "^$MARKER PATHS " <<<"$out" | sed "s/^$MARKER PATHS //" || true)
	tx_a=$(in_ns cat /sys/class/net/nrrepa/statistics/tx_bytes)
	tx_b=$(in_ns cat /sys/class/net/nrrepb/statistics/tx_bytes)
	mac_a=$(in_ns cat /sys/class/net/nrrepa/address)
	mac_b=$(in_ns cat /sys/class/net/nrrepb/address)
	log "AoE guest up in ${boot_s} s; bytes sent by replica a ($mac_a) $tx_a, b ($mac_b) $tx_b; driver's view: ${paths:-(no debugfs)}"
	((tx_a + tx_b > 200000)) || die "the replicas sent only $((tx_a + tx_b)) bytes: the guest did not boot over AoE"
	# Let the guest read everything again; while it reads from both, kill the replica that
	# served more, outright (no goodbye), so frames in flight to it are lost.
	if ((tx_a >= tx_b)); then victim=a victim_pid=$PID_A survivor=b; else victim=b victim_pid=$PID_B survivor=a; fi
	tx() { in_ns cat "/sys/class/net/nrrep$1/statistics/tx_bytes"; }
	victim_tx0=$(tx $victim)
	t1=$SECONDS
	printf g >"$RUN/go-aoe.in"
	for ((i = 0; i < 600; i++)); do
		(($(tx $victim) - victim_tx0 >= 2000000)) && break
		sleep 0.1
	done
	victim_read=$(($(tx $victim) - victim_tx0))
	kill -KILL "$victim_pid"
	survivor_tx0=$(tx $survivor)
	wait "$victim_pid" 2>/dev/null || true
	log "killed replica $victim (pid $victim_pid) after it had sent $victim_read bytes of the re-read"
	((victim_read >= 2000000)) || log "warning: replica $victim was not read from before the kill"
	wait_log "$E2E_TIMEOUT" "$RUN/serial-aoe.log" "^$MARKER END( |\$)" || die "the AoE guest did not finish reading after the kill"
	read_s=$((SECONDS - t1))
	out=$(tr -d '\r' <"$RUN/serial-aoe.log")
	grep -E "^$MARKER CHECK OK" <<<"$out" >/dev/null ||
		die "the AoE guest's root did not check after the failover: $(grep -A20 "$MARKER CHECK" <<<"$out" | head -20)"
	grep -E "^$MARKER ROOTDEV /dev/etherd/e$AOE_SHELF[.]$AOE_SLOT $md5_image\$" <<<"$out" >/dev/null ||
		die "the AoE guest's root device is not the pushed build byte for byte (want md5 $md5_image): $(grep "$MARKER ROOTDEV" <<<"$out")"
	bad=$(grep -E 'I/O error|SQUASHFS error|Buffer I/O|blk_update_request|aoe: .*(fail|no usable|down)' <<<"$out" || true)
	[[ -z $bad ]] || die "the AoE guest's kernel logged errors after the failover: $bad"
	survivor_tx=$(($(tx $survivor) - survivor_tx0))
	((survivor_tx > 1000000)) || die "replica $survivor sent only $survivor_tx bytes after the kill: the guest did not read from it"
	go_t=$(sed -nE "s/^$MARKER GO ([0-9.]+)\$/\\1/p" <<<"$out")
	check_t=$(sed -nE "s/^$MARKER CHECK OK .* at ([0-9.]+)\$/\\1/p" <<<"$out")
	end_t=$(sed -nE "s/^$MARKER END ([0-9.]+)\$/\\1/p" <<<"$out")
	after=$(grep -E "^$MARKER PATHS-AFTER " <<<"$out" | sed "s/^$MARKER PATHS-AFTER //" || true)
	kill -0 "$(if [[ $survivor == a ]]; then echo "$PID_A"; else echo "$PID_B"; fi)" 2>/dev/null || die "the surviving replica exited"
	aoe_lines=$(grep -E 'aoe: ' <<<"$out" | tr '\n' ';' || true)
	log "aoe passed: replica $victim was killed in the middle of the guest's reading every file and all of" \
		"/dev/etherd/e$AOE_SHELF.$AOE_SLOT (md5 $md5_image); replica $survivor sent $survivor_tx bytes after the kill; read in" \
		"$(awk -v a="$go_t" -v b="$end_t" 'BEGIN { printf "%.1f", b - a }') s by its clock ($read_s s here; files" \
		"$(awk -v a="$go_t" -v b="$check_t" 'BEGIN { printf "%.1f", b - a }') s including the failover, then the whole device" \
		"$(awk -v a="$check_t" -v b="$end_t" 'BEGIN { printf "%.1f", b - a }') s), no I/O error; driver's view after: ${after:-?};" \
		"kernel: $aoe_lines"
fi
ok=1
log "passed ($E2E_REPLICA_BOOTS); total $((SECONDS - t_all)) s"
