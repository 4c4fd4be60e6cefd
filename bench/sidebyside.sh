#!/usr/bin/env bash
# sidebyside.sh: the same closed-loop load against two commitd binaries,
# alternating which goes first each round, on fresh clusters (a coordinator
# and two bank participants, separate processes, loopback). For an A/B of
# a change whose cost must not be measurable (docs/tracing.md: tracing
# off against the commit before tracing existed).
#
#   bench/sidebyside.sh BIN_A BIN_B [ROUNDS] [CONCURRENCY] [DURATION] [-- EXTRA SERVER FLAGS for B]
#
# Prints one line per run and, per round, B's throughput as a ratio of A's.
# Measure on a quiet machine: on a shared one, the spread between rounds
# says how far to trust the ratio.
set -euo pipefail
a=${1:?BIN_A}; b=${2:?BIN_B}; rounds=${3:-4}; conc=${4:-100}; dur=${5:-10s}
shift $(( $# < 5 ? $# : 5 ))
[[ ${1:-} == -- ]] && shift
extra_b=("$@")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run BIN NAME EXTRA...: one fresh cluster, one bench; prints committed/s.
run() {
	local bin=$1 name=$2; shift 2
	local d="$work/$name" p1 p2 c
	mkdir -p "$d"
	p1=$(port); p2=$(port); c=$(port)
	"$bin" participant --name p1 --listen 127.0.0.1:$p1 --data "$d/p1" --coordinator 127.0.0.1:$c --log-level warn --segment-size 8MiB "$@" 2>"$d/p1.log" & local pid1=$!
	"$bin" participant --name p2 --listen 127.0.0.1:$p2 --data "$d/p2" --coordinator 127.0.0.1:$c --log-level warn --segment-size 8MiB "$@" 2>"$d/p2.log" & local pid2=$!
	"$bin" coordinator --listen 127.0.0.1:$c --data "$d/c" --participant p1=127.0.0.1:$p1,p2=127.0.0.1:$p2 --log-level warn --segment-size 8MiB "$@" 2>"$d/c.log" & local pidc=$!
	for pt in $p1 $p2 $c; do # until each listens (a loaded machine starts them slowly)
		for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$pt) 2>/dev/null && break; sleep 0.2; done
	done
	sleep 1 # and the coordinator has dialed its participants
	"$bin" bench --coordinator 127.0.0.1:$c --participants p1=127.0.0.1:$p1,p2=127.0.0.1:$p2 \
		--concurrency "$conc" --duration "$dur" --warmup 2s --json "$d/report.json" >"$d/bench.out" 2>&1
	kill $pid1 $pid2 $pidc; wait $pid1 $pid2 $pidc 2>/dev/null || true
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c=r.get("coordinator") or {}; print("%.0f %.3f %.1f %.1f" % (r["committed_per_s"], r["p50_ms"], c.get("cpu_us_per_txn",0), c.get("allocs_per_txn",0)))' "$d/report.json" 2>/dev/null \
		|| { tail -3 "$d/bench.out" >&2; echo "0 0 0 0"; }
	rm -rf "$d"
}

for r in $(seq 1 "$rounds"); do
	if (( r % 2 )); then order="a b"; else order="b a"; fi
	for which in $order; do
		if [[ $which == a ]]; then res[0]=$(run "$a" "r$r-a"); else res[1]=$(run "$b" "r$r-b" "${extra_b[@]}"); fi
	done
	read -r ta la ca aa <<<"${res[0]}"; read -r tb lb cb ab <<<"${res[1]}"
	printf 'round %d (%s first): A %s txn/s p50 %s ms coord %s cpu-µs %s allocs/txn | B %s txn/s p50 %s ms coord %s cpu-µs %s allocs/txn | B/A %.3f  load %s\n' \
		"$r" "${order%% *}" "$ta" "$la" "$ca" "$aa" "$tb" "$lb" "$cb" "$ab" "$(python3 -c "print($tb/$ta if $ta else 0)")" "$(cut -d' ' -f1 /proc/loadavg)"
done
