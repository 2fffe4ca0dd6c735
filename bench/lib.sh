# Shared by the bench/*.sh scripts (source it from the repository root):
# a Release build in build-bench, a work dir cleaned up on exit with every
# process in `pids` (and nginx, and a MariaDB in $work/mariadb if any),
# nginx as the baseline, wrk output as "rps p50_ms p99_ms non2xx", and the
# results protocol bench/run collects (emit, below).
#
# Results protocol. bench/run sets, for every script it runs:
#   BENCH_RESULTS  a TSV file the script appends result rows to (emit)
#   BENCH_RUNS     how many times to repeat each measurement (3; 1 quick)
#   BENCH_QUICK    1 for a short smoke run (small sizes, 2-3 s per point)
# A row is "key<TAB>x<TAB>run<TAB>value": key is "<bench>.<metric>" with
# the unit as the metric's suffix (_rps _ms _us _kib _mib _bytes _ratio
# _count _s _pct), x the curve's parameter (instances, streams, ...) or
# "-" for a single point, run 1..BENCH_RUNS. Ratios to a baseline are
# computed per run inside the script (baseline and subject measured back
# to back) and emitted as their own keys; bench/report.py takes medians
# and spreads over runs and writes docs/performance.md.

BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_QUICK=${BENCH_QUICK:-0}
BENCH_RESULTS=${BENCH_RESULTS:-/dev/null}

# bench/run installs and builds once, then sets BENCH_PREPARED=1 and
# ROSTER_BIN for every script it runs.
[ "${BENCH_PREPARED:-0}" = 1 ] || scripts/deps.sh bench >&2
# ROSTER_BIN: a roster binary to measure instead (bench/run --bin; CI's
# smoke run passes its own build rather than making a second one)
if [ -n "${ROSTER_BIN:-}" ]; then
    bin=$(realpath "$ROSTER_BIN")
else
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build-bench -j"$(nproc)" --target roster >/dev/null
    bin=$PWD/build-bench/roster
fi

work=$(mktemp -d /tmp/roster-bench.XXXXXX)
pids=()
bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    [ -f "$work/nginx-proxy.pid" ] && kill "$(cat "$work/nginx-proxy.pid")" 2>/dev/null || true
    [ -d "$work/mariadb" ] && tests/lib/mariadb.sh stop "$work/mariadb" >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap bench_cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port_file() {
    for _ in $(seq 1 200); do
        [ -s "$1" ] && { cat "$1"; return 0; }
        sleep 0.05
    done
    echo "bench: $1 never appeared" >&2
    return 1
}

# Starts nginx (2 workers, access log off) answering `return 200`; sets nport.
start_nginx() {
    nport=$(free_port)
    cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$nport; location / { return 200 'ok'; } }
}
NGINX
    nginx -c "$work/nginx.conf" -p "$work"
    sleep 0.3
}

# Starts nginx (2 workers) as a reverse proxy to 127.0.0.1:$1 with upstream
# keep-alive and no response buffering (chunks pass as they come, as
# roster's do); sets pport.
start_nginx_proxy() { start_nginx_proxy_multi "$1"; }

# The same proxy over 127.0.0.1:PORT for each argument, round robin (nginx's
# default); a proxy already running is stopped first, and its port reused.
# Sets pport.
start_nginx_proxy_multi() {
    local p servers=""
    stop_nginx_proxy
    for p in "$@"; do servers+="    server 127.0.0.1:$p;"$'\n'; done
    pport=${pport:-$(free_port)}
    cat >"$work/nginx-proxy.conf" <<NGINX
worker_processes 2;
pid $work/nginx-proxy.pid;
error_log $work/nginx-proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream worker {
$servers    keepalive 128;
  }
  server {
    listen 127.0.0.1:$pport;
    location / {
      proxy_pass http://worker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
    nginx -c "$work/nginx-proxy.conf" -p "$work"
    sleep 0.3
}

# Stops the proxy of start_nginx_proxy*, if any, and waits for it to go.
stop_nginx_proxy() {
    local pid
    [ -s "$work/nginx-proxy.pid" ] || return 0
    pid=$(cat "$work/nginx-proxy.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$work/nginx-proxy.pid"
}

# wrk --latency output -> "rps p50_ms p99_ms non2xx"
summarize() {
    awk '
      /Requests\/sec/ {rps=$2}
      /^ +50%/ {p50=$2}
      /^ +99%/ {p99=$2}
      /Non-2xx/ {bad=$NF}
      function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
      END {printf "%.0f %.3f %.3f %d\n", rps, ms(p50), ms(p99), bad+0}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

# emit KEY X RUN VALUE: one result row (see the protocol above)
emit() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$BENCH_RESULTS"
}

# emit_cmd BENCH COMMAND...: records the command that produced BENCH's rows
emit_cmd() {
    local b=$1
    shift
    printf '#cmd\t%s\t%s\n' "$b" "$*" >>"$BENCH_RESULTS"
}

# rss_kib PID: resident set size in KiB
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# cpu_ticks PID: user+system CPU time in clock ticks (sysconf CLK_TCK, 100)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# ---- shared by bench_worker.sh, bench_apiserver.sh, bench_webserver.sh ----

# bench_secs [SECONDS [FULL]]: seconds per measurement: SECONDS if given
# and not empty, else 2 in quick mode and FULL (default 5) otherwise
bench_secs() {
    if [ -n "${1:-}" ]; then
        echo "$1"
    elif [ "$BENCH_QUICK" = 1 ]; then
        echo 2
    else
        echo "${2:-5}"
    fi
}

# start_role NAME ROLE [ARGS...]: starts `roster start ROLE` on a free
# loopback port (written to $work/NAME.port, log in $work/NAME.log) and
# adds it to pids (call it directly, not in a subshell); port_of NAME
# then waits for and prints its port.
start_role() {
    local name=$1 role=$2
    shift 2
    "$bin" start "$role" --host 127.0.0.1 --port 0 --port_file "$work/$name.port" \
        --log_level error "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
}
port_of() { wait_port_file "$work/$1.port"; }

# chat_body MODEL [stream]: the benchmarks' chat request (16 tokens,
# temperature 0), streamed if a second argument is given
chat_body() {
    printf '{"model":"%s","messages":[{"role":"user","content":"How does a worker register?"}],"temperature":0,"max_tokens":16%s}' \
        "$1" "${2:+,\"stream\":true}"
}

# post_lua FILE BODY: a wrk script posting BODY as JSON
post_lua() {
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$2]]
function response(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
LUA
}

# chat_luas MODEL: writes $work/chat.lua and $work/stream.lua (chat_body)
chat_luas() {
    post_lua "$work/chat.lua" "$(chat_body "$1")"
    post_lua "$work/stream.lua" "$(chat_body "$1" stream)"
}

# wait_chat URL MODEL: polls (10 s deadline) until a chat at URL (.../v1)
# answers 200, e.g. an apiserver once a worker's registration reaches its
# table; then checks that a stream ends with [DONE]
wait_chat() {
    local body
    body=$(chat_body "$2")
    for _ in $(seq 1 100); do
        curl -sf "$1/chat/completions" -d "$body" >/dev/null && break
        sleep 0.1
    done
    curl -sf "$1/chat/completions" -d "$body" >/dev/null
    curl -sfN "$1/chat/completions" -d "$(chat_body "$2" stream)" | grep -q '^data: \[DONE\]'
}

# wrk_run CONNS THREADS SECS URL [SCRIPT]: "rps p50_ms p99_ms non2xx"
wrk_run() {
    wrk -t"$2" -c"$1" -d"$3s" --latency ${5:+-s "$5"} "$4" | summarize
}

# sub A B: A - B to 3 decimals
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }

# emit_wrk KEY RUN "rps p50 p99 non2xx": KEY_rps, KEY_p50_ms, KEY_p99_ms
# (x "-"); the non-2xx count is the caller's to report
emit_wrk() {
    local rps p50 p99 _bad
    read -r rps p50 p99 _bad <<<"$3"
    emit "$1_rps" - "$2" "$rps"
    emit "$1_p50_ms" - "$2" "$p50"
    emit "$1_p99_ms" - "$2" "$p99"
}

# bench_banner: the progress line that starts the measurements
bench_banner() {
    echo "bench: $(nproc) CPUs, ${secs}s per measurement, $BENCH_RUNS runs, work dir $work" >&2
}

# table_head WIDTH RUN: the human table's head for run RUN
table_head() {
    printf '\nrun %d/%d, %ss per line\n' "$2" "$BENCH_RUNS" "$secs"
    printf "%-$1s %10s %9s %9s %s\n" "measurement" "req/s" "p50 ms" "p99 ms" "notes"
}

# table_row WIDTH LABEL "rps p50 p99 non2xx" NOTES: one line of it
table_row() {
    local rps p50 p99 _bad
    read -r rps p50 p99 _bad <<<"$3"
    printf "%-$1s %10d %9.3f %9.3f %s\n" "$2" "$rps" "$p50" "$p99" "$4"
}

# measure NAME KEY CONNS THREADS URL [SCRIPT]: one wrk measurement (secs
# long) in run $run: emits KEY_rps, KEY_p50_ms and KEY_p99_ms (emit_wrk)
# and sets NAME to wrk_run's "rps p50_ms p99_ms non2xx", and NAME_rps,
# NAME_p50, NAME_p99 and NAME_bad to its fields
measure() {
    local res
    res=$(wrk_run "$3" "$4" "$secs" "$5" "${6:-}")
    printf -v "$1" '%s' "$res"
    read -r "$1_rps" "$1_p50" "$1_p99" "$1_bad" <<<"$res"
    emit_wrk "$2" "$run" "$res"
}

# sqlq ARGS...: the mariadb client on the private MariaDB (start_db_controllers)
sqlq() {
    MYSQL_PWD=$ROSTER_TEST_MYSQL_PASSWORD mariadb --protocol=TCP -h "$ROSTER_TEST_MYSQL_HOST" \
        -P "$ROSTER_TEST_MYSQL_PORT" -u "$ROSTER_TEST_MYSQL_USER" --batch --skip-column-names "$@"
}

# start_db_controllers N [FLAG...]: a private MariaDB in $work/mariadb (its
# env sourced, its pid in db_pid) with a database `bench`, and N
# controllers sharing its registry table, each with the extra FLAGs; sets
# ports and ctl_pids (also in pids)
start_db_controllers() {
    local n=$1 i
    shift
    tests/lib/mariadb.sh start "$work/mariadb" >/dev/null
    # shellcheck disable=SC1091
    . "$work/mariadb/env"
    db_pid=$(tr -dc '0-9' <"$work/mariadb/pid")
    sqlq -e "CREATE DATABASE bench"
    ports=()
    ctl_pids=()
    for i in $(seq 1 "$n"); do
        ROSTER_REGISTRY_DB_PASSWORD=$ROSTER_TEST_MYSQL_PASSWORD "$bin" start controller \
            --host 127.0.0.1 --port 0 --port_file "$work/ctl$i.port" --log_level warn \
            --registry_db_type mysql --registry_db_host "$ROSTER_TEST_MYSQL_HOST" \
            --registry_db_port "$ROSTER_TEST_MYSQL_PORT" --registry_db_user "$ROSTER_TEST_MYSQL_USER" \
            --registry_db_name bench "$@" >"$work/ctl$i.log" 2>&1 &
        pids+=($!)
        ctl_pids+=($!)
        ports+=("$(wait_port_file "$work/ctl$i.port")")
    done
}

# ctl_ticks: CPU ticks of the controllers in ctl_pids together
ctl_ticks() { local s=0 p; for p in "${ctl_pids[@]}"; do s=$((s + $(cpu_ticks "$p"))); done; echo "$s"; }
