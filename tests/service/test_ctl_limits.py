"""The controller's bounds, on SQLite (issue 11): --max_instances under
concurrency and against rows the view has not seen, a table over the bound,
--instance_networks enforced when the list is read, and the list JSON's
memory budget.

Rows "written by another controller" are inserted straight into the SQLite
file, as a controller without the flag (or DB-GPT's) would leave them.
"""
import os
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

TABLE = "dbgpt_cluster_registry_instance"
# leases and full re-reads far away: every full read during a test is one
# the controller decided to make because of what it counted
QUIET = ["--heartbeat_timeout_secs", "3600", "--heartbeat_interval_secs", "3600",
         "--view_refresh_ms", "600000"]


def table_rows(t):
    con = sqlite3.connect(t.sqlite_path, timeout=10)
    try:
        return con.execute(f"SELECT model_name, host, port FROM {TABLE}").fetchall()
    finally:
        con.close()


def insert_rows(t, rows):
    """Inserts (model, host, port) rows as another writer would: alive, with
    a lease of an hour, changed now."""
    con = sqlite3.connect(t.sqlite_path, timeout=10)
    try:
        now_ms = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
        con.executemany(
            f"INSERT INTO {TABLE} (model_name, host, port, weight, check_healthy, healthy,"
            " enabled, last_heartbeat, sys_code, roster_lease_ms, roster_updated_ms)"
            " VALUES (?, ?, ?, 1.0, 1, 1, 1, strftime('%Y-%m-%d %H:%M:%f', 'now'), '',"
            f" 3600000, {now_ms})", rows)
        con.commit()
    finally:
        con.close()


def counters(url):
    return (h.metric(url, "roster_view_refreshes_total"),
            h.metric(url, "roster_view_full_refreshes_total"))


def check_polls_read_no_full_table(url, polls=8):
    """Waits for `polls` polls and checks that none forced a full read."""
    refreshes0, full0 = counters(url)
    h.wait_until(lambda: counters(url)[0] >= refreshes0 + polls, 20,
                 what=f"{polls} polls of the table")
    refreshes1, full1 = counters(url)
    h.eq(full1 - full0, 0, f"full reads during {int(refreshes1 - refreshes0)} polls:")


def test_max_instances_concurrent_registrations(t):
    c = t.controller(args=["--max_instances", "5", "--view_poll_ms", "50"] + QUIET)
    n = 300
    results = [None] * n
    barrier = threading.Barrier(n)

    def reg(i):
        barrier.wait(30)
        r = h.request("POST", c.url + "/api/controller/models", h.instance(port=10000 + i),
                      timeout=30)
        results[i] = r

    h.in_threads([lambda i=i: reg(i) for i in range(n)], timeout=120)
    ok = sorted(10000 + i for i, r in enumerate(results) if (r.status, r.body) == (200, b"true"))
    refused = [r for r in results if r.status == 409]
    h.eq(len(ok), 5, "registrations answered 200:")
    h.eq(len(refused), n - 5, f"the rest are 409 (others: "
         f"{[r for r in results if r.status not in (200, 409)][:3]}):")
    for r in refused[:20]:
        eq_code = r.error(409, "a registration past --max_instances")["code"]
        h.eq(eq_code, "registry_full")
    rows = table_rows(t)
    h.eq(sorted(p for _, _, p in rows), ok, "rows in the table are exactly the 200s:")
    h.eq(sorted(i["port"] for i in h.list_models(c.url)), ok, "the list shows them:")
    # a heartbeat of a registered instance still works at the bound; of a new one, 409
    h.heartbeat(c.url, port=ok[0])
    r = h.request("POST", c.url + "/api/controller/heartbeat", h.instance(port=20000))
    h.eq(r.error(409)["code"], "registry_full")
    h.check(h.metric(c.url, "roster_registry_full_rejected_total") >= n - 5)
    h.eq(len(table_rows(t)), 5)
    check_polls_read_no_full_table(c.url)


def test_max_instances_counts_rows_the_view_has_not_seen(t):
    # polls far apart: the rows another controller writes stay out of this view
    c = t.controller(args=["--max_instances", "5", "--view_poll_ms", "60000"] + QUIET)
    insert_rows(t, [("vicuna@llm", "10.0.0.1", p) for p in (1, 2, 3)])
    h.register(c.url, port=8001)
    h.register(c.url, port=8002)
    r = h.request("POST", c.url + "/api/controller/models", h.instance(port=8003))
    h.eq(r.error(409)["code"], "registry_full", "the table holds 5 rows:")
    h.eq(len(table_rows(t)), 5)
    # an instance the view holds registers and heartbeats again at the bound
    h.register(c.url, port=8001)
    h.heartbeat(c.url, port=8002)
    # one batch repeating a new key: counted once (a free slot, after a removal)
    r = h.request("DELETE", c.url + "/api/controller/models?model_name=vicuna%40llm"
                  "&host=127.0.0.1&port=8002&remove_from_registry=true")
    h.eq((r.status, r.body), (200, b"true"))
    h.in_threads([lambda: h.register(c.url, port=8009) for _ in range(10)])
    h.eq(len(table_rows(t)), 5)


def test_table_over_the_bound_costs_one_full_read(t):
    c = t.controller(args=["--max_instances", "5", "--view_poll_ms", "50"] + QUIET)
    insert_rows(t, [("vicuna@llm", "10.0.0.1", p) for p in range(1, 9)])
    h.wait_until(lambda: len(h.list_models(c.url)) == 5, 10, what="5 rows in the list")
    # the poll that found the rows, then the full read their count forces
    h.wait_until(lambda: counters(c.url)[1] >= 2, 10, what="a full read")
    check_polls_read_no_full_table(c.url)
    h.eq(h.metric(c.url, "roster_view_ignored_rows"), 3)
    h.eq(len(h.list_models(c.url)), 5)
    h.check("ignores 3 of them" in c.logs(), "the controller says it ignores rows")


def test_instance_networks_enforced_at_read(t):
    c = t.controller(args=["--instance_networks", "10.0.0.0/8", "--view_poll_ms", "50"] + QUIET)
    h.register(c.url, host="10.1.2.3", port=7000)
    r = h.request("POST", c.url + "/api/controller/models", h.instance(host="192.168.1.5"))
    h.eq(r.error(403)["code"], "address_not_allowed", "refused at the door:")
    # rows a controller without the flag wrote
    insert_rows(t, [("vicuna@llm", "192.168.1.5", 7001), ("vicuna@llm", "canary.example", 7002)])
    h.wait_until(lambda: len(h.list_models(c.url)) == 3, 10, what="the rows in the list")
    items = h.list_models(c.url)
    h.eq(h.find(items, host="10.1.2.3", port=7000)["healthy"], True)
    for host, port in (("192.168.1.5", 7001), ("canary.example", 7002)):
        it = h.find(items, host=host, port=port)
        h.eq(it["healthy"], False, f"{host} is outside --instance_networks:")
        full = h.find(h.list_models(c.url, view="full"), host=host, port=port)
        h.eq((full["alive"], full["routable"]), (False, False), f"{host} (view=full):")
        h.check("instance_networks" in (full["blocked"] or ""), f"reason: {full}")
    routable = h.list_models(c.url, healthy_only="true")
    h.eq(h.keys(routable), [("vicuna@llm", "10.1.2.3", 7000)], "healthy_only=true:")
    h.eq(h.keys(h.list_models(c.url, view="full", healthy_only="true")),
         [("vicuna@llm", "10.1.2.3", 7000)])
    h.eq(h.find(h.list_models(c.url, view="full"), host="10.1.2.3", port=7000)["blocked"], None)
    # a heartbeat cannot revive a blocked row (refused at the door as well)
    r = h.request("POST", c.url + "/api/controller/heartbeat",
                  h.instance(host="192.168.1.5", port=7001))
    h.eq(r.status, 403)


def test_list_json_memory_budget(t):
    # the whole list (21 instances, about 5.5 KB of JSON) does not fit in 3,000
    # bytes; one model's (about 270 bytes) does
    c = t.controller(args=["--memory_budget_bytes", "3000", "--view_poll_ms", "50"] + QUIET)
    for p in range(20):
        h.register(c.url, port=9000 + p)
    h.register(c.url, model="small@llm", port=9100)
    r = h.request("GET", c.url + "/api/controller/models")
    h.eq(r.status, 503, f"{r}")
    h.eq(h.check_error(r.status, r.body, 503)["code"], "memory_budget_exceeded")
    h.eq(r.header("Retry-After"), "1")
    # one model fits; the budget is given back (the same list again)
    for _ in range(3):
        h.eq(len(h.list_models(c.url, model="small@llm")), 1)
    r = h.request("GET", c.url + "/api/controller/models")
    h.eq(r.status, 503, "still too large")
    h.check(h.metric(c.url, "roster_view_full_refreshes_total") is not None)


h.main(globals())
