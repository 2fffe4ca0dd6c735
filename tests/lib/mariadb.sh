#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# mariadb.sh - a private MariaDB server for one test run (no service manager).
#
#   mariadb.sh start DIR     fresh datadir in DIR/data, a free loopback port,
#                            user 'roster' with a random password; writes DIR/env
#   mariadb.sh stop DIR      SIGTERM (up to 20 s), then SIGKILL; removes nothing
#   mariadb.sh kill DIR      SIGKILL at once (fault tests)
#   mariadb.sh restart DIR   stop if running, start again on the SAME port and
#                            datadir (recovery tests); DIR/env keeps its values
#
# DIR/env holds shell-style KEY=VALUE lines read by the tests:
#   ROSTER_TEST_MYSQL_HOST, _PORT, _USER, _PASSWORD, _SOCKET, _PID
#
# Only the process whose pid is in DIR/pid (and whose name is mariadbd) is
# ever signalled. Exit status is non-zero on any failure, with the tail of
# DIR/error.log on stderr.
set -euo pipefail

READY_DEADLINE_S=60
STOP_DEADLINE_S=20

die() {
    echo "mariadb.sh: $*" >&2
    if [[ -n "${DIR:-}" && -f "$DIR/error.log" ]]; then
        echo "---- tail of $DIR/error.log ----" >&2
        tail -n 30 "$DIR/error.log" >&2 || true
    fi
    exit 1
}

usage() {
    echo "usage: $0 start|stop|kill|restart DIR" >&2
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found (install mariadb-server and mariadb-client)"
}

# The pid recorded in DIR/pid if that process is alive and is a mariadbd.
server_pid() {
    local pid comm
    [[ -f "$DIR/pid" ]] || return 1
    pid=$(tr -dc '0-9' <"$DIR/pid")
    [[ -n "$pid" ]] || return 1
    [[ -r "/proc/$pid/comm" ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ "$comm" == mariadbd || "$comm" == mysqld ]] || return 1
    echo "$pid"
}

wait_gone() { # pid seconds
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.1
    done
    return 0
}

do_stop() {
    local pid
    if ! pid=$(server_pid); then
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_DEADLINE_S"; then
        echo "mariadb.sh: pid $pid ignored SIGTERM for ${STOP_DEADLINE_S}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
}

do_kill() {
    local pid
    if ! pid=$(server_pid); then
        echo "mariadb.sh: no server running in $DIR" >&2
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
}

port_in_use() { # port
    # a listener answers a connect; bash's /dev/tcp needs no extra tool
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

random_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 25001))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

client() { # args...
    mariadb --no-defaults --socket="$DIR/sock" -uroot --connect-timeout=2 "$@"
}

# Starts mariadbd on $1 and waits until it answers. Returns 0 when ready,
# 1 if the port was taken (caller may pick another), dies otherwise.
launch() { # port
    local port=$1 pid deadline
    rm -f "$DIR/pid"
    : >"$DIR/error.log"
    # setsid + closed stdio: the server outlives this script, and ctest does
    # not wait for it on inherited pipes.
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/data" --socket="$DIR/sock" \
        --port="$port" --bind-address=127.0.0.1 --pid-file="$DIR/pid" --skip-name-resolve \
        --innodb-buffer-pool-size=64M --log-error="$DIR/error.log" \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        </dev/null >>"$DIR/mariadbd.out" 2>&1 &
    pid=$!
    deadline=$((SECONDS + READY_DEADLINE_S))
    while :; do
        if client -e 'select 1' >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            if grep -qiE 'address already in use|bind on tcp/ip port' "$DIR/error.log"; then
                return 1
            fi
            die "mariadbd exited during start-up (port $port)"
        fi
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            die "mariadbd did not answer within ${READY_DEADLINE_S}s (port $port)"
        fi
        sleep 0.2
    done
    # the pid file is written before the socket accepts connections
    [[ "$(server_pid || true)" == "$pid" ]] || die "pid file $DIR/pid does not name mariadbd pid $pid"
    return 0
}

write_env() { # port password
    local tmp="$DIR/env.tmp"
    {
        echo "ROSTER_TEST_MYSQL_HOST=127.0.0.1"
        echo "ROSTER_TEST_MYSQL_PORT=$1"
        echo "ROSTER_TEST_MYSQL_USER=roster"
        echo "ROSTER_TEST_MYSQL_PASSWORD=$2"
        echo "ROSTER_TEST_MYSQL_SOCKET=$DIR/sock"
        echo "ROSTER_TEST_MYSQL_PID=$(server_pid)"
    } >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$DIR/env"
}

env_value() { # key
    sed -n "s/^$1=//p" "$DIR/env" 2>/dev/null | head -n 1
}

do_start() {
    local port="" password attempt
    need mariadbd
    need mariadb-install-db
    need mariadb
    need setsid
    do_stop
    (( ${#DIR} + 5 < 108 )) || die "DIR is too long for a Unix socket path: $DIR"
    rm -rf "$DIR/data" "$DIR/env" "$DIR/sock" "$DIR/pid"
    mkdir -p "$DIR/data"
    if ! mariadb-install-db --no-defaults --user=root --datadir="$DIR/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$DIR/install.log" 2>&1; then
        tail -n 30 "$DIR/install.log" >&2
        die "mariadb-install-db failed (log: $DIR/install.log)"
    fi
    for attempt in 1 2 3 4 5; do
        port=$(random_port) || die "no free loopback port found in 20000-45000"
        if launch "$port"; then
            break
        fi
        echo "mariadb.sh: port $port was taken, retrying (attempt $attempt)" >&2
        port=""
    done
    [[ -n "$port" ]] || die "could not bind a loopback port after 5 attempts"
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
    [[ ${#password} -ge 16 ]] || die "could not generate a password"
    client <<SQL || die "creating user 'roster' failed"
CREATE OR REPLACE USER 'roster'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE OR REPLACE USER 'roster'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO 'roster'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'roster'@'localhost';
SQL
    write_env "$port" "$password"
    echo "mariadb.sh: mariadbd pid $(server_pid) on 127.0.0.1:$port, socket $DIR/sock"
}

do_restart() {
    local port password
    [[ -f "$DIR/env" && -d "$DIR/data" ]] || die "nothing to restart in $DIR (run start first)"
    port=$(env_value ROSTER_TEST_MYSQL_PORT)
    password=$(env_value ROSTER_TEST_MYSQL_PASSWORD)
    [[ -n "$port" && -n "$password" ]] || die "$DIR/env lacks the port or password"
    do_stop
    if ! launch "$port"; then
        die "port $port is taken by another process; cannot restart on the same port"
    fi
    write_env "$port" "$password"
    echo "mariadb.sh: mariadbd restarted, pid $(server_pid) on 127.0.0.1:$port"
}

[[ $# -eq 2 ]] || usage
if [[ "$1" == start ]]; then
    mkdir -p "$2" || die "cannot create $2"
elif [[ ! -d "$2" ]]; then
    [[ "$1" == restart ]] && die "nothing to restart: $2 does not exist"
    exit 0 # stop / kill: nothing was started here
fi
DIR=$(cd "$2" && pwd -P)

case "$1" in
start) do_start ;;
stop) do_stop ;;
kill) do_kill ;;
restart) do_restart ;;
*) usage ;;
esac
