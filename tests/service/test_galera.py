"""The registry on a three-node Galera cluster (tests/lib/galera.sh).

Covers: controllers given all three node addresses (each in its own order)
fail over when the node they use is SIGKILLed under steady load: zero failed
client requests through the apiserver, zero failed registry writes (worker
heartbeats and registrations), no acknowledged row lost; the node restarts,
rejoins (wsrep_cluster_size back to 3) and serves again: a controller that
knows only that node works. Concurrent heartbeats of the same rows through
controllers on different nodes provoke certification conflicts (1213); they
are retried inside the write's time bound and never reach a worker.

The cluster is the ctest fixture galera_start (its env file is named by
ROSTER_TEST_GALERA_ENV); this test kills and restarts node 1 and leaves the
cluster whole again (restart in a finally block).
"""
import os
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

TABLE = "dbgpt_cluster_registry_instance"
WRITE_BOUND_MS = 5000
FAILOVER_WINDOW_S = 8.0  # a write may 503 (and be retried) only this soon after the kill
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "lib", "galera.sh")
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "temperature": 0}


def galera():
    path = os.environ.get("ROSTER_TEST_GALERA_ENV")
    if not path or not os.path.exists(path):
        raise h.Failure("ROSTER_TEST_GALERA_ENV is not set or missing: the Galera fixture "
                        "(tests/lib/galera.sh start) did not run")
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            if k:
                env[k] = v
    env["dir"] = os.path.dirname(path)
    return env


def node_sql(g, n, statement, database=None, timeout=20):
    """SQL as root through node n's socket; rows as lists of strings."""
    cmd = ["mariadb", "--no-defaults", f"--socket={g[f'ROSTER_TEST_GALERA_SOCKET{n}']}",
           "-uroot", "--connect-timeout=2", "--batch", "--skip-column-names", "-e", statement]
    if database:
        cmd.insert(-2, f"--database={database}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise h.Failure(f"node {n}: SQL failed: {statement}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines()]


def cluster_size(g, n):
    try:
        return int(node_sql(g, n, "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'")[0][1])
    except (h.Failure, subprocess.TimeoutExpired, IndexError, ValueError):
        return 0


def galera_ctl(g, *args):
    subprocess.run([SCRIPT, args[0], g["dir"]] + [str(a) for a in args[1:]], check=True,
                   timeout=150)


def addr(g, n):
    return f"127.0.0.1:{g[f'ROSTER_TEST_GALERA_PORT{n}']}"


def controller(t, g, db, name, order, args=()):
    if len(order) == 1:  # one server: host and port apart, as ever
        where = ["--registry_db_host", "127.0.0.1",
                 "--registry_db_port", g[f"ROSTER_TEST_GALERA_PORT{order[0]}"]]
    else:
        where = ["--registry_db_host", ",".join(addr(g, n) for n in order)]
    # the write bound covers the cluster's stall while it evicts a killed
    # node (evs.suspect_timeout 1.5 s + the view change; docs/ha.md)
    return t.controller(name, db=None, args=["--registry_db_type", "mysql",
                                             "--registry_db_name", db,
                                             "--registry_db_user", g["ROSTER_TEST_GALERA_USER"],
                                             "--registry_db_timeout_ms", str(WRITE_BOUND_MS)]
                        + where + list(args),
                        env={"ROSTER_REGISTRY_DB_PASSWORD": g["ROSTER_TEST_GALERA_PASSWORD"]})


def new_database(t, g):
    name = f"rg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    node_sql(g, 1, f"CREATE DATABASE `{name}`")
    return name


def write_failures(ctls):
    return sum(h.metric(c.url, "roster_registry_write_failures_total") or 0 for c in ctls)


def retries(ctls):
    return sum(h.metric(c.url, "roster_db_retries_total") or 0 for c in ctls)


def test_node_killed_under_load_and_rejoins(t):
    g = galera()
    db = new_database(t, g)
    # each controller starts on another node; c1 and its workers use node 1
    ctls = [controller(t, g, db, "c1", (1, 2, 3)), controller(t, g, db, "c2", (2, 3, 1)),
            controller(t, g, db, "c3", (3, 1, 2))]
    workers = []
    for i in range(3):
        order = ctls[i:] + ctls[:i]
        workers.append(t.start(f"w{i + 1}", [
            "start", "worker", "--model_name", "tiny", "--worker_type", "llm", "--host",
            "127.0.0.1", "--controller_addr", ",".join(c.url for c in order),
            # lease 6 s: longer than the cluster's stall while it evicts a
            # killed node (about 2 s with galera.sh's evs.* settings)
            "--heartbeat_interval", "2", "--embed_dim", "32"]))
    api = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr",
                          ",".join(c.url for c in ctls)])

    def routable():
        r = h.request("GET", api.url + "/v1/models")
        return r.status == 200 and {m["id"]: m["instances"] for m in r.json()["data"]}.get(
            "tiny") == 3
    h.wait_until(routable, 15, what="3 routable workers at the apiserver")

    stop = threading.Event()
    chat = {"ok": 0, "failed": []}
    regs = {"acked": [], "failed": []}

    def chatter():
        while not stop.is_set():
            try:
                r = h.request("POST", api.url + "/v1/chat/completions", CHAT, timeout=10)
                if r.status == 200:
                    chat["ok"] += 1
                else:
                    chat["failed"].append((r.status, r.body[:200]))
            except OSError as e:
                chat["failed"].append(("error", str(e)))
            time.sleep(0.02)

    def registrar():
        n = 0
        while not stop.is_set():
            port = 20000 + n
            via = ctls[n % 3]
            try:
                r = h.request("POST", via.url + "/api/controller/models",
                              h.instance(model="sim@llm", port=port), timeout=10)
                if (r.status, r.body) == (200, b"true"):
                    regs["acked"].append(port)
                else:
                    regs["failed"].append((time.monotonic(), via.name, r.status,
                                           r.header("Retry-After"), r.body[:200]))
            except OSError as e:
                regs["failed"].append((time.monotonic(), via.name, "error", None, str(e)))
            n += 1
            time.sleep(0.03)

    threads = [threading.Thread(target=f, daemon=True) for f in (chatter, chatter, registrar)]
    for th in threads:
        th.start()
    restarted = False
    try:
        h.wait_until(lambda: chat["ok"] >= 20 and len(regs["acked"]) >= 20, 20,
                     what="steady load before the kill")
        before = (chat["ok"], len(regs["acked"]))
        galera_ctl(g, "kill", 1)
        killed = time.monotonic()
        h.wait_until(lambda: cluster_size(g, 2) == 2, 15, what="node 1 evicted (cluster size 2)")
        print(f"    node 1 evicted {time.monotonic() - killed:.1f}s after SIGKILL")
        # keep the load on for a while with node 1 gone
        h.wait_until(lambda: time.monotonic() - killed >= FAILOVER_WINDOW_S, 15, interval=0.1)
        h.check(chat["ok"] > before[0] + 20, "chat requests stalled after the kill")
        h.check(len(regs["acked"]) > before[1] + 20, "registrations stalled after the kill")
        galera_ctl(g, "restart", 1)
        restarted = True
        h.wait_until(lambda: all(cluster_size(g, n) == 3 for n in (1, 2, 3)), 20,
                     what="node 1 rejoined (cluster size 3 on every node)")
        print(f"    node 1 back in the cluster {time.monotonic() - killed:.1f}s after SIGKILL")
        h.wait_until(lambda: time.monotonic() - killed >= 1.0, 5, interval=0.1)
    finally:
        stop.set()
        for th in threads:
            th.join(15)
        if not restarted:
            galera_ctl(g, "restart", 1)
    print(f"    {chat['ok']} chat requests, {len(regs['acked'])} registrations acknowledged, "
          f"{retries(ctls):.0f} database retries")
    h.eq((len(chat["failed"]), chat["failed"][:3]), (0, []), "failed client requests:")
    # a registration may get a 503 (the worker retries it) only while the
    # cluster evicts the node, never otherwise, and never another error
    print(f"    {len(regs['failed'])} registrations answered 503 during the failover, "
          f"{write_failures(ctls):.0f} writes in all (worker heartbeats included)")
    for at, name, status, retry_after, body in regs["failed"]:
        h.check(status == 503 and retry_after, f"registration through {name}: {status} {body}")
        h.check(killed <= at <= killed + FAILOVER_WINDOW_S,
                f"registration through {name} failed {at - killed:.1f}s after the kill: {body}")
    # c1 did move: its connections to node 1 broke and it reconnected elsewhere
    h.check((h.metric(ctls[0].url, "roster_db_reconnects_total") or 0) > 0,
            "c1 never reconnected: node 1 was not the node it used")
    # no acknowledged row lost, and every node holds the same rows
    want = set(regs["acked"])
    for n in (1, 2, 3):
        rows = node_sql(g, n, f"SELECT port FROM {TABLE} WHERE model_name = 'sim@llm'", db)
        got = {int(r[0]) for r in rows}
        h.eq(sorted(want - got), [], f"node {n}: acknowledged registrations missing:")
    for w in workers:
        port = int(w.url.rsplit(":", 1)[1])
        rows = node_sql(g, 1, f"SELECT healthy FROM {TABLE} WHERE model_name = 'tiny@llm'"
                              f" AND port = {port}", db)
        h.eq(rows, [["1"]], f"worker {w.name} in the table:")
    # the rejoined node serves: a controller that knows only node 1
    c4 = controller(t, g, db, "c4-node1", (1,))
    h.register(c4.url, h.instance(model="rejoin@llm", port=30000))
    h.eq(node_sql(g, 1, "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'"),
         [["wsrep_local_state_comment", "Synced"]])
    h.wait_until(lambda: h.find(h.list_models(ctls[1].url, model="rejoin@llm"),
                                "rejoin@llm", port=30000) is not None, 5,
                 what="a write through node 1 listed by c2 (node 2)")
    h.eq(h.metric(c4.url, "roster_registry_write_failures_total"), 0.0)
    # ...and c1, which moved off node 1, still writes
    h.register(ctls[0].url, h.instance(model="rejoin@llm", port=30001))


def test_certification_conflicts_are_retried(t):
    g = galera()
    db = new_database(t, g)
    ctls = [controller(t, g, db, "c1", (1, 2, 3)), controller(t, g, db, "c2", (2, 3, 1)),
            controller(t, g, db, "c3", (3, 1, 2))]
    keys = list(range(40000, 40010))
    for p in keys:
        h.register(ctls[0].url, h.instance(model="hot@llm", port=p))
    failures = []
    ok = [0]
    lock = threading.Lock()

    def hammer(c, seed):
        # heartbeats of the same ten rows, through every node at once, in
        # batches (several in flight per controller: one multi-row upsert)
        for i in range(60):
            p = keys[(seed + i) % len(keys)]
            body = h.instance(model="hot@llm", port=p, heartbeat_interval_secs=30)
            r = h.request("POST", c.url + "/api/controller/heartbeat", body, timeout=10)
            with lock:
                if r.status == 200:
                    ok[0] += 1
                else:
                    failures.append((c.name, r.status, r.body[:200]))

    t0 = time.monotonic()
    h.in_threads([lambda c=c, s=s: hammer(c, s) for c in ctls for s in range(4)], 120)
    took = time.monotonic() - t0
    n_retries = retries(ctls)
    print(f"    {ok[0]} heartbeats in {took:.1f}s, {n_retries:.0f} retried (certification "
          f"conflicts, deadlocks)")
    h.eq((len(failures), failures[:3]), (0, []), "heartbeats that failed:")
    h.eq(ok[0], 3 * 4 * 60)
    h.eq(write_failures(ctls), 0, "registry writes answered 503:")
    h.check(n_retries > 0, "no conflict was provoked: the test proves nothing")
    rows = node_sql(g, 2, f"SELECT COUNT(*), SUM(healthy) FROM {TABLE}"
                          " WHERE model_name = 'hot@llm'", db)
    h.eq(rows, [["10", "10"]], "one healthy row per key:")


if __name__ == "__main__":
    h.main(globals())
