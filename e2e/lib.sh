# lib.sh: helpers shared by the e2e scripts (run.sh, kiwi.sh, firmware.sh, replica.sh,
# rollforward.sh), sourced after the script defines log(). They use the script's NS (its network
# namespace), PIDS (processes to stop) and the folder for logs: bdir when set (one per boot),
# else RUN.

die() {
	log "error: $*"
	exit 1
}

need() { # need PROGRAM PACKAGE
	command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]] ||
		die "$1 not found (Debian package $2; see .ci/packages/)"
}

in_ns() { ip netns exec "$NS" "$@"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
	local limit=$1 what=$2 i
	shift 2
	for ((i = 0; i < limit * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	log "timed out after ${limit}s waiting for $what"
	return 1
}

start() { # start LOGNAME COMMAND...: run COMMAND in the namespace in the background
	local name=$1
	shift
	ip netns exec "$NS" "$@" >"${bdir:-$RUN}/$name.log" 2>&1 &
	PIDS+=($!)
}

# kill_ns_pids NAME: kill what still runs in our namespace NAME (children the servers forked,
# such as nbd-server's per-connection processes).
kill_ns_pids() {
	local p
	for p in $(ip netns pids "$1" 2>/dev/null); do
		kill -KILL "$p" 2>/dev/null || true
	done
}

# sweep_namespaces PREFIX: remove namespaces PREFIX<pid> or PREFIX<pid>-<n> left by an earlier run
# of a script that was killed outright (SIGKILL skips its trap), whose PID no longer exists.
sweep_namespaces() {
	local old pid
	for old in $(ip netns list 2>/dev/null | awk -v p="$1" 'index($1, p) == 1 && substr($1, length(p) + 1) ~ /^[0-9]+(-[0-9]+)?$/ { print $1 }'); do
		pid=${old#"$1"}
		pid=${pid%-*}
		if ! kill -0 "$pid" 2>/dev/null; then
			log "removing namespace $old left by an earlier run"
			kill_ns_pids "$old"
			ip netns del "$old" 2>/dev/null || true
		fi
	done
}
