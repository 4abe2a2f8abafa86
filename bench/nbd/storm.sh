#!/bin/bash
# A boot storm as an NBD server sees it: CLIENTS connections at once, each reading a 256 MiB
# image the way the kernel's NBD client does under squashfs (128 KiB reads, mostly sequential,
# some random jumps), against netroot's NBD server, nbd-server (one process per client) and
# nbdkit's file plugin, all serving read-only copies of the same image held in memory (/dev/shm).
#
# CLIENT_MODE=procs (the default): each client is a fio process of its own with one nbd job and
# its own connection (fio's nbd engine, one libnbd handle): rw=randread with percentage_random=10 (90% of the reads continue
# where the last ended), bs=128k, iodepth=IODEPTH, the whole 256 MiB once. All N processes are
# started first and wait on a shared lock the script holds; letting go of it is the storm's start,
# as when N machines are powered on at once. Every server runs for the whole benchmark and the
# storms are interleaved: each round runs one storm per server, in an order that rotates from
# round to round; one untimed storm goes first.
#
# A client's completion time is what a booting machine sees: from the storm's start until its fio
# process has exited after its last byte (wall clock, `date` as each process exits), connecting
# included. A client failed if fio failed (could not connect, an I/O error), read less than the
# image, or was not done CLIENT_TIMEOUT seconds after the start (then it is killed); a failed
# client never booted, so it counts as never done (inf) in p50/p99 and is also counted apart.
# fio's own job_runtime (its clock starts once the client is connected) is reported beside, as
# "fio p50/p99", over the clients that completed.
#
# CLIENT_MODE=jobs: one fio process runs the N clients as N nbd jobs (threads; the same job, one
# connection each), so the clients cost the 2 shared cores far less than N processes do (a client
# per process makes the aggregate client-bound). The storm's start is the script's clock just
# before it launches fio (fio's start-up counts against every server alike) and a client's
# completion time runs from there to its last I/O: the last timestamp of its per-I/O latency log
# (write_lat_log, log_unix_epoch=1: Unix epoch ms). A client failed if its log is missing or
# holds less than the image, fio failed or reported an error for the job, or its last I/O came
# after CLIENT_TIMEOUT (fio is killed then). The logs are written to $WORK and deleted once read
# (KEEP=dir copies them to dir/logs/). The storm's end is its last client's last I/O.
#
# Per storm: aggregate MB/s (all clients' bytes over the storm's wall time, from its start to
# the last client's end), p50 and p99 of the completion times, fio's p50 and p99, the server's
# peak memory while the storm ran (the sum of the proportional set size, PSS, of the server's
# process and all its children, sampled every 0.1 s, minus what it used idle before the storm;
# PSS so that nbd-server's forked children are not counted once per child for the pages they
# share) divided by CLIENTS, the server's CPU seconds per GB read (user+system, reaped children
# included), how many clients failed, and when the last client that completed was done. The
# table gives the median of ROUNDS and [min-max], and netroot's figure over each peer's within
# the same round (median and range). Per-client lines (server, clients, round, client, seconds
# from the start, fio's job_runtime, exit status) go to $WORK/results.clients (KEEP=dir copies
# the results there).
#
# The storm runs in a network namespace of its own whose loopback has SYN cookies off. nbd-server
# listens with a backlog of 10: when 50 clients connect at once, the kernel drops the SYNs that
# find its accept queue full and the clients try again one, three, seven seconds later (what a
# storm of machines meets); with SYN cookies on (Debian's default) a client whose handshake
# completed by cookie while the queue was full is never accepted and waits forever for the
# server's greeting.
#
# All clients connect from 127.0.0.1, where a storm's machines have an address each, so netroot
# runs without its limit on connections negotiating at once from one address (32 by default).
#
# Usage: bench/nbd/storm.sh   (from the repository root, as root: unshare -n, sysctl; needs
#                              .ci/packages/nbd.txt, iproute2, util-linux)
# Environment: CLIENT_MODE (procs or jobs, default procs), CLIENTS (default "50 200"), ROUNDS (default 3), IMAGE_MB (default 256),
#              IODEPTH (default 2), BS (default 128k), RANDOM_PCT (default 10),
#              SERVERS (default "netroot nbd-server nbdkit-file"), BACKEND (netroot's storage,
#              default file), CLIENT_TIMEOUT (default 60 s), KEEP (a directory to copy the
#              result lines into).
# Bounded: every client runs under timeout(1) (CLIENT_TIMEOUT).
set -euo pipefail

CLIENTS=${CLIENTS:-"50 200"}
ROUNDS=${ROUNDS:-3}
IMAGE_MB=${IMAGE_MB:-256}
IODEPTH=${IODEPTH:-2}
BS=${BS:-128k}
RANDOM_PCT=${RANDOM_PCT:-10}
SERVERS=${SERVERS:-"netroot nbd-server nbdkit-file"}
BACKEND=${BACKEND:-file}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-60}
CLIENT_MODE=${CLIENT_MODE:-procs}
case $CLIENT_MODE in
procs | jobs) ;;
*) echo "CLIENT_MODE must be procs or jobs, not $CLIENT_MODE" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/../.."
. bench/nbd/lib.sh
for p in fio nbdkit python3; do
	command -v "$p" >/dev/null || { echo "missing $p" >&2; exit 2; }
done
NBD_SERVER=$(command -v nbd-server || echo /usr/sbin/nbd-server)
[ -x "$NBD_SERVER" ] || { echo "missing nbd-server (Debian package nbd-server)" >&2; exit 2; }
fio --enghelp=nbd >/dev/null 2>&1 || { echo "fio has no nbd engine" >&2; exit 2; }

if [ -z "${STORM_NETNS:-}" ]; then
	# The storm runs in a network namespace of its own (see the top of this file).
	WORK=$(mktemp -d /dev/shm/netroot-nbd-storm.XXXXXX)
	trap 'rm -rf "$WORK"' EXIT
	echo "building netroot's bench server" >&2
	go build -o "$WORK/netroot-nbd" ./bench/nbd
	STORM_NETNS=1 WORK=$WORK unshare -n "$0" "$@"
	exit
fi
ip link set lo up
sysctl -qw net.ipv4.tcp_syncookies=0

RESULTS=$WORK/results
declare -A PID PORT
cleanup() {
	for name in "${!PID[@]}"; do stop_server "$name"; done
}
trap cleanup EXIT

SRC=$WORK/source.img
head -c "$((IMAGE_MB << 20))" /dev/urandom >"$SRC"

start_server() { # name: starts it on a free port with its own copy of the image
	local name=$1 port img=$WORK/$1.img
	port=$(free_port)
	cp "$SRC" "$img"
	case $name in
	netroot)
		"$WORK/netroot-nbd" -addr "127.0.0.1:$port" -file "$img" -name bench -readonly -max-handshakes-per-source -1 \
			-backend "$BACKEND" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	nbd-server)
		cat >"$WORK/nbd-server.conf" <<-EOF
			[generic]
			port = $port
			listenaddr = 127.0.0.1
			[bench]
			exportname = $img
			readonly = true
		EOF
		"$NBD_SERVER" -C "$WORK/nbd-server.conf" -p "$WORK/nbd-server.pid"
		wait_port "$port"
		PID[$name]=$(cat "$WORK/nbd-server.pid")
		;;
	nbdkit-file)
		nbdkit -f -r -i 127.0.0.1 -p "$port" file file="$img" 2>>"$WORK/server.log" &
		PID[$name]=$!
		;;
	*)
		echo "unknown server $name" >&2
		exit 2
		;;
	esac
	PORT[$name]=$port
	wait_port "$port"
}

# pss PID: the PSS in KiB of PID and all its descendants.
pss() {
	python3 - "$1" <<-'EOF'
		import os, sys
		def kids(p):
		    out = []
		    try:
		        for t in os.listdir("/proc/%d/task" % p):
		            out += [int(c) for c in open("/proc/%d/task/%s/children" % (p, t)).read().split()]
		    except OSError:
		        pass
		    return out
		todo, total = [int(sys.argv[1])], 0
		while todo:
		    p = todo.pop()
		    todo += kids(p)
		    try:
		        for line in open("/proc/%d/smaps_rollup" % p):
		            if line.startswith("Pss:"):
		                total += int(line.split()[1])
		    except OSError:
		        pass
		print(total)
	EOF
}

# sample_pss PID FILE: writes the peak PSS of PID's tree to FILE until FILE.stop exists.
sample_pss() {
	python3 - "$1" "$2" <<-'EOF'
		import os, sys, time
		root, out = int(sys.argv[1]), sys.argv[2]
		def kids(p):
		    res = []
		    try:
		        for t in os.listdir("/proc/%d/task" % p):
		            res += [int(c) for c in open("/proc/%d/task/%s/children" % (p, t)).read().split()]
		    except OSError:
		        pass
		    return res
		def tree_pss():
		    todo, total = [root], 0
		    while todo:
		        p = todo.pop()
		        todo += kids(p)
		        try:
		            for line in open("/proc/%d/smaps_rollup" % p):
		                if line.startswith("Pss:"):
		                    total += int(line.split()[1])
		        except OSError:
		            pass
		    return total
		peak = 0
		deadline = time.time() + 900
		while not os.path.exists(out + ".stop") and time.time() < deadline:
		    peak = max(peak, tree_pss())
		    time.sleep(0.1)
		open(out, "w").write("%d\n" % peak)
	EOF
}

# storm NAME N ROUND: one storm of N clients against server NAME; appends a result line
# (round 0 is the untimed one) and one line per client to $RESULTS.clients.
storm() {
	local name=$1 n=$2 round=$3 uri="nbd://127.0.0.1:${PORT[$1]}/bench" idle t0 t1 c0 c1 peak i
	local dir=$WORK/storm gate=$WORK/gate clients=()
	rm -rf "$dir"
	mkdir "$dir"
	if [ "$CLIENT_MODE" = jobs ]; then
		# One fio process runs the N clients as N nbd jobs (threads), each with its own
		# connection. The storm's start is the script's clock just before it launches fio (fio's
		# own start-up counts against every server alike); a client's completion time runs from
		# there to its last I/O, the last timestamp of its per-I/O latency log (Unix epoch ms).
		idle=$(pss "${PID[$name]}")
		rm -f "$WORK/peak" "$WORK/peak.stop"
		sample_pss "${PID[$name]}" "$WORK/peak" 9>&- &
		local sampler=$! rc=0 jobs=()
		for i in $(seq "$n"); do jobs+=("--name=c$i"); done
		c0=$(cputicks "$name")
		t0=$(date +%s.%N)
		timeout -k 5 "$CLIENT_TIMEOUT" fio --ioengine=nbd --uri="$uri" --thread --rw=randread \
			--percentage_random="$RANDOM_PCT" --bs="$BS" --iodepth="$IODEPTH" --size="${IMAGE_MB}M" \
			--write_lat_log="$dir/c" --log_unix_epoch=1 --output-format=json "${jobs[@]}" \
			>"$dir/fio.json" 2>"$dir/fio.err" || rc=$?
		t1=$(date +%s.%N)
		# Split fio's report into the per-client files the procs mode writes: N.json (the job),
		# N.end (its last I/O, or fio's exit if it has no log), N.rc (fio's status, or 1 when
		# the log is missing or holds less than the image, 124 when its last I/O came after
		# CLIENT_TIMEOUT).
		python3 - "$dir" "$n" "$rc" "$t0" "$t1" "$IMAGE_MB" "$CLIENT_TIMEOUT" <<-'EOF'
			import json, os, sys
			d, n, rc, t0, t1, mb, limit = sys.argv[1:8]
			n, rc, t0, t1, limit = int(n), int(rc), float(t0), float(t1), float(limit)
			jobs = {}
			try:
			    text = open(os.path.join(d, "fio.json")).read()
			    for job in json.loads(text[text.index("{"):])["jobs"]:
			        jobs[job["jobname"]] = job
			except (ValueError, KeyError):
			    pass
			for i in range(1, n + 1):
			    last, got, crc = 0.0, 0, rc
			    try:
			        for line in open(os.path.join(d, "c_lat.%d.log" % i)):
			            f = line.split(",")  # ms since the epoch, ns, direction, bytes, prio
			            last = max(last, int(f[0]) / 1000)
			            got += int(f[3])
			    except (OSError, ValueError, IndexError):
			        pass
			    end = last if got else t1
			    if got < int(mb) << 20:
			        crc = crc or 1
			    elif end - t0 > limit:
			        crc = crc or 124
			    job = jobs.get("c%d" % i)
			    if job is None and got >= int(mb) << 20 and end - t0 <= limit:
			        # fio was killed (other clients were still not done at CLIENT_TIMEOUT) before
			        # its report: this client's complete log, written when its job ended, stands
			        # for it (no job_runtime).
			        job, crc = {"read": {"io_bytes": got}, "error": 0}, 0
			    open(os.path.join(d, "%d.end" % i), "w").write("%.3f\n" % end)
			    open(os.path.join(d, "%d.rc" % i), "w").write("%d\n" % crc)
			    open(os.path.join(d, "%d.json" % i), "w").write(json.dumps({"jobs": [job]} if job else {}))
		EOF
		if [ -n "${KEEP:-}" ]; then
			mkdir -p "$KEEP/logs/$name-$n-$round"
			cp "$dir"/c_lat.*.log "$dir/fio.json" "$KEEP/logs/$name-$n-$round/" 2>/dev/null || true
		fi
		rm -f "$dir"/c_*.log
	else
		# Every client is its own fio process with one nbd job; each waits on a shared lock on
		# $gate, which this script holds exclusively until all of them are waiting, then lets go
		# of it: the storm's start. A client's completion time is from that moment until its fio
		# process has exited (its last byte read, its connection closed), connecting included.
		exec 9>"$gate"
		flock -x 9
		for i in $(seq "$n"); do
			(
				exec 9>&- # the exclusive lock stays with the script only
				rc=0
				flock -s "$gate" timeout -k 5 "$CLIENT_TIMEOUT" fio --name=c$i --ioengine=nbd \
					--uri="$uri" --thread --rw=randread --percentage_random="$RANDOM_PCT" \
					--bs="$BS" --iodepth="$IODEPTH" --size="${IMAGE_MB}M" --output-format=json \
					>"$dir/$i.json" 2>"$dir/$i.err" || rc=$?
				date +%s.%N >"$dir/$i.end"
				echo "$rc" >"$dir/$i.rc"
			) &
			clients+=($!)
		done
		# Wait (bounded) until all N clients are blocked on the lock: /proc/locks lists each
		# waiter as a "->" line on the gate's inode.
		local inode
		inode=$(stat -c %i "$gate")
		for _ in $(seq 600); do
			[ "$(grep -c -- "-> FLOCK.*:$inode " /proc/locks || true)" -ge "$n" ] && break
			sleep 0.05
		done
		idle=$(pss "${PID[$name]}")
		rm -f "$WORK/peak" "$WORK/peak.stop"
		sample_pss "${PID[$name]}" "$WORK/peak" 9>&- &
		local sampler=$!
		c0=$(cputicks "$name")
		t0=$(date +%s.%N)
		exec 9>&- # the storm starts
		wait "${clients[@]}" || true
	fi
	c1=$(cputicks "$name")
	touch "$WORK/peak.stop"
	wait "$sampler"
	peak=$(cat "$WORK/peak")
	cat "$dir"/*.err | sort | uniq -c | sort -rn | head -5 >&2
	python3 - "$dir" "$name" "$n" "$t0" "$c0" "$c1" "$(getconf CLK_TCK)" "$idle" "$peak" "$round" \
		"$IMAGE_MB" "$RESULTS.clients" >>"$RESULTS" <<-'EOF'
		import json, math, os, statistics, sys
		d, name, n, t0, c0, c1, tck, idle, peak, rnd, mb, perclient = sys.argv[1:13]
		n, t0, t1 = int(n), float(t0), 0.0
		done, fio_rt, total = [], [], 0
		with open(perclient, "a") as out:
		    for i in range(1, n + 1):
		        end = float(open(os.path.join(d, "%d.end" % i)).read())
		        t1 = max(t1, end)  # the storm's end: its last client's, failed or not
		        rc = int(open(os.path.join(d, "%d.rc" % i)).read())
		        job = None
		        try:
		            text = open(os.path.join(d, "%d.json" % i)).read()
		            job = json.loads(text[text.index("{"):])["jobs"][0]
		        except (ValueError, KeyError, IndexError):
		            pass
		        got = job["read"]["io_bytes"] if job else 0
		        total += got
		        ok = rc == 0 and job is not None and not job["error"] and got >= int(mb) << 20
		        # A client that failed (could not connect, an error, or not done within
		        # CLIENT_TIMEOUT) never booted: it counts as infinitely late.
		        done.append(end - t0 if ok else math.inf)
		        rt = job.get("job_runtime") if job else None
		        if ok and rt is not None:
		            fio_rt.append(rt / 1000)  # ms -> s
		        out.write("%s %d %s %d %.3f %s %d\n" % (name, n, rnd, i, end - t0,
		                  "%.3f" % (rt / 1000) if rt is not None else "-", rc))
		done.sort()
		fio_rt.sort()
		failed = sum(1 for x in done if math.isinf(x))
		p = lambda v, q: v[min(len(v) - 1, int(q * len(v)))] if v else math.inf
		wall = t1 - t0
		cpu = (float(c1) - float(c0)) / float(tck) / (total / 1e9)
		mem = max(0, int(peak) - int(idle)) / n  # KiB per connection
		last = max([x for x in done if not math.isinf(x)] or [math.inf])
		print(name, n, "%.1f" % (total / wall / 1e6), "%.3f" % statistics.median(done),
		      "%.3f" % p(done, 0.99), "%.3f" % (statistics.median(fio_rt) if fio_rt else math.inf), "%.3f" % p(fio_rt, 0.99),
		      "%.0f" % (int(peak) / 1024), "%.0f" % mem, "%.3f" % cpu, failed, "%.3f" % last, rnd)
	EOF
	tail -1 "$RESULTS" >&2
}

read -ra servers <<<"$SERVERS"
for server in "${servers[@]}"; do
	start_server "$server"
	echo "== $server on port ${PORT[$server]}" >&2
done
: >"$RESULTS"
for n in $CLIENTS; do
	storm "${servers[0]}" "$n" 0 # untimed
	for round in $(seq "$ROUNDS"); do
		for i in $(seq 0 $((${#servers[@]} - 1))); do
			storm "${servers[$(((i + round - 1) % ${#servers[@]}))]}" "$n" "$round"
		done
	done
done

python3 - "$RESULTS" "$IMAGE_MB" "$ROUNDS" "$IODEPTH" "$BS" "$RANDOM_PCT" "$CLIENT_TIMEOUT" "$CLIENT_MODE" <<'EOF'
import math, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip() and l.split()[-1] != "0"]
print("NBD boot storm (CLIENT_MODE=%s): %s MiB image in /dev/shm per client, bs %s, iodepth %s, "
      "%s%% random jumps, a client not done %s s after the start failed; median [min-max] of %s "
      "interleaved rounds" % (sys.argv[8], sys.argv[2], sys.argv[5], sys.argv[4], sys.argv[6], sys.argv[7], sys.argv[3]))
print("p50/p99 s: from the storm's start to each client's %s, connecting included (failed clients "
      "count as never done: inf); fio p50/p99 s: fio's job_runtime of the clients that completed, "
      "which starts once connected" % ("last I/O" if sys.argv[8] == "jobs" else "fio's exit"))
cols = ["MB/s", "p50 s", "p99 s", "fio p50 s", "fio p99 s", "peak PSS MiB", "KiB/conn", "CPU s/GB",
        "failed", "all done s"]
def f(x):
    return "inf" if math.isinf(x) else ("%.3g" % x) if x < 1000 else "%.0f" % x
def cell(v):
    return "%s [%s-%s]" % (f(statistics.median(v)), f(min(v)), f(max(v)))
by = {}
for name, n, *vals, rnd in rows:
    by.setdefault(int(n), {}).setdefault(name, {})[int(rnd)] = [float(x) for x in vals]
print("| clients | server | " + " | ".join(cols) + " |")
print("| ---: | --- |" + " ---: |" * len(cols))
for n, servers in sorted(by.items()):
    for name, r in servers.items():
        print("| %d | %s | " % (n, name) + " | ".join(cell([v[i] for v in r.values()]) for i in range(len(cols))) + " |")
    ours = servers.get("netroot")
    if not ours:
        continue
    for name, r in servers.items():
        if name == "netroot":
            continue
        common = sorted(set(ours) & set(r))
        ratios = []
        for i in range(len(cols)):
            # No ratio for failed counts, nor where either side is inf (failed clients).
            rs = [ours[k][i] / r[k][i] for k in common
                  if r[k][i] and cols[i] != "failed" and not math.isinf(ours[k][i]) and not math.isinf(r[k][i])]
            ratios.append(cell(rs) + "x" if rs else "-")
        print("| %d | netroot / %s | " % (n, name) + " | ".join(ratios) + " |")
EOF
if [ -n "${KEEP:-}" ]; then
	cp "$RESULTS" "$RESULTS.clients" "$KEEP/"
fi
