#!/usr/bin/env bash
# Instances curve (issue 12, bench `instances`): the apiserver's throughput
# and latency against nginx as the number of instances behind one model
# grows. Starts a controller (SQLite), x builtin workers of model `tiny`
# (no decode delay) registered with it, roster's apiserver watching it, and
# nginx proxy_pass over the same x addresses (upstream keep-alive, no
# buffering, round robin); x = 1, 10, 100 (quick: 1, 10). Workers are added
# as x grows (started in parallel); each x waits until the apiserver routes
# to all of them (its /metrics: roster_api_instance_in_flight of tiny@llm).
#
#   [ROUTING=POLICY] bench/scale_instances.sh [SECONDS]
#     SECONDS per throughput measurement (default 3; quick 2), latency and
#     direct measurements half that, at least 2 s (quick 1 s); ROUTING is
#     the apiserver's --routing (default p2c, its default)
#
# Per x and run (POST /v1/chat/completions, non-stream, 16 tokens):
#   throughput  wrk -t2 -c32: direct to the first worker, through nginx,
#               through the apiserver; the requests each worker received
#               during nginx's and the apiserver's runs (the workers'
#               roster_worker_requests_total), and the CPU time the
#               apiserver and nginx's workers spent per request
#   latency     wrk -t1 -c4 (a moderate load): through nginx and through
#               the apiserver; added latency = the apiserver's p50/p99
#               minus nginx's (measured back to back)
# Rows (x = instances): instances.{direct,nginx,api}_rps,
# api_vs_nginx_ratio, api_vs_direct_ratio, {nginx,api}_p50_ms, _p99_ms,
# added_p50_ms, added_p99_ms, spread_max_over_min_ratio (apiserver),
# nginx_spread_max_over_min_ratio, {api,nginx}_cpu_per_req_us,
# api_vs_nginx_cpu_ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
if [ "$BENCH_QUICK" = 1 ]; then
    secs=${1:-2}
    short=1 # seconds for the latency and direct measurements (<= 25 s in all)
    xs=(1 10)
else
    secs=${1:-3}
    short=$(((secs + 1) / 2 > 2 ? (secs + 1) / 2 : 2))
    xs=(1 10 100)
fi
routing=${ROUTING:-p2c}
SECONDS=0 # the build (lib.sh) is not counted
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
emit_cmd instances "bench/scale_instances.sh"

"$bin" start controller --host 127.0.0.1 --port 0 --port_file "$work/ctl.port" \
    --registry_db_name "$work/registry.db" --log_level error >"$work/ctl.log" 2>&1 &
pids+=($!)
ctl=$(wait_port_file "$work/ctl.port")
"$bin" start apiserver --host 127.0.0.1 --port 0 --port_file "$work/api.port" \
    --controller_addr "http://127.0.0.1:$ctl" --access_log false --log_level error \
    --routing "$routing" >"$work/api.log" 2>&1 &
pids+=($!)
apid=$!
aport=$(wait_port_file "$work/api.port")

wports=() # the workers' ports, in start order
# add_workers N: starts workers until there are N, in parallel, and waits
# for their port files and for the apiserver to route to all N.
add_workers() {
    local want=$1 have=${#wports[@]} i deadline routable=0
    for ((i = have; i < want; i++)); do
        "$bin" start worker --model_name tiny --host 127.0.0.1 --port 0 \
            --port_file "$work/w$i.port" --controller_addr "http://127.0.0.1:$ctl" \
            --concurrency 256 --log_level error >"$work/w$i.log" 2>&1 &
        pids+=($!)
    done
    deadline=$((SECONDS + 30))
    for ((i = have; i < want; i++)); do
        while [ ! -s "$work/w$i.port" ]; do
            [ "$SECONDS" -lt "$deadline" ] || { echo "bench: worker $i never started" >&2; exit 1; }
            sleep 0.05
        done
        wports+=("$(cat "$work/w$i.port")")
    done
    while :; do # the routable set of tiny (each worker also registers WorkerManager@service)
        routable=$(curl -sf "http://127.0.0.1:$aport/metrics" |
            grep -c '^roster_api_instance_in_flight{model="tiny@llm"') || true
        [ "${routable:-0}" -ge "$want" ] && break
        [ "$SECONDS" -lt "$deadline" ] || {
            echo "bench: the apiserver routes to ${routable:-0} of $want instances" >&2
            exit 1
        }
        sleep 0.1
    done
}

chat='{"model":"tiny","messages":[{"role":"user","content":"How does a worker register?"}],"temperature":0,"max_tokens":16}'
cat >"$work/chat.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$chat]]
function response(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
LUA

# worker_counts: each worker's roster_worker_requests_total, one a line
# (one curl for all: its URLs are fetched in order)
worker_counts() {
    local urls=() p n
    for p in "${wports[@]}"; do urls+=("http://127.0.0.1:$p/metrics"); done
    curl -sf --max-time 10 "${urls[@]}" | awk '/^roster_worker_requests_total / {print $2}' \
        >"$work/counts"
    n=$(wc -l <"$work/counts")
    [ "$n" = "${#wports[@]}" ] || { echo "bench: $n counts from ${#wports[@]} workers" >&2; exit 1; }
    cat "$work/counts"
}
# spread BEFORE AFTER: "requests max/min" over the per-worker deltas
# (requests in all; min taken as 1 when a worker got nothing, with a warning)
spread() {
    paste "$1" "$2" | awk '
      { d = $2 - $1; sum += d; if (NR == 1 || d > max) max = d; if (NR == 1 || d < min) min = d }
      END { if (min < 1) { print "bench: a worker got no request" > "/dev/stderr"; min = 1 }
            printf "%d %.2f\n", sum, max / min }'
}
# nginx_ticks: CPU ticks of the proxy's worker processes
nginx_ticks() {
    local t=0 p
    for p in $(pgrep -P "$(cat "$work/nginx-proxy.pid")"); do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
# us_per_req TICKS REQUESTS: CPU microseconds per request (ticks of 10 ms)
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0)}'; }

run() { # conns threads url [seconds]
    wrk -t"$2" -c"$1" -d"${4:-$secs}s" --latency -s "$work/chat.lua" "$3" | summarize
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
check_bad() { # label non2xx
    [ "$2" = 0 ] || echo "bench: $1: $2 answers were not 2xx" >&2
}

path=/v1/chat/completions
rows=()
echo "bench: $(nproc) CPUs, ${secs}s per measurement, x = ${xs[*]}, runs $BENCH_RUNS, routing $routing, work dir $work" >&2
for x in "${xs[@]}"; do
    t0=$SECONDS
    echo "bench: ${SECONDS}s: starting workers to $x" >&2
    add_workers "$x"
    start_nginx_proxy_multi "${wports[@]}"
    curl -sf "http://127.0.0.1:$aport$path" -d "$chat" >/dev/null
    curl -sf "http://127.0.0.1:$pport$path" -d "$chat" >/dev/null
    echo "bench: x=$x: $x workers routed in $((SECONDS - t0)) s" >&2
    for ((r = 1; r <= BENCH_RUNS; r++)); do
        read -r d_rps _ _ d_bad < <(run 32 2 "http://127.0.0.1:${wports[0]}$path" "$short")
        worker_counts >"$work/c0"
        t0=$(nginx_ticks)
        read -r n_rps _ _ n_bad < <(run 32 2 "http://127.0.0.1:$pport$path")
        t1=$(nginx_ticks)
        worker_counts >"$work/c1"
        t2=$(cpu_ticks "$apid")
        read -r a_rps _ _ a_bad < <(run 32 2 "http://127.0.0.1:$aport$path")
        t3=$(cpu_ticks "$apid")
        worker_counts >"$work/c2"
        read -r _ nl_p50 nl_p99 nl_bad < <(run 4 1 "http://127.0.0.1:$pport$path" "$short")
        read -r _ al_p50 al_p99 al_bad < <(run 4 1 "http://127.0.0.1:$aport$path" "$short")
        check_bad "x=$x direct" "$d_bad"
        check_bad "x=$x nginx" "$n_bad"
        check_bad "x=$x apiserver" "$a_bad"
        check_bad "x=$x nginx -c4" "$nl_bad"
        check_bad "x=$x apiserver -c4" "$al_bad"
        read -r n_reqs n_spread < <(spread "$work/c0" "$work/c1")
        read -r a_reqs a_spread < <(spread "$work/c1" "$work/c2")
        n_cpu=$(us_per_req $((t1 - t0)) "$n_reqs")
        a_cpu=$(us_per_req $((t3 - t2)) "$a_reqs")
        ratio_an=$(ratio "$a_rps" "$n_rps")
        add50=$(sub "$al_p50" "$nl_p50")
        add99=$(sub "$al_p99" "$nl_p99")
        emit instances.direct_rps "$x" "$r" "$d_rps"
        emit instances.nginx_rps "$x" "$r" "$n_rps"
        emit instances.api_rps "$x" "$r" "$a_rps"
        emit instances.api_vs_nginx_ratio "$x" "$r" "$ratio_an"
        emit instances.api_vs_direct_ratio "$x" "$r" "$(ratio "$a_rps" "$d_rps")"
        emit instances.nginx_p50_ms "$x" "$r" "$nl_p50"
        emit instances.nginx_p99_ms "$x" "$r" "$nl_p99"
        emit instances.api_p50_ms "$x" "$r" "$al_p50"
        emit instances.api_p99_ms "$x" "$r" "$al_p99"
        emit instances.added_p50_ms "$x" "$r" "$add50"
        emit instances.added_p99_ms "$x" "$r" "$add99"
        emit instances.spread_max_over_min_ratio "$x" "$r" "$a_spread"
        emit instances.nginx_spread_max_over_min_ratio "$x" "$r" "$n_spread"
        emit instances.api_cpu_per_req_us "$x" "$r" "$a_cpu"
        emit instances.nginx_cpu_per_req_us "$x" "$r" "$n_cpu"
        emit instances.api_vs_nginx_cpu_ratio "$x" "$r" "$(ratio "$a_cpu" "$n_cpu")"
        rows+=("$(printf '%5s %3s %9d %9d %9d %7s %8.3f %8.3f %8.3f %8.3f %8s %8s %7s %7s %7s %7s' \
            "$x" "$r" "$d_rps" "$n_rps" "$a_rps" "$ratio_an" "$nl_p50" "$nl_p99" "$al_p50" \
            "$al_p99" "$add50" "$add99" "$a_spread" "$n_spread" "$a_cpu" "$n_cpu")")
        echo "bench: ${SECONDS}s: x=$x run $r: api ${a_rps}/s nginx ${n_rps}/s (x$ratio_an)" >&2
    done
done

echo "bench: ${SECONDS}s in all after the build" >&2
printf '\n%5s %3s %9s %9s %9s %7s %8s %8s %8s %8s %8s %8s %7s %7s %7s %7s\n' x run direct/s \
    nginx/s api/s api/ngx ngx_p50 ngx_p99 api_p50 api_p99 add_p50 add_p99 spread ngx_spr api_us \
    ngx_us
printf '%s\n' "${rows[@]}"
echo "(latency in ms at -c4; added = apiserver minus nginx; spread = max/min requests per worker;"
echo " api_us, ngx_us = CPU microseconds per request of the apiserver, of nginx's workers, at -c32)"
