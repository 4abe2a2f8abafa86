# Helpers shared by run.sh and storm.sh (sourced): ports, stopping a server, its CPU time. They
# use the caller's PID (server name -> process) and WORK (the run's folder, server.log in it).

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

stop_server() {
	local pid=${PID[$1]:-}
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		unset "PID[$1]"
	fi
}

# cputicks NAME: the server's CPU time so far (user+system of the process and its reaped
# children; nbd-server forks one child per connection), in clock ticks.
cputicks() {
	if ! kill -0 "${PID[$1]}" 2>/dev/null; then
		echo "server $1 (pid ${PID[$1]}) has died; its log:" >&2
		tail -20 "$WORK/server.log" >&2
		exit 1
	fi
	awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] + f[14] + f[15] }' "/proc/${PID[$1]}/stat"
}

