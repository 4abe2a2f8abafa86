#!/usr/bin/env bash
# Read throughput of backend.File and backend.Mmap against fio's psync (pread) and mmap engines,
# on the same 256 MiB image held in the page cache: sequential 1 MiB reads and 4 KiB random
# reads, one thread each. Prints our figure, the peer's and the ratio (ours / peer).
#
# Usage: bench/backend/run.sh [seconds per figure, default 2]. Needs fio (Debian package fio).
# Bounded: 4 Go figures and 4 fio runs of $1 seconds each, plus writing the image.
set -euo pipefail
secs=${1:-2}
cd "$(dirname "$0")/../.."
command -v fio >/dev/null || { echo "fio not found (apt-get install fio)" >&2; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
img=$dir/bench.img
head -c 256M /dev/urandom >"$img"
cat "$img" >/dev/null # into the page cache, for both sides

NETROOT_BENCH_IMAGE=$img go test -run '^$' -bench 'BenchmarkRead/(File|Mmap)/(seq1M|rand4k)$' \
	-benchtime "${secs}s" ./backend/ >"$dir/go.txt"

# ours NAME: MB/s (10^6 bytes/s) from the Go benchmark line.
ours() { awk -v n="BenchmarkRead/$1-" 'index($1, n) == 1 { for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s") print $i }' "$dir/go.txt"; }
# peer ENGINE RW BS: MB/s from fio (terse field 7 is read bandwidth in KiB/s).
peer() {
	fio --name=b --filename="$img" --readonly --invalidate=0 --rw="$2" --bs="$3" --ioengine="$1" \
		--runtime="$secs" --time_based --output-format=terse --terse-version=3 |
		awk -F';' '{ printf "%.2f\n", $7 * 1024 / 1e6 }'
}

printf '%-22s %12s %-18s %12s %7s\n' "netroot" "MB/s" "fio" "MB/s" "ratio"
row() {
	local a b
	a=$(ours "$1")
	b=$(peer "$2" "$3" "$4")
	printf '%-22s %12s %-18s %12s %7.2f\n' "$1" "$a" "$2 $3 $4" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print a / b }')"
}
row File/seq1M psync read 1m
row File/rand4k psync randread 4k
row Mmap/seq1M mmap read 1m
row Mmap/rand4k mmap randread 4k
