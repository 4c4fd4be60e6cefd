#!/usr/bin/env bash
# bench.sh: `commitd bench` with 100 callers against a coordinator and two
# HTTP participants (`commitd participant --backend http`) in front of two
# reference services (cmd/refservice), every one a separate process on
# loopback; then the same load against two bank participants, and the
# disk's 4 KiB write + fdatasync, measured in the same run for comparison.
# Needs bin/commitd and bin/refservice (`make bench-http` builds them).
#
#   COMMITD_BENCH_DURATION  how long to run (default 10s)
#   COMMITD_BENCH_CALLERS   concurrent callers (default 100)
#   COMMITD_BENCH_WARMUP    load run first and left out of the figures (default 2s)
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=${COMMITD_BIN:-bin/commitd}
ref=${COMMITD_REFSERVICE:-bin/refservice}
duration=${COMMITD_BENCH_DURATION:-10s}
callers=${COMMITD_BENCH_CALLERS:-100}
warmup=${COMMITD_BENCH_WARMUP:-2s}
dir=$(mktemp -d /tmp/commitd-httpbench-XXXXXX)
pids=()
stop() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
trap 'stop; rm -rf "$dir"' EXIT

# disk: a 4 KiB write + fdatasync (O_DSYNC) into a file already written,
# 500 times, on the disk the data directories are on.
disk() {
	dd if=/dev/zero of="$dir/probe" bs=4k count=500 status=none
	local t0 t1
	t0=$(date +%s%N)
	dd if=/dev/zero of="$dir/probe" bs=4k count=500 oflag=dsync conv=notrunc status=none
	t1=$(date +%s%N)
	echo "bench-http: disk: 4 KiB write + fdatasync: $(((t1 - t0) / 500 / 1000)) µs each (dd oflag=dsync, 500 writes)"
}

coord=127.0.0.1:23410
p1=127.0.0.1:23411
p2=127.0.0.1:23412
s1=127.0.0.1:23413
s2=127.0.0.1:23414
log="--log-level warn"
wait_up() {
	for _ in $(seq 100); do
		"$bin" admin status --participant $p1 --timeout 1s 2>/dev/null | grep -q '"connected":[1-9]' &&
			"$bin" admin status --participant $p2 --timeout 1s 2>/dev/null | grep -q '"connected":[1-9]' && return
		sleep 0.1
	done
	echo "bench-http: the cluster did not come up" >&2
	for f in "$dir"/*.log; do echo "== $f"; tail -n 20 "$f"; done >&2
	exit 1
}
cluster() { # backend
	local extra1=() extra2=()
	if [ "$1" = http ]; then
		"$ref" --listen $s1 --data "$dir/s1.journal" 2>"$dir/s1.log" &
		pids+=($!)
		"$ref" --listen $s2 --data "$dir/s2.journal" 2>"$dir/s2.log" &
		pids+=($!)
		extra1=(--backend http --url "http://$s1")
		extra2=(--backend http --url "http://$s2")
	fi
	"$bin" participant "${extra1[@]}" --name p1 --listen $p1 --coordinator $coord --data "$dir/$1-p1" $log 2>"$dir/$1-p1.log" &
	pids+=($!)
	"$bin" participant "${extra2[@]}" --name p2 --listen $p2 --coordinator $coord --data "$dir/$1-p2" $log 2>"$dir/$1-p2.log" &
	pids+=($!)
	"$bin" coordinator --listen $coord --data "$dir/$1-coord" --participant p1=$p1,p2=$p2 $log 2>"$dir/$1-coord.log" &
	pids+=($!)
	wait_up
}

cpu() {
	local hz
	hz=$(getconf CLK_TCK)
	for p in "${pids[@]}"; do
		awk -v hz="$hz" -v what="$(tr '\0' ' ' </proc/$p/cmdline | cut -d' ' -f1-3)" \
			'{printf "bench-http:   cpu %6.2f s  %s\n", ($14 + $15) / hz, what}' /proc/$p/stat
	done
}

echo "bench-http: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
disk
for backend in http bank; do
	cluster $backend
	echo "bench-http: coordinator + 2 $backend participants, $callers callers, $duration after a $warmup warmup"
	"$bin" bench --coordinator $coord --participants p1=$p1,p2=$p2 --concurrency "$callers" --duration "$duration" --warmup "$warmup" --accounts 1000
	if [ $backend = http ]; then
		for s in $s1 $s2; do
			curl -s "http://$s/prepared" | head -c 200; echo " (prepared at $s after the run)"
		done
		"$bin" admin status --participant $p1 | grep -o '"resource":{[^}]*}'
	fi
	# Where the CPU went: each process's user+system seconds since it started.
	cpu
	stop
	rm -rf "$dir"/*-p1 "$dir"/*-p2 "$dir"/*-coord
done
disk
echo "bench-http: load after $(cut -d' ' -f1-3 /proc/loadavg)"
