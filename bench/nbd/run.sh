#!/bin/bash
# Compares netroot's NBD server with nbd-server, nbdkit's file plugin and qemu-nbd, in the same
# run, on loopback, serving the same image held in memory (/dev/shm), and with nbdkit servers that
# do no I/O as the client-side ceiling: the memory plugin (all workloads) and the pattern plugin
# (reads). The ceiling of a workload is the better of the two, except for qemu-img convert reads,
# where only the pattern plugin counts: its data is not zero, so qemu-img writes all of it as it
# does with the image's random data, while the memory plugin's zeroes it would skip. Workloads: nbdcopy reads and writes with one
# connection and with its default four, qemu-img convert both ways, and fio's nbd engine with
# 4 KiB random reads and writes at queue depth 32. Each figure is the median of REPEAT runs.
#
# Fairness: every server runs for the whole benchmark, each on its own copy of the image, and the
# runs are interleaved: for each workload and repeat, every server gets one run, in an order that
# rotates from one repeat to the next, so no server always runs first (on a cold page cache or a
# machine that is just getting busy); an untimed run of each workload goes first. The server's CPU time for each run (user+system, children
# included, from /proc) is recorded too: CPU seconds per GB (per million requests for fio) is the
# load-independent figure.
#
# Usage: bench/nbd/run.sh            (from the repository root; needs the Debian packages in
#                                      .ci/packages/nbd.txt and python3)
# Environment: SIZE (image bytes, default 1 GiB), REPEAT (default 3), FIO_SECONDS (default 5),
#              BACKEND (netroot's storage: file, mmap or memory; default file),
#              SERVERS (subset, default "netroot nbd-server nbdkit-file qemu-nbd ceiling"; ceiling
#              stands for ceiling-memory and ceiling-pattern),
#              WORKLOADS (subset of the eight, default all),
#              NETROOT_ALT (a second build of ./bench/nbd, e.g. from another commit: add netroot-alt to
#              SERVERS to compare two versions of netroot in the same interleaved run).
# Every step runs under timeout(1); the whole run is bounded by roughly
# servers x workloads x REPEAT x (copy time or FIO_SECONDS).
set -euo pipefail

SIZE=${SIZE:-$((1 << 30))}
REPEAT=${REPEAT:-3}
FIO_SECONDS=${FIO_SECONDS:-5}
BACKEND=${BACKEND:-file}
SERVERS=${SERVERS:-"netroot nbd-server nbdkit-file qemu-nbd ceiling"}
STEP_TIMEOUT=300

cd "$(dirname "$0")/../.."
. bench/nbd/lib.sh
for p in nbdcopy qemu-img fio nbdkit qemu-nbd python3; do
	command -v "$p" >/dev/null || { echo "missing $p" >&2; exit 2; }
done
NBD_SERVER=$(command -v nbd-server || echo /usr/sbin/nbd-server)

WORK=$(mktemp -d /dev/shm/netroot-nbd-bench.XXXXXX)
RESULTS=$WORK/results
declare -A PID PORT
cleanup() {
	for name in "${!PID[@]}"; do stop_server "$name"; done
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "building netroot's bench server" >&2
go build -o "$WORK/netroot-nbd" ./bench/nbd

SRC=$WORK/source.img
OUT=$WORK/out.img
head -c "$SIZE" /dev/urandom >"$SRC"

start_server() { # name: starts it on a free port with its own copy of the image
	local name=$1 port img=$WORK/$1.img
	port=$(free_port)
	[ "${name#ceiling}" != "$name" ] || cp "$SRC" "$img"
	case $name in
	netroot)
		"$WORK/netroot-nbd" -addr "127.0.0.1:$port" -file "$img" -name bench -backend "$BACKEND" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	netroot-alt)
		"$NETROOT_ALT" -addr "127.0.0.1:$port" -file "$img" -name bench -backend "$BACKEND" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	nbd-server)
		cat >"$WORK/nbd-server.conf" <<-EOF
			[generic]
			port = $port
			listenaddr = 127.0.0.1
			[bench]
			exportname = $img
			flush = true
			fua = true
			trim = true
		EOF
		"$NBD_SERVER" -C "$WORK/nbd-server.conf" -p "$WORK/nbd-server.pid"
		wait_port "$port"
		PID[$name]=$(cat "$WORK/nbd-server.pid")
		;;
	nbdkit-file)
		nbdkit -f -i 127.0.0.1 -p "$port" file file="$img" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	qemu-nbd)
		qemu-nbd -f raw -b 127.0.0.1 -p "$port" -x bench --shared=16 --persistent "$img" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	ceiling-pattern)
		nbdkit -f -i 127.0.0.1 -p "$port" pattern "$SIZE" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	ceiling-memory)
		nbdkit -f -i 127.0.0.1 -p "$port" --filter=noextents memory "$SIZE" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	esac
	PORT[$name]=$port
	wait_port "$port"
}

# seconds COMMAND...: wall time of one bounded run.
seconds() {
	local t0 t1
	t0=$(date +%s.%N)
	timeout "$STEP_TIMEOUT" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
	t1=$(date +%s.%N)
	python3 -c "print($t1-$t0)"
}

# rate URI WORKLOAD: prints the workload's figure for one run (GB/s, or kIOPS for fio) and
# its amount of work (GB, or million requests).
rate() {
	local uri=$1 w=$2 s
	case $w in
	read-nbdcopy-C1) s=$(seconds nbdcopy -C 1 "$uri" null:) ;;
	read-nbdcopy) s=$(seconds nbdcopy "$uri" null:) ;;
	read-qemu-img) s=$(seconds qemu-img convert -f raw -O raw "$uri" "$OUT"); rm -f "$OUT" ;;
	write-nbdcopy-C1) s=$(seconds nbdcopy -C 1 "$SRC" "$uri") ;;
	write-nbdcopy) s=$(seconds nbdcopy "$SRC" "$uri") ;;
	write-qemu-img) s=$(seconds qemu-img convert -n -f raw -O raw "$SRC" "$uri") ;;
	randread-fio | randwrite-fio)
		timeout "$STEP_TIMEOUT" fio --name=bench --ioengine=nbd --uri="$uri" --rw="${w%-fio}" \
			--bs=4k --iodepth=32 --size="$SIZE" --runtime="$FIO_SECONDS" --time_based \
			--output-format=json >"$WORK/fio.json" 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
		python3 - "$WORK/fio.json" "${w%%-*}" <<-'EOF'
			import json, sys
			text = open(sys.argv[1]).read()
			job = json.loads(text[text.index("{"):])["jobs"][0]
			kind = "read" if sys.argv[2] == "randread" else "write"
			print("%.2f %.4f" % (job[kind]["iops"] / 1000, job[kind]["total_ios"] / 1e6))
		EOF
		return
		;;
	esac
	python3 -c "print('%.3f %.4f' % ($SIZE/$s/1e9, $SIZE/1e9))"
}

WORKLOADS=${WORKLOADS:-"read-nbdcopy-C1 read-nbdcopy read-qemu-img write-nbdcopy-C1 write-nbdcopy write-qemu-img randread-fio randwrite-fio"}
read -ra servers <<<"${SERVERS/ceiling/ceiling-memory ceiling-pattern}"
for server in "${servers[@]}"; do
	start_server "$server"
	echo "== $server on port ${PORT[$server]}" >&2
done
TICK=$(getconf CLK_TCK)
: >"$RESULTS"
for w in $WORKLOADS; do
	# One untimed run first: the first run of a workload is often slow whichever server it
	# meets (the client's first start, the output file's first pages), and it must not be
	# counted against the server that happens to be first in the rotation.
	warm=${servers[0]}
	[ "$w" != read-qemu-img ] || [ "$warm" != ceiling-memory ] || warm=${servers[1]}
	rate "nbd://127.0.0.1:${PORT[$warm]}/bench" "$w" >/dev/null
	for rep in $(seq "$REPEAT"); do
		line="   $w #$rep:"
		for i in $(seq 0 $((${#servers[@]} - 1))); do
			server=${servers[$(((i + rep - 1) % ${#servers[@]}))]}
			case $server-$w in
			ceiling-pattern-write* | ceiling-pattern-randwrite* | ceiling-memory-read-qemu-img) continue ;;
			esac
			t0=$(cputicks "$server")
			read -r fig work <<<"$(rate "nbd://127.0.0.1:${PORT[$server]}/bench" "$w")"
			t1=$(cputicks "$server")
			cpu=$(python3 -c "print('%.3f' % (($t1 - $t0) / $TICK / $work))")
			echo "$server $w $fig $cpu" >>"$RESULTS"
			line+=" $server $fig ($cpu s)"
		done
		echo "$line" >&2
	done
done

python3 - "$RESULTS" "$SIZE" "$REPEAT" <<'EOF'
import statistics, sys
figs, cpus = {}, {}
for line in open(sys.argv[1]):
    server, w, v, c = line.split()
    figs.setdefault(w, {}).setdefault(server, []).append(float(v))
    cpus.setdefault(w, {}).setdefault(server, []).append(float(c))
print("NBD bench: image %d MiB in /dev/shm, median of %s interleaved runs; GB/s for copies, kIOPS for fio"
      % (int(sys.argv[2]) >> 20, sys.argv[3]))
peers = ["nbd-server", "nbdkit-file", "qemu-nbd"]
cols = ["netroot"] + (["netroot-alt"] if any("netroot-alt" in r for r in figs.values()) else []) + peers + ["ceiling"]
# The ceiling of a workload is the better no-I/O server's (see the top of run.sh).
for w, r in figs.items():
    have = [c for c in ("ceiling-memory", "ceiling-pattern") if c in r]
    if have:
        best = max(have, key=lambda c: statistics.median(r[c]))
        r["ceiling"], cpus[w]["ceiling"] = r[best], cpus[w][best]
print("%-18s" % "workload" + "".join("%12s" % c for c in cols) + "%12s%14s" % ("ours/best", "ours/ceiling"))
for w, r in figs.items():
    r = {k: statistics.median(v) for k, v in r.items()}
    cells = "".join("%12s" % (("%.3f" % r[c]) if c in r else "-") for c in cols)
    best = max((r[p] for p in peers if p in r), default=0)
    ours = r.get("netroot", 0)
    ratio = ("%.2fx" % (ours / best)) if best and ours else "-"
    ceil = ("%.0f%%" % (100 * ours / r["ceiling"])) if r.get("ceiling") and ours else "-"
    print("%-18s" % w + cells + "%12s%14s" % (ratio, ceil))
print()
print("server CPU seconds per GB (copies) or per million requests (fio), medians")
print("%-18s" % "workload" + "".join("%12s" % c for c in cols))
for w, r in cpus.items():
    print("%-18s" % w + "".join("%12s" % (("%.3f" % statistics.median(r[c])) if c in r else "-") for c in cols))
EOF
