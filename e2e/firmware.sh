#!/bin/bash
# firmware.sh boots a qemu guest with every kind of firmware netroot serves, with the boot
# information coming only from netroot's proxyDHCP, and checks each came up on its NBD root:
#
#   bios-http  SeaBIOS + iPXE option ROM -> proxyDHCP: http://SERVER/boot.ipxe -> kernel and
#              initrd over HTTP
#   bios-tftp  SeaBIOS + iPXE option ROM -> proxyDHCP (-dhcp-loader pxelinux): pxelinux.0 ->
#              kernel and initrd over TFTP (blksize 1468, windowsize as pxelinux asks)
#   uefi-sb    OVMF with Microsoft's keys enrolled and Secure Boot enforced (OVMF_CODE_4M.ms.fd,
#              a copy of OVMF_VARS_4M.ms.fd, q35 with SMM), OVMF's own network stack (no iPXE
#              ROM), UEFI PXE -> proxyDHCP: Debian's signed shim over TFTP -> signed GRUB
#              (grub/grub.cfg) -> Debian's signed kernel and the initrd over TFTP; the guest
#              reports /sys/firmware/efi and the SecureBoot variable. Debian's GRUB 2.06 takes its
#              TFTP server from the DHCP server's ACK (next-server), not from the proxyDHCP offer
#              (GRUB bug #55636; Fedora carries a patch), so in this boot dnsmasq runs on
#              netroot's address, as a site DHCP server on the boot server's host would.
#   uefi-http  OVMF without Secure Boot (OVMF_CODE_4M.fd, a copy of OVMF_VARS_4M.fd), OVMF's own
#              network stack (no iPXE ROM), UEFI HTTP boot (OVMF's PXE turned off through
#              fw_cfg) -> proxyDHCP "HTTPClient" offer: http://SERVER/snponly.efi (Debian's
#              ipxe) -> iPXE asks again and gets http://SERVER/boot.ipxe -> kernel and initrd over
#              HTTP. dnsmasq runs on a different address from netroot: nothing needs next-server.
#              iPXE's "Configuring" step ends only when its IPv6 autoconfiguration gives up
#              soliciting a router (none here): ~20 s under TCG after its DHCP exchange ended,
#              in every iPXE boot (bios-http too). With dnsmasq also sending router
#              advertisements, uefi-http reached the kernel after 18.0 s instead of 35-40 s.
#   uefi-ipxe  (not in the default list) the same firmware with UEFI PXE and -efi-loader ipxe:
#              snponly.efi over TFTP from the proxyDHCP offer -> iPXE -> boot.ipxe over HTTP.
#   uefi-sb-http  (not in the default list) the same firmware with UEFI HTTP boot (OVMF's PXE
#              turned off through fw_cfg): proxyDHCP "HTTPClient" offer -> shim and GRUB over
#              HTTP with Secure Boot; Debian's GRUB 2.06 then finds no configuration and stops
#              at its prompt, so this boot fails today.
#
# Each boot runs in a network namespace with a tap device holding 192.0.2.2/24 (first, for
# dnsmasq, except in uefi-sb) and 192.0.2.1/24 (netroot). dnsmasq hands out addresses only, with
# no boot options, so a guest can only learn what to load from netroot's proxyDHCP. The root image is always
# served over NBD by `netroot serve`.
#
# Settings: E2E_BOOTS (default "bios-http bios-tftp uefi-sb uefi-http"), E2E_TIMEOUT (seconds per boot,
# default 600), E2E_ACCEL (default tcg), E2E_LOG_LEVEL (netroot's, default info), E2E_CACHE (guest
# cache, see build-guest.sh), E2E_KEEP=1.
# Prints per boot the time from qemu start to the kernel's first line (firmware, loaders and
# the kernel and initrd transfers) and to the guest's marker, and the HTTP/TFTP ratio.
# Needs root; Debian packages in .ci/packages/e2e.txt, .ci/packages/dhcp.txt and
# .ci/packages/fw2.txt. Run it under
# `flock /tmp/netroot-e2e.lock`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

E2E_BOOTS=${E2E_BOOTS:-bios-http bios-tftp uefi-sb uefi-http}
E2E_TIMEOUT=${E2E_TIMEOUT:-600}
E2E_ACCEL=${E2E_ACCEL:-tcg}
E2E_KEEP=${E2E_KEEP:-0}
E2E_LOG_LEVEL=${E2E_LOG_LEVEL:-info}

SERVER_IP=192.0.2.1
SITE_IP=192.0.2.2
GUEST_MAC=52:54:00:e2:e0:02
IMAGE_NAME=netroot-e2e
IMAGE_VERSION=1.0.0
APPEND_BASE="console=ttyS0 rd.shell=0 rd.emergency=poweroff"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.ms.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
OVMF_CODE_NOSB=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS_NOSB=/usr/share/OVMF/OVMF_VARS_4M.fd

log() { printf 'e2e-firmware: %s\n' "$*" >&2; }
. "$HERE/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, tap device, ports 67 and 69)"
need qemu-system-x86_64 qemu-system-x86
need dnsmasq dnsmasq-base
need mksquashfs squashfs-tools
need debootstrap debootstrap
need ip iproute2
need factor coreutils
need go golang
[[ -x /bin/busybox ]] || die "/bin/busybox not found (Debian package busybox-static)"
boots=()
for b in ${E2E_BOOTS//,/ }; do
	case $b in
	bios-http | bios-tftp) boots+=("$b") ;;
	uefi-sb | uefi-sb-http)
		[[ -f $OVMF_CODE && -f $OVMF_VARS ]] || die "$OVMF_CODE not found (Debian package ovmf)"
		[[ -f /usr/lib/shim/shimx64.efi.signed ]] || die "signed shim not found (Debian package shim-signed)"
		[[ -f /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed ]] ||
			die "signed GRUB not found (Debian package grub-efi-amd64-signed)"
		boots+=("$b")
		;;
	uefi-http | uefi-ipxe)
		[[ -f $OVMF_CODE_NOSB && -f $OVMF_VARS_NOSB ]] || die "$OVMF_CODE_NOSB not found (Debian package ovmf)"
		[[ -f /usr/lib/ipxe/snponly.efi ]] || die "/usr/lib/ipxe/snponly.efi not found (Debian package ipxe)"
		boots+=("$b")
		;;
	*) die "E2E_BOOTS: unknown boot \"$b\" (want bios-http, bios-tftp, uefi-sb, uefi-http, uefi-ipxe or uefi-sb-http)" ;;
	esac
done

RUN=$(mktemp -d /tmp/netroot-e2e-fw.XXXXXX)
chmod 755 "$RUN"
PIDS=()
NS=""
failed=0

stop_boot() {
	local p i
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
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
		for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
		ip netns del "$NS" 2>/dev/null || true
		NS=""
	fi
}
finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_boot
	if ((rc != 0 || failed != 0)) || [[ $E2E_KEEP == 1 ]]; then
		if [[ $E2E_KEEP != 1 ]]; then
			find "$RUN" -type f \( -name '*.kernel' -o -name '*.initrd*' -o -name linux -o -name initrd \
				-o -name "$IMAGE_NAME.*-$IMAGE_VERSION" -o -name netroot -o -name '*.fd' \) -delete 2>/dev/null || true
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
# Guest: Debian's signed kernel and a dracut initrd with kiwi-overlay (build-guest.sh), and a
# busybox root whose init reports the firmware.

guest=$(bash "$HERE/build-guest.sh" | tail -1)
[[ -s $guest/vmlinuz && -s $guest/initrd ]] || die "build-guest.sh gave no kernel/initrd"
kver=$(awk '$1 == "kernel" { print $2 }' "$guest/versions.txt")
log "guest: $guest (kernel $kver)"

MARKER="NETROOT-E2E-FW-$(date +%s)-$$-$RANDOM"
tree=$RUN/rootfs
mkdir -p "$tree"/{bin,sbin,dev,proc,sys,run,tmp,etc,mnt,root}
cp /bin/busybox "$tree/bin/busybox"
ln -s busybox "$tree/bin/sh"
cat >"$tree/sbin/init" <<EOF
#!/bin/sh
exec >/dev/console 2>&1 </dev/console
bb=/bin/busybox
\$bb mount -t proc proc /proc 2>/dev/null
\$bb mount -t sysfs sysfs /sys 2>/dev/null
echo "$MARKER BEGIN"
echo "cmdline: \$(\$bb cat /proc/cmdline)"
if [ -d /sys/firmware/efi ]; then
	echo "firmware: efi"
	[ -d /sys/firmware/efi/efivars/. ] && [ -n "\$(\$bb ls /sys/firmware/efi/efivars 2>/dev/null)" ] ||
		\$bb mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
	v=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
	if [ -f \$v ]; then
		# 4 bytes of attributes, then the value: 1 when Secure Boot is enforced.
		set -- \$(\$bb od -An -tu1 \$v)
		echo "secureboot-var: \$5 (bytes: \$*)"
	else
		echo "secureboot-var: unreadable"
	fi
	echo "lockdown: \$(\$bb cat /sys/kernel/security/lockdown 2>/dev/null)"
else
	echo "firmware: bios"
fi
\$bb dmesg | \$bb grep -i 'secure boot' | \$bb sed 's/^/dmesg: /'
\$bb cat /proc/mounts
echo "$MARKER END"
\$bb sync
\$bb poweroff -f
\$bb sleep 5
echo o >/proc/sysrq-trigger
EOF
chmod 755 "$tree/sbin/init"
printf 'ID=netroot-e2e\nNAME="netroot e2e test root"\nVERSION_ID=%s\n' "$IMAGE_VERSION" >"$tree/etc/os-release"

kis=$RUN/kis
mkdir -p "$kis"
base=$IMAGE_NAME.x86_64-$IMAGE_VERSION
image=$kis/$base
mksquashfs "$tree" "$image" -noappend -quiet -all-root -no-progress >"$RUN/mksquashfs.log" 2>&1 ||
	die "mksquashfs failed: $(cat "$RUN/mksquashfs.log")"
cp "$guest/vmlinuz" "$kis/$base-$kver.kernel"
cp "$guest/initrd" "$kis/$base.initrd.xz"
md5_blocks() { # KIWI's block list: blocksize = product of the smallest prime factors <= 8192
	local size=$1 bs=1 f
	for f in $(factor "$size" | cut -d: -f2); do
		((bs * f > 8192)) && break
		bs=$((bs * f))
	done
	echo "$((size / bs)) $bs"
}
echo "$(md5sum <"$image" | cut -d' ' -f1) $(md5_blocks "$(stat -c %s "$image")")" >"$kis/$base.md5"

log "building examples/netroot"
(cd "$REPO" && go build -o "$RUN/netroot" ./examples/netroot) >"$RUN/go-build.log" 2>&1 ||
	die "go build ./examples/netroot failed: $(tail -20 "$RUN/go-build.log")"

# ---------------------------------------------------------------------------------------------
# One boot

n=0
results=()
declare -A ktimes
listening() { [[ -n $(in_ns ss -Hln --"$1" "sport = :$2") ]]; }

check_guest() { # check_guest BOOT
	local boot=$1 out=$bdir/guest-output.txt
	tr -d '\r' <"$bdir/serial.log" | sed -n "/^$MARKER BEGIN\$/,/^$MARKER END\$/p" >"$out"
	grep -Eq '^/dev/nbd0 [^ ]+ squashfs ro[, ]' "$out" || { log "$boot: no read-only squashfs from /dev/nbd0"; return 1; }
	grep -Eq '^[^ ]+ / overlay ' "$out" || { log "$boot: / is not an overlayfs"; return 1; }
	case $boot in
	bios-*) grep -qx 'firmware: bios' "$out" || { log "$boot: guest did not boot from BIOS"; return 1; } ;;
	uefi-sb*)
		grep -qx 'firmware: efi' "$out" || { log "$boot: /sys/firmware/efi missing"; return 1; }
		grep -q '^secureboot-var: 1 ' "$out" || { log "$boot: SecureBoot variable is not 1: $(grep secureboot "$out")"; return 1; }
		;;
	uefi-http | uefi-ipxe)
		grep -qx 'firmware: efi' "$out" || { log "$boot: /sys/firmware/efi missing"; return 1; }
		# iPXE came from netroot, and then the kernel and initrd over HTTP.
		local via='http: request.* file=snponly\.efi status=200'
		[[ $boot == uefi-ipxe ]] && via='client fetched.* file=snponly\.efi'
		grep -Eq "$via" "$bdir/netroot.log" || { log "$boot: netroot's log shows no snponly.efi sent"; return 1; }
		grep -Eq 'http: request.* file=boot/[^ ]*/linux status=200' "$bdir/netroot.log" ||
			{ log "$boot: netroot served no kernel over HTTP"; return 1; }
		;;
	esac
	# Where the boot information came from: the proxy answered, dnsmasq sent no file.
	grep -q 'dhcp: answered' "$bdir/netroot.log" ||
		{ log "$boot: netroot's proxyDHCP answered nothing"; return 1; }
}

boot_one() { # boot_one BOOT
	local boot=$1 tap status=FAIL secs=- kernel=- t0 t1 qpid i flags=() qemu=()
	n=$((n + 1))
	tap=nrfw$n
	bdir=$RUN/$boot
	mkdir -p "$bdir/tftp"
	log "[$boot] starting"
	NS=netroot-e2e-fw-$$-$n
	ip netns add "$NS"
	in_ns ip link set lo up
	in_ns ip tuntap add dev "$tap" mode tap
	[[ $boot == uefi-sb ]] || in_ns ip addr add "$SITE_IP/24" dev "$tap"
	in_ns ip addr add "$SERVER_IP/24" dev "$tap"
	in_ns ip link set "$tap" up
	# The site's DHCP server: addresses only.
	start dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv \
		--no-hosts --user=root --group=root --interface="$tap" --bind-interfaces \
		--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h \
		--dhcp-leasefile="$bdir/dnsmasq.leases" --log-dhcp --log-facility=- --pid-file="$bdir/dnsmasq.pid"
	case $boot in
	bios-tftp) flags=(-dhcp-loader pxelinux) ;;
	uefi-ipxe) flags=(-efi-loader ipxe) ;;
	esac
	start netroot "$RUN/netroot" serve -log-level "$E2E_LOG_LEVEL" -kis "$kis" -tftp-root "$bdir/tftp" -server-ip "$SERVER_IP" \
		-tftp-addr "$SERVER_IP:69" -nbd-addr "$SERVER_IP:10809" -http-addr "$SERVER_IP:80" \
		-dhcp proxy -dhcp-iface "$tap" -append "$APPEND_BASE" -pxelinux-serial "0 115200" "${flags[@]}"
	case $boot in
	bios-*)
		qemu=(-boot n -device sga -device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC")
		;;
	uefi-sb*)
		cp "$OVMF_VARS" "$bdir/vars.fd"
		qemu=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on
			-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
			-drive "if=pflash,format=raw,unit=1,file=$bdir/vars.fd"
			-boot n -device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC,romfile="
			-fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=n)
		if [[ $boot == uefi-sb-http ]]; then
			qemu+=(-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=n)
		fi
		;;
	uefi-http | uefi-ipxe)
		cp "$OVMF_VARS_NOSB" "$bdir/vars.fd"
		qemu=(-machine q35
			-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE_NOSB"
			-drive "if=pflash,format=raw,unit=1,file=$bdir/vars.fd"
			-boot n -device "virtio-net-pci,netdev=n0,mac=$GUEST_MAC,romfile="
			-fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=n)
		if [[ $boot == uefi-http ]]; then
			qemu+=(-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=n)
		fi
		;;
	esac
	if wait_for 120 "netroot's grub/grub.cfg" test -s "$bdir/tftp/grub/grub.cfg" &&
		wait_for 30 "netroot TFTP" listening udp 69 && wait_for 30 "netroot HTTP" listening tcp 80 &&
		wait_for 30 "netroot NBD" listening tcp 10809 && wait_for 30 "DHCP on :67 and :4011" listening udp 4011; then
		t0=$(date +%s.%N)
		start qemu qemu-system-x86_64 -accel "$E2E_ACCEL" -m 1024 -smp 1 -display none -monitor none \
			-serial "file:$bdir/serial.log" -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
			-no-reboot "${qemu[@]}"
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
			sleep 0.2
		done
		if [[ $secs == - ]]; then
			log "[$boot] no marker; last serial lines:"
			[[ -f $bdir/serial.log ]] && tr -d '\r' <"$bdir/serial.log" |
				sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; /^[[:space:]]*$/d' | tail -25 | sed 's/^/    /' >&2
		else
			for ((i = 0; i < 100; i++)); do
				kill -0 "$qpid" 2>/dev/null || break
				sleep 0.1
			done
			check_guest "$boot" && status=ok
		fi
	fi
	stop_boot
	[[ $status == ok ]] || failed=1
	ktimes[$boot]=$kernel
	results+=("$(printf '%-10s %-5s %9s %9s' "$boot" "$status" "$kernel" "$secs")")
	log "[$boot] $status: kernel started after ${kernel}s, marker after ${secs}s"
}

total_start=$SECONDS
for boot in "${boots[@]}"; do
	boot_one "$boot"
done

echo
echo "kernel-s: qemu start to the kernel's first line (firmware, proxyDHCP, boot loaders, kernel"
echo "and initrd transfers); marker-s: to the guest's marker on its NBD root. Host clock."
printf '%-10s %-5s %9s %9s\n' boot result kernel-s marker-s
printf '%s\n' "${results[@]}"
a=${ktimes[bios-http]:--} b=${ktimes[bios-tftp]:--}
if [[ $a != - && $b != - ]]; then
	awk -v a="$a" -v b="$b" 'BEGIN { printf "firmware start to kernel start: HTTP %.1f s, TFTP %.1f s, ratio %.2f\n", a, b, a / b }'
fi
echo "total $((SECONDS - total_start)) s"
if ((failed)); then
	log "FAILED"
	exit 1
fi
log "all boots passed"
