#!/usr/bin/env bash
# The apiserver's wait queue (issue 13, bench name `queue`): a burst of
# requests twice (and, full runs, four times) the cluster's capacity, all
# sent at once, through an apiserver that queues (--queue_timeout_ms 30000)
# and through one that does not (--queue_timeout_ms 0: every instance at
# capacity is an immediate 429, the behaviour before the queue), back to
# back in the same run.
#
#   bench/scale_queue.sh        (BENCH_RUNS, BENCH_QUICK: see bench/lib.sh)
#
# The cluster: a controller on SQLite and two builtin workers with
# --concurrency 32 --max_queue 0 (capacity 64 in all; a worker answers 429
# at once when full) decoding at --decode_delay_ms 50, 8 tokens a request
# (about 0.4 s each). The load generator is a stdlib Python script: one
# thread and one connection per request, all released together; a request
# fails when its status is not 200.
#
# Rows (x = the burst, in multiples of the capacity):
#   queue.failures_count          requests of the burst that failed, queueing
#   queue.p50_ms, queue.p99_ms    their latency (send to the whole answer)
#   queue.noqueue_failures_count  the same burst without the queue
#   queue.noqueue_p50_ms, _p99_ms ... its latency (failures included: fast)
#   queue.wait_p99_ms             the queueing apiserver's wait, p99 of the
#                                 requests that waited (its histogram)
# Target (issue 13): at 2x capacity, no failure with the queue (against
# immediate 429s without it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

conc=32
workers=2
delay=50
tokens=8
cap=$((conc * workers))
if [ "$BENCH_QUICK" = 1 ]; then
    mults=(2)
else
    mults=(2 4)
fi

emit_cmd queue "bench/scale_queue.sh"

cat >"$work/burst.py" <<'PY'
import http.client, json, sys, threading, time
port, n, tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": tokens, "temperature": 0}).encode()
res = [None] * n
ready = threading.Barrier(n + 1)  # every connection open before the burst
def one(i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.connect()
    ready.wait()
    t0 = time.monotonic()
    try:
        c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        res[i] = (r.status, time.monotonic() - t0)
    except OSError:
        res[i] = (0, time.monotonic() - t0)
    c.close()
ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ths:
    t.start()
ready.wait()
for t in ths:
    t.join()
lat = sorted(r[1] * 1000 for r in res)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("failures=%d p50_ms=%.1f p99_ms=%.1f" % (sum(r[0] != 200 for r in res), q(0.5), q(0.99)))
PY

"$bin" start controller --host 127.0.0.1 --port 0 --port_file "$work/ctl.port" \
    --registry_db_name "$work/registry.db" --log_level error >"$work/ctl.log" 2>&1 &
pids+=($!)
ctl=$(wait_port_file "$work/ctl.port")
for i in $(seq 1 "$workers"); do
    start_role "w$i" worker --model_name tiny --controller_addr "http://127.0.0.1:$ctl" \
        --concurrency "$conc" --max_queue 0 --decode_delay_ms "$delay" --access_log false \
        --heartbeat_interval 1
    port_of "w$i" >/dev/null
done
start_role q apiserver --controller_addr "http://127.0.0.1:$ctl" --queue_timeout_ms 30000 \
    --access_log false
start_role nq apiserver --controller_addr "http://127.0.0.1:$ctl" --queue_timeout_ms 0 \
    --access_log false
qport=$(port_of q)
nqport=$(port_of nq)
# both route once both workers are in their tables
probe='{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":1}'
for p in "$qport" "$nqport"; do
    for _ in $(seq 1 200); do
        n=$(curl -sf -m 5 "http://127.0.0.1:$p/v1/models" |
            python3 -c 'import json,sys; print(sum(m["instances"] for m in json.load(sys.stdin)["data"] if m["id"] == "tiny"))' 2>/dev/null || echo 0)
        [ "$n" = "$workers" ] && break
        sleep 0.05
    done
    curl -sf -m 5 "http://127.0.0.1:$p/v1/chat/completions" -d "$probe" >/dev/null
done

field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'; }
# the p99 of the queue wait histogram (seconds buckets -> ms) over the run so far
wait_p99() {
    curl -sf -m 5 "http://127.0.0.1:$qport/metrics" | awk '
      /^roster_api_queue_wait_seconds_bucket/ {
        match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
        n++; b[n] = le; c[n] = $NF }
      END { if (n == 0 || c[n] == 0) { print "0.0"; exit }
            for (i = 1; i <= n; i++) if (c[i] >= 0.99 * c[n]) { v = b[i]; break }
            if (v == "+Inf") v = b[n - 1]
            printf "%.1f\n", v * 1000 }'
}

echo "bench: $(nproc) CPUs, capacity $cap, bursts ${mults[*]}x, ${BENCH_RUNS} run(s)" >&2
table=()
for run in $(seq 1 "$BENCH_RUNS"); do
    for m in "${mults[@]}"; do
        n=$((m * cap))
        echo "bench: run $run, burst of $n through the queueing apiserver" >&2
        r=$(python3 "$work/burst.py" "$qport" "$n" "$tokens")
        echo "bench: run $run, burst of $n without a queue" >&2
        d=$(python3 "$work/burst.py" "$nqport" "$n" "$tokens")
        wp=$(wait_p99)
        echo "bench:   queue: $r; no queue: $d; queue wait p99 $wp ms" >&2
        emit queue.failures_count "$m" "$run" "$(field failures "$r")"
        emit queue.p50_ms "$m" "$run" "$(field p50_ms "$r")"
        emit queue.p99_ms "$m" "$run" "$(field p99_ms "$r")"
        emit queue.noqueue_failures_count "$m" "$run" "$(field failures "$d")"
        emit queue.noqueue_p50_ms "$m" "$run" "$(field p50_ms "$d")"
        emit queue.noqueue_p99_ms "$m" "$run" "$(field p99_ms "$d")"
        emit queue.wait_p99_ms "$m" "$run" "$wp"
        table+=("$(printf '%3d %5dx %6d %8d %9.1f %9.1f %9d %9.1f %9.1f %9.1f' "$run" "$m" "$n" \
            "$(field failures "$r")" "$(field p50_ms "$r")" "$(field p99_ms "$r")" \
            "$(field failures "$d")" "$(field p50_ms "$d")" "$(field p99_ms "$d")" "$wp")")
    done
done

printf '\n%3s %6s %6s %8s %9s %9s %9s %9s %9s %9s\n' run burst reqs failed p50_ms p99_ms \
    nq_fail nq_p50 nq_p99 wait_p99
printf '%s\n' "${table[@]}"
echo "(capacity $cap: $workers workers x --concurrency $conc, --max_queue 0; each request" \
    "$tokens tokens at $delay ms; nq_: --queue_timeout_ms 0; wait_p99: the queue's histogram" \
    "bucket, cumulative over the run; target at 2x: failed 0)"
