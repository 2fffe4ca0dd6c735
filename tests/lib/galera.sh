#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# galera.sh - a private three-node MariaDB Galera cluster on loopback for one
# test (no service manager), modelled on mariadb.sh.
#
#   galera.sh start DIR        three nodes in DIR/n1..n3: node 1 bootstraps a
#                              new cluster, nodes 2 and 3 join it by state
#                              transfer (rsync); user 'roster' with a random
#                              password; writes DIR/env once all three are
#                              Synced and the cluster size is 3
#   galera.sh stop DIR         SIGTERM every node (up to 20 s each), then SIGKILL
#   galera.sh kill DIR N       SIGKILL node N at once (fault tests)
#   galera.sh restart DIR N    start node N again on its own datadir and ports;
#                              it rejoins the running cluster (IST or SST) and
#                              the command returns once it is Synced
#
# DIR/env holds shell-style KEY=VALUE lines read by the tests:
#   ROSTER_TEST_GALERA_HOSTS      127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#   ROSTER_TEST_GALERA_PORT1..3   client ports
#   ROSTER_TEST_GALERA_SOCKET1..3 Unix sockets (root, for the test's own SQL)
#   ROSTER_TEST_GALERA_USER, _PASSWORD
#
# What makes Galera start on one machine (see ../../docs/ha.md):
#   - every mariadbd runs as the `mysql` user, its datadir owned by it: the
#     rsync state transfer drops privileges and cannot write a root-owned dir;
#   - each node has its own client port, group port G (gmcast.listen_addr),
#     IST port G+1 and SST port G+2, all on 127.0.0.1;
#   - --no-defaults, so the machine's own my.cnf does not leak in;
#   - short failure detection (evs.suspect_timeout and friends), so a killed
#     node is evicted in about a second and the others do not stall.
#
# Only processes whose pid is in DIR/nN/pid (and whose name is mariadbd) are
# ever signalled.
set -euo pipefail
NROOT=

READY_DEADLINE_S=90
STOP_DEADLINE_S=20
NODES=3
PROVIDER=${ROSTER_GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
# failure detection in about a second instead of 5-15 s
EVS="evs.suspect_timeout=PT1.5S;evs.inactive_timeout=PT3S;evs.inactive_check_period=PT0.5S"
EVS="$EVS;evs.keepalive_period=PT0.3S;evs.install_timeout=PT3S;gmcast.peer_timeout=PT2S"
EVS="$EVS;pc.wait_prim_timeout=PT10S;gcache.size=64M"

die() {
    echo "galera.sh: $*" >&2
    if [[ -n "${DIR:-}" ]]; then
        for n in $(seq 1 $NODES); do
            if [[ -f "$NROOT/n$n/error.log" ]]; then
                echo "---- tail of $NROOT/n$n/error.log ----" >&2
                tail -n 20 "$NROOT/n$n/error.log" >&2 || true
            fi
        done
    fi
    exit 1
}

usage() {
    echo "usage: $0 start|stop DIR | kill|restart DIR N" >&2
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found (install mariadb-server, galera-4, rsync)"
}

node_pid() { # n
    local pid comm f="$NROOT/n$1/pid"
    [[ -f "$f" ]] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ "$comm" == mariadbd || "$comm" == mysqld ]] || return 1
    echo "$pid"
}

wait_gone() { # pid seconds
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# Listening, or the local end of any connection (a connect alone misses those).
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    [[ -n "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]]
}

# A base port B with B+10(n-1)..B+10(n-1)+3 free for every node n (client,
# group, IST, SST): the nodes' ranges never overlap.
random_base() {
    local p ok
    for _ in $(seq 1 50); do
        # below the kernel's ephemeral range (32768-60999), where outgoing
        # connections take their local ports
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        ok=1
        for n in $(seq 0 $((NODES - 1))); do
            for d in 0 1 2 3; do
                if port_in_use $((p + 10 * n + d)); then ok=0; fi
            done
        done
        if ((ok)); then
            echo "$p"
            return 0
        fi
    done
    return 1
}

client() { # n args...
    local n=$1
    shift
    mariadb --no-defaults --socket="$NROOT/n$n/sock" -uroot --connect-timeout=2 "$@"
}

status_var() { # n name
    client "$1" --batch --skip-column-names -e "SHOW GLOBAL STATUS LIKE '$2'" 2>/dev/null |
        awk '{print $2}'
}

env_value() { sed -n "s/^$1=//p" "$DIR/env" 2>/dev/null | head -n 1; }

base_of() { sed -n "s/^BASE$1=//p" "$DIR/ports" | head -n 1; }

launch() { # n bootstrap(0|1)
    local n=$1 boot=$2 base g addr=""
    base=$(base_of "$n")
    g=$((base + 1))
    for m in $(seq 1 $NODES); do
        addr="$addr${addr:+,}127.0.0.1:$(($(base_of "$m") + 1))"
    done
    rm -f "$NROOT/n$n/pid"
    : >"$NROOT/n$n/error.log"
    chown mysql:mysql "$NROOT/n$n/error.log"
    local extra=()
    ((boot)) && extra+=(--wsrep-new-cluster)
    [[ -n "${START_POSITION:-}" ]] && extra+=(--wsrep-start-position="$START_POSITION")
    setsid mariadbd --no-defaults --user=mysql --datadir="$NROOT/n$n/data" \
        --socket="$NROOT/n$n/sock" --port="$base" --bind-address=127.0.0.1 \
        --pid-file="$NROOT/n$n/pid" --skip-name-resolve --log-error="$NROOT/n$n/error.log" \
        --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --binlog-format=ROW --default-storage-engine=InnoDB --innodb-autoinc-lock-mode=2 \
        --wsrep-on=ON --wsrep-provider="$PROVIDER" --wsrep-cluster-name=roster_test \
        --wsrep-cluster-address="gcomm://$addr" --wsrep-node-name="n$n" \
        --wsrep-node-address="127.0.0.1:$g" \
        --wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:$g;ist.recv_addr=127.0.0.1:$((g + 1));$EVS" \
        --wsrep-sst-receive-address="127.0.0.1:$((g + 2))" --wsrep-sst-method=rsync \
        "${extra[@]}" </dev/null >>"$NROOT/n$n/mariadbd.out" 2>&1 &
    echo $! >"$NROOT/n$n/launched"
}

# Waits until node n answers and is Synced (and, if given, the cluster has `size` nodes).
wait_synced() { # n [size]
    local n=$1 size=${2:-} deadline=$((SECONDS + READY_DEADLINE_S)) pid st cs
    pid=$(cat "$NROOT/n$n/launched")
    while :; do
        st=$(status_var "$n" wsrep_local_state_comment || true)
        cs=$(status_var "$n" wsrep_cluster_size || true)
        if [[ "$st" == Synced && (-z "$size" || "$cs" == "$size") ]]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            # galera-4 26.4 now and then fails its own gcomm thread set-up
            # ("Failed to read thread schedparams: ... No such process"): the
            # node never joined, so starting it again is safe
            grep -q 'Failed to read thread schedparams' "$NROOT/n$n/error.log" && return 2
            grep -q 'Address already in use' "$NROOT/n$n/error.log" && return 3
            die "node $n (pid $pid) exited during start-up"
        fi
        ((SECONDS < deadline)) || die "node $n not Synced within ${READY_DEADLINE_S}s (state '$st', size '$cs')"
        sleep 0.2
    done
}

# Launches node n and waits until it is Synced; retries the schedparams failure.
start_node() { # n bootstrap [size]
    local rc
    for attempt in 1 2 3; do
        launch "$1" "$2"
        rc=0
        wait_synced "$1" "${3:-}" || rc=$?
        ((rc == 0)) && return 0
        ((rc == 3)) && return 3 # a port was taken meanwhile: the caller picks others
        echo "galera.sh: node $1 failed its gcomm set-up, starting it again (attempt $attempt)" >&2
        cp "$NROOT/n$1/error.log" "$NROOT/n$1/error.log.$attempt" 2>/dev/null || true
    done
    die "node $1 did not start after 3 attempts"
}

do_stop() {
    local pid
    # the last node down keeps the most recent state: stop 3, 2, 1
    for n in $(seq $NODES -1 1); do
        pid=$(node_pid "$n") || continue
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$STOP_DEADLINE_S"; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || die "node $n pid $pid survived SIGKILL"
        fi
    done
}

do_kill() { # n
    local pid
    pid=$(node_pid "$1") || { echo "galera.sh: node $1 is not running" >&2; return 0; }
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "node $1 pid $pid survived SIGKILL"
}

# Fresh datadirs and ports, node 1 bootstraps, 2 and 3 join. Returns 3 if
# a port was taken meanwhile.
start_cluster() {
    local base password
    : >"$DIR/ports"
    base=$(random_base) || die "no free loopback ports found for three nodes"
    for n in $(seq 1 $NODES); do
        rm -rf "$NROOT/n$n"
        mkdir -p "$NROOT/n$n/data"
        echo "BASE$n=$((base + 10 * (n - 1)))" >>"$DIR/ports"
    done
    chown -R mysql:mysql "$NROOT"/n*
    runuser -u mysql -- test -w "$NROOT/n1/data" ||
        die "user mysql cannot reach $NROOT/n1/data: make every parent directory traversable (o+x)"
    if ! mariadb-install-db --no-defaults --user=mysql --datadir="$NROOT/n1/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$DIR/install.log" 2>&1; then
        tail -n 30 "$DIR/install.log" >&2
        die "mariadb-install-db failed"
    fi
    start_node 1 1 || return $?
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
    client 1 <<SQL || die "creating user 'roster' failed"
CREATE OR REPLACE USER 'roster'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE OR REPLACE USER 'roster'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO 'roster'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'roster'@'localhost';
SQL
    echo "$password" >"$DIR/password"
    chmod 600 "$DIR/password"
    # one joiner at a time: each takes a full state transfer from a donor
    start_node 2 0 || return $?
    start_node 3 0 3 || return $?
}

do_start() {
    local password base
    for t in mariadbd mariadb-install-db mariadb setsid rsync wsrep_sst_rsync; do need "$t"; done
    [[ -r "$PROVIDER" ]] || die "$PROVIDER missing (install galera-4)"
    getent passwd mysql >/dev/null || die "no 'mysql' user (install mariadb-server)"
    do_stop
    (( ${#NROOT} + 8 < 108 )) || die "too long for a Unix socket path: $NROOT"
    local attempt rc
    for attempt in 1 2 3; do
        rc=0
        start_cluster || rc=$?
        ((rc == 0)) && break
        ((rc == 3)) || die "starting the cluster failed"
        echo "galera.sh: a port was taken during start-up, starting again on others (attempt $attempt)" >&2
        do_stop
    done
    ((rc == 0)) || die "could not start on free ports after 3 attempts"
    password=$(cat "$DIR/password")
    local hosts="" tmp="$DIR/env.tmp"
    {
        for n in $(seq 1 $NODES); do
            base=$(base_of "$n")
            hosts="$hosts${hosts:+,}127.0.0.1:$base"
            echo "ROSTER_TEST_GALERA_PORT$n=$base"
            echo "ROSTER_TEST_GALERA_SOCKET$n=$NROOT/n$n/sock"
        done
        echo "ROSTER_TEST_GALERA_HOSTS=$hosts"
        echo "ROSTER_TEST_GALERA_USER=roster"
        echo "ROSTER_TEST_GALERA_PASSWORD=$password"
    } >"$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$DIR/env"
    echo "galera.sh: 3 nodes Synced, client ports $hosts"
}

# After a SIGKILL the datadir's grastate.dat says seqno -1, and a node
# started on it asks for a full state transfer (SST), whose rsync donor is
# read-locked for the whole copy: writes through it stall. Recover the last
# committed position from InnoDB first (what galera_recovery does under
# systemd), so the node rejoins by IST from the others' gcache instead.
recover_position() { # n
    local n=$1
    local log="$NROOT/n$n/recover.log"
    : >"$log"
    chown mysql:mysql "$log"
    mariadbd --no-defaults --user=mysql --datadir="$NROOT/n$n/data" --socket="$NROOT/n$n/recover.sock" \
        --pid-file="$NROOT/n$n/recover.pid" --skip-networking --log-error="$log" \
        --innodb-buffer-pool-size=32M --innodb-log-file-size=16M --binlog-format=ROW \
        --wsrep-on=ON --wsrep-provider="$PROVIDER" --wsrep-cluster-address=gcomm:// \
        --wsrep-recover </dev/null >/dev/null 2>&1 || true
    sed -n 's/.*WSREP: Recovered position: *\([0-9a-f-]*:[0-9-]*\).*/\1/p' "$log" | tail -n 1
}

do_restart() { # n
    local n=$1
    [[ -f "$DIR/env" && -d "$NROOT/n$n/data" ]] || die "nothing to restart in $DIR (run start first)"
    ! node_pid "$n" >/dev/null || die "node $n is still running"
    START_POSITION=$(recover_position "$n")
    if [[ "$START_POSITION" == *:-1 || -z "$START_POSITION" ]]; then
        START_POSITION=""
    fi
    echo "galera.sh: node $n recovered position '${START_POSITION:-none}'"
    start_node "$n" 0
    echo "galera.sh: node $n rejoined, pid $(node_pid "$n"), cluster size $(status_var "$n" wsrep_cluster_size)"
}

[[ $# -ge 2 ]] || usage
if [[ "$1" == start ]]; then
    mkdir -p "$2" || die "cannot create $2"
elif [[ ! -d "$2" ]]; then
    [[ "$1" == restart ]] && die "nothing to restart: $2 does not exist"
    exit 0
fi
DIR=$(cd "$2" && pwd -P)
# The nodes (DIR/n1..n3 in the usage above) live in a directory of their
# own under /tmp, named in DIR/nodes: mariadbd runs as `mysql`, which must
# traverse every parent of its datadir, and a build tree inside a private
# directory (mktemp -d makes them 0700) is not traversable.
NROOT=$(cat "$DIR/nodes" 2>/dev/null || true)
[[ -n "$NROOT" && -d "$NROOT" ]] || NROOT=
if [[ "$1" == start && -z "$NROOT" ]]; then
    NROOT=$(mktemp -d /tmp/roster-galera.XXXXXX) || die "cannot create a directory in /tmp"
    chmod 755 "$NROOT"
    echo "$NROOT" >"$DIR/nodes"
fi
[[ -n "$NROOT" ]] || NROOT=$DIR

case "$1" in
start) [[ $# -eq 2 ]] || usage; do_start ;;
stop)
    [[ $# -eq 2 ]] || usage
    do_stop
    case "$NROOT" in /tmp/roster-galera.*) rm -rf "$NROOT" "$DIR/nodes" ;; esac
    ;;
kill) [[ $# -eq 3 && "$3" =~ ^[1-3]$ ]] || usage; do_kill "$3" ;;
restart) [[ $# -eq 3 && "$3" =~ ^[1-3]$ ]] || usage; do_restart "$3" ;;
*) usage ;;
esac
