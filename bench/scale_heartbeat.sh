#!/usr/bin/env bash
# Heartbeat capacity (bench name `heartbeat`): the largest simulated fleet
# that three controllers on one MariaDB keep healthy, with ZERO false
# evictions, at roster's 5 s heartbeat interval (lease 3 x 5 s, the worker's
# declared lease) and at DB-GPT's 20 s (no declared interval: the
# controller's --heartbeat_timeout_secs, 60 s, DB-GPT's default lease), and
# the database's CPU per heartbeat at each fleet size.
#
#   bench/scale_heartbeat.sh
#
# Fleet: N instances, each heartbeating every T seconds, spread over the
# three controllers (one wrk -t1 each, bench/heartbeat.lua with
# ROSTER_BENCH_RATE = N/T/3: paced connections whose wait is corrected once
# a second toward the rate, so the fleet beats at its interval whatever the
# latency until the connections or the servers cannot keep up). Sizes step
# up; each step runs one interval T of warm-up (every instance beats once:
# a new instance registers on its first beat) and then a measured window.
# A step passes when, over its window: no non-2xx or socket error; the
# heartbeats achieved are >= 90 % of N/T (each instance beats at least
# every T/0.9, the pacing holds the rate within about 5 %: behind that, the fleet drifts toward its lease); the p99
# latency is under T; and no instance was evicted - no controller's view
# holds fewer alive instances than instances, and the sweep marked none
# (roster_sweep_marked_total). The first failing size ends the curve.
# What a step length guarantees: the window sees every instance beat at
# least once at T = 5 s (window 5 s) and half of them at T = 20 s (window
# 10 s); an eviction needs a gap of a whole lease (15 s, 60 s) and the
# pacing never leaves one (a stalled instance shows as a rate shortfall
# first), so the rate and latency criteria are the binding ones; the view
# and sweep counts catch what the rate cannot (a controller that stops
# seeing beats written through the others).
#
# Between the two curves the table is emptied and the controllers read it
# again. Rows (x = fleet size N, instances):
#   heartbeat.hb_<T>s_rps, false_evictions_<T>s_count, db_cpu_<T>s_pct,
#   db_cpu_per_heartbeat_<T>s_us, ctl_cpu_<T>s_pct, hb_p99_<T>s_ms,
#   hb_errors_<T>s_count (T = 5, 20) and, with x "-",
#   heartbeat.capacity_5s_count, heartbeat.capacity_20s_count (largest N
#   that passed; 0 if none). ROSTER_BENCH_CTL_ARGS: more controller flags
#   (e.g. "--view_poll_ms 1000"). Full mode: one run (BENCH_RUNS is honoured in
#   quick mode only: the time budget, 8 minutes, holds one pass); quick:
#   one small size per interval, 2 s warm-up, 2 s window.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
bin=${ROSTER_BENCH_BIN:-$bin}
B=heartbeat
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
emit_cmd "$B" "bench/scale_heartbeat.sh"
if [ "$BENCH_QUICK" = 1 ]; then
    sizes5=${ROSTER_BENCH_SIZES_5:-"3000"}
    sizes20=${ROSTER_BENCH_SIZES_20:-"10000"}
    warm5=2; win5=2; warm20=2; win20=2
    runs=$BENCH_RUNS
else
    sizes5=${ROSTER_BENCH_SIZES_5:-"5000 10000 25000 50000 75000 100000"}
    sizes20=${ROSTER_BENCH_SIZES_20:-"20000 50000 100000 150000 200000 300000"}
    warm5=5; win5=5; warm20=20; win20=10
    runs=1
fi
# connections per controller: a connection beats at most once per latency,
# so rate x 0.2 s keeps the rate with latencies up to 200 ms (a loaded
# 2-core machine sees that); 4..256
fleet_conns() { awk -v r="$1" -v c="${ROSTER_BENCH_FLEET_CONNS:-0}" \
    'BEGIN{ if (c > 0) print c; else { n = int(r * 0.2); print (n < 4) ? 4 : (n > 256) ? 256 : n } }'; }

# shellcheck disable=SC2086 # ROSTER_BENCH_CTL_ARGS: words
start_db_controllers 3 --max_instances 1000000 ${ROSTER_BENCH_CTL_ARGS:-}
echo "bench heartbeat: $(nproc) CPUs, $bin" >&2

tck=$(getconf CLK_TCK)
# The three controllers' /metrics in one file (one curl: a process start
# costs a loaded machine ~0.2 s), then values from it:
#   hb   committed heartbeats and registrations (first beats), summed
#   marked  rows the sweep marked unhealthy, summed
#   gone    the most instances one view holds that are not alive
#   inst    instances in the views, summed
scrape() {
    local urls=() p
    for p in "${ports[@]}"; do urls+=("http://127.0.0.1:$p/metrics"); done
    curl -s --max-time 10 "${urls[@]}" | awk '
        /^roster_registry_writes_total\{kind="(heartbeat|register)"\}/ {hb += $2}
        /^roster_sweep_marked_total / {marked += $2}
        /^roster_view_instances / {i = $2; inst += $2}
        /^roster_view_alive_instances / {d = i - $2; if (d > gone) gone = d}
        END {printf "%.0f %.0f %.0f %.0f\n", hb, marked, gone, inst}'
}

printf '\n%-4s %-4s %8s %9s %8s %9s %9s %8s %8s %s\n' run T N "hb/s" "want/s" "p99 ms" "evicted" "db %" "db us/hb" "ctl %  verdict"
for run in $(seq 1 "$runs"); do
    for T in 5 20; do
        if [ "$T" = 5 ]; then sizes=$sizes5; warm=$warm5; win=$win5; iv=5; else sizes=$sizes20; warm=$warm20; win=$win20; iv=dbgpt; fi
        # a fresh table per curve: the other curve's instances would expire
        echo "$(date -u +%T) emptying the table" >&2
        sqlq bench -e "DELETE FROM dbgpt_cluster_registry_instance"
        for _ in $(seq 1 100); do
            read -r _ _ _ inst < <(scrape)
            [ "$inst" = 0 ] && break
            sleep 0.1
        done
        cap=0
        for N in $sizes; do
            rate=$(awk -v n="$N" -v t="$T" 'BEGIN{printf "%.1f", n / t / 3}')
            conns=$(fleet_conns "$rate")
            echo "$(date -u +%T) T=$T N=$N: $rate/s and $conns connections per controller" >&2
            wrks=()
            for i in 0 1 2; do
                ROSTER_BENCH_INSTANCES=$N ROSTER_BENCH_PART=$i ROSTER_BENCH_PARTS=3 \
                    ROSTER_BENCH_RATE=$rate ROSTER_BENCH_CONNS=$conns ROSTER_BENCH_INTERVAL=$iv \
                    ROSTER_BENCH_PREFIX=hb$T \
                    wrk -t1 -c"$conns" -d"$((warm + win + 2))s" --timeout "${T}s" --latency \
                    -s bench/heartbeat.lua "http://127.0.0.1:${ports[$i]}" >"$work/w$i.txt" 2>&1 &
                wrks+=($!)
            done
            sleep "$warm"
            read -r h0 m0 _ _ < <(scrape)
            d0=$(cpu_ticks "$db_pid"); c0=$(ctl_ticks); t0=$(date +%s.%N)
            sleep "$win"
            d1=$(cpu_ticks "$db_pid"); c1=$(ctl_ticks); t1=$(date +%s.%N)
            read -r h1 m1 gone _ < <(scrape)
            wait "${wrks[@]}" || true
            bad=0; p99=0
            for i in 0 1 2; do
                read -r _ _ p b < <(summarize <"$work/w$i.txt")
                se=$(awk '/Socket errors/ {s = 0; for (k = 4; k <= NF; k += 2) s += $k + 0; print s}' "$work/w$i.txt")
                bad=$((bad + b + ${se:-0}))
                p99=$(awk -v a="$p99" -v b="$p" 'BEGIN{print (a > b) ? a : b}')
            done
            el=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')
            hb=$((h1 - h0))
            hb_rps=$(awk -v h="$hb" -v e="$el" 'BEGIN{printf "%.0f", h / e}')
            want=$(awk -v n="$N" -v t="$T" 'BEGIN{printf "%.0f", n / t}')
            evicted=$((m1 - m0 + gone))
            db_pct=$(awk -v t=$((d1 - d0)) -v e="$el" -v k="$tck" 'BEGIN{printf "%.1f", t * 100 / k / e}')
            ctl_pct=$(awk -v t=$((c1 - c0)) -v e="$el" -v k="$tck" 'BEGIN{printf "%.1f", t * 100 / k / e}')
            db_us=$(awk -v t=$((d1 - d0)) -v h="$hb" -v k="$tck" 'BEGIN{if (h > 0) printf "%.1f", t * 1e6 / k / h; else print 0}')
            ok=$(awk -v r="$hb_rps" -v w="$want" -v p="$p99" -v t="$T" -v b="$bad" -v e="$evicted" \
                'BEGIN{print (r >= 0.9 * w && p < t * 1000 && b == 0 && e == 0) ? 1 : 0}')
            emit "$B.hb_${T}s_rps" "$N" "$run" "$hb_rps"
            emit "$B.false_evictions_${T}s_count" "$N" "$run" "$evicted"
            emit "$B.db_cpu_${T}s_pct" "$N" "$run" "$db_pct"
            emit "$B.db_cpu_per_heartbeat_${T}s_us" "$N" "$run" "$db_us"
            emit "$B.ctl_cpu_${T}s_pct" "$N" "$run" "$ctl_pct"
            emit "$B.hb_p99_${T}s_ms" "$N" "$run" "$p99"
            emit "$B.hb_errors_${T}s_count" "$N" "$run" "$bad"
            printf '%-4s %-4s %8d %9d %8d %9.1f %9d %8s %8s %s\n' "$run" "$T" "$N" "$hb_rps" "$want" "$p99" \
                "$evicted" "$db_pct" "$db_us" "$ctl_pct  $([ "$ok" = 1 ] && echo pass || echo "FAIL (errors $bad)")"
            if [ "$ok" != 1 ]; then
                echo "T=$T N=$N failed: wrk of controller 1 said:" >&2
                sed 's/^/    /' "$work/w0.txt" >&2
                break
            fi
            cap=$N
        done
        emit "$B.capacity_${T}s_count" - "$run" "$cap"
        echo "run $run: capacity at ${T} s: $cap instances" >&2
    done
done
