#!/usr/bin/env bash
# bench.sh: `commitd bench` with 100 callers against a coordinator and two
# MariaDB (MySQL) participants, each a separate process on loopback, and a check
# that the money in both databases adds up afterwards. Needs the servers of
# `make mysql-up` (or COMMITD_MYSQL_DSN1/2 (go-sql-driver DSNs without a database: it creates commitd_bench1/2)) and bin/commitd (`make build`).
#
#   COMMITD_BENCH_DURATION  how long to run (default 10s)
#   COMMITD_BENCH_CALLERS   concurrent callers (default 100)
#   COMMITD_BENCH_STATEMENTS  set to 1: the participants run testdata/bank.statements and
#                           the bench names its transfer statement (an operator's SQL
#                           with bind parameters) instead of sending the bank's work
#   COMMITD_BENCH_WARMUP    load run first and left out of the figures (default 3s:
#                           the connection pools ramp up for ~3 s)
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=${COMMITD_BIN:-bin/commitd}
server1=${COMMITD_MYSQL_DSN1:-root@tcp(127.0.0.1:23306)/}
server2=${COMMITD_MYSQL_DSN2:-root@tcp(127.0.0.1:23307)/}
# A fresh database on each server (dropped by mysql.sh down): the
# participant creates its tables and seeds the accounts.
fresh() { # server dsn, database
	local hostport=${1#*tcp(}
	hostport=${hostport%%)*}
	mariadb --no-defaults -uroot -h"${hostport%:*}" -P"${hostport#*:}" -e "DROP DATABASE IF EXISTS $2; CREATE DATABASE $2"
	echo "${1%/*}/$2"
}
dsn1=$(fresh "$server1" commitd_bench1)
dsn2=$(fresh "$server2" commitd_bench2)
duration=${COMMITD_BENCH_DURATION:-10s}
callers=${COMMITD_BENCH_CALLERS:-100}
warmup=${COMMITD_BENCH_WARMUP:-3s}
dir=$(mktemp -d /tmp/commitd-mysqlbench-XXXXXX)
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
	stmts=(--statements participant/mysql/testdata/bank.statements)
	benchstmt=(--statement transfer)
fi
"$bin" participant --backend mysql --dsn "$dsn1" --name myb1 --listen $p1 --coordinator $coord \
	--data "$dir/myb1" --accounts 1000 --balance 1000 "${stmts[@]}" $log 2>"$dir/myb1.log" &
pids+=($!)
"$bin" participant --backend mysql --dsn "$dsn2" --name myb2 --listen $p2 --coordinator $coord \
	--data "$dir/myb2" --accounts 1000 --balance 1000 "${stmts[@]}" $log 2>"$dir/myb2.log" &
pids+=($!)
"$bin" coordinator --listen $coord --data "$dir/coord" --participant myb1=$p1,myb2=$p2 $log 2>"$dir/coord.log" &
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
echo "bench-mysql: ${benchstmt[*]:-bank work}: coordinator + 2 MariaDB (MySQL) participants ($dsn1, $dsn2), $callers callers, $duration after a $warmup warmup"
"$bin" bench --coordinator $coord --participants myb1=$p1,myb2=$p2 --concurrency "$callers" --duration "$duration" --warmup "$warmup" --accounts 1000 "${benchstmt[@]}"
# Let the last decisions reach MariaDB before summing.
sleep 3
after=$(total)
echo "bench-mysql: money in both databases before $before, after $after"
if [ "$before" != "$after" ]; then
	echo "bench-mysql: MONEY NOT CONSERVED" >&2
	tail -20 "$dir"/*.log >&2
	exit 1
fi
