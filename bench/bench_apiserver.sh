#!/usr/bin/env bash
# API server benchmark (issue 4). Starts, on this machine: a controller
# (SQLite), one roster worker with the builtin language model (no decode
# delay), roster's apiserver in front of it, and nginx as a reverse proxy
# to the same worker (upstream keep-alive, no buffering); drives each with
# wrk and prints figures and ratios measured in the same run (compare
# ratios, not absolute numbers: these machines are noisy).
#
#   bench/bench_apiserver.sh [SECONDS]      (default 10 s per measurement)
#
# Measurements (POST /v1/chat/completions, 16 tokens, temperature 0):
#   throughput  wrk -t2 -c32: direct to the worker, through nginx, through
#               roster (non-stream); streaming (19 SSE events) direct and
#               through roster
#   latency     wrk -t1 -c4 (a moderate load): direct and through roster;
#               roster's added latency = its p50/p99 minus direct's
# Targets (issue 4): roster >= 0.8x nginx through the same worker; added
# p50 <= 0.2 ms and p99 <= 2 ms; streaming >= 0.5x roster's non-stream.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
# shellcheck source=bench/lib.sh
. bench/lib.sh

"$bin" start controller --host 127.0.0.1 --port 0 --port_file "$work/ctl.port" \
    --registry_db_name "$work/registry.db" --log_level error >"$work/ctl.log" 2>&1 &
pids+=($!)
ctl=$(wait_port_file "$work/ctl.port")
"$bin" start worker --model_name tiny --host 127.0.0.1 --port 0 --port_file "$work/w.port" \
    --controller_addr "http://127.0.0.1:$ctl" --concurrency 256 --log_level error \
    >"$work/w.log" 2>&1 &
pids+=($!)
wport=$(wait_port_file "$work/w.port")
"$bin" start apiserver --host 127.0.0.1 --port 0 --port_file "$work/api.port" \
    --controller_addr "http://127.0.0.1:$ctl" --access_log false --log_level error \
    >"$work/api.log" 2>&1 &
pids+=($!)
aport=$(wait_port_file "$work/api.port")
start_nginx_proxy "$wport"

chat='{"model":"tiny","messages":[{"role":"user","content":"How does a worker register?"}],"temperature":0,"max_tokens":16}'
cat >"$work/chat.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$chat]]
function response(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
LUA
sed "s/\"max_tokens\":16}/\"max_tokens\":16,\"stream\":true}/" "$work/chat.lua" >"$work/stream.lua"

# the apiserver routes once the worker's registration reaches its table
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$aport/v1/chat/completions" -d "$chat" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$aport/v1/chat/completions" -d "$chat" >/dev/null
curl -sf "http://127.0.0.1:$pport/v1/chat/completions" -d "$chat" >/dev/null
curl -sfN "http://127.0.0.1:$aport/v1/chat/completions" -d "${chat%\}},\"stream\":true}" |
    grep -q '^data: \[DONE\]'

run() { # conns threads url script
    wrk -t"$2" -c"$1" -d"${secs}s" --latency -s "$4" "$3" | summarize
}

echo "bench: $(nproc) CPUs, ${secs}s per run, work dir $work" >&2
path=/v1/chat/completions
read -r d_rps d_p50 d_p99 d_bad < <(run 32 2 "http://127.0.0.1:$wport$path" "$work/chat.lua")
read -r n_rps n_p50 n_p99 n_bad < <(run 32 2 "http://127.0.0.1:$pport$path" "$work/chat.lua")
read -r r_rps r_p50 r_p99 r_bad < <(run 32 2 "http://127.0.0.1:$aport$path" "$work/chat.lua")
read -r ds_rps ds_p50 ds_p99 _ < <(run 32 2 "http://127.0.0.1:$wport$path" "$work/stream.lua")
read -r s_rps s_p50 s_p99 s_bad < <(run 32 2 "http://127.0.0.1:$aport$path" "$work/stream.lua")
read -r dl_rps dl_p50 dl_p99 _ < <(run 4 1 "http://127.0.0.1:$wport$path" "$work/chat.lua")
read -r rl_rps rl_p50 rl_p99 rl_bad < <(run 4 1 "http://127.0.0.1:$aport$path" "$work/chat.lua")

sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
printf '\n%-38s %10s %9s %9s %s\n' "measurement" "req/s" "p50 ms" "p99 ms" "notes"
printf '%-38s %10d %9.3f %9.3f %s\n' "direct to the worker (-c32)" "$d_rps" "$d_p50" "$d_p99" \
    "non-2xx $d_bad"
printf '%-38s %10d %9.3f %9.3f %s\n' "nginx proxy_pass, keepalive (-c32)" "$n_rps" "$n_p50" \
    "$n_p99" "x$(ratio "$n_rps" "$d_rps") direct; non-2xx $n_bad"
printf '%-38s %10d %9.3f %9.3f %s\n' "roster apiserver (-c32)" "$r_rps" "$r_p50" "$r_p99" \
    "x$(ratio "$r_rps" "$n_rps") nginx (target 0.8); non-2xx $r_bad"
printf '%-38s %10d %9.3f %9.3f %s\n' "direct to the worker, stream (-c32)" "$ds_rps" "$ds_p50" \
    "$ds_p99" ""
printf '%-38s %10d %9.3f %9.3f %s\n' "roster apiserver, stream (-c32)" "$s_rps" "$s_p50" \
    "$s_p99" "x$(ratio "$s_rps" "$r_rps") non-stream (target 0.5), x$(ratio "$s_rps" "$ds_rps") direct; non-2xx $s_bad"
printf '%-38s %10d %9.3f %9.3f %s\n' "direct to the worker (-c4)" "$dl_rps" "$dl_p50" "$dl_p99" ""
printf '%-38s %10d %9.3f %9.3f %s\n' "roster apiserver (-c4)" "$rl_rps" "$rl_p50" "$rl_p99" \
    "added p50 $(sub "$rl_p50" "$dl_p50") ms (target 0.2), p99 $(sub "$rl_p99" "$dl_p99") ms (target 2); non-2xx $rl_bad"
