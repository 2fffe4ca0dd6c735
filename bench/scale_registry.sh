#!/usr/bin/env bash
# Registry-size curve (issue 12, bench `registry`): how one controller's
# costs grow with the number of instances in the registry table.
#
#   bench/scale_registry.sh        (BENCH_RUNS, BENCH_QUICK, BENCH_RESULTS: bench/lib.sh)
#
# Backend: SQLite (one file per size). The table is filled straight with
# SQL (the schema comes from a controller started once on the file): x
# instances in models of 100 instances each ("bench-N@llm"), every one
# healthy with a day-long lease. Sizes x: 1000, 10000, 100000 (quick:
# 1000); BENCH_BIG=1 adds 1,000,000.
#
# Per size and run, back to back:
#   nginx      `return 200`, wrk -t1 -c4: the p99 baseline at the same load
#   list one   wrk -t1 -c4 GET /api/controller/models?model_name=bench-7@llm
#              (100 instances) on controller A (default refresh period)
#   list all   wrk -t1 -c1 GET /api/controller/models (every instance);
#              its size in bytes
#   list one while all   list one (as above) while a wrk -c1 asks for the
#              whole list back to back and a heartbeat every 50 ms makes
#              each one new: what a whole list costs the loop's others
#   RSS        controller A's VmRSS after the lists (so with the list-all
#              JSON cached); per instance above the RSS of a controller on
#              an empty table (measured in each run)
#   watch      an apiserver watching A: register one instance of a new
#              model through A, poll the apiserver's /v1/models/<model>
#              until it answers 200; the median of 3 (1 from 100,000 up:
#              each takes seconds there)
#   refresh    controller B with --view_refresh_ms 50 (the refresher is
#              nearly always inside a full refresh) while wrk lists one
#              model: the mean full refresh time
#              (roster_view_full_refresh_seconds: read + merge + publish)
#              and the longest loop stall (roster_loop_stall_max_seconds,
#              B is started fresh per run, so the max covers that window).
#              The probe measures wall-clock lateness: a loop thread waiting
#              for a CPU counts too, so the same is measured on the
#              empty-table controller under the same load (stall_base):
#              on 2 shared cores both are often > 5 ms. So the busy part is
#              taken too (roster_loop_busy_max_seconds: the most of one
#              lateness that was the loop thread's own CPU time, i.e. a
#              long callback, not a wait for a CPU), for B and the base
# A and its apiserver are started once per size and kept through the runs
# (SIGSTOPped while the other controllers run); B and the empty-table
# controller are started per run. BENCH_SIZES="10000 100000" measures only
# those sizes. Budget: full (3 runs) <= 6 min, quick <= 25 s on an idle
# 2-core machine (6m40 s and 60 s measured at load average 15).
#
# Keys (x = instances): registry.list_one_p50_ms, list_one_p99_ms,
# list_one_nginx_p99_ms, list_one_p99_ratio (list one p99 / nginx p99),
# list_one_during_all_p99_ms (list one p99 while whole lists are built),
# list_all_p50_ms, list_all_p99_ms, list_all_bytes, ctl_rss_kib,
# ctl_rss_empty_kib, rss_per_instance_bytes, refresh_ms, stall_max_ms,
# stall_base_max_ms, stall_busy_max_ms, stall_base_busy_max_ms, watch_ms.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ "$BENCH_QUICK" = 1 ]; then
    sizes=(1000)
    secs=2
else
    sizes=(1000 10000 100000)
    [ "${BENCH_BIG:-0}" = 1 ] && sizes+=(1000000)
    secs=3
fi
# BENCH_SIZES="10000 100000" overrides the sizes (for a look at one point)
[ -n "${BENCH_SIZES:-}" ] && read -r -a sizes <<<"$BENCH_SIZES"
probe="bench-7@llm"
emit_cmd registry "bench/scale_registry.sh"

# start_ctl NAME DB [FLAGS...]: a controller on SQLite file DB; sets ctl_pid, ctl_port
start_ctl() {
    local name=$1 db=$2
    shift 2
    rm -f "$work/$name.port"
    "$bin" start controller --host 127.0.0.1 --port 0 --port_file "$work/$name.port" \
        --registry_db_name "$db" --heartbeat_timeout_secs 86400 --heartbeat_interval_secs 86400 \
        --log_level warn "$@" >>"$work/$name.log" 2>&1 &
    ctl_pid=$!
    pids+=("$ctl_pid")
    ctl_port=$(wait_port_file "$work/$name.port")
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# metric PORT NAME: a sample of /metrics (0 when absent)
metric() {
    curl -fsS "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {v = $2} END {printf "%d\n", v}'
}

# metric_ms PORT NAME: a sample in seconds, as ms
metric_ms() {
    curl -fsS "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {printf "%.2f\n", 1000 * $2}'
}

# wait_count PORT N: until controller PORT lists N instances (full view)
wait_count() {
    for _ in $(seq 1 600); do
        [ "$(metric "$1" roster_view_instances)" -ge "$2" ] 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: the controller never held $2 instances" >&2
    return 1
}

# fill DB N: N instances in models of 100 (schema from a controller)
fill() {
    start_ctl schema "$1"
    stop_pid "$ctl_pid"
    python3 - "$1" "$2" <<'PY'
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
rows = ((f"bench-{i // 100}@llm", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 8000 + i % 1000)
        for i in range(n))
con.executemany(
    "INSERT INTO dbgpt_cluster_registry_instance (model_name, host, port, weight, check_healthy,"
    " healthy, enabled, last_heartbeat, sys_code, roster_lease_ms, roster_updated_ms)"
    f" VALUES (?, ?, ?, 1.0, 1, 1, 1, {now}, '', 86400000, 0)", rows)
con.commit()
PY
}

# watch_ms CTL_PORT API_PORT TAG: median ms from a registration through the
# controller to the apiserver routing the new model (5 samples)
watch_ms() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, statistics, sys, time, urllib.error, urllib.request
ctl, api, tag = sys.argv[1], sys.argv[2], sys.argv[3]
samples = []
for k in range(3):
    model = f"watch-{tag}-{k}"
    body = json.dumps({"model_name": model + "@llm", "host": "127.0.0.1", "port": 9000 + k,
                       "check_healthy": True}).encode()
    t0 = time.perf_counter()
    req = urllib.request.Request(f"http://127.0.0.1:{ctl}/api/controller/models", data=body,
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    t1 = time.perf_counter()
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{api}/v1/models/{model}", timeout=30).read()
            break
        except urllib.error.HTTPError as e:
            if e.code != 404 or time.monotonic() > deadline:
                sys.exit(f"watch: apiserver answered {e.code}")
        time.sleep(0.001)
    samples.append((time.perf_counter() - t0) * 1000)
    print(f"watch: register {1000 * (t1 - t0):.1f} ms, routable {samples[-1]:.1f} ms",
          file=sys.stderr)
print(f"{statistics.median(samples):.1f}")
PY
}

# a stopped process cannot die of the cleanup's SIGTERM: continue them first
a_pid= api_pid=
trap '[ -n "$a_pid" ] && kill -CONT "$a_pid" "$api_pid" 2>/dev/null; bench_cleanup' EXIT
start_nginx
empty_db=$work/empty.db
printf '%-8s %4s %9s %9s %9s %9s %9s %11s %9s %9s %9s %9s %9s %9s %9s %9s\n' instances run one_p50 one_p99 \
    nginx_p99 all_p50 all_p99 all_bytes rss_kib B/inst refresh stall stall0 busy busy0 watch
for x in "${sizes[@]}"; do
    db=$work/reg-$x.db
    echo "bench: filling $x instances" >&2
    fill "$db" "$x"
    # A and its apiserver live through the runs (stopped with SIGSTOP while
    # the other controllers are measured, so they take no CPU from them)
    start_ctl "a$x" "$db" --max_instances $((x + 1000))
    a_pid=$ctl_pid a_port=$ctl_port
    wait_count "$a_port" "$x"
    rm -f "$work/api.port"
    "$bin" start apiserver --host 127.0.0.1 --port 0 --port_file "$work/api.port" \
        --controller_addr "http://127.0.0.1:$a_port" --log_level warn >>"$work/api.log" 2>&1 &
    api_pid=$!
    pids+=("$api_pid")
    api_port=$(wait_port_file "$work/api.port")
    # ready once it routes a model of the table
    for _ in $(seq 1 1200); do
        curl -fsS -o /dev/null "http://127.0.0.1:$api_port/v1/models/bench-7" 2>/dev/null && break
        sleep 0.05
    done
    kill -STOP "$a_pid" "$api_pid"
    for run in $(seq 1 "$BENCH_RUNS"); do
        # ---- the empty-table base: RSS, and the loop stall under the same load ---------
        start_ctl empty "$empty_db" --view_refresh_ms 50 --view_poll_ms 50
        curl -fsS -o /dev/null "http://127.0.0.1:$ctl_port/api/controller/models"
        wrk -t1 -c4 -d"${secs}s" "http://127.0.0.1:$ctl_port/api/controller/models?model_name=$probe" >/dev/null
        rss0=$(rss_kib "$ctl_pid")
        stall0=$(metric_ms "$ctl_port" roster_loop_stall_max_seconds)
        busy0=$(metric_ms "$ctl_port" roster_loop_busy_max_seconds)
        stop_pid "$ctl_pid"

        # ---- controller A: lists, RSS, watch ----------------------------------------
        kill -CONT "$a_pid" "$api_pid"
        read -r _ _ ng_p99 _ < <(wrk -t1 -c4 -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
        read -r _ one_p50 one_p99 bad < <(wrk -t1 -c4 -d"${secs}s" --latency \
            "http://127.0.0.1:$a_port/api/controller/models?model_name=$probe" | summarize)
        [ "$bad" = 0 ] || echo "bench: $bad list-one answers were not 2xx" >&2
        read -r _ all_p50 all_p99 _ < <(wrk -t1 -c1 -d"${secs}s" --timeout 10s --latency \
            "http://127.0.0.1:$a_port/api/controller/models" | summarize)
        all_bytes=$(curl -fsS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$a_port/api/controller/models")
        rss=$(rss_kib "$a_pid")
        per_inst=$(awk -v a="$rss" -v b="$rss0" -v n="$x" 'BEGIN{printf "%.0f", (a - b) * 1024 / n}')
        w_ms=$(watch_ms "$a_port" "$api_port" "$x-$run" "$((x >= 100000 ? 1 : 3))")
        # (after the RSS and the watch: the lists below churn the heap) list
        # one model while whole lists are asked for back to back, with
        # a heartbeat every 50 ms (so every whole list is built anew): the
        # loop serving the lists must not be the one building them
        hb='{"model_name":"bench-0@llm","host":"10.0.0.0","port":8000,"weight":1.0,"check_healthy":true,"healthy":true,"enabled":true}'
        (
            end=$((SECONDS + secs + 1))
            while [ "$SECONDS" -lt "$end" ]; do
                curl -s -o /dev/null -d "$hb" "http://127.0.0.1:$a_port/api/controller/heartbeat"
                sleep 0.05
            done
        ) &
        hb_loop=$!
        wrk -t1 -c1 -d"${secs}s" --timeout 10s "http://127.0.0.1:$a_port/api/controller/models" >/dev/null &
        all_loop=$!
        read -r _ _ busy_one_p99 _ < <(wrk -t1 -c4 -d"${secs}s" --latency \
            "http://127.0.0.1:$a_port/api/controller/models?model_name=$probe" | summarize)
        wait "$all_loop" "$hb_loop"
        kill -STOP "$a_pid" "$api_pid"

        # ---- controller B: full refreshes back to back --------------------------------
        start_ctl "b$x" "$db" --max_instances $((x + 1000)) --view_refresh_ms 50 --view_poll_ms 50
        b_pid=$ctl_pid b_port=$ctl_port
        wait_count "$b_port" "$x"
        wrk -t1 -c4 -d"${secs}s" "http://127.0.0.1:$b_port/api/controller/models?model_name=$probe" >/dev/null
        m=$(curl -fsS "http://127.0.0.1:$b_port/metrics")
        refresh=$(awk '$1 == "roster_view_full_refresh_seconds_sum" {s = $2}
                       $1 == "roster_view_full_refresh_seconds_count" {c = $2}
                       END {printf "%.2f", (c > 0 ? 1000 * s / c : 0)}' <<<"$m")
        stall=$(awk '$1 == "roster_loop_stall_max_seconds" {printf "%.2f", 1000 * $2}' <<<"$m")
        busy=$(awk '$1 == "roster_loop_busy_max_seconds" {printf "%.2f", 1000 * $2}' <<<"$m")
        [ -n "$stall" ] && [ -n "$busy" ] || { echo "bench: no roster_loop_*_max_seconds" >&2; exit 1; }
        stop_pid "$b_pid"

        emit registry.list_one_p50_ms "$x" "$run" "$one_p50"
        emit registry.list_one_p99_ms "$x" "$run" "$one_p99"
        emit registry.list_one_nginx_p99_ms "$x" "$run" "$ng_p99"
        emit registry.list_one_p99_ratio "$x" "$run" "$(ratio "$one_p99" "$ng_p99")"
        emit registry.list_one_during_all_p99_ms "$x" "$run" "$busy_one_p99"
        emit registry.list_all_p50_ms "$x" "$run" "$all_p50"
        emit registry.list_all_p99_ms "$x" "$run" "$all_p99"
        emit registry.list_all_bytes "$x" "$run" "$all_bytes"
        emit registry.ctl_rss_kib "$x" "$run" "$rss"
        emit registry.ctl_rss_empty_kib "$x" "$run" "$rss0"
        emit registry.rss_per_instance_bytes "$x" "$run" "$per_inst"
        emit registry.refresh_ms "$x" "$run" "$refresh"
        emit registry.stall_max_ms "$x" "$run" "$stall"
        emit registry.stall_base_max_ms "$x" "$run" "$stall0"
        emit registry.stall_busy_max_ms "$x" "$run" "$busy"
        emit registry.stall_base_busy_max_ms "$x" "$run" "$busy0"
        emit registry.watch_ms "$x" "$run" "$w_ms"
        printf '%-8s %4s %9s %9s %9s %9s %9s %11s %9s %9s %9s %9s %9s %9s %9s %9s\n' "$x" "$run" \
            "$one_p50" "$one_p99" "$ng_p99" "$all_p50" "$all_p99" "$all_bytes" "$rss" "$per_inst" \
            "$refresh" "$stall" "$stall0" "$busy" "$busy0" "$w_ms"
    done
    kill -CONT "$a_pid" "$api_pid"
    stop_pid "$api_pid"
    stop_pid "$a_pid"
    a_pid= api_pid=
    rm -f "$db"
done
echo "(ms, except all_bytes, rss KiB, B/inst bytes per instance above an empty table)"
