#!/usr/bin/env bash
# Concurrent streams (issue 12): 100 / 1,000 / 10,000 streamed chat
# completions held open at once through ONE apiserver to one slow-decoding
# builtin worker (--decode_delay_ms 250, 12 tokens plus the time it takes
# to open them all at 2,000/s: each stream lasts 3.5 s at 100, 8 s at
# 10,000), and the same streams straight to the worker, back to back in the
# same run. The load generator is bench/streamload.c (libevent, one thread;
# compiled here): it opens the streams at a fixed rate, measures each one's
# time to first token (request written -> first "data: ") and samples the
# servers' RSS once every stream has had its first token.
#
#   bench/scale_streams.sh        (BENCH_RUNS, BENCH_QUICK: see bench/lib.sh)
#
# Every point starts a fresh worker and apiserver (a controller on SQLite
# stays up), so that "RSS open - RSS idle" is not hidden by memory an
# earlier, larger point left in the allocator.
#
# Connection caps: 10,000 streams are more than the default
# --max_connections (4096), so both servers get --max_connections 16384.
# The client side is spread over 50 source addresses (127.0.0.2-51), so the
# apiserver's per-address cap (half of --max_connections) is not what is
# measured; the worker's one client is the apiserver (one address holding
# every stream), so the worker gets --max_connections_per_client 16384.
#
# Rows (x = concurrent streams):
#   streams.errors_count              streams through the apiserver that failed
#   streams.direct_errors_count       streams direct to the worker that failed
#   streams.tokens_rps                SSE events/s received through the apiserver
#   streams.ttfb_p50_ms, _p99_ms      time to first token through the apiserver
#   streams.direct_ttfb_p50_ms, _p99  the same, direct to the worker
#   streams.added_ttfb_p50_ms, _p99   apiserver minus direct (same run)
#   streams.api_rss_per_stream_kib    (apiserver RSS with the streams open -
#                                     idle) / open streams
#   streams.worker_rss_per_stream_kib the worker's, in the direct pass
#   streams.api_cpu_pct               apiserver CPU over its pass (100 = 1 core)
#   streams.loadgen_cpu_pct           the generator's own CPU over that pass
#   streams.api_retries_count         the apiserver's retries (a new connection
#                                     after a connect timeout, another instance)
#   streams.api_loop_stall_max_ms     its loops' longest lateness since start
# Targets (issue 12): at 10,000 streams no error, <= 16 KiB per stream in
# the apiserver, added time to first token p99 <= 2 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The apiserver holds two descriptors per stream (the client's connection and
# its own to the worker): where the hard limit is below that (20,000 on the
# machines of docs/performance.md, without CAP_SYS_RESOURCE), the top point
# becomes the most streams that fit, rounded down to 100, and says so.
fdmax=$(ulimit -n)

delay=250
tokens=12
# streams opened per second (a burst no real client population makes at
# once; kept so that figures compare across sessions). Every role's accept
# queue is net.core.somaxconn deep (until issue 12's second round it was
# libevent's 128, whatever listen() asked: bursts lost SYNs, each a 1 s
# retransmit, and the apiserver ejected the worker for the connect
# timeouts); a connect timeout on a worker that answers other requests no
# longer ejects it (apiserver/api_proxy.c).
rate=2000
addrs=50
if [ "$BENCH_QUICK" = 1 ]; then
    levels=(100)
else
    levels=(100 1000 10000)
fi
[ -n "${STREAMS_LEVELS:-}" ] && read -r -a levels <<<"$STREAMS_LEVELS" # e.g. "10000"
fit=$(((fdmax - 256) / 2 / 100 * 100))
for i in "${!levels[@]}"; do
    if [ "${levels[$i]}" -gt "$fit" ]; then
        echo "bench: open files limited to $fdmax: ${levels[$i]} streams measured as $fit" >&2
        levels[i]=$fit
    fi
done

cc -O2 -Wall -Wextra -Werror -o "$work/streamload" bench/streamload.c -levent

emit_cmd streams "bench/scale_streams.sh"

"$bin" start controller --host 127.0.0.1 --port 0 --port_file "$work/ctl.port" \
    --registry_db_name "$work/registry.db" --log_level error >"$work/ctl.log" 2>&1 &
pids+=($!)
ctl=$(wait_port_file "$work/ctl.port")

body='{"model":"tiny","messages":[{"role":"user","content":"How does a worker register?"}],"temperature":0,"max_tokens":'$tokens',"stream":true}'
printf '%s\n' "$body" >"$work/body.json"
printf '%s\n' "${body/\"max_tokens\":$tokens/\"max_tokens\":1}" >"$work/warm.json"
probe='{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":1}'

limits=(--max_connections 16384 --connection_reserve 64)
read -r -a api_extra <<<"${STREAMS_API_ARGS:-}" # experiments: e.g. "--connect_timeout_ms 3000"

start_pair() { # fresh worker and apiserver; sets wpid wport apid aport
    rm -f "$work/w.port" "$work/api.port"
    "$bin" start worker --model_name tiny --host 127.0.0.1 --port 0 \
        --port_file "$work/w.port" --controller_addr "http://127.0.0.1:$ctl" \
        --concurrency 20000 --decode_delay_ms "$delay" "${limits[@]}" \
        --max_connections_per_client 16384 --access_log false --log_level error \
        --shutdown_grace_ms 100 >>"$work/w.log" 2>&1 &
    wpid=$!
    pids+=("$wpid")
    wport=$(wait_port_file "$work/w.port")
    "$bin" start apiserver --host 127.0.0.1 --port 0 --port_file "$work/api.port" \
        --controller_addr "http://127.0.0.1:$ctl" "${limits[@]}" ${api_extra[@]+"${api_extra[@]}"} --access_log false \
        --log_level error >>"$work/api.log" 2>&1 &
    apid=$!
    pids+=("$apid")
    aport=$(wait_port_file "$work/api.port")
    # the apiserver routes once the worker's registration reaches its table
    for _ in $(seq 1 100); do
        curl -sf -m 5 "http://127.0.0.1:$aport/v1/chat/completions" -d "$probe" >/dev/null &&
            break
        sleep 0.05
    done
    curl -sf -m 5 "http://127.0.0.1:$aport/v1/chat/completions" -d "$probe" >/dev/null
}

stop_pair() {
    kill "$apid" "$wpid" 2>/dev/null || true
    wait "$apid" "$wpid" 2>/dev/null || true
}

# field KEY LINE: the value of KEY=... in a streamload line
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'; }
calc() { awk "BEGIN{printf \"%.3f\", $1}"; }

echo "bench: $(nproc) CPUs, streams ${levels[*]}, ${BENCH_RUNS} run(s), work dir $work" >&2
table=()
for run in $(seq 1 "$BENCH_RUNS"); do
    for n in "${levels[@]}"; do
        start_pair
        # warm-up (both paths, first-use costs: allocator, upstream pool), then idle RSS
        "$work/streamload" "$wport" 10 "$work/warm.json" -a "$addrs" -r "$rate" >/dev/null
        "$work/streamload" "$aport" 10 "$work/warm.json" -a "$addrs" -r "$rate" >/dev/null
        # every stream stays open until the last has begun (12 tokens + the ramp)
        ntok=$((tokens + n * 1000 / rate / delay))
        printf '%s\n' "${body/\"max_tokens\":$tokens/\"max_tokens\":$ntok}" >"$work/body.json"
        secs=$(calc "$n / $rate + ($ntok + 2) * $delay / 1000 + 30")
        w_idle=$(rss_kib "$wpid")
        echo "bench: run $run, $n streams direct" >&2
        d=$("$work/streamload" "$wport" "$n" "$work/body.json" -a "$addrs" -r "$rate" \
            -p "$wpid" -t "$secs")
        a_idle=$(rss_kib "$apid")
        a_t0=$(cpu_ticks "$apid")
        echo "bench: run $run, $n streams through the apiserver" >&2
        r=$("$work/streamload" "$aport" "$n" "$work/body.json" -a "$addrs" -r "$rate" \
            -p "$apid" -t "$secs")
        a_t1=$(cpu_ticks "$apid")
        echo "bench:   direct: $d" >&2
        echo "bench:   apiserver: $r" >&2
        # where the apiserver's tail goes: new connections retried after a
        # connect timeout, and its loops' longest lateness
        m=$(curl -sf -m 5 "http://127.0.0.1:$aport/metrics" || true)
        a_retries=$(awk '/^roster_api_model_retries_total/ {s += $NF} END {printf "%d", s}' <<<"$m")
        a_stall=$(awk '/^roster_loop_stall_max_seconds/ {if ($NF > x) x = $NF} END {printf "%.3f", x * 1000}' <<<"$m")
        stop_pair

        d_err=$(field errors "$d")
        d_p50=$(field ttfb_p50_ms "$d")
        d_p99=$(field ttfb_p99_ms "$d")
        d_open=$(field open_at_sample "$d")
        w_open=$(field "rss_kib_$wpid" "$d")
        r_err=$(field errors "$r")
        r_p50=$(field ttfb_p50_ms "$r")
        r_p99=$(field ttfb_p99_ms "$r")
        r_open=$(field open_at_sample "$r")
        a_open=$(field "rss_kib_$apid" "$r")
        r_ev=$(field events "$r")
        r_el=$(field elapsed_s "$r")
        r_cpu=$(field cpu_s "$r")
        # a point whose streams never all got a first token has no RSS sample
        [ "$r_open" -gt 0 ] || r_open=1
        [ "$d_open" -gt 0 ] || d_open=1
        [ "$a_open" -gt 0 ] || a_open=$a_idle
        [ "$w_open" -gt 0 ] || w_open=$w_idle

        tok=$(calc "$r_ev / $r_el")
        add50=$(calc "$r_p50 - $d_p50")
        add99=$(calc "$r_p99 - $d_p99")
        api_per=$(calc "($a_open - $a_idle) / $r_open")
        wrk_per=$(calc "($w_open - $w_idle) / $d_open")
        api_cpu=$(calc "($a_t1 - $a_t0) / $r_el")
        gen_cpu=$(calc "$r_cpu * 100 / $r_el")

        emit streams.errors_count "$n" "$run" "$r_err"
        emit streams.direct_errors_count "$n" "$run" "$d_err"
        emit streams.tokens_rps "$n" "$run" "$tok"
        emit streams.ttfb_p50_ms "$n" "$run" "$r_p50"
        emit streams.ttfb_p99_ms "$n" "$run" "$r_p99"
        emit streams.direct_ttfb_p50_ms "$n" "$run" "$d_p50"
        emit streams.direct_ttfb_p99_ms "$n" "$run" "$d_p99"
        emit streams.added_ttfb_p50_ms "$n" "$run" "$add50"
        emit streams.added_ttfb_p99_ms "$n" "$run" "$add99"
        emit streams.api_rss_per_stream_kib "$n" "$run" "$api_per"
        emit streams.worker_rss_per_stream_kib "$n" "$run" "$wrk_per"
        emit streams.api_cpu_pct "$n" "$run" "$api_cpu"
        emit streams.loadgen_cpu_pct "$n" "$run" "$gen_cpu"
        emit streams.api_retries_count "$n" "$run" "$a_retries"
        emit streams.api_loop_stall_max_ms "$n" "$run" "$a_stall"
        table+=("$(printf '%3d %7d %6d %6d %9.0f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %7.2f %7.2f %5.0f %5.0f' \
            "$run" "$n" "$r_err" "$d_err" "$tok" "$r_p50" "$r_p99" "$d_p50" "$d_p99" \
            "$add50" "$add99" "$api_per" "$wrk_per" "$api_cpu" "$gen_cpu")")
    done
done

printf '\n%3s %7s %6s %6s %9s %8s %8s %8s %8s %8s %8s %7s %7s %5s %5s\n' run streams err \
    d_err events/s p50_ms p99_ms d_p50 d_p99 add_p50 add_p99 api_KiB wrk_KiB apiC% genC%
printf '%s\n' "${table[@]}"
echo "(time to first token in ms, through the apiserver and direct (d_); KiB per open stream;" \
    "CPU % of one core over the apiserver's pass; targets at 10,000: err 0, api_KiB <= 16," \
    "add_p99 <= 2)"
