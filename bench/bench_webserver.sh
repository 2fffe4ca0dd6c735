#!/usr/bin/env bash
# Webserver benchmark (issue 9): the embedded default, the whole system in
# one process (`roster start webserver`: controller on SQLite, builtin
# models, API, dashboard), against nginx as a reverse proxy to the same
# process's builtin chat worker (its loopback port, from /api/health), all
# in the same run. Prints figures and ratios (compare ratios: these
# machines are noisy).
#
#   bench/bench_webserver.sh [SECONDS]      (default 10 s per measurement)
#
# Measurements (POST /v1/chat/completions, 16 tokens, temperature 0):
#   throughput  wrk -t2 -c32: direct to the builtin worker, through nginx,
#               through the webserver; the webserver again while a dashboard
#               live feed is open (the dashboard's cost)
#   latency     wrk -t1 -c4: direct and through the webserver (added p50/p99)
#   dashboard   the state and an instances page with 10,000 instances
#               registered (100 models): time per request (curl, 20 each)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
# shellcheck source=bench/lib.sh
. bench/lib.sh

"$bin" start webserver --host 127.0.0.1 --port 0 --port_file "$work/web.port" \
    --data_dir "$work/data" --concurrency 256 --access_log false --log_level error \
    >"$work/web.log" 2>&1 &
pids+=($!)
wport=$(wait_port_file "$work/web.port")
web="http://127.0.0.1:$wport"
for _ in $(seq 1 100); do
    curl -sf "$web/api/health" >/dev/null && break
    sleep 0.1
done
chat_port=$(curl -sf "$web/api/health" | python3 -c '
import json, sys
print(next(w["port"] for w in json.load(sys.stdin)["workers"] if w["model"].endswith("@llm")))')
start_nginx_proxy "$chat_port"

chat='{"model":"roster-chat","messages":[{"role":"user","content":"How does a worker register?"}],"temperature":0,"max_tokens":16}'
cat >"$work/chat.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$chat]]
function response(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
LUA
curl -sf "$web/v1/chat/completions" -d "$chat" >/dev/null
curl -sf "http://127.0.0.1:$pport/v1/chat/completions" -d "$chat" >/dev/null

run() { # conns threads url
    wrk -t"$2" -c"$1" -d"${secs}s" --latency -s "$work/chat.lua" "$3" | summarize
}

echo "bench: $(nproc) CPUs, ${secs}s per run, work dir $work" >&2
path=/v1/chat/completions
read -r d_rps d_p50 d_p99 d_bad < <(run 32 2 "http://127.0.0.1:$chat_port$path")
read -r n_rps n_p50 n_p99 n_bad < <(run 32 2 "http://127.0.0.1:$pport$path")
read -r r_rps r_p50 r_p99 r_bad < <(run 32 2 "$web$path")
# a dashboard open: its live feed (a state every second, events as they come)
curl -sfN "$web/api/dashboard/stream" >"$work/feed.txt" &
pids+=($!)
sleep 1.5
read -r f_rps f_p50 f_p99 f_bad < <(run 32 2 "$web$path")
feed_states=$(grep -c '^event: state' "$work/feed.txt" || true)
read -r dl_rps dl_p50 dl_p99 _ < <(run 4 1 "http://127.0.0.1:$chat_port$path")
read -r rl_rps rl_p50 rl_p99 rl_bad < <(run 4 1 "$web$path")

# 10,000 instances in 100 models, registered the way DB-GPT's workers do
python3 - "$wport" <<'PY'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
for m in range(100):
    for i in range(100):
        body = json.dumps({"model_name": f"m{m:03d}@llm", "host": f"10.2.{m}.{i + 1}",
                           "port": 8000, "weight": 1.0, "check_healthy": True, "healthy": False,
                           "enabled": True, "prompt_template": None, "last_heartbeat": None,
                           "remove_from_registry": False})
        c.request("POST", "/api/controller/models", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.read()
        r.read()
PY
for _ in $(seq 1 100); do
    curl -sf "$web/api/dashboard/state" | grep -qE '"table":\{[^}]*"instances":100[0-9][0-9]' && break
    sleep 0.1
done
timed() { # url -> "median_ms max_ms bytes"
    for _ in $(seq 1 20); do
        curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' "$1"
    done | sort -n | awk '{t[NR]=$1*1000; b=$2} END {printf "%.2f %.2f %d\n", t[int((NR+1)/2)], t[NR], b}'
}
read -r st_med st_max st_bytes < <(timed "$web/api/dashboard/state")
read -r pg_med pg_max pg_bytes < <(timed "$web/api/dashboard/instances?model=m042%40llm&limit=50")

sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
printf '\n%-42s %10s %9s %9s %s\n' "measurement" "req/s" "p50 ms" "p99 ms" "notes"
printf '%-42s %10d %9.3f %9.3f %s\n' "direct to the builtin worker (-c32)" "$d_rps" "$d_p50" \
    "$d_p99" "non-2xx $d_bad"
printf '%-42s %10d %9.3f %9.3f %s\n' "nginx proxy_pass to it, keepalive (-c32)" "$n_rps" \
    "$n_p50" "$n_p99" "x$(ratio "$n_rps" "$d_rps") direct; non-2xx $n_bad"
printf '%-42s %10d %9.3f %9.3f %s\n' "roster webserver, embedded (-c32)" "$r_rps" "$r_p50" \
    "$r_p99" "x$(ratio "$r_rps" "$n_rps") nginx; non-2xx $r_bad"
printf '%-42s %10d %9.3f %9.3f %s\n' "  ... with a dashboard feed open" "$f_rps" "$f_p50" \
    "$f_p99" "x$(ratio "$f_rps" "$r_rps") without; $feed_states states received; non-2xx $f_bad"
printf '%-42s %10d %9.3f %9.3f %s\n' "direct to the builtin worker (-c4)" "$dl_rps" "$dl_p50" \
    "$dl_p99" ""
printf '%-42s %10d %9.3f %9.3f %s\n' "roster webserver (-c4)" "$rl_rps" "$rl_p50" "$rl_p99" \
    "added p50 $(sub "$rl_p50" "$dl_p50") ms, p99 $(sub "$rl_p99" "$dl_p99") ms; non-2xx $rl_bad"
printf '\n%-42s %10s %9s %9s\n' "dashboard, 10,004 instances" "bytes" "median ms" "max ms"
printf '%-42s %10d %9.2f %9.2f\n' "GET /api/dashboard/state (100 models)" "$st_bytes" "$st_med" \
    "$st_max"
printf '%-42s %10d %9.2f %9.2f\n' "GET /api/dashboard/instances (50 rows)" "$pg_bytes" "$pg_med" \
    "$pg_max"
