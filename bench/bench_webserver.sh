#!/usr/bin/env bash
# Webserver benchmark (issue 9): the embedded default, the whole system in
# one process (`roster start webserver`: controller on SQLite, builtin
# models, API, dashboard), against nginx as a reverse proxy to the same
# process's builtin chat worker (its loopback port, from /api/health), all
# in the same run. Prints figures and ratios (compare ratios: these
# machines are noisy).
#
#   bench/bench_webserver.sh [SECONDS]      (default 3 s per measurement, 2 quick)
#
# Measurements (POST /v1/chat/completions, 16 tokens, temperature 0), all
# repeated BENCH_RUNS times, the baselines re-measured in each run:
#   throughput  wrk -t2 -c32: direct to the builtin worker, through nginx,
#               through the webserver; the webserver again while a dashboard
#               live feed is open (the dashboard's cost)
#   latency     wrk -t1 -c4: direct and through the webserver (added p50/p99)
#   dashboard   the state and an instances page with 10,000 instances
#               registered (100 models; 500 in 5 models with
#               BENCH_QUICK=1, registered once): time per request (curl,
#               20 each per run, 10 quick)
#
# Rows (bench/lib.sh's protocol; x "-"; per run): webserver.{direct,
# nginx_proxy,chat,feed_chat,direct_c4,chat_c4}_{rps,p50_ms,p99_ms},
# webserver.nginx_proxy_vs_direct_ratio, webserver.vs_nginx_proxy_ratio,
# webserver.feed_vs_plain_ratio, webserver.feed_states_count,
# webserver.added_p50_ms, webserver.added_p99_ms, webserver.non2xx_count,
# webserver.dash_instances_count, webserver.dash_{state,page}_{median_ms,
# max_ms,bytes}.
# shellcheck disable=SC2154 # NAME_rps etc. are set by measure (bench/lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
secs=$(bench_secs "${1:-}" 3)
models=100 timed_n=20
[ "$BENCH_QUICK" = 1 ] && models=5 timed_n=10
emit_cmd webserver "bench/bench_webserver.sh"

start_role web webserver --data_dir "$work/data" --concurrency 256 --access_log false
wport=$(port_of web)
web="http://127.0.0.1:$wport"
for _ in $(seq 1 100); do
    curl -sf "$web/api/health" >/dev/null && break
    sleep 0.1
done
chat_port=$(curl -sf "$web/api/health" | python3 -c '
import json, sys
print(next(w["port"] for w in json.load(sys.stdin)["workers"] if w["model"].endswith("@llm")))')
start_nginx_proxy "$chat_port"

chat_luas roster-chat
wait_chat "$web/v1" roster-chat
wait_chat "http://127.0.0.1:$pport/v1" roster-chat

# $models x 100 instances, registered the way DB-GPT's workers do (8
# clients at a time: each registration waits for its commit)
python3 - "$wport" "$models" <<'PY'
import http.client, json, sys, threading
port, models = int(sys.argv[1]), int(sys.argv[2])
failed = []
def register(part):
    try:
        post(part)
    except Exception as e:
        failed.append(repr(e))
def post(part):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for n in range(part, models * 100, 8):
        m, i = divmod(n, 100)
        body = json.dumps({"model_name": f"m{m:03d}@llm", "host": f"10.2.{m}.{i + 1}",
                           "port": 8000, "weight": 1.0, "check_healthy": True, "healthy": False,
                           "enabled": True, "prompt_template": None, "last_heartbeat": None,
                           "remove_from_registry": False})
        c.request("POST", "/api/controller/models", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.read()
        r.read()
threads = [threading.Thread(target=register, args=(k,)) for k in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failed:
    sys.exit(f"bench: registration failed: {failed[0]}")
PY
# the dashboard's state shows them once its feed thread re-reads the list
# (at most 5 s later: waited for after the first measurements)
wait_instances() {
    instances=0
    for _ in $(seq 1 100); do
        instances=$(curl -sf "$web/api/dashboard/state" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["table"]["instances"])')
        [ "$instances" -ge $((models * 100)) ] && return 0
        sleep 0.1
    done
    echo "bench: the dashboard shows $instances instances" >&2
    return 1
}
page_model=$(printf 'm%03d%%40llm' $((models * 42 / 100)))

timed() { # url -> "median_ms max_ms bytes"
    for _ in $(seq 1 "$timed_n"); do
        curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' "$1"
    done | sort -n | awk '{t[NR]=$1*1000; b=$2} END {printf "%.2f %.2f %d\n", t[int((NR+1)/2)], t[NR], b}'
}

bench_banner
path=/v1/chat/completions
for run in $(seq 1 "$BENCH_RUNS"); do
    echo "bench: run $run/$BENCH_RUNS" >&2
    measure d webserver.direct 32 2 "http://127.0.0.1:$chat_port$path" "$work/chat.lua"
    measure n webserver.nginx_proxy 32 2 "http://127.0.0.1:$pport$path" "$work/chat.lua"
    measure r webserver.chat 32 2 "$web$path" "$work/chat.lua"
    # a dashboard open: its live feed (a state every second, events as they come)
    curl -sfN "$web/api/dashboard/stream" >"$work/feed.txt" &
    feed=$!
    pids+=("$feed")
    for _ in $(seq 1 30); do # until its first state arrives
        grep -q '^event: state' "$work/feed.txt" && break
        sleep 0.1
    done
    measure f webserver.feed_chat 32 2 "$web$path" "$work/chat.lua"
    kill "$feed" 2>/dev/null || true
    wait "$feed" 2>/dev/null || true
    feed_states=$(grep -c '^event: state' "$work/feed.txt" || true)
    measure dl webserver.direct_c4 4 1 "http://127.0.0.1:$chat_port$path" "$work/chat.lua"
    measure rl webserver.chat_c4 4 1 "$web$path" "$work/chat.lua"
    wait_instances
    read -r st_med st_max st_bytes < <(timed "$web/api/dashboard/state")
    read -r pg_med pg_max pg_bytes < <(timed "$web/api/dashboard/instances?model=$page_model&limit=50")

    emit webserver.nginx_proxy_vs_direct_ratio - "$run" "$(ratio "$n_rps" "$d_rps")"
    emit webserver.vs_nginx_proxy_ratio - "$run" "$(ratio "$r_rps" "$n_rps")"
    emit webserver.feed_vs_plain_ratio - "$run" "$(ratio "$f_rps" "$r_rps")"
    emit webserver.feed_states_count - "$run" "$feed_states"
    emit webserver.added_p50_ms - "$run" "$(sub "$rl_p50" "$dl_p50")"
    emit webserver.added_p99_ms - "$run" "$(sub "$rl_p99" "$dl_p99")"
    emit webserver.non2xx_count - "$run" "$((d_bad + n_bad + r_bad + f_bad + dl_bad + rl_bad))"
    emit webserver.dash_instances_count - "$run" "$instances"
    emit webserver.dash_state_median_ms - "$run" "$st_med"
    emit webserver.dash_state_max_ms - "$run" "$st_max"
    emit webserver.dash_state_bytes - "$run" "$st_bytes"
    emit webserver.dash_page_median_ms - "$run" "$pg_med"
    emit webserver.dash_page_max_ms - "$run" "$pg_max"
    emit webserver.dash_page_bytes - "$run" "$pg_bytes"

    table_head 42 "$run"
    table_row 42 "direct to the builtin worker (-c32)" "$d" "non-2xx $d_bad"
    table_row 42 "nginx proxy_pass to it, keepalive (-c32)" "$n" \
        "x$(ratio "$n_rps" "$d_rps") direct; non-2xx $n_bad"
    table_row 42 "roster webserver, embedded (-c32)" "$r" \
        "x$(ratio "$r_rps" "$n_rps") nginx; non-2xx $r_bad"
    table_row 42 "  ... with a dashboard feed open" "$f" \
        "x$(ratio "$f_rps" "$r_rps") without; $feed_states states received; non-2xx $f_bad"
    table_row 42 "direct to the builtin worker (-c4)" "$dl" "non-2xx $dl_bad"
    table_row 42 "roster webserver (-c4)" "$rl" \
        "added p50 $(sub "$rl_p50" "$dl_p50") ms, p99 $(sub "$rl_p99" "$dl_p99") ms; non-2xx $rl_bad"
    printf '\n%-42s %10s %9s %9s\n' "dashboard, $instances instances" "bytes" "median ms" "max ms"
    printf '%-42s %10d %9.2f %9.2f\n' "GET /api/dashboard/state ($models models)" "$st_bytes" \
        "$st_med" "$st_max"
    printf '%-42s %10d %9.2f %9.2f\n' "GET /api/dashboard/instances (50 rows)" "$pg_bytes" \
        "$pg_med" "$pg_max"
done
