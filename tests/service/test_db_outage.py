"""The registry database dies (SIGKILL of the shared MariaDB) and comes back.

While it is down: writes get 503 with a JSON error and Retry-After within
the retry budget (--registry_db_timeout_ms, default 3 s), reads are served
from memory, /api/health says 503 with database.reachable false, and no
instance is evicted (leases are frozen: the workers cannot heartbeat
either). After a restart: health is 200 again within a few seconds, writes
succeed, and instances that were alive before the outage stay healthy for
one more lease (the grace rule) before they can expire.

A stopped database (SIGSTOP: connections hang instead of failing) is the
harder case for the time bound: every write, whatever the controller is
doing at the time (a read blocked on the old connection, a connect that
waits for a greeting that never comes, the retry), answers 503 with
Retry-After within --registry_db_timeout_ms of its arrival; after SIGCONT
writes succeed again within 2 s.

This disturbs the shared MariaDB server, so ctest runs it alone
(RUN_SERIAL) and it always restarts (or resumes) the server in a finally
block.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

BUDGET_S = 3.0  # --registry_db_timeout_ms default
MARGIN_S = 0.35  # answering, Python's threads, a loaded 2-core machine


def mariadbd_pid():
    """The shared server's pid, checked to be a mariadbd (never signal another)."""
    with open(os.path.join(h.mariadb()["dir"], "pid")) as f:
        pid = int(f.read().strip())
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    h.check(comm in ("mariadbd", "mysqld"), f"pid {pid} is {comm!r}, not mariadbd")
    return pid


def test_writes_bounded_while_database_stopped(t):
    db = t.mysql_database()
    c = t.controller("c1", db=db)
    h.register(c.url, h.instance(port=8101))
    pid = mariadbd_pid()
    stopped = False
    try:
        os.kill(pid, signal.SIGSTOP)
        stopped = True

        # 4 clients x 5 writes, started 0.7 s apart: the writes land on every
        # phase of the writer (a read on the old connection, connects that
        # never get a greeting, queued behind a failing batch, retries)
        def client(k):
            time.sleep(0.7 * k)
            out = []
            for i in range(5):
                t0 = time.monotonic()
                r = h.request("POST", c.url + "/api/controller/heartbeat",
                              h.instance(port=8110 + k * 5 + i), timeout=BUDGET_S + 10)
                out.append((r, time.monotonic() - t0))
            return out
        results = [x for xs in h.in_threads([lambda k=k: client(k) for k in range(4)], 120)
                   for x in xs]
        times = sorted(dt for _, dt in results)
        print(f"    20 writes with the database stopped: 503 after {times[0]:.2f}"
              f"-{times[-1]:.2f}s (median {times[10]:.2f}s)")
        h.eq(len(results), 20)
        for r, dt in results:
            h.check_error(r.status, r.body, 503, "write with the database stopped",
                          r.header("Content-Type"))
            h.check(r.header("Retry-After"), "503 without Retry-After")
            h.check(dt <= BUDGET_S + MARGIN_S,
                    f"a write got its 503 after {dt:.2f}s (bound {BUDGET_S}s)")
        os.kill(pid, signal.SIGCONT)
        stopped = False
        resumed = time.monotonic()
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)

    def written():
        r = h.request("POST", c.url + "/api/controller/heartbeat", h.instance(port=8102),
                      timeout=BUDGET_S + 10)
        return r if r.status == 200 else None
    h.wait_until(written, 2.0 + BUDGET_S, interval=0.05, what="a write after SIGCONT")
    took = time.monotonic() - resumed
    print(f"    first successful write {took:.2f}s after SIGCONT")
    h.check(took <= 2.0, f"writes came back {took:.2f}s after SIGCONT (bound 2 s)")
    h.eq(h.sql("SELECT COUNT(*) FROM dbgpt_cluster_registry_instance WHERE port IN (8101, 8102)",
               db), [["2"]])


def healthy(url, port):
    got = h.find(h.list_models(url), port=port)
    return None if got is None else got["healthy"]


def test_database_outage_and_recovery(t):
    db = t.mysql_database()
    ctls = [t.controller("c1", db=db), t.controller("c2", db=db)]
    lease_body = h.instance(heartbeat_interval_secs=1.0)  # lease 3 s
    h.register(ctls[0].url, lease_body)
    h.register(ctls[1].url, h.instance(port=8002))  # DB-GPT worker: 60 s lease
    h.wait_until(lambda: all(healthy(c.url, p) for c in ctls for p in (8001, 8002)), 5,
                 what="both instances everywhere")
    before = {c.name: h.keys(h.list_models(c.url)) for c in ctls}
    restarted = False
    try:
        h.heartbeat(ctls[0].url, lease_body)
        killed = time.monotonic()
        h.mariadb_ctl("kill")
        # writes: 503 + Retry-After + JSON error, within the retry budget
        # (sent in parallel: each may take the whole budget)
        def write(c, method, path, body):
            t0 = time.monotonic()
            r = h.request(method, c.url + path, body, timeout=BUDGET_S + 10)
            return c, method, path, r, time.monotonic() - t0
        calls = [(c, "POST", path, body) for c in ctls
                 for path, body in (("/api/controller/heartbeat", lease_body),
                                    ("/api/controller/models", h.instance(port=8003)),
                                    ("/api/roster/instance", {"model_name": "vicuna@llm",
                                                              "host": "127.0.0.1", "port": 8002,
                                                              "weight": 0}))]
        calls.append((ctls[1], "DELETE", "/api/controller/models?model_name=vicuna%40llm"
                      "&host=127.0.0.1&port=8002", None))
        results = h.in_threads([lambda a=a: write(*a) for a in calls], 30)
        print(f"    503s answered after {min(x[4] for x in results):.1f}"
              f"-{max(x[4] for x in results):.1f}s")
        for c, method, path, r, dt in results:
            label = f"{c.name} {method} {path[:30]} during the outage"
            h.check_error(r.status, r.body, 503, label, r.header("Content-Type"))
            h.check(r.header("Retry-After"), f"{label}: 503 without Retry-After")
            h.check(dt <= BUDGET_S + 2.5, f"{label}: 503 after {dt:.1f}s")
        # health says so
        for c in ctls:
            def down(c=c):
                r = h.request("GET", c.url + "/api/health")
                return r if r.status == 503 and r.json()["database"]["reachable"] is False else None
            r = h.wait_until(down, BUDGET_S + 5, what=f"{c.name} /api/health to report the outage")
            h.eq(r.json()["status"], "degraded")
            # and so does /metrics (the alert rules' RosterDatabaseUnreachable)
            h.eq(h.metric(c.url, "roster_db_up"), 0.0, f"{c.name} roster_db_up during the outage:")
        # reads from memory; nothing expires although the 3 s lease has passed
        h.wait_until(lambda: time.monotonic() - killed > 3.5, 10, interval=0.1)
        for c in ctls:
            h.eq(h.keys(h.list_models(c.url)), before[c.name], f"{c.name} list during the outage:")
            h.eq((healthy(c.url, 8001), healthy(c.url, 8002)), (True, True),
                 f"{c.name}: no eviction during the outage:")
        h.mariadb_ctl("restart")
        restarted = True
        back = time.monotonic()
    finally:
        if not restarted:
            h.mariadb_ctl("restart")
    # recovery: health 200 within a few seconds, writes succeed
    for c in ctls:
        h.wait_until(lambda c=c: h.request("GET", c.url + "/api/health").status == 200, 10,
                     what=f"{c.name} to report the database back")
    h.check(time.monotonic() - back < 6.0, f"recovery took {time.monotonic() - back:.1f}s")
    for c in ctls:
        h.eq(h.metric(c.url, "roster_db_up"), 1.0, f"{c.name} roster_db_up after the outage:")
    for c in ctls:
        h.register(c.url, h.instance(port=8004))
        h.eq(healthy(c.url, 8001), True, f"{c.name}: alive before the outage, healthy after it")
    h.eq(h.sql("SELECT COUNT(*) FROM dbgpt_cluster_registry_instance WHERE port = 8004", db),
         [["1"]])
    # the grace is one lease: without heartbeats 8001 expires after it
    h.wait_until(lambda: all(healthy(c.url, 8001) is False for c in ctls), 3.0 + 4.0,
                 interval=0.1, what="8001 to expire after its grace lease")
    h.check(time.monotonic() - back >= 3.0 - 0.5, "expired before its grace lease ended")
    h.eq([healthy(c.url, 8002) for c in ctls], [True, True], "the 60 s lease instance:")
    h.heartbeat(ctls[1].url, lease_body)
    h.wait_until(lambda: all(healthy(c.url, 8001) for c in ctls), 2, what="revival")


if __name__ == "__main__":
    h.main(globals())
