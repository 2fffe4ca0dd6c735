#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# cluster.sh - DB-GPT's high-availability walk-through on one machine, in one
# command: a private MariaDB, three controllers sharing its registry table,
# an LLM worker and a text2vec worker (roster's builtin models) registered
# through all three controllers, and the webserver in front of them, all on
# 127.0.0.1. It prints what to try, then runs until Ctrl-C (or SIGTERM),
# which stops every process it started and removes its temporary directory.
#
#   scripts/cluster.sh [--port-base N] [--web-port N]
#
# Ports: controllers N, N+10 and N+20, the LLM worker N+1, the text2vec
# worker N+3 (N = --port-base, default 8000, as in DB-GPT's walk-through), the
# webserver --web-port (default 5670). The environment can set them too:
# ROSTER_CLUSTER_PORT_BASE, ROSTER_CLUSTER_WEB_PORT. Every port must be free:
# the script refuses to start otherwise. MariaDB listens on a free random
# port (tests/lib/mariadb.sh).
#
# Other environment: ROSTER_BIN (a roster binary to use: nothing is built),
# LLM_MODEL and EMBEDDING_MODEL (the models' names; default builtin-llm and
# text2vec), TMPDIR (where the temporary directory goes). Without ROSTER_BIN
# it installs what is missing (scripts/deps.sh, MariaDB) and builds build/roster
# as scripts/run.sh does.
#
# Processes are started in sessions of their own, so Ctrl-C reaches only this
# script, which stops them in order: SIGTERM to the roster processes (they
# deregister and drain), SIGKILL to any still running after
# STOP_TIMEOUT_S, then MariaDB. Logs are in the temporary directory while it
# runs.
set -euo pipefail

STOP_TIMEOUT_S=15
READY_TIMEOUT_S=60

root=$(cd "$(dirname "$0")/.." && pwd -P)
port_base=${ROSTER_CLUSTER_PORT_BASE:-8000}
web_port=${ROSTER_CLUSTER_WEB_PORT:-5670}
llm_model=${LLM_MODEL:-builtin-llm}
embedding_model=${EMBEDDING_MODEL:-text2vec}

usage() { # exit code: 0 (--help, to stdout) or 64 (a usage error, to stderr)
    local code=${1:-64}
    if [ "$code" -eq 0 ]; then
        sed -n '3,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    else
        sed -n '3,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    fi
    exit "$code"
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --port-base) [ $# -ge 2 ] || usage; port_base=$2; shift 2 ;;
    --port-base=*) port_base=${1#*=}; shift ;;
    --web-port) [ $# -ge 2 ] || usage; web_port=$2; shift 2 ;;
    --web-port=*) web_port=${1#*=}; shift ;;
    -h | --help) usage 0 ;;
    *) echo "cluster.sh: unknown argument '$1'" >&2; usage ;;
    esac
done

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1024 ] && [ "$1" -le 65535 ]; }
if ! is_port "$port_base" || ! is_port "$((port_base + 20))"; then
    die "--port-base must leave N..N+20 within 1024..65535 (got '$port_base')"
fi
is_port "$web_port" || die "--web-port must be in 1024..65535 (got '$web_port')"

ctl_ports=("$port_base" "$((port_base + 10))" "$((port_base + 20))")
llm_port=$((port_base + 1))
emb_port=$((port_base + 3))
for p in "${ctl_ports[@]}" "$llm_port" "$emb_port"; do
    [ "$p" != "$web_port" ] || die "--web-port $web_port collides with a port of --port-base $port_base"
done
controller_addr="http://127.0.0.1:${ctl_ports[0]},http://127.0.0.1:${ctl_ports[1]},http://127.0.0.1:${ctl_ports[2]}"

port_in_use() { # port: true when something accepts connections on it
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_ports() {
    local p what taken=0
    for p in "${ctl_ports[@]}" "$llm_port" "$emb_port" "$web_port"; do
        if port_in_use "$p"; then
            case "$p" in
            "$llm_port") what="the LLM worker" ;;
            "$emb_port") what="the text2vec worker" ;;
            "$web_port") what="the webserver" ;;
            *) what="a controller" ;;
            esac
            echo "cluster.sh: port $p (for $what) is taken on 127.0.0.1 (see: ss -ltnp 'sport = :$p')" >&2
            taken=1
        fi
    done
    [ "$taken" -eq 0 ] ||
        die "choose free ports with --port-base N (uses N, N+1, N+3, N+10, N+20) and --web-port N"
}
check_ports

# ---- the binary ------------------------------------------------------------------
if [ -n "${ROSTER_BIN:-}" ]; then
    roster=$ROSTER_BIN
    [ -x "$roster" ] || die "ROSTER_BIN=$roster is not an executable"
else
    "$root/scripts/deps.sh" build
    if ! command -v mariadbd >/dev/null || ! command -v mariadb >/dev/null; then
        echo "cluster.sh: installing mariadb-server mariadb-client" >&2
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
            mariadb-server mariadb-client >/dev/null
    fi
    echo "cluster.sh: building roster (build/)" >&2
    cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$root/build" -j"$(nproc)" >/dev/null
    roster=$root/build/roster
fi
command -v mariadbd >/dev/null || die "mariadbd not found (install mariadb-server)"

# ---- start-up and shutdown -----------------------------------------------------------
tmp=""
names=()
pids=()
stopping=0
stop_requested=0
db_starting="" # pid of `mariadb.sh start` while it runs

# Waits without a child process: `read -t` on a FIFO nobody writes to. (A
# signal sent to this script alone, not by a terminal to its process group,
# while a foreground child runs would be dropped by bash; builtins and
# `wait` are interrupted at once.)
pause() { read -r -t "$1" -u 9 _ || true; }

stop_all() {
    local i deadline alive
    [ "$stopping" -eq 0 ] || return 0
    stopping=1
    echo
    echo "cluster.sh: stopping" >&2
    # the webserver first, then the workers (they deregister), the controllers last
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while :; do
        alive=0
        for i in "${!pids[@]}"; do
            if kill -0 "${pids[$i]}" 2>/dev/null; then
                # reap it if it has exited (a zombie still answers kill -0)
                if [ "$(awk '{print $3}' "/proc/${pids[$i]}/stat" 2>/dev/null)" = Z ]; then
                    wait "${pids[$i]}" 2>/dev/null || true
                else
                    alive=1
                fi
            fi
        done
        if [ "$alive" -eq 0 ] || [ "$SECONDS" -ge "$deadline" ]; then
            break
        fi
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "cluster.sh: ${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for ${STOP_TIMEOUT_S}s: SIGKILL" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
        wait "${pids[$i]}" 2>/dev/null || true
    done
    if [ -n "$db_starting" ] && kill -0 "$db_starting" 2>/dev/null; then
        echo "cluster.sh: waiting for MariaDB to finish starting, to stop it" >&2
        while kill -0 "$db_starting" 2>/dev/null; do
            wait "$db_starting" 2>/dev/null || true # a signal ends a wait early
        done
    fi
    if [ -n "$tmp" ] && [ -d "$tmp/mariadb" ]; then
        "$root/tests/lib/mariadb.sh" stop "$tmp/mariadb" >/dev/null || true
    fi
    { exec 9>&-; } 2>/dev/null || true
    if [ -n "$tmp" ]; then
        rm -rf "$tmp"
        echo "cluster.sh: stopped; $tmp removed" >&2
    fi
}
# The signal trap only takes note: a trap runs inside whatever builtin was
# interrupted (`read -t`, `wait`), where a long handler is not safe. The
# script checks the note wherever it waits, and stops from there.
check_stop() {
    if [ "$stop_requested" -ne 0 ]; then
        stop_all
        exit 0
    fi
}
trap 'stop_requested=1' INT TERM
trap 'rc=$?; stop_all; exit $rc' EXIT
tmp=$(mktemp -d "${TMPDIR:-/tmp}/roster-cluster.XXXXXX")
mkfifo "$tmp/tick"
exec 9<>"$tmp/tick"

# Starts `roster ARGS...` in a session of its own (Ctrl-C reaches only this
# script) with its log in $tmp/NAME.log.
launch() { # name env-assignments... -- roster-args...
    local name=$1
    shift
    local envs=()
    while [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    env "${envs[@]}" setsid "$roster" "$@" </dev/null >"$tmp/$name.log" 2>&1 &
    names+=("$name")
    pids+=("$!")
}

pid_of() { # name
    local i
    for i in "${!names[@]}"; do
        [ "${names[$i]}" != "$1" ] || { echo "${pids[$i]}"; return; }
    done
}

# GET http://127.0.0.1:PORT/PATH with bash alone; prints the body; true on 200.
http_get() { # port path
    local status body
    { exec 8<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&8
    body=$(timeout 5 cat <&8 || true)
    exec 8>&-
    status=$(printf '%s' "$body" | head -n 1 | awk '{print $2}')
    printf '%s' "${body#*$'\r\n\r\n'}"
    [ "$status" = 200 ]
}

# Waits until `check` succeeds, failing early if the process `name` died.
wait_ready() { # name what check...
    local name=$1 what=$2 pid deadline
    shift 2
    pid=$(pid_of "$name")
    deadline=$((SECONDS + READY_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        check_stop
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$tmp/$name.log" >&2 || true
            die "$name exited during start-up (log above)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${READY_TIMEOUT_S}s (log: $tmp/$name.log)"
        pause 0.2
    done
}

# ---- MariaDB ---------------------------------------------------------------------------
echo "cluster.sh: starting a private MariaDB in $tmp/mariadb" >&2
# in a session of its own and waited for: Ctrl-C then interrupts the wait,
# and stop_all lets the start finish before it stops the server
setsid "$root/tests/lib/mariadb.sh" start "$tmp/mariadb" </dev/null >/dev/null &
db_starting=$!
while :; do
    rc=0
    wait "$db_starting" || rc=$?
    # a signal interrupts `wait` (status above 128) while mariadb.sh still runs
    if [ "$rc" -gt 128 ] && kill -0 "$db_starting" 2>/dev/null; then
        check_stop
        continue
    fi
    break
done
check_stop
[ "$rc" -eq 0 ] || die "MariaDB did not start (see above; $tmp/mariadb/error.log)"
db_starting=""
db_port=$(sed -n 's/^ROSTER_TEST_MYSQL_PORT=//p' "$tmp/mariadb/env")
db_user=$(sed -n 's/^ROSTER_TEST_MYSQL_USER=//p' "$tmp/mariadb/env")
db_password=$(sed -n 's/^ROSTER_TEST_MYSQL_PASSWORD=//p' "$tmp/mariadb/env")
db_pid=$(sed -n 's/^ROSTER_TEST_MYSQL_PID=//p' "$tmp/mariadb/env")
mariadb --no-defaults --socket="$tmp/mariadb/sock" -uroot -e 'CREATE DATABASE roster CHARACTER SET utf8mb4'
check_ports # MariaDB took a random port: not one of ours

# roster's processes read ROSTER_* and CONTROLLER_* variables as options: the
# caller's must not leak into them
for v in $(compgen -e); do
    case "$v" in
    ROSTER_BIN) ;;
    ROSTER_* | CONTROLLER_ADDRESS | CONTROLLER_REGISTRY_DB_PASSWORD) unset "$v" ;;
    esac
done

# ---- controllers: DB-GPT's flags, the password from the environment -----------------------
for i in 0 1 2; do
    launch "controller$((i + 1))" "ROSTER_REGISTRY_DB_PASSWORD=$db_password" -- \
        start controller --host 127.0.0.1 --port "${ctl_ports[$i]}" \
        --registry_type database --registry_db_type mysql --registry_db_name roster \
        --registry_db_host 127.0.0.1 --registry_db_port "$db_port" --registry_db_user "$db_user"
done
for i in 0 1 2; do
    wait_ready "controller$((i + 1))" "controller $((i + 1))" http_get "${ctl_ports[$i]}" /api/health
done

check_stop

# ---- workers: the builtin models, registered through every controller ---------------------
launch llm-worker -- start worker --model_name "$llm_model" --host 127.0.0.1 --port "$llm_port" \
    --heartbeat_interval 5 --controller_addr "$controller_addr"
launch text2vec-worker -- start worker --model_name "$embedding_model" --worker_type text2vec \
    --host 127.0.0.1 --port "$emb_port" --heartbeat_interval 5 --controller_addr "$controller_addr"
registered() { http_get "$1" /api/health | grep -q '"registered":true'; }
wait_ready llm-worker "the LLM worker" registered "$llm_port"
wait_ready text2vec-worker "the text2vec worker" registered "$emb_port"

check_stop

# ---- the webserver ---------------------------------------------------------------------------
launch webserver "LLM_MODEL=$llm_model" "EMBEDDING_MODEL=$embedding_model" -- \
    start webserver --host 127.0.0.1 --port "$web_port" --controller_addr "$controller_addr"
serves_both() {
    local models
    models=$(http_get "$web_port" /v1/models) &&
        grep -q "\"$llm_model\"" <<<"$models" && grep -q "\"$embedding_model\"" <<<"$models"
}
wait_ready webserver "the webserver" serves_both

check_stop

# ---- what to try -----------------------------------------------------------------------------
c1=http://127.0.0.1:${ctl_ports[0]}
web=http://127.0.0.1:$web_port
chat_hint=""
if "$roster" model --help 2>&1 | grep -q 'chat'; then
    chat_hint="CONTROLLER_ADDRESS=$controller_addr $roster model chat --model_name $llm_model"
fi
row() { printf '  %-16s %-44s pid %s\n' "$@"; }
echo
echo "roster cluster on 127.0.0.1 (DB-GPT's HA walk-through on one machine)"
echo
row MariaDB "127.0.0.1:$db_port (database roster, user $db_user)" "$db_pid"
for i in 0 1 2; do
    row "controller $((i + 1))" "http://127.0.0.1:${ctl_ports[$i]}" "$(pid_of "controller$((i + 1))")"
done
row "LLM worker" "http://127.0.0.1:$llm_port (model $llm_model)" "$(pid_of llm-worker)"
row "text2vec worker" "http://127.0.0.1:$emb_port (model $embedding_model)" "$(pid_of text2vec-worker)"
row webserver "$web" "$(pid_of webserver)"
printf '  %-16s %s\n' dashboard "$web/" "OpenAI base URL" "$web/v1" logs "$tmp"
cat <<EOF

Try:
  CONTROLLER_ADDRESS=$controller_addr $roster model list
  curl -s $web/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model":"$llm_model","messages":[{"role":"user","content":"How does a worker register?"}]}'
  curl -s $web/v1/embeddings -H 'Content-Type: application/json' \\
       -d '{"model":"$embedding_model","input":["hello","world"]}'
  curl -s '$c1/api/controller/models?view=full'
  mariadb --no-defaults --socket=$tmp/mariadb/sock -uroot roster \\
          -e 'SELECT model_name, host, port, healthy, last_heartbeat FROM dbgpt_cluster_registry_instance'
${chat_hint:+  $chat_hint
}
Break things:
  kill a controller:  kill $(pid_of controller2)    (workers and the webserver move to the others; model list still answers)
  kill a worker:      kill -9 $(pid_of llm-worker)    (unhealthy everywhere after its lease, 3 x 5 s heartbeats)
  stop MariaDB:       kill -STOP $db_pid   (reads go on from memory, writes get 503; kill -CONT $db_pid)

Ctrl-C stops everything and removes $tmp.
cluster ready
EOF

# ---- run until a signal --------------------------------------------------------------------
reported=()
while :; do
    pause 1
    check_stop
    for i in "${!pids[@]}"; do
        if [ -z "${reported[$i]:-}" ] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
            wait "${pids[$i]}" 2>/dev/null && rc=0 || rc=$?
            echo "cluster.sh: ${names[$i]} (pid ${pids[$i]}) exited ($rc); log: $tmp/${names[$i]}.log" >&2
            reported[i]=1
        fi
    done
done
