#!/usr/bin/env bash
# Controller benchmark (bench name `controller`). Starts, on this machine: a
# private MariaDB, three controllers sharing one registry table on it, and
# nginx answering `return 200` (the ceiling for any HTTP server here); drives
# them with wrk from the same machine. Every figure that is compared to
# nginx is measured in the same run, back to back (these machines are noisy:
# compare ratios, not absolute numbers).
#
#   bench/bench_controller.sh [SECONDS]   (per measurement; default 8, quick 2)
#
# Results protocol (bench/lib.sh): BENCH_RUNS runs, rows appended to
# BENCH_RESULTS, a human table on stdout. ROSTER_BENCH_BIN runs another
# build of roster (an old commit's, for a back-to-back comparison).
#
# Measurements, per run:
#   nginx      wrk -t2 GET / on nginx (2 workers, access_log off), at -c32 and
#              at the heartbeat run's 384 connections; the higher rate is the
#              baseline (nginx_rps)
#   heartbeat  three wrk processes (-t1 -c128 each), one per controller, POST
#              /api/controller/heartbeat over 10,000 distinct instances
#              (bench/heartbeat.lua); every 200 means committed to MariaDB
#              (durably: innodb_flush_log_at_trx_commit=1). Concurrent
#              heartbeats share a commit. Where the CPU goes, per heartbeat:
#              mariadbd (cpu_ticks over the phase), the three controllers,
#              wrk (this script's waited-for children).
#   list       wrk -t2 -c32 GET /api/controller/models?model_name=bench-7@llm
#              (100 of the 10,000 instances) on one controller, and the same
#              with view=full&healthy_only=true
#   latency    (full mode) list and nginx at a moderate load (wrk -t1 -c4):
#              the p99 a client sees when the machine is not saturated
# Targets: heartbeat rate >= 0.30 x nginx; list p99 <= 2 ms (at -c4).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
bin=${ROSTER_BENCH_BIN:-$bin}
if [ "$BENCH_QUICK" = 1 ]; then secs=${1:-2}; else secs=${1:-8}; fi
hb_conns=${ROSTER_BENCH_HB_CONNS:-128} # per controller
B=controller
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
emit_cmd "$B" "bench/bench_controller.sh $*"

# ---- MariaDB and three controllers -------------------------------------------
start_db_controllers 3
start_nginx
echo "bench controller: $(nproc) CPUs, ${secs}s per measurement, $BENCH_RUNS run(s), $bin" >&2

# register the 10,000 instances (first contact registers)
export ROSTER_BENCH_INSTANCES=10000
wrk -t1 -c16 -d"$((BENCH_QUICK == 1 ? 1 : 3))s" -s bench/heartbeat.lua "http://127.0.0.1:${ports[0]}" >/dev/null

# CPU ticks of this shell's waited-for children (the wrk processes)
child_ticks() { awk '{print $16 + $17}' /proc/$$/stat; }
tck=$(getconf CLK_TCK)
us_per() { awk -v t="$1" -v n="$2" -v k="$tck" 'BEGIN{ if (n > 0) printf "%.1f", t * 1e6 / k / n; else print 0 }'; }
pct() { awk -v t="$1" -v s="$2" -v k="$tck" 'BEGIN{ printf "%.1f", t * 100 / k / s }'; }
list_url="http://127.0.0.1:${ports[1]}/api/controller/models?model_name=bench-7%40llm"

printf '\n%-4s %-34s %10s %9s %9s %s\n' run measurement "req/s" "p50 ms" "p99 ms" notes
for run in $(seq 1 "$BENCH_RUNS"); do
    read -r ng_rps ng_p50 ng_p99 _ < <(wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
    read -r nh_rps _ _ _ < <(wrk -t2 -c"$((3 * hb_conns))" -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
    base_rps=$((ng_rps > nh_rps ? ng_rps : nh_rps))

    # heartbeats, with the CPU of each party over the phase
    d0=$(cpu_ticks "$db_pid"); c0=$(ctl_ticks); w0=$(child_ticks); t0=$(date +%s.%N)
    wrks=()
    for i in 0 1 2; do
        wrk -t1 -c"$hb_conns" -d"${secs}s" --latency -s bench/heartbeat.lua \
            "http://127.0.0.1:${ports[$i]}" >"$work/hb$i.txt" &
        wrks+=($!)
    done
    wait "${wrks[@]}"
    d1=$(cpu_ticks "$db_pid"); c1=$(ctl_ticks); w1=$(child_ticks); t1=$(date +%s.%N)
    el=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')
    hb_rps=0; hb_bad=0; hb_p99=0; hb_n=0
    for i in 0 1 2; do
        read -r r _ p99 bad < <(summarize <"$work/hb$i.txt")
        n=$(awk '/requests in/ {print $1}' "$work/hb$i.txt")
        hb_rps=$((hb_rps + r)); hb_bad=$((hb_bad + bad)); hb_n=$((hb_n + n - bad))
        hb_p99=$(awk -v a="$hb_p99" -v b="$p99" 'BEGIN{print (a>b)?a:b}')
    done
    hb_ratio=$(ratio "$hb_rps" "$base_rps")
    db_us=$(us_per $((d1 - d0)) "$hb_n"); ctl_us=$(us_per $((c1 - c0)) "$hb_n"); wrk_us=$(us_per $((w1 - w0)) "$hb_n")
    per_commit=$(for p in "${ports[@]}"; do curl -s "http://127.0.0.1:$p/metrics"; done |
        awk '/^roster_registry_batches_total /{b+=$2} /^roster_registry_batch_ops_total /{o+=$2} END{if (b>0) printf "%.1f", o/b; else print 0}')

    read -r ls_rps ls_p50 ls_p99 ls_bad < <(wrk -t2 -c32 -d"${secs}s" --latency "$list_url" | summarize)
    read -r lf_rps lf_p50 lf_p99 lf_bad < <(wrk -t2 -c32 -d"${secs}s" --latency "$list_url&view=full&healthy_only=true" | summarize)

    emit "$B.nginx_rps" - "$run" "$base_rps"
    emit "$B.heartbeat_rps" - "$run" "$hb_rps"
    emit "$B.heartbeat_vs_nginx_ratio" - "$run" "$hb_ratio"
    emit "$B.heartbeat_p99_ms" - "$run" "$hb_p99"
    emit "$B.heartbeat_errors_count" - "$run" "$hb_bad"
    emit "$B.heartbeats_per_commit_count" - "$run" "$per_commit"
    emit "$B.db_cpu_per_heartbeat_us" - "$run" "$db_us"
    emit "$B.ctl_cpu_per_heartbeat_us" - "$run" "$ctl_us"
    emit "$B.wrk_cpu_per_heartbeat_us" - "$run" "$wrk_us"
    emit "$B.db_cpu_pct" - "$run" "$(pct $((d1 - d0)) "$el")"
    emit "$B.ctl_cpu_pct" - "$run" "$(pct $((c1 - c0)) "$el")"
    emit "$B.wrk_cpu_pct" - "$run" "$(pct $((w1 - w0)) "$el")"
    emit "$B.list_rps" - "$run" "$ls_rps"
    emit "$B.list_p50_ms" - "$run" "$ls_p50"
    emit "$B.list_p99_ms" - "$run" "$ls_p99"
    emit "$B.list_vs_nginx_ratio" - "$run" "$(ratio "$ls_rps" "$base_rps")"
    emit "$B.list_full_rps" - "$run" "$lf_rps"
    emit "$B.list_full_p50_ms" - "$run" "$lf_p50"
    emit "$B.list_full_p99_ms" - "$run" "$lf_p99"
    emit "$B.list_errors_count" - "$run" "$((ls_bad + lf_bad))"

    printf '%-4s %-34s %10d %9.3f %9.3f %s\n' "$run" "nginx return 200, -c32" "$ng_rps" "$ng_p50" "$ng_p99" \
        "baseline (-c$((3 * hb_conns)): $nh_rps)"
    printf '%-4s %-34s %10d %9s %9.3f %s\n' "$run" "heartbeat, 3 controllers, MariaDB" "$hb_rps" "-" "$hb_p99" \
        "x$hb_ratio nginx (target >= 0.30); non-2xx $hb_bad; $per_commit per commit"
    printf '%-4s %-34s %10s %9s %9s %s\n' "$run" "  CPU per heartbeat (us)" "-" "-" "-" \
        "mariadbd $db_us, controllers $ctl_us, wrk $wrk_us"
    printf '%-4s %-34s %10d %9.3f %9.3f %s\n' "$run" "list 1 model (100 instances)" "$ls_rps" "$ls_p50" "$ls_p99" \
        "x$(ratio "$ls_rps" "$base_rps") nginx; non-2xx $ls_bad"
    printf '%-4s %-34s %10d %9.3f %9.3f %s\n' "$run" "list 1 model, view=full routable" "$lf_rps" "$lf_p50" "$lf_p99" \
        "non-2xx $lf_bad"
    if [ "$BENCH_QUICK" != 1 ]; then
        read -r _ _ nl_p99 _ < <(wrk -t1 -c4 -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
        read -r _ _ ll_p99 _ < <(wrk -t1 -c4 -d"${secs}s" --latency "$list_url" | summarize)
        emit "$B.list_c4_p99_ms" - "$run" "$ll_p99"
        emit "$B.nginx_c4_p99_ms" - "$run" "$nl_p99"
        printf '%-4s %-34s %10s %9s %9.3f %s\n' "$run" "list 1 model, -c4" "-" "-" "$ll_p99" \
            "p99 target <= 2 ms; nginx -c4 p99 $nl_p99"
    fi
done
