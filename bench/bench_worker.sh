#!/usr/bin/env bash
# Worker benchmark (issue 3). Starts, on this machine: a roster worker with
# the builtin language model (no decode delay), one with the builtin
# embedder, and nginx answering `return 200` (the ceiling for any HTTP
# server here); drives them with wrk from the same machine and prints
# figures and ratios measured in the same run (compare ratios, not absolute
# numbers: these machines are noisy).
#
#   bench/bench_worker.sh [SECONDS]      (default 10 s per measurement)
#
# Measurements (wrk -t2 -c32, keep-alive):
#   nginx       GET / -> return 200
#   chat        POST /v1/chat/completions, non-stream, 16 tokens, temperature 0
#   embeddings  POST /v1/embeddings, one sentence, 384 dimensions
#   stream      the chat request with "stream": true (16 tokens = 19 SSE
#               events with the role chunk, the finish chunk and [DONE]);
#               SSE events/s = requests/s x 19
#   proxied     chat and stream again through a second worker with
#               --backend openai in front of the first (libcurl multi on its
#               loop, keep-alive to the engine): the cost of the proxy hop
# The workers run with --concurrency 64 so that back-pressure does not
# refuse the benchmark's 32 connections.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
# shellcheck source=bench/lib.sh
. bench/lib.sh

start_worker() { # name type model [args] (not in a subshell: pids must reach the cleanup)
    "$bin" start worker --model_name "$3" --worker_type "$2" --host 127.0.0.1 --port 0 \
        --port_file "$work/$1.port" --controller_addr http://127.0.0.1:1 --concurrency 64 \
        --log_level error "${@:4}" >"$work/$1.log" 2>&1 &
    pids+=($!)
}
start_worker llm llm tiny
start_worker emb text2vec emb
llm=$(wait_port_file "$work/llm.port")
emb=$(wait_port_file "$work/emb.port")
start_worker proxy llm tiny --backend openai --upstream "http://127.0.0.1:$llm/v1"
proxy=$(wait_port_file "$work/proxy.port")

start_nginx

post_lua() { # file body
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[$2]]
function response(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
EOF
}
chat='{"model":"tiny","messages":[{"role":"user","content":"How does a worker register?"}],"temperature":0,"max_tokens":16}'
post_lua "$work/chat.lua" "$chat"
post_lua "$work/stream.lua" "${chat%\}},\"stream\":true}"
post_lua "$work/emb.lua" '{"model":"emb","input":"roster keeps model instances in a shared registry table"}'

run() { # url [script]
    wrk -t2 -c32 -d"${secs}s" --latency ${2:+-s "$2"} "$1" | summarize
}

echo "bench: $(nproc) CPUs, ${secs}s per run, work dir $work" >&2
# check the answers before measuring them
curl -sf "http://127.0.0.1:$llm/v1/chat/completions" -d "$chat" >/dev/null
curl -sfN "http://127.0.0.1:$llm/v1/chat/completions" -d "${chat%\}},\"stream\":true}" | grep -q '^data: \[DONE\]'

read -r ng_rps ng_p50 ng_p99 _ < <(run "http://127.0.0.1:$nport/")
read -r ch_rps ch_p50 ch_p99 ch_bad < <(run "http://127.0.0.1:$llm/v1/chat/completions" "$work/chat.lua")
read -r em_rps em_p50 em_p99 em_bad < <(run "http://127.0.0.1:$emb/v1/embeddings" "$work/emb.lua")
read -r st_rps st_p50 st_p99 st_bad < <(run "http://127.0.0.1:$llm/v1/chat/completions" "$work/stream.lua")
curl -sfN "http://127.0.0.1:$proxy/v1/chat/completions" -d "${chat%\}},\"stream\":true}" | grep -q '^data: \[DONE\]'
read -r pc_rps pc_p50 pc_p99 pc_bad < <(run "http://127.0.0.1:$proxy/v1/chat/completions" "$work/chat.lua")
read -r ps_rps ps_p50 ps_p99 ps_bad < <(run "http://127.0.0.1:$proxy/v1/chat/completions" "$work/stream.lua")

printf '\n%-34s %10s %9s %9s %s\n' "measurement" "req/s" "p50 ms" "p99 ms" "notes"
printf '%-34s %10d %9.3f %9.3f %s\n' "nginx return 200 (2 workers)" "$ng_rps" "$ng_p50" "$ng_p99" "baseline"
printf '%-34s %10d %9.3f %9.3f %s\n' "chat, non-stream, 16 tokens" "$ch_rps" "$ch_p50" "$ch_p99" \
    "x$(ratio "$ch_rps" "$ng_rps") nginx; non-2xx $ch_bad"
printf '%-34s %10d %9.3f %9.3f %s\n' "embeddings, 1 input, 384 dims" "$em_rps" "$em_p50" "$em_p99" \
    "x$(ratio "$em_rps" "$ng_rps") nginx; non-2xx $em_bad"
printf '%-34s %10d %9.3f %9.3f %s\n' "chat, stream, 16 tokens" "$st_rps" "$st_p50" "$st_p99" \
    "$((st_rps * 19)) SSE events/s; x$(ratio "$st_rps" "$ch_rps") non-stream; non-2xx $st_bad"
printf '%-34s %10d %9.3f %9.3f %s\n' "proxied chat, non-stream" "$pc_rps" "$pc_p50" "$pc_p99" \
    "x$(ratio "$pc_rps" "$ch_rps") direct; +$(awk -v a="$pc_p50" -v b="$ch_p50" 'BEGIN{printf "%.3f", a-b}') ms p50; non-2xx $pc_bad"
printf '%-34s %10d %9.3f %9.3f %s\n' "proxied chat, stream" "$ps_rps" "$ps_p50" "$ps_p99" \
    "x$(ratio "$ps_rps" "$st_rps") direct; $((ps_rps * 19)) SSE events/s; non-2xx $ps_bad"
