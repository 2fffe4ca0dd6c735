#!/usr/bin/env bash
# Controller benchmark (issue 2). Starts, on this machine: a private MariaDB,
# three controllers sharing one registry table on it, and nginx answering
# `return 200` (the ceiling for any HTTP server here); drives them with wrk
# from the same machine and prints figures and ratios measured in the same
# run (these machines are noisy: compare ratios, not absolute numbers).
#
#   bench/bench_controller.sh [SECONDS]      (default 10 s per measurement)
#
# Measurements:
#   nginx      wrk -t2 GET / on nginx (2 workers, access_log off), at -c32 and
#              at the heartbeat run's 384 connections; the higher rate is the
#              baseline
#   heartbeat  three wrk processes (-t1 -c128 each), one per controller, POST
#              /api/controller/heartbeat over 10,000 distinct instances
#              (bench/heartbeat.lua); every 200 means committed to MariaDB.
#              10,000 instances are 10,000 independent clients; 384
#              connections stand in for them. Concurrent heartbeats share a
#              commit, so the rate rises with the number of clients until the
#              CPUs are busy (docs/performance.md has the curve).
#   list       wrk -t2 -c32 GET /api/controller/models?model_name=bench-7@llm
#              (100 of the 10,000 instances) on one controller
#   list-full  the same with view=full and healthy_only=true
#   latency    list and nginx again at a moderate load (wrk -t1 -c4): the
#              p99 a client sees when the machine is not saturated (at -c32
#              on 2 cores, wrk and the server share the CPUs and every
#              server's p99, nginx's too, is queueing)
# Targets: heartbeat rate >= 0.3 x nginx; list p99 <= 2 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
hb_conns=${ROSTER_BENCH_HB_CONNS:-128} # per controller
# shellcheck source=bench/lib.sh
. bench/lib.sh

# ---- MariaDB -------------------------------------------------------------------
tests/lib/mariadb.sh start "$work/mariadb" >/dev/null
# shellcheck disable=SC1091
. "$work/mariadb/env"
MYSQL_PWD=$ROSTER_TEST_MYSQL_PASSWORD mariadb --protocol=TCP -h "$ROSTER_TEST_MYSQL_HOST" \
    -P "$ROSTER_TEST_MYSQL_PORT" -u "$ROSTER_TEST_MYSQL_USER" -e "CREATE DATABASE bench"
sqlq() {
    MYSQL_PWD=$ROSTER_TEST_MYSQL_PASSWORD mariadb --protocol=TCP -h "$ROSTER_TEST_MYSQL_HOST" \
        -P "$ROSTER_TEST_MYSQL_PORT" -u "$ROSTER_TEST_MYSQL_USER" --batch --skip-column-names bench -e "$1"
}

# ---- three controllers ---------------------------------------------------------
ports=()
for i in 1 2 3; do
    ROSTER_REGISTRY_DB_PASSWORD=$ROSTER_TEST_MYSQL_PASSWORD "$bin" start controller \
        --host 127.0.0.1 --port 0 --port_file "$work/ctl$i.port" --log_level warn \
        --registry_db_type mysql --registry_db_host "$ROSTER_TEST_MYSQL_HOST" \
        --registry_db_port "$ROSTER_TEST_MYSQL_PORT" --registry_db_user "$ROSTER_TEST_MYSQL_USER" \
        --registry_db_name bench >"$work/ctl$i.log" 2>&1 &
    pids+=($!)
    ports+=("$(wait_port_file "$work/ctl$i.port")")
done

# ---- nginx -----------------------------------------------------------------------
start_nginx

echo "bench: $(nproc) CPUs, ${secs}s per run, work dir $work" >&2

read -r ng_rps ng_p50 ng_p99 _ < <(wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
read -r nh_rps nh_p50 nh_p99 _ < <(wrk -t2 -c"$((3 * hb_conns))" -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
base_rps=$(( ng_rps > nh_rps ? ng_rps : nh_rps ))

# register the 10,000 instances (first contact registers), then measure
export ROSTER_BENCH_INSTANCES=10000
wrk -t1 -c16 -d3s -s bench/heartbeat.lua "http://127.0.0.1:${ports[0]}" >/dev/null
wrks=()
for i in 0 1 2; do
    wrk -t1 -c"$hb_conns" -d"${secs}s" --latency -s bench/heartbeat.lua "http://127.0.0.1:${ports[$i]}" \
        >"$work/hb$i.txt" &
    wrks+=($!)
done
wait "${wrks[@]}"
hb_rps=0; hb_bad=0; hb_p99=0
for i in 0 1 2; do
    read -r r _ p99 bad < <(summarize <"$work/hb$i.txt")
    hb_rps=$((hb_rps + r)); hb_bad=$((hb_bad + bad))
    hb_p99=$(awk -v a="$hb_p99" -v b="$p99" 'BEGIN{print (a>b)?a:b}')
done
rows=$(sqlq "SELECT COUNT(*) FROM dbgpt_cluster_registry_instance")
fresh=$(sqlq "SELECT COUNT(*) FROM dbgpt_cluster_registry_instance WHERE last_heartbeat > UTC_TIMESTAMP(3) - INTERVAL $((secs + 5)) SECOND")

list_url="http://127.0.0.1:${ports[1]}/api/controller/models?model_name=bench-7%40llm"
read -r ls_rps ls_p50 ls_p99 ls_bad < <(wrk -t2 -c32 -d"${secs}s" --latency "$list_url" | summarize)
read -r lf_rps lf_p50 lf_p99 lf_bad < <(wrk -t2 -c32 -d"${secs}s" --latency "$list_url&view=full&healthy_only=true" | summarize)
read -r nl_rps nl_p50 nl_p99 _ < <(wrk -t1 -c4 -d"${secs}s" --latency "http://127.0.0.1:$nport/" | summarize)
read -r ll_rps ll_p50 ll_p99 ll_bad < <(wrk -t1 -c4 -d"${secs}s" --latency "$list_url" | summarize)
items=$(curl -s "$list_url" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

printf '\n%-34s %10s %9s %9s %s\n' "measurement" "req/s" "p50 ms" "p99 ms" "notes"
printf '%-34s %10d %9.3f %9.3f %s\n' "nginx return 200, -c32" "$ng_rps" "$ng_p50" "$ng_p99" "baseline"
printf '%-34s %10d %9.3f %9.3f %s\n' "nginx return 200, -c$((3 * hb_conns))" "$nh_rps" "$nh_p50" "$nh_p99" "baseline"
printf '%-34s %10d %9s %9.3f %s\n' "heartbeat, 3 controllers, MariaDB" "$hb_rps" "-" "$hb_p99" \
    "x$(ratio "$hb_rps" "$base_rps") nginx (target >= 0.30); non-2xx $hb_bad; rows $rows, fresh $fresh"
printf '%-34s %10d %9.3f %9.3f %s\n' "list 1 model (${items} of ${rows})" "$ls_rps" "$ls_p50" "$ls_p99" \
    "x$(ratio "$ls_rps" "$base_rps") nginx; p99 target <= 2 ms; non-2xx $ls_bad"
printf '%-34s %10d %9.3f %9.3f %s\n' "list 1 model, view=full routable" "$lf_rps" "$lf_p50" "$lf_p99" \
    "x$(ratio "$lf_rps" "$base_rps") nginx; non-2xx $lf_bad"
printf '%-34s %10d %9.3f %9.3f %s\n' "nginx return 200, -c4" "$nl_rps" "$nl_p50" "$nl_p99" "baseline at moderate load"
printf '%-34s %10d %9.3f %9.3f %s\n' "list 1 model, -c4" "$ll_rps" "$ll_p50" "$ll_p99" \
    "p99 target <= 2 ms; x$(ratio "$ll_p99" "$nl_p99") nginx p99; non-2xx $ll_bad"
for i in 1 2 3; do
    m=$(curl -s "http://127.0.0.1:${ports[$((i-1))]}/metrics" | awk '/^roster_registry_batches_total /{b=$2} /^roster_registry_batch_ops_total /{o=$2} END{if (b>0) printf "%.1f", o/b; else print "-"}')
    echo "controller $i: mean heartbeats per commit $m"
done
