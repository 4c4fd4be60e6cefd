#!/usr/bin/env bash
# bench.sh: `commitd bench` with 100 callers against a coordinator and two
# PostgreSQL participants, each a separate process on loopback, and a check
# that the money in both databases adds up afterwards. Needs the servers of
# `make pg-up` (or COMMITD_PG_DSN1/2) and bin/commitd (`make build`).
#
#   COMMITD_BENCH_DURATION  how long to run (default 10s)
#   COMMITD_BENCH_CALLERS   concurrent callers (default 100)
#   COMMITD_BENCH_STATEMENTS  set to 1: the participants run testdata/bank.statements and
#                           the bench names its transfer statement (an operator's SQL
#                           with bind parameters) instead of sending the bank's work
#   COMMITD_BENCH_WARMUP    load run first and left out of the figures (default 3s:
#                           PostgreSQL and the connection pools ramp up for ~3 s)
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=${COMMITD_BIN:-bin/commitd}
dsn1=${COMMITD_PG_DSN1:-postgres://postgres@127.0.0.1:25432/postgres?sslmode=disable}
dsn2=${COMMITD_PG_DSN2:-postgres://postgres@127.0.0.1:25433/postgres?sslmode=disable}
duration=${COMMITD_BENCH_DURATION:-10s}
callers=${COMMITD_BENCH_CALLERS:-100}
warmup=${COMMITD_BENCH_WARMUP:-3s}
dir=$(mktemp -d /tmp/commitd-pgbench-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT

coord=127.0.0.1:23400
p1=127.0.0.1:23401
p2=127.0.0.1:23402
log="--log-level warn"
stmts=() benchstmt=()
if [ "${COMMITD_BENCH_STATEMENTS:-}" = 1 ]; then
	stmts=(--statements participant/postgres/testdata/bank.statements)
	benchstmt=(--statement transfer)
fi
"$bin" participant --backend postgres --dsn "$dsn1" --name pgb1 --listen $p1 --coordinator $coord \
	--data "$dir/pgb1" --accounts 1000 --balance 1000 "${stmts[@]}" $log 2>"$dir/pgb1.log" &
pids+=($!)
"$bin" participant --backend postgres --dsn "$dsn2" --name pgb2 --listen $p2 --coordinator $coord \
	--data "$dir/pgb2" --accounts 1000 --balance 1000 "${stmts[@]}" $log 2>"$dir/pgb2.log" &
pids+=($!)
"$bin" coordinator --listen $coord --data "$dir/coord" --participant pgb1=$p1,pgb2=$p2 $log 2>"$dir/coord.log" &
pids+=($!)

total() {
	local t=0 v
	for a in $p1 $p2; do
		v=$("$bin" admin accounts --participant "$a" --timeout 10s | sed -n 's/.*"total":\(-\{0,1\}[0-9]*\).*/\1/p')
		t=$((t + v))
	done
	echo $t
}
for _ in $(seq 50); do
	"$bin" admin accounts --participant $p1 --timeout 1s >/dev/null 2>&1 &&
		"$bin" admin accounts --participant $p2 --timeout 1s >/dev/null 2>&1 && break
	sleep 0.2
done
sleep 1 # the coordinator connects to both
before=$(total)
echo "bench-postgres: ${benchstmt[*]:-bank work}: coordinator + 2 PostgreSQL participants ($dsn1, $dsn2), $callers callers, $duration after a $warmup warmup"
"$bin" bench --coordinator $coord --participants pgb1=$p1,pgb2=$p2 --concurrency "$callers" --duration "$duration" --warmup "$warmup" --accounts 1000 "${benchstmt[@]}"
# Let the last decisions reach PostgreSQL before summing.
sleep 3
after=$(total)
echo "bench-postgres: money in both databases before $before, after $after"
if [ "$before" != "$after" ]; then
	echo "bench-postgres: MONEY NOT CONSERVED" >&2
	tail -20 "$dir"/*.log >&2
	exit 1
fi
