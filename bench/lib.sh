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

scripts/deps.sh bench >&2
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null
bin=$PWD/build-bench/roster

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
