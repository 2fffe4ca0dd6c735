"""High availability on MariaDB: three controllers on one database.

Covers: a registration (and any routing change) through one controller is
listed by the others within 1 s; heartbeats through any controller keep an
instance healthy everywhere; SIGKILL of a controller loses nothing and a
restarted one serves the whole table from its first answer; leases expire
on every controller at the same time (and heal on the next heartbeat);
concurrent registration of one instance through all three leaves one row
with sys_code ''; --max_instances counts the table (concurrent registrations,
a row DB-GPT wrote behind a lagging view); a table created by DB-GPT's own
DDL is migrated on start.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

VISIBLE_S = 1.0  # a change through one controller is listed by all within this
TABLE = "dbgpt_cluster_registry_instance"


def three(t, db, args=()):
    return [t.controller(f"c{i}", db=db, args=args) for i in (1, 2, 3)]


def healthy_on(url, port, model="vicuna@llm", host="127.0.0.1"):
    got = h.find(h.list_models(url, model=model), model, host, port)
    return None if got is None else got["healthy"]


def time_until_everywhere(ctls, cond, timeout=5.0):
    """Seconds until cond(url) holds on every controller (polled together)."""
    t0 = time.monotonic()
    pending = list(ctls)
    while pending:
        pending = [c for c in pending if not cond(c.url)]
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            raise h.Failure(f"not true on {[c.name for c in pending]} after {timeout}s")
        time.sleep(0.01)  # polling interval, not a readiness wait
    return time.monotonic() - t0


def test_changes_visible_on_every_controller(t):
    db = t.mysql_database()
    ctls = three(t, db)
    for i, via in enumerate(ctls):
        port = 8001 + i
        h.register(via.url, h.instance(port=port))
        dt = time_until_everywhere(ctls, lambda u, p=port: healthy_on(u, p) is True)
        h.check(dt < VISIBLE_S, f"registration through {via.name} listed everywhere after {dt:.2f}s")
    # routing changes too: admin weight, enabled, deregistration, removal
    key = {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001}
    steps = [
        (lambda: h.admin(ctls[1].url, dict(key, weight=0)),
         lambda u: h.find(h.list_models(u, healthy_only="true")) is None),
        (lambda: h.admin(ctls[2].url, dict(key, weight=None, enabled=False)),
         lambda u: h.find(h.list_models(u))["enabled"] is False),
        (lambda: h.admin(ctls[0].url, dict(key, enabled=True)),
         lambda u: h.find(h.list_models(u, healthy_only="true")) is not None),
        (lambda: h.request("DELETE", ctls[2].url + "/api/controller/models?model_name=vicuna%40llm"
                           "&host=127.0.0.1&port=8002"),
         lambda u: healthy_on(u, 8002) is False),
        (lambda: h.request("DELETE", ctls[1].url + "/api/controller/models?model_name=vicuna%40llm"
                           "&host=127.0.0.1&port=8003&remove_from_registry=true"),
         lambda u: healthy_on(u, 8003) is None),
    ]
    for change, cond in steps:
        r = change()
        h.eq(r.status, 200, f"{r}")
        dt = time_until_everywhere(ctls, cond)
        h.check(dt < VISIBLE_S, f"change listed everywhere after {dt:.2f}s")
    # a watch on one controller is woken by a change made through another
    r = h.request("GET", h.list_url(ctls[2].url, healthy_only="true"))
    w = h.Background(lambda: h.watch(ctls[2].url, r.header("ETag"), 20, healthy_only="true"))
    h.wait_watchers(ctls[2].url, 1)
    h.register(ctls[0].url, h.instance(port=8010))
    t_change = time.monotonic()
    r = w.result(25)
    h.eq(r.status, 200)
    h.check(h.find(r.json(), port=8010) is not None)
    h.check(w.t_end - t_change < VISIBLE_S, f"remote watch woken after {w.t_end - t_change:.2f}s")


def test_heartbeats_through_any_controller(t):
    db = t.mysql_database()
    ctls = three(t, db)
    body = h.instance(heartbeat_interval_secs=0.5)  # lease 1.5 s
    h.register(ctls[0].url, body)
    time_until_everywhere(ctls, lambda u: healthy_on(u, 8001) is True)
    checks = 0
    # rotate among all three, then beat through c3 only: c1 and c2 learn the
    # heartbeat times from the database alone
    for phase, vias in (("rotating", ctls), ("c3 only", [ctls[2]])):
        t_end = time.monotonic() + 4.0
        i = 0
        next_beat = time.monotonic()
        while time.monotonic() < t_end:
            if time.monotonic() >= next_beat:
                h.heartbeat(vias[i % len(vias)].url, body)
                i += 1
                next_beat += 0.5  # the declared heartbeat interval
            for c in ctls:
                h.check(healthy_on(c.url, 8001) is True,
                        f"{phase}: {c.name} lists the heartbeating instance as unhealthy")
                checks += 1
            time.sleep(0.02)
    h.check(checks > 100, f"only {checks} checks")


def test_controller_killed_and_restarted(t):
    db = t.mysql_database()
    ctls = three(t, db)
    for i in range(30):
        h.register(ctls[i % 3].url, h.instance(model=f"m{i % 4}@llm", port=9000 + i))
    # keep writing through c2 while it is killed: every acknowledged write survives
    acked = []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            try:
                r = h.request("POST", ctls[1].url + "/api/controller/models",
                              h.instance(model="kill@llm", port=10000 + n), timeout=2)
                if (r.status, r.body) == (200, b"true"):
                    acked.append(10000 + n)
            except OSError:
                return  # the controller is gone
            n += 1

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    h.wait_until(lambda: len(acked) >= 20, 10, what="writes through c2")
    ctls[1].kill()
    stop.set()
    th.join(10)
    killed = time.monotonic()
    want = 30 + len(acked)
    for c in (ctls[0], ctls[2]):
        def has_all(c=c):
            ports = {i["port"] for i in h.list_models(c.url)}
            return all(p in ports for p in acked) and len(ports) >= want
        h.wait_until(has_all, 5, what=f"{c.name} to list every acknowledged write")
        h.check(time.monotonic() - killed < VISIBLE_S + 0.5,
                f"{c.name} listed the writes {time.monotonic() - killed:.2f}s after the kill")
    n_rows = int(h.sql(f"SELECT COUNT(*) FROM {TABLE}", db)[0][0])
    h.check(n_rows >= want, f"{n_rows} rows < {want} acknowledged")
    h.eq(int(h.sql(f"SELECT COUNT(*) FROM {TABLE} WHERE port IN ({','.join(map(str, acked))})",
                   db)[0][0]), len(acked), "acknowledged writes in the table:")
    # a restarted controller lists everything in its very first answer (the
    # reference: c1 once it lists every row, including a write the killed
    # controller committed without acknowledging, which c1 sees a poll later)
    h.wait_until(lambda: len(h.list_models(ctls[0].url)) == n_rows, 5,
                 what="c1 to list every row of the table")
    everything = h.keys(h.list_models(ctls[0].url))
    c4 = t.controller("c2-restarted", db=db)
    first = h.list_models(c4.url)
    h.eq(h.keys(first), everything, "first list of a restarted controller:")
    h.check(all(i["healthy"] for i in first), "restarted controller: everything healthy")
    h.eq(int(h.sql(f"SELECT COUNT(*) FROM {TABLE}", db)[0][0]), n_rows, "row count unchanged:")


def test_lease_expires_on_every_controller(t):
    db = t.mysql_database()
    ctls = three(t, db)
    body = h.instance(heartbeat_interval_secs=0.5)  # lease 1.5 s
    h.register(ctls[0].url, body)
    h.register(ctls[0].url, h.instance(port=8002, check_healthy=False))
    time_until_everywhere(ctls, lambda u: healthy_on(u, 8001) is True)
    for via in (ctls[1], ctls[2]):
        # beat at the declared interval through one controller, then stop
        for _ in range(4):
            h.heartbeat(via.url, body)
            time.sleep(0.5)  # the worker's heartbeat interval
        sent = time.monotonic()
        h.heartbeat(via.url, body)
        acked = time.monotonic()
        # still healthy everywhere just before the lease ends
        h.wait_until(lambda: time.monotonic() >= sent + 1.1, 2, interval=0.01)
        for c in ctls:
            h.check(healthy_on(c.url, 8001) is True,
                    f"{c.name}: unhealthy {time.monotonic() - acked:.2f}s into a 1.5 s lease")
        # unhealthy everywhere within lease + 1 s, and not before the lease
        dt = time_until_everywhere(ctls, lambda u: healthy_on(u, 8001) is False, timeout=5)
        expired = time.monotonic()
        h.check(expired - sent <= 1.5 + 1.0,
                f"expired everywhere {expired - sent:.2f}s after the last heartbeat")
        del dt
        for c in ctls:
            h.check(h.find(h.list_models(c.url, healthy_only="true")) is None)
            h.eq(healthy_on(c.url, 8002), True, f"{c.name}: check_healthy=false instance:")
        # the next heartbeat heals it everywhere
        h.heartbeat(ctls[0].url, body)
        dt = time_until_everywhere(ctls, lambda u: healthy_on(u, 8001) is True)
        h.check(dt < VISIBLE_S, f"revival listed everywhere after {dt:.2f}s")


def test_concurrent_registration_one_row(t):
    db = t.mysql_database()
    ctls = three(t, db)
    body = h.instance(model="race@llm", host="10.9.8.7", port=7777)
    statuses = []

    def hammer(c, kind):
        out = []
        for i in range(50):
            path = "/api/controller/heartbeat" if (i + kind) % 2 else "/api/controller/models"
            r = h.request("POST", c.url + path, body, timeout=10)
            out.append((r.status, r.body))
        statuses.extend(out)

    h.in_threads([lambda c=c, k=k: hammer(c, k) for k, c in enumerate(ctls)]
                 + [lambda c=c, k=k: hammer(c, k + 1) for k, c in enumerate(ctls)], timeout=120)
    h.eq(set(statuses), {(200, b"true")}, "every concurrent register/heartbeat:")
    h.eq(len(statuses), 300)
    rows = h.sql(f"SELECT COUNT(*), SUM(sys_code = ''), SUM(sys_code IS NULL) FROM {TABLE} "
                 "WHERE model_name = 'race@llm' AND host = '10.9.8.7' AND port = 7777", db)
    h.eq(rows, [["1", "1", "0"]], "one row, sys_code '' (count, sys_code='', sys_code NULL):")
    for c in ctls:
        h.eq(h.keys(h.list_models(c.url, model="race@llm")), [("race@llm", "10.9.8.7", 7777)])


def test_max_instances_counts_the_table(t):
    """--max_instances on MariaDB: 150 concurrent registrations through one
    controller leave exactly 5 rows; a second controller, whose view lags
    (polls a minute apart), counts a row a DB-GPT controller wrote."""
    db = t.mysql_database()
    quiet = ["--max_instances", "5", "--heartbeat_timeout_secs", "3600",
             "--view_refresh_ms", "600000"]
    c1 = t.controller("c1", db=db, args=quiet)
    results = h.in_threads([lambda p=p: h.request(
        "POST", c1.url + "/api/controller/models", h.instance(port=20000 + p), timeout=30)
        for p in range(150)], timeout=120)
    ok = sorted(20000 + p for p, r in enumerate(results) if r.status == 200)
    h.eq(len(ok), 5, "answered 200:")
    h.eq(sum(r.status == 409 for r in results), 145, "answered 409:")
    rows = h.sql(f"SELECT port FROM {TABLE} ORDER BY port", db)
    h.eq([int(r[0]) for r in rows], ok, "the rows are exactly the 200s:")
    # two rows go; a second controller loads 3; "DB-GPT" writes one behind
    # its lagging view: one row is left, not two
    h.sql(f"DELETE FROM {TABLE} WHERE port IN ({ok[0]}, {ok[1]})", db)
    c2 = t.controller("c2", db=db, args=quiet + ["--view_poll_ms", "60000"])
    h.sql(f"INSERT INTO {TABLE} (model_name, host, port, healthy, last_heartbeat, sys_code)"
          " VALUES ('vicuna@llm', '10.0.0.9', 1, 1, UTC_TIMESTAMP(), '')", db)
    h.register(c2.url, port=30000)
    h.eq(h.request("POST", c2.url + "/api/controller/models",
                   h.instance(port=30001)).error(409)["code"], "registry_full")
    h.eq(h.sql(f"SELECT COUNT(*) FROM {TABLE}", db), [["5"]])


DBGPT_DDL = """CREATE TABLE `dbgpt_cluster_registry_instance` (
  `id` int(11) NOT NULL AUTO_INCREMENT COMMENT 'Auto increment id',
  `model_name` varchar(128) NOT NULL COMMENT 'Model name',
  `host` varchar(128) NOT NULL COMMENT 'Host of the model',
  `port` int(11) NOT NULL COMMENT 'Port of the model',
  `weight` float DEFAULT 1.0 COMMENT 'Weight of the model',
  `check_healthy` tinyint(1) DEFAULT 1 COMMENT 'Whether to check the health of the model',
  `healthy` tinyint(1) DEFAULT 0 COMMENT 'Whether the model is healthy',
  `enabled` tinyint(1) DEFAULT 1 COMMENT 'Whether the model is enabled',
  `prompt_template` varchar(128) DEFAULT NULL COMMENT 'Prompt template for the model instance',
  `last_heartbeat` datetime DEFAULT NULL COMMENT 'Last heartbeat time of the model instance',
  `user_name` varchar(128) DEFAULT NULL COMMENT 'User name',
  `sys_code` varchar(128) DEFAULT NULL COMMENT 'System code',
  `gmt_created` datetime DEFAULT CURRENT_TIMESTAMP COMMENT 'Record creation time',
  `gmt_modified` datetime DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP COMMENT 'Record update time',
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_model_instance` (`model_name`, `host`, `port`, `sys_code`)
) ENGINE=InnoDB AUTO_INCREMENT=1 DEFAULT CHARSET=utf8mb4 COMMENT='Cluster model instance table'"""


def test_dbgpt_table_is_migrated(t):
    db = t.mysql_database()
    h.sql(DBGPT_DDL, db)
    h.sql(f"INSERT INTO {TABLE} (model_name, host, port, weight, check_healthy, healthy, enabled, "
          "prompt_template, last_heartbeat, user_name, sys_code) VALUES ('vicuna@llm', "
          "'127.0.0.1', 8001, 1.0, 1, 1, 1, NULL, UTC_TIMESTAMP(), NULL, NULL)", db)
    c = t.controller(db=db)
    cols = [r[0] for r in h.sql(f"SHOW COLUMNS FROM {TABLE}", db)]
    for col in ("roster_lease_ms", "roster_weight_override", "roster_in_flight",
                "roster_queue_length", "roster_capacity", "roster_updated_ms"):
        h.check(col in cols, f"migration added {col}: {cols}")
    for col in ("model_name", "sys_code", "user_name", "gmt_created", "gmt_modified"):
        h.check(col in cols, f"DB-GPT column {col} kept")
    items = h.list_models(c.url)
    h.eq(h.keys(items), [("vicuna@llm", "127.0.0.1", 8001)], "DB-GPT's row is listed:")
    h.eq(items[0]["healthy"], True, "DB-GPT's row (heartbeat just now) is healthy:")
    # roster keeps working on the migrated table (second resolution), and a
    # second controller starting on it does not migrate twice
    h.heartbeat(c.url, h.instance())
    h.register(c.url, h.instance(port=8002))
    c2 = t.controller("c2", db=db)
    h.eq(len(h.list_models(c2.url)), 2)
    rows = h.sql(f"SELECT COUNT(*) FROM {TABLE} WHERE model_name = 'vicuna@llm' AND port = 8001", db)
    h.check(int(rows[0][0]) in (1, 2), f"rows for DB-GPT's instance: {rows}")
    h.eq(len(h.list_models(c.url, model="vicuna@llm")), 2, "no duplicate in the list:")


if __name__ == "__main__":
    h.main(globals())
