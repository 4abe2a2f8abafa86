#!/bin/bash
# Compares netroot's NBD server with nbd-server, nbdkit's file plugin and qemu-nbd, in the same
# run, on loopback, serving the same image held in memory (/dev/shm), and with nbdkit's memory
# plugin (no I/O at all) as the client-side ceiling. Workloads: nbdcopy reads and writes with one
# connection and with its default four, qemu-img convert both ways, and fio's nbd engine with
# 4 KiB random reads and writes at queue depth 32. Each figure is the median of REPEAT runs.
#
# Usage: bench/nbd/run.sh            (from the repository root; needs the Debian packages in
#                                      .ci/packages/nbd.txt and python3)
# Environment: SIZE (image bytes, default 1 GiB), REPEAT (default 3), FIO_SECONDS (default 5),
#              BACKEND (netroot's storage: file, mmap or memory; default file),
#              SERVERS (subset, default "netroot nbd-server nbdkit-file qemu-nbd ceiling").
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
for p in nbdcopy qemu-img fio nbdkit qemu-nbd python3; do
	command -v "$p" >/dev/null || { echo "missing $p" >&2; exit 2; }
done
NBD_SERVER=$(command -v nbd-server || echo /usr/sbin/nbd-server)

WORK=$(mktemp -d /dev/shm/netroot-nbd-bench.XXXXXX)
RESULTS=$WORK/results
SERVER_PID=
NBD_SERVER_PIDFILE=$WORK/nbd-server.pid
cleanup() {
	stop_server
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "building netroot's bench server" >&2
go build -o "$WORK/netroot-nbd" ./bench/nbd

IMG=$WORK/image.img
SRC=$WORK/source.img
OUT=$WORK/out.img
head -c "$SIZE" /dev/urandom >"$SRC"
cp "$SRC" "$IMG"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
	for _ in $(seq 200); do
		if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "server on port $1 did not start" >&2
	return 1
}

start_server() { # name port
	local name=$1 port=$2
	case $name in
	netroot)
		"$WORK/netroot-nbd" -addr "127.0.0.1:$port" -file "$IMG" -name bench -backend "$BACKEND" 2>>"$WORK/server.log" &
		SERVER_PID=$!
		;;
	nbd-server)
		cat >"$WORK/nbd-server.conf" <<-EOF
			[generic]
			port = $port
			listenaddr = 127.0.0.1
			[bench]
			exportname = $IMG
			flush = true
			fua = true
			trim = true
		EOF
		"$NBD_SERVER" -C "$WORK/nbd-server.conf" -p "$NBD_SERVER_PIDFILE"
		wait_port "$port"
		SERVER_PID=$(cat "$NBD_SERVER_PIDFILE")
		;;
	nbdkit-file)
		nbdkit -f -i 127.0.0.1 -p "$port" file file="$IMG" 2>>"$WORK/server.log" &
		SERVER_PID=$!
		;;
	qemu-nbd)
		qemu-nbd -f raw -b 127.0.0.1 -p "$port" -x bench --shared=16 --persistent "$IMG" 2>>"$WORK/server.log" &
		SERVER_PID=$!
		;;
	ceiling)
		nbdkit -f -i 127.0.0.1 -p "$port" --filter=noextents memory "$SIZE" 2>>"$WORK/server.log" &
		SERVER_PID=$!
		;;
	esac
	wait_port "$port"
}

stop_server() {
	if [ -n "${SERVER_PID:-}" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
		kill -9 "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
	fi
}

# seconds COMMAND...: wall time of one bounded run.
seconds() {
	local t0 t1
	t0=$(date +%s.%N)
	timeout "$STEP_TIMEOUT" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
	t1=$(date +%s.%N)
	python3 -c "print($t1-$t0)"
}

# rate URI WORKLOAD: prints the workload's figure (GB/s or kIOPS) for one run.
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
			print("%.2f" % (job[kind]["iops"] / 1000))
		EOF
		return
		;;
	esac
	python3 -c "print('%.3f' % ($SIZE/$s/1e9))"
}

WORKLOADS="read-nbdcopy-C1 read-nbdcopy read-qemu-img write-nbdcopy-C1 write-nbdcopy write-qemu-img randread-fio randwrite-fio"
: >"$RESULTS"
for server in $SERVERS; do
	port=$(free_port)
	echo "== $server on port $port" >&2
	start_server "$server" "$port"
	uri="nbd://127.0.0.1:$port/bench"
	for w in $WORKLOADS; do
		runs=()
		for _ in $(seq "$REPEAT"); do
			runs+=("$(rate "$uri" "$w")")
		done
		median=$(printf '%s\n' "${runs[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
		echo "$server $w $median" >>"$RESULTS"
		echo "   $w: ${runs[*]} -> $median" >&2
	done
	stop_server
done

python3 - "$RESULTS" "$SIZE" "$REPEAT" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    server, w, v = line.split()
    rows.setdefault(w, {})[server] = float(v)
print("NBD bench: image %d MiB in /dev/shm, median of %s runs; GB/s for copies, kIOPS for fio"
      % (int(sys.argv[2]) >> 20, sys.argv[3]))
peers = ["nbd-server", "nbdkit-file", "qemu-nbd"]
cols = ["netroot"] + peers + ["ceiling"]
print("%-18s" % "workload" + "".join("%12s" % c for c in cols) + "%14s%14s" % ("ours/best", "ours/ceiling"))
for w, r in rows.items():
    cells = "".join("%12s" % (("%.3f" % r[c]) if c in r else "-") for c in cols)
    best = max((r[p] for p in peers if p in r), default=0)
    ours = r.get("netroot", 0)
    ratio = ("%.2fx" % (ours / best)) if best and ours else "-"
    ceil = ("%.0f%%" % (100 * ours / r["ceiling"])) if r.get("ceiling") and ours else "-"
    print("%-18s" % w + cells + "%14s%14s" % (ratio, ceil))
EOF
