"""Clock skew: three controllers on one MariaDB database, one with a correct
clock and two under libfaketime (+300 s and -300 s). Health is computed from
the database's clock, so the skewed controllers must agree with the good
one: no false evictions while heartbeats flow through the skewed ones (the
sweep runs every 0.5 s on all three to give it every chance), the same
last_heartbeat everywhere, and expiry at the same time once heartbeats stop.
"""
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

TABLE = "dbgpt_cluster_registry_instance"
ARGS = ["--heartbeat_interval_secs", "0.5", "--heartbeat_timeout_secs", "2"]


def state(url, port):
    return h.find(h.list_models(url), port=port)


def test_skewed_controllers_agree(t):
    db = t.mysql_database()
    good = t.controller("good", db=db, args=ARGS)
    fast = t.controller("plus300", db=db, args=ARGS, env=h.faketime_env("+300s"))
    slow = t.controller("minus300", db=db, args=ARGS, env=h.faketime_env("-300s"))
    ctls = [good, fast, slow]
    # the skew is real: each controller's own log clock shows it
    stamps = {}
    for c in ctls:
        line = next(ln for ln in c.logs().splitlines() if "listening" in ln)
        stamps[c.name] = datetime.datetime.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")
    h.check((stamps["plus300"] - stamps["good"]).total_seconds() > 250, f"skew: {stamps}")
    h.check((stamps["good"] - stamps["minus300"]).total_seconds() > 250, f"skew: {stamps}")

    roster_body = h.instance(heartbeat_interval_secs=0.5)  # lease 1.5 s
    dbgpt_body = h.instance(port=8002)  # no interval: --heartbeat_timeout_secs 2
    h.register(fast.url, roster_body)
    h.register(slow.url, dbgpt_body)
    h.wait_until(lambda: all(state(c.url, p) and state(c.url, p)["healthy"]
                             for c in ctls for p in (8001, 8002)), 5,
                 what="both instances listed healthy everywhere")

    # heartbeats only through the skewed controllers, at the declared interval
    t_end = time.monotonic() + 5.0
    next_beat = time.monotonic()
    i = 0
    checks = 0
    while time.monotonic() < t_end:
        if time.monotonic() >= next_beat:
            via = (fast, slow)[i % 2]
            h.heartbeat(via.url, roster_body)
            h.heartbeat(via.url, dbgpt_body)
            i += 1
            next_beat += 0.5
        for c in ctls:
            for port in (8001, 8002):
                got = state(c.url, port)
                h.check(got["healthy"] is True, f"{c.name} evicted {port} while it heartbeats")
                checks += 1
        h.eq(h.sql(f"SELECT COUNT(*) FROM {TABLE} WHERE healthy = 0", db), [["0"]],
             "no row marked unhealthy by a sweep while heartbeating:")
        time.sleep(0.05)  # polling interval
    h.check(checks > 100, f"only {checks} checks")

    # every controller shows the database's time, not its own
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for c in ctls:
        lh = datetime.datetime.fromisoformat(state(c.url, 8001)["last_heartbeat"])
        h.check(abs((lh - now).total_seconds()) < 5, f"{c.name} shows last_heartbeat {lh} (now {now})")

    # stop: expiry at the same time everywhere (lease 1.5 s, and 2 s)
    sent = time.monotonic()
    h.heartbeat(good.url, roster_body)
    h.heartbeat(good.url, dbgpt_body)
    expired = {}
    deadline = sent + 6
    while len(expired) < 6 and time.monotonic() < deadline:
        for c in ctls:
            for port in (8001, 8002):
                if (c.name, port) not in expired and state(c.url, port)["healthy"] is False:
                    expired[(c.name, port)] = time.monotonic() - sent
        time.sleep(0.02)
    h.eq(len(expired), 6, f"expired on every controller within 6 s: {expired}")
    for port, lease in ((8001, 1.5), (8002, 2.0)):
        times = [expired[(c.name, port)] for c in ctls]
        h.check(min(times) >= lease - 0.2, f"{port} expired early: {times} (lease {lease} s)")
        h.check(max(times) <= lease + 1.0, f"{port} expired late: {times} (lease {lease} s)")
        h.check(max(times) - min(times) <= 1.0, f"{port} expiry spread: {times}")
    # and heals everywhere on the next heartbeat through a skewed controller
    h.heartbeat(slow.url, roster_body)
    h.wait_until(lambda: all(state(c.url, 8001)["healthy"] for c in ctls), 2,
                 what="revival on every controller")


if __name__ == "__main__":
    h.main(globals())
