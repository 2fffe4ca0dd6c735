#!/usr/bin/env bash
# Does a full refresh of a large table stall the controller's readers?
# (issue 11, defect 7). Loads 100,000 instances straight into a SQLite
# registry, starts one controller that re-reads the whole table every
# 100 ms (--view_refresh_ms 100: the refresher is almost always inside a
# full refresh), and has a client list one small model over and over on a
# keep-alive connection for SECONDS. Prints the list latency (p50, p99,
# max) with the refresher busy, the same without the big table (the
# baseline), and how many full refreshes ran meanwhile.
#
#   bench/bench_refresh_stall.sh [SECONDS] [INSTANCES]   (default 10 s, 100000)
#
# Uses $ROSTER_BIN, else build/roster (built if missing). Figures only: no
# pass/fail (the machine is shared; compare runs made on the same machine).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
ninst=${2:-100000}
bin=${ROSTER_BIN:-$PWD/build/roster}
if [ ! -x "$bin" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j"$(nproc)" --target roster >/dev/null
fi

work=$(mktemp -d /tmp/roster-stall.XXXXXX)
ctl_pid=
cleanup() {
    [ -n "$ctl_pid" ] && kill "$ctl_pid" 2>/dev/null && wait "$ctl_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# start_controller DBFILE: sets ctl_pid and port
start_controller() {
    rm -f "$work/ctl.port"
    "$bin" start controller --host 127.0.0.1 --port 0 --port_file "$work/ctl.port" \
        --registry_db_name "$1" --view_refresh_ms 100 --view_poll_ms 100 \
        --heartbeat_timeout_secs 86400 --heartbeat_interval_secs 86400 \
        --max_instances $((ninst + 1000)) --log_level warn >>"$work/ctl.log" 2>&1 &
    ctl_pid=$!
    for _ in $(seq 1 600); do
        [ -s "$work/ctl.port" ] && break
        sleep 0.05
    done
    port=$(cat "$work/ctl.port")
}

stop_controller() {
    kill "$ctl_pid"
    wait "$ctl_pid" || true
    ctl_pid=
}

# measure LABEL: the client loop; prints one line of figures
measure() {
    python3 - "$port" "$secs" "$1" <<'PY'
import http.client, sys, time, urllib.request
port, secs, label = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def metric(name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
full0 = metric("roster_view_full_refreshes_total")
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
lat = []
end = time.monotonic() + secs
while time.monotonic() < end:
    t0 = time.perf_counter()
    conn.request("GET", "/api/controller/models?model_name=probe%40llm")
    r = conn.getresponse()
    r.read()
    lat.append((time.perf_counter() - t0) * 1000)
    if r.status != 200:
        sys.exit(f"list answered {r.status}")
full = metric("roster_view_full_refreshes_total") - full0
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"{label:<34} requests={len(lat):6d} p50={pct(0.50):6.2f} ms p99={pct(0.99):6.2f} ms "
      f"max={lat[-1]:7.2f} ms full_refreshes={int(full)}")
PY
}

# ---- baseline: a table with only the probe model -------------------------------
start_controller "$work/small.db"
curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port/api/controller/models" \
    -H 'Content-Type: application/json' \
    -d '{"model_name":"probe@llm","host":"127.0.0.1","port":9000}'
measure "1 instance"
stop_controller

# ---- the big table: schema from the controller, rows inserted directly ----------
start_controller "$work/big.db"
stop_controller
python3 - "$work/big.db" "$ninst" <<'PY'
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
rows = [(f"bench-{i // 1000}@llm", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 8000 + i % 1000)
        for i in range(n)]
rows.append(("probe@llm", "127.0.0.1", 9000))
con.executemany(
    "INSERT INTO dbgpt_cluster_registry_instance (model_name, host, port, weight, check_healthy,"
    " healthy, enabled, last_heartbeat, sys_code, roster_lease_ms, roster_updated_ms)"
    f" VALUES (?, ?, ?, 1.0, 1, 1, 1, {now}, '', 86400000, 0)", rows)
con.commit()
print(f"inserted {len(rows)} rows", file=sys.stderr)
PY
start_controller "$work/big.db"
measure "$ninst instances, full refreshes"
grep -h 'roster_view_refresh_seconds_sum\|roster_view_refresh_seconds_count' \
    <(curl -fsS "http://127.0.0.1:$port/metrics") |
    awk '{v[$1]=$2} END {if (v["roster_view_refresh_seconds_count"] > 0)
        printf "mean full-refresh time: %.1f ms\n",
        1000 * v["roster_view_refresh_seconds_sum"] / v["roster_view_refresh_seconds_count"]}'
stop_controller
