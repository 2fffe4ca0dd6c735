#!/usr/bin/env bash
# API server benchmark (issue 4). Starts, on this machine: a controller
# (SQLite), one roster worker with the builtin language model (no decode
# delay), roster's apiserver in front of it, and nginx as a reverse proxy
# to the same worker (upstream keep-alive, no buffering); drives each with
# wrk and prints figures and ratios measured in the same run (compare
# ratios, not absolute numbers: these machines are noisy).
#
#   bench/bench_apiserver.sh [SECONDS]      (default 4 s per measurement, 2 quick)
#
# Measurements (POST /v1/chat/completions, 16 tokens, temperature 0), all
# repeated BENCH_RUNS times, the baselines re-measured in each run:
#   throughput  wrk -t2 -c32: direct to the worker, through nginx, through
#               roster (non-stream); streaming (19 SSE events) direct and
#               through roster
#   latency     wrk -t1 -c4 (a moderate load): direct and through roster;
#               roster's added latency = its p50/p99 minus direct's
#   keys        a second stack alike (controller, worker, apiserver) whose
#               settings hold an API key with rpm and tpm limits no run
#               reaches, driven with that key: the cost of the key's lookup
#               and of its cluster-wide limits (leases from the controller)
#               against the first stack, without keys
# Targets (issue 4): roster >= 0.8x nginx through the same worker; added
# p50 <= 0.2 ms and p99 <= 2 ms; streaming >= 0.5x roster's non-stream.
#
# Rows (bench/lib.sh's protocol; x "-"; per run): apiserver.{direct,
# nginx_proxy,chat,direct_stream,stream,direct_c4,chat_c4,chat_key}_{rps,
# p50_ms,p99_ms}, apiserver.nginx_proxy_vs_direct_ratio,
# apiserver.key_vs_nokey_ratio,
# apiserver.vs_nginx_proxy_ratio, apiserver.stream_vs_nonstream_ratio,
# apiserver.stream_vs_direct_ratio, apiserver.stream_events_rps,
# apiserver.added_p50_ms, apiserver.added_p99_ms, apiserver.non2xx_count.
# shellcheck disable=SC2154 # NAME_rps etc. are set by measure (bench/lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
secs=$(bench_secs "${1:-}" 4)
emit_cmd apiserver "bench/bench_apiserver.sh"

start_role ctl controller --registry_db_name "$work/registry.db"
ctl=$(port_of ctl)
start_role w worker --model_name tiny --controller_addr "http://127.0.0.1:$ctl" --concurrency 256
start_role api apiserver --controller_addr "http://127.0.0.1:$ctl" --access_log false
# the keys' stack (once a cluster holds a key, every request needs one)
start_role kctl controller --registry_db_name "$work/registry-keys.db"
kctl=$(port_of kctl)
start_role kw worker --model_name tiny --controller_addr "http://127.0.0.1:$kctl" --concurrency 256
start_role kapi apiserver --controller_addr "http://127.0.0.1:$kctl" --access_log false
kport=$(port_of kapi)
wport=$(port_of w)
aport=$(port_of api)
start_nginx_proxy "$wport"

chat_luas tiny
# the apiserver routes once the worker's registration reaches its table
wait_chat "http://127.0.0.1:$aport/v1" tiny
wait_chat "http://127.0.0.1:$pport/v1" tiny
# a key with limits no run reaches (the controller trusts loopback)
key=$(curl -sf "http://127.0.0.1:$kctl/api/roster/keys" \
    -d '{"name":"bench","rpm":1000000000,"tpm":1000000000}' |
    sed -n 's/.*"key":"\(sk-roster-[0-9A-Za-z]*\)".*/\1/p')
[ -n "$key" ] || { echo "bench: cannot create an API key" >&2; exit 1; }
post_lua "$work/chat_key.lua" "$(chat_body tiny)"
sed -i "1a wrk.headers[\"Authorization\"] = \"Bearer $key\"" "$work/chat_key.lua"
for _ in $(seq 1 100); do # in force once the apiserver has read the settings
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$kport/v1/models" \
        -H "Authorization: Bearer $key")" = 200 ] &&
        curl -s -D - -o /dev/null "http://127.0.0.1:$kport/v1/chat/completions" \
            -H "Authorization: Bearer $key" -d "$(chat_body tiny)" |
        grep -qi '^x-ratelimit-limit-requests' && break
    sleep 0.1
done

bench_banner
path=/v1/chat/completions
for run in $(seq 1 "$BENCH_RUNS"); do
    echo "bench: run $run/$BENCH_RUNS" >&2
    measure d apiserver.direct 32 2 "http://127.0.0.1:$wport$path" "$work/chat.lua"
    measure n apiserver.nginx_proxy 32 2 "http://127.0.0.1:$pport$path" "$work/chat.lua"
    measure r apiserver.chat 32 2 "http://127.0.0.1:$aport$path" "$work/chat.lua"
    measure ds apiserver.direct_stream 32 2 "http://127.0.0.1:$wport$path" "$work/stream.lua"
    measure s apiserver.stream 32 2 "http://127.0.0.1:$aport$path" "$work/stream.lua"
    measure dl apiserver.direct_c4 4 1 "http://127.0.0.1:$wport$path" "$work/chat.lua"
    measure rl apiserver.chat_c4 4 1 "http://127.0.0.1:$aport$path" "$work/chat.lua"
    measure k apiserver.chat_key 32 2 "http://127.0.0.1:$kport$path" "$work/chat_key.lua"

    emit apiserver.nginx_proxy_vs_direct_ratio - "$run" "$(ratio "$n_rps" "$d_rps")"
    emit apiserver.vs_nginx_proxy_ratio - "$run" "$(ratio "$r_rps" "$n_rps")"
    emit apiserver.stream_vs_nonstream_ratio - "$run" "$(ratio "$s_rps" "$r_rps")"
    emit apiserver.stream_vs_direct_ratio - "$run" "$(ratio "$s_rps" "$ds_rps")"
    emit apiserver.stream_events_rps - "$run" "$((s_rps * 19))"
    emit apiserver.key_vs_nokey_ratio - "$run" "$(ratio "$k_rps" "$r_rps")"
    emit apiserver.added_p50_ms - "$run" "$(sub "$rl_p50" "$dl_p50")"
    emit apiserver.added_p99_ms - "$run" "$(sub "$rl_p99" "$dl_p99")"
    emit apiserver.non2xx_count - "$run" \
        "$((d_bad + n_bad + r_bad + ds_bad + s_bad + dl_bad + rl_bad + k_bad))"

    table_head 38 "$run"
    table_row 38 "direct to the worker (-c32)" "$d" "non-2xx $d_bad"
    table_row 38 "nginx proxy_pass, keepalive (-c32)" "$n" \
        "x$(ratio "$n_rps" "$d_rps") direct; non-2xx $n_bad"
    table_row 38 "roster apiserver (-c32)" "$r" \
        "x$(ratio "$r_rps" "$n_rps") nginx (target 0.8); non-2xx $r_bad"
    table_row 38 "direct to the worker, stream (-c32)" "$ds" "non-2xx $ds_bad"
    table_row 38 "roster apiserver, stream (-c32)" "$s" \
        "x$(ratio "$s_rps" "$r_rps") non-stream (target 0.5), x$(ratio "$s_rps" "$ds_rps") direct; non-2xx $s_bad"
    table_row 38 "direct to the worker (-c4)" "$dl" "non-2xx $dl_bad"
    table_row 38 "roster apiserver (-c4)" "$rl" \
        "added p50 $(sub "$rl_p50" "$dl_p50") ms (target 0.2), p99 $(sub "$rl_p99" "$dl_p99") ms (target 2); non-2xx $rl_bad"
    table_row 38 "roster apiserver, limited key (-c32)" "$k" \
        "x$(ratio "$k_rps" "$r_rps") without keys; non-2xx $k_bad"
done
