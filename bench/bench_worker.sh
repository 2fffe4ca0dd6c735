#!/usr/bin/env bash
# Worker benchmark (issue 3). Starts, on this machine: a roster worker with
# the builtin language model (no decode delay), one with the builtin
# embedder, and nginx answering `return 200` (the ceiling for any HTTP
# server here); drives them with wrk from the same machine and prints
# figures and ratios measured in the same run (compare ratios, not absolute
# numbers: these machines are noisy).
#
#   bench/bench_worker.sh [SECONDS]      (default 5 s per measurement, 2 quick)
#
# Measurements (wrk -t2 -c32, keep-alive), all repeated BENCH_RUNS times,
# nginx re-measured in each run:
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
#
# Rows (bench/lib.sh's protocol; x "-"; per run): worker.{nginx,chat,
# embeddings,stream,proxied_chat,proxied_stream}_{rps,p50_ms,p99_ms},
# worker.chat_vs_nginx_ratio, worker.embeddings_vs_nginx_ratio,
# worker.stream_events_rps, worker.stream_vs_nonstream_ratio,
# worker.proxied_vs_direct_ratio, worker.proxied_added_p50_ms,
# worker.proxied_stream_vs_direct_ratio, worker.proxied_stream_events_rps,
# worker.non2xx_count.
# shellcheck disable=SC2154 # NAME_rps etc. are set by measure (bench/lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
secs=$(bench_secs "${1:-}")
emit_cmd worker "bench/bench_worker.sh"

wargs=(--controller_addr http://127.0.0.1:1 --concurrency 64)
start_role llm worker --model_name tiny --worker_type llm "${wargs[@]}"
start_role emb worker --model_name emb --worker_type text2vec "${wargs[@]}"
llm=$(port_of llm)
emb=$(port_of emb)
start_role proxy worker --model_name tiny --worker_type llm "${wargs[@]}" \
    --backend openai --upstream "http://127.0.0.1:$llm/v1"
proxy=$(port_of proxy)
start_nginx

chat_luas tiny
post_lua "$work/emb.lua" '{"model":"emb","input":"roster keeps model instances in a shared registry table"}'

# check the answers before measuring them
wait_chat "http://127.0.0.1:$llm/v1" tiny
wait_chat "http://127.0.0.1:$proxy/v1" tiny
curl -sf "http://127.0.0.1:$emb/v1/embeddings" -d '{"model":"emb","input":"x"}' >/dev/null

bench_banner
path=/v1/chat/completions
for run in $(seq 1 "$BENCH_RUNS"); do
    echo "bench: run $run/$BENCH_RUNS" >&2
    measure ng worker.nginx 32 2 "http://127.0.0.1:$nport/"
    measure ch worker.chat 32 2 "http://127.0.0.1:$llm$path" "$work/chat.lua"
    measure em worker.embeddings 32 2 "http://127.0.0.1:$emb/v1/embeddings" "$work/emb.lua"
    measure st worker.stream 32 2 "http://127.0.0.1:$llm$path" "$work/stream.lua"
    measure pc worker.proxied_chat 32 2 "http://127.0.0.1:$proxy$path" "$work/chat.lua"
    measure ps worker.proxied_stream 32 2 "http://127.0.0.1:$proxy$path" "$work/stream.lua"

    emit worker.chat_vs_nginx_ratio - "$run" "$(ratio "$ch_rps" "$ng_rps")"
    emit worker.embeddings_vs_nginx_ratio - "$run" "$(ratio "$em_rps" "$ng_rps")"
    emit worker.stream_events_rps - "$run" "$((st_rps * 19))"
    emit worker.stream_vs_nonstream_ratio - "$run" "$(ratio "$st_rps" "$ch_rps")"
    emit worker.proxied_vs_direct_ratio - "$run" "$(ratio "$pc_rps" "$ch_rps")"
    emit worker.proxied_added_p50_ms - "$run" "$(sub "$pc_p50" "$ch_p50")"
    emit worker.proxied_stream_vs_direct_ratio - "$run" "$(ratio "$ps_rps" "$st_rps")"
    emit worker.proxied_stream_events_rps - "$run" "$((ps_rps * 19))"
    emit worker.non2xx_count - "$run" "$((ch_bad + em_bad + st_bad + pc_bad + ps_bad))"

    table_head 34 "$run"
    table_row 34 "nginx return 200 (2 workers)" "$ng" "baseline"
    table_row 34 "chat, non-stream, 16 tokens" "$ch" \
        "x$(ratio "$ch_rps" "$ng_rps") nginx; non-2xx $ch_bad"
    table_row 34 "embeddings, 1 input, 384 dims" "$em" \
        "x$(ratio "$em_rps" "$ng_rps") nginx; non-2xx $em_bad"
    table_row 34 "chat, stream, 16 tokens" "$st" \
        "$((st_rps * 19)) SSE events/s; x$(ratio "$st_rps" "$ch_rps") non-stream; non-2xx $st_bad"
    table_row 34 "proxied chat, non-stream" "$pc" \
        "x$(ratio "$pc_rps" "$ch_rps") direct; +$(sub "$pc_p50" "$ch_p50") ms p50; non-2xx $pc_bad"
    table_row 34 "proxied chat, stream" "$ps" \
        "x$(ratio "$ps_rps" "$st_rps") direct; $((ps_rps * 19)) SSE events/s; non-2xx $ps_bad"
done
