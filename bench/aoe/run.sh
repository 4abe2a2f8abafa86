#!/bin/bash
# Compare netroot's AoE target with vblade over a veth pair between two network namespaces,
# read by netroot's initiator, at MTU 1500 and 9000: sequential read MB/s, target CPU seconds
# per GB and random 4 KiB read IOPS, with ratios (netroot / vblade). Needs root, iproute2 and
# vblade. Bounded: each measurement stops after -timeout (60 s by default).
#
#   bench/aoe/run.sh                 # 256 MiB image, 20000 random reads
#   bench/aoe/run.sh -size 64 -rand 5000
#   bench/aoe/run.sh -null           # also the initiator's ceiling: a target without backend I/O
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/aoebench" ./bench/aoe
timeout 900 "$bin/aoebench" "$@"
