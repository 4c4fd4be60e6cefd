#!/usr/bin/env bash
# pg.sh up|down|status: two throwaway PostgreSQL servers on loopback for the
# PostgreSQL participant's tests and benchmark (`make pg-up`, `make pg-down`).
#
#   up      install PostgreSQL from Debian's packages if it is missing, then
#           initdb and start one server per port in $COMMITD_PG_PORTS
#           (default "25432 25433"), with max_prepared_transactions set, and
#           one on $COMMITD_PG_PORT0 (default 25434) left at PostgreSQL's
#           default of 0, for the test of the error a participant gives then;
#           servers already running are left alone
#   down    stop them and delete their data
#   status  say which are running
#
# The servers run as the `postgres` system user when this runs as root
# (PostgreSQL refuses to run as root), trust local connections, listen on
# 127.0.0.1 only, and keep their data in $COMMITD_PG_DIR (default
# /tmp/commitd-pg). Connect as user postgres, database postgres.
set -euo pipefail

cmd=${1:-up}
dir=${COMMITD_PG_DIR:-/tmp/commitd-pg}
read -r -a ports <<<"${COMMITD_PG_PORTS:-25432 25433}"
port0=${COMMITD_PG_PORT0:-25434}
# Enough for 100 callers and a coordinator's redeliveries on each server.
max_prepared=${COMMITD_PG_MAX_PREPARED:-200}

bindir() {
	local d
	if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
		dirname "$(readlink -f "$(command -v pg_ctl)")"
		return
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then
			echo "$d"
			return
		fi
	done
	return 1
}

install_pg() {
	if bindir >/dev/null; then
		return
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "pg.sh: PostgreSQL is not installed and we are not root to apt-get it" >&2
		return 1
	fi
	echo "pg.sh: installing PostgreSQL from Debian's packages" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq postgresql >&2
	# The package starts a cluster of its own on 5432; we do not need it.
	if command -v pg_ctlcluster >/dev/null 2>&1; then
		for c in /etc/postgresql/*/main; do
			[ -d "$c" ] || continue
			v=$(basename "$(dirname "$c")")
			pg_ctlcluster "$v" main stop >/dev/null 2>&1 || true
		done
	fi
}

# as_pg runs a command as the postgres user when we are root.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

up() {
	install_pg
	local bin
	bin=$(bindir)
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" --shell /bin/sh postgres
		chown postgres: "$dir"
		chmod 700 "$dir"
	fi
	for port in "${ports[@]}" "$port0"; do
		local data="$dir/$port" mp=$max_prepared
		[ "$port" = "$port0" ] && mp=0
		if [ ! -f "$data/PG_VERSION" ]; then
			rm -rf "$data"
			as_pg "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb-$port.log" 2>&1 ||
				{ cat "$dir/initdb-$port.log" >&2; return 1; }
		fi
		if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
			echo "pg.sh: server on 127.0.0.1:$port already running"
			continue
		fi
		as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start -o \
			"-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_prepared_transactions=$mp -c max_connections=300 -c shared_buffers=64MB" \
			>/dev/null || { tail -20 "$data/server.log" >&2; return 1; }
		echo "pg.sh: server on 127.0.0.1:$port started (data $data)"
	done
}

down() {
	local bin
	bin=$(bindir) || return 0
	for port in "${ports[@]}" "$port0"; do
		local data="$dir/$port"
		[ -d "$data" ] || continue
		as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
		echo "pg.sh: server on 127.0.0.1:$port stopped"
	done
	rm -rf "$dir"
}

status() {
	local bin
	bin=$(bindir) || { echo "PostgreSQL is not installed"; return 1; }
	for port in "${ports[@]}" "$port0"; do
		if [ -d "$dir/$port" ] && as_pg "$bin/pg_ctl" -D "$dir/$port" status >/dev/null 2>&1; then
			echo "127.0.0.1:$port running"
		else
			echo "127.0.0.1:$port stopped"
		fi
	done
}

case "$cmd" in
up) up ;;
down) down ;;
status) status ;;
*)
	echo "usage: pg.sh up|down|status" >&2
	exit 2
	;;
esac
