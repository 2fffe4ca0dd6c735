"""A heartbeat's last_heartbeat is listed at once, as DB-GPT's controller does.

Covers: a heartbeat answered by a controller is in that controller's very
next list (one model, every model, healthy_only, view=full), with no sleep
and no rebuild of the model's snapshot; the same heartbeat is listed by
another controller on the same database within its poll interval (with
full reads pushed far out, so only the poll can show it), on MariaDB and on
SQLite; a list never shows a time older than one already listed.
"""
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

POLL_MS = 200
MARGIN_S = 1.0  # scheduling on a loaded 2-core machine
# full reads only at the start: every later change must come through the poll
# (a DB-GPT worker's lease is the controller's 60 s: a full read per 20 s)
ARGS = ["--view_poll_ms", str(POLL_MS), "--view_refresh_ms", "600000"]


def ts(it):
    """The listed last_heartbeat as a UTC datetime."""
    return datetime.datetime.strptime(it["last_heartbeat"], "%Y-%m-%dT%H:%M:%S.%f")


def listed(url, **kw):
    return h.find(h.list_models(url, **kw))


def beat_then_list_at_once(c, rounds=8):
    """Heartbeats through `c` and lists through `c` right after each 200."""
    h.register(c.url, h.instance())
    prev = ts(listed(c.url))
    for i in range(rounds):
        time.sleep(0.02)  # a new millisecond for the database clock, not a readiness wait
        r = h.heartbeat(c.url, h.instance())
        h.eq(r.status, 200, f"heartbeat {i}:")
        views = [listed(c.url), listed(c.url, model="vicuna@llm"),
                 listed(c.url, healthy_only="true"), listed(c.url, view="full"),
                 listed(c.url, model="vicuna@llm", view="full", healthy_only="true")]
        for v in views:
            h.check(v is not None and v["healthy"] is True, f"round {i}: {v}")
            h.check(ts(v) > prev, f"round {i}: last_heartbeat {v['last_heartbeat']} not after "
                    f"the previous {prev.isoformat()} (the heartbeat was answered)")
        times = {v["last_heartbeat"] for v in views}
        h.eq(len(times), 1, f"round {i}: every view lists one time:")
        full = views[3]
        h.check(0 <= full["heartbeat_age_ms"] < 1000, f"round {i}: age {full['heartbeat_age_ms']}")
        prev = ts(views[0])
    return prev


def seen_elsewhere(a, b):
    """A heartbeat through `a` is listed by `b` within its poll interval."""
    h.register(a.url, h.instance(port=8002))
    h.wait_until(lambda: h.find(h.list_models(b.url), port=8002) is not None, 5,
                 what="the registration on the other controller")
    for i in range(5):
        before = ts(h.find(h.list_models(b.url), port=8002))
        time.sleep(0.02)
        h.eq(h.heartbeat(a.url, h.instance(port=8002)).status, 200)
        mine = ts(h.find(h.list_models(a.url), port=8002))
        h.check(mine > before, f"round {i}: through {a.name}: {mine} not after {before}")
        t0 = time.monotonic()
        # each controller shows the heartbeat on its own reading of the
        # database clock (the acknowledging one: its commit time; the other:
        # the stored time): the same beat within a few ms, after `before`
        near = datetime.timedelta(milliseconds=200)
        same = (lambda x: x > before and abs(x - mine) < near)
        h.wait_until(lambda: same(ts(h.find(h.list_models(b.url), port=8002))),
                     POLL_MS / 1000 + MARGIN_S, interval=0.02,
                     what=f"round {i}: the heartbeat through {a.name} listed by {b.name}")
        dt = time.monotonic() - t0
        # and by the DB-GPT form of the other controller, and view=full
        other = h.find(h.list_models(b.url, model="vicuna@llm", view="full"), port=8002)
        h.check(same(ts(other)), f"round {i}: view=full on {b.name}: {other} vs {mine}")
        print(f"  round {i}: listed by {b.name} {dt * 1000:.0f} ms after the 200 of {a.name}")


def test_sqlite_same_controller_at_once(t):
    c = t.controller(args=ARGS)
    beat_then_list_at_once(c)


def test_sqlite_other_controller_within_poll(t):
    a = t.controller("a", args=ARGS)
    b = t.controller("b", args=ARGS)
    seen_elsewhere(a, b)
    seen_elsewhere(b, a)


def test_mariadb_same_and_other_controllers(t):
    db = t.mysql_database()
    a = t.controller("a", db=db, args=ARGS)
    b = t.controller("b", db=db, args=ARGS)
    beat_then_list_at_once(a)
    seen_elsewhere(a, b)
    seen_elsewhere(b, a)
    # full reads stayed off (the start's only): the poll did it
    for c in (a, b):
        full = h.metric(c.url, "roster_view_full_refreshes_total")
        h.check(full is not None and full <= 2, f"{c.name}: {full} full reads")


if __name__ == "__main__":
    h.main(globals())
