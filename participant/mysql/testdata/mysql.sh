#!/usr/bin/env bash
# mysql.sh up|down|status: two throwaway MariaDB servers on loopback for the
# MySQL/MariaDB participant's tests and benchmark (`make mysql-up`,
# `make mysql-down`).
#
#   up      install MariaDB from Debian's packages (mariadb-server) if it is
#           missing, then create a data directory and start one server per
#           port in $COMMITD_MYSQL_PORTS (default "23306 23307"); servers
#           already running are left alone
#   down    stop them and delete their data
#   status  say which are running
#   crash PORT
#           kill -9 the server on PORT and start it again on the same data
#           (the tests' "MariaDB crashes with XA transactions prepared")
#
# The servers listen on 127.0.0.1 only (ports below Linux's ephemeral range,
# 32768-60999, so no client socket of a concurrent test can hold them), keep
# their data in $COMMITD_MYSQL_DIR (default /tmp/commitd-mysql), run as the
# `mysql` system user when this runs as root, and let root in from
# 127.0.0.1 without a password (connect as root@tcp(127.0.0.1:PORT)/).
# The Debian package's own server (on 3306) is left stopped.
set -euo pipefail

cmd=${1:-up}
dir=${COMMITD_MYSQL_DIR:-/tmp/commitd-mysql}
read -r -a ports <<<"${COMMITD_MYSQL_PORTS:-23306 23307}"

find_bin() {
	local n
	for n in "$@"; do
		if command -v "$n" >/dev/null 2>&1; then
			command -v "$n"
			return
		fi
		[ -x "/usr/sbin/$n" ] && { echo "/usr/sbin/$n"; return; }
	done
	return 1
}

install_mariadb() {
	if find_bin mariadbd mysqld >/dev/null && find_bin mariadb-install-db mysql_install_db >/dev/null; then
		return
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "mysql.sh: MariaDB is not installed and we are not root to apt-get it" >&2
		return 1
	fi
	echo "mysql.sh: installing MariaDB from Debian's packages" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq mariadb-server >&2
	# The package may start a server of its own on 3306; we do not need it.
	if command -v service >/dev/null 2>&1; then service mariadb stop >/dev/null 2>&1 || true; fi
}

# owner is the system user the servers run as.
owner() {
	if [ "$(id -u)" = 0 ]; then echo mysql; else id -un; fi
}

running() { # port
	local pid
	pid=$(cat "$dir/$1/mariadbd.pid" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null
}

up() {
	install_mariadb
	local mariadbd installdb user
	mariadbd=$(find_bin mariadbd mysqld)
	installdb=$(find_bin mariadb-install-db mysql_install_db)
	user=$(owner)
	if [ "$(id -u)" = 0 ]; then
		id mysql >/dev/null 2>&1 || useradd --system --home-dir "$dir" --shell /bin/false mysql
	fi
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown "$user": "$dir"
	for port in "${ports[@]}"; do
		local data="$dir/$port"
		if running "$port"; then
			echo "mysql.sh: server on 127.0.0.1:$port already running"
			continue
		fi
		if [ ! -d "$data/db/mysql" ]; then
			rm -rf "$data"
			mkdir -p "$data/db"
			[ "$(id -u)" = 0 ] && chown -R "$user": "$data"
			"$installdb" --no-defaults --user="$user" --datadir="$data/db" --auth-root-authentication-method=normal \
				--skip-test-db >"$dir/install-$port.log" 2>&1 || { cat "$dir/install-$port.log" >&2; return 1; }
		fi
		start_one "$port" || return 1
		# root from 127.0.0.1 over TCP, without a password (throwaway servers).
		client "$port" -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
			return 1
		echo "mysql.sh: server on 127.0.0.1:$port started (data $data)"
	done
}

# start_one starts the server on an initialized data directory and waits
# until it answers.
start_one() { # port
	local port=$1 data="$dir/$1" mariadbd
	mariadbd=$(find_bin mariadbd mysqld)
	# --no-defaults: nothing from /etc/mysql; every setting the
	# participant relies on is spelled out (docs/mysql.md).
	"$mariadbd" --no-defaults --user="$(owner)" --datadir="$data/db" --port="$port" --bind-address=127.0.0.1 \
		--socket="$data/mariadbd.sock" --pid-file="$data/mariadbd.pid" --log-error="$data/server.log" \
		--innodb-flush-log-at-trx-commit=1 --sync-binlog=1 --innodb-lock-wait-timeout=1 \
		--max-connections=400 --innodb-buffer-pool-size=64M --skip-name-resolve \
		>/dev/null 2>&1 </dev/null &
	local i
	for i in $(seq 300); do
		if mariadb_ok "$port"; then return 0; fi
		sleep 0.2
	done
	tail -20 "$data/server.log" >&2
	return 1
}

crash() { # port
	local port=${1:?usage: mysql.sh crash PORT} pid
	pid=$(cat "$dir/$port/mariadbd.pid")
	kill -KILL "$pid"
	for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	start_one "$port"
	echo "mysql.sh: server on 127.0.0.1:$port killed and started again"
}

client() { # port, args...
	local port=$1
	shift
	local c
	c=$(find_bin mariadb mysql)
	"$c" --no-defaults -uroot --socket="$dir/$port/mariadbd.sock" "$@"
}

mariadb_ok() { client "$1" -e "SELECT 1" >/dev/null 2>&1; }

down() {
	for port in "${ports[@]}"; do
		local data="$dir/$port" pid
		[ -d "$data" ] || continue
		if pid=$(cat "$data/mariadbd.pid" 2>/dev/null) && kill -TERM "$pid" 2>/dev/null; then
			for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		fi
		echo "mysql.sh: server on 127.0.0.1:$port stopped"
	done
	rm -rf "$dir"
}

status() {
	for port in "${ports[@]}"; do
		if running "$port"; then echo "127.0.0.1:$port running"; else echo "127.0.0.1:$port stopped"; fi
	done
}

case "$cmd" in
up) up ;;
down) down ;;
status) status ;;
crash) crash "${2:-}" ;;
*)
	echo "usage: mysql.sh up|down|status|crash PORT" >&2
	exit 2
	;;
esac
