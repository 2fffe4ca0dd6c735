"""Watches: ETag / If-None-Match on the list, and long polls (wait=N) that are
answered when the routing state of their query changes, on a SQLite
controller.

What wakes a watch: a new instance, a deregistration, a removal, a weight
or enabled change, a lease running out, a revival. What must not: a
heartbeat of an instance that is already alive (even with a new load
report), a change to another model, a change outside a healthy_only
query's routable set. A held watch blocks nothing else.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

WAKE_BOUND_S = 1.0  # a watch is answered within this long after a change


def etag_of(url, **query):
    r = h.request("GET", h.list_url(url, **query))
    h.eq(r.status, 200)
    tag = r.header("ETag")
    h.check(tag and tag.startswith('"') and tag.endswith('"'), f"ETag header: {tag!r}")
    return tag


def test_etag_and_not_modified(t):
    c = t.controller()
    h.register(c.url, h.instance())
    tag = etag_of(c.url)
    r = h.request("GET", h.list_url(c.url), headers={"If-None-Match": tag})
    h.eq((r.status, r.body), (304, b""), "same ETag:")
    h.eq(r.header("ETag"), tag)
    r = h.request("GET", h.list_url(c.url), headers={"If-None-Match": '"0000000000000000"'})
    h.eq(r.status, 200, "other ETag:")
    r = h.request("GET", h.list_url(c.url, wait=0), headers={"If-None-Match": tag})
    h.eq(r.status, 304, "wait=0 answers at once:")
    # each query has its own ETag, stable while nothing changes
    tags = {etag_of(c.url), etag_of(c.url, model="vicuna@llm"),
            etag_of(c.url, model="other@llm")}
    h.eq(len(tags), 3, "ETags per query:")
    h.eq(etag_of(c.url, model="vicuna@llm"), etag_of(c.url, model="vicuna@llm"))
    # a heartbeat does not change the ETag; a registration does
    h.heartbeat(c.url, h.instance(load={"in_flight": 5, "queue_length": 1, "capacity": 9}))
    h.eq(etag_of(c.url), tag, "heartbeat of an alive instance keeps the ETag:")
    h.register(c.url, h.instance(port=8002))
    h.check(etag_of(c.url) != tag, "a new instance changes the ETag")


def timed_watch(c, change, query, expect, wait=20):
    """Parks a watch on `query`, runs change(), and checks that the watch is
    answered 200 with a new ETag within WAKE_BOUND_S and that expect(list)
    holds. Returns the seconds from the end of change() to the answer."""
    tag = etag_of(c.url, **query)
    w = h.Background(lambda: h.watch(c.url, tag, wait, **query))
    h.wait_watchers(c.url, 1)
    change()
    t_change = time.monotonic()
    r = w.result(wait + 10)
    h.eq(r.status, 200, f"watch {query} after a change ({r}):")
    h.check(r.header("ETag") and r.header("ETag") != tag, "a new ETag")
    h.check(expect(r.json()), f"watch {query} answer: {r.json()}")
    dt = w.t_end - t_change
    h.check(dt < WAKE_BOUND_S, f"watch {query} answered {dt:.2f}s after the change")
    return dt


def test_watch_wakes_on_routing_changes(t):
    c = t.controller()
    key = {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001}
    h.register(c.url, h.instance())

    timed_watch(c, lambda: h.register(c.url, h.instance(port=8002)), {},
                lambda items: h.find(items, port=8002) is not None)
    timed_watch(c, lambda: h.request("DELETE", c.url + "/api/controller/models?model_name="
                                     "vicuna%40llm&host=127.0.0.1&port=8002"),
                {"model": "vicuna@llm"}, lambda items: h.find(items, port=8002)["healthy"] is False)
    timed_watch(c, lambda: h.heartbeat(c.url, port=8002), {"model": "vicuna@llm",
                                                           "healthy_only": "true"},
                lambda items: h.find(items, port=8002) is not None)
    timed_watch(c, lambda: h.admin(c.url, dict(key, weight=0)),
                {"healthy_only": "true"}, lambda items: h.find(items) is None)
    timed_watch(c, lambda: h.admin(c.url, dict(key, weight=3)),
                {"model": "vicuna@llm", "view": "full"},
                lambda items: h.find(items)["weight"] == 3.0)
    timed_watch(c, lambda: h.admin(c.url, dict(key, enabled=False)), {},
                lambda items: h.find(items)["enabled"] is False)
    timed_watch(c, lambda: h.request("DELETE", c.url + "/api/controller/models?model_name="
                                     "vicuna%40llm&host=127.0.0.1&port=8002"
                                     "&remove_from_registry=true"),
                {"model": "vicuna@llm"}, lambda items: h.find(items, port=8002) is None)


def test_watch_wakes_on_lease_expiry(t):
    c = t.controller()
    body = h.instance(heartbeat_interval_secs=0.5)  # lease 1.5 s
    h.register(c.url, body)
    h.register(c.url, h.instance(port=8002))  # stays routable
    tag = etag_of(c.url, healthy_only="true")
    sent = time.monotonic()
    h.heartbeat(c.url, body)
    acked = time.monotonic()
    r = h.watch(c.url, tag, 20, healthy_only="true")
    t_end = time.monotonic()
    h.eq(r.status, 200, f"watch across a lease expiry: {r}")
    h.eq(h.keys(r.json()), [("vicuna@llm", "127.0.0.1", 8002)])
    h.check(t_end - acked >= 1.4, f"woken {t_end - acked:.2f}s after the heartbeat (lease 1.5 s)")
    h.check(t_end - sent <= 1.5 + WAKE_BOUND_S,
            f"woken {t_end - sent:.2f}s after the heartbeat: lease 1.5 s + {WAKE_BOUND_S} s")


def test_watch_not_woken_without_routing_change(t):
    c = t.controller()
    h.register(c.url, h.instance())
    h.register(c.url, h.instance(model="qwen@llm", port=9000))
    wait = 2
    queries = [{"model": "vicuna@llm", "view": "full"}, {"healthy_only": "true"},
               {"model": "qwen@llm"}]
    tags = [etag_of(c.url, **q) for q in queries]
    watches = [h.Background(lambda q=q, tag=tag: h.watch(c.url, tag, wait, **q))
               for q, tag in zip(queries, tags)]
    h.wait_watchers(c.url, len(queries))
    t0 = time.monotonic()
    n = 0
    while not all(w.done() for w in watches) and time.monotonic() - t0 < wait + 5:
        # heartbeats of alive instances, with new load reports
        h.heartbeat(c.url, h.instance(load={"in_flight": n % 7, "queue_length": n % 3,
                                            "capacity": 8}))
        h.heartbeat(c.url, h.instance(model="qwen@llm", port=9000))
        if n == 0:
            # outside the vicuna and qwen watches; not routable for healthy_only
            h.register(c.url, h.instance(model="other@llm", port=7000, enabled=False))
        n += 1
        time.sleep(0.05)  # pacing of the heartbeat stream, not a readiness wait
    for q, w in zip(queries, watches):
        r = w.result(10)
        h.eq(r.status, 304, f"watch {q} must not wake ({r}):")
        dt = w.t_end - w.t_start
        h.check(wait - 0.1 <= dt <= wait + 2.0, f"watch {q} answered 304 after {dt:.2f}s")
    h.check(n >= 10, f"only {n} heartbeat rounds were sent")


def test_held_watches_block_nothing(t):
    c = t.controller()  # one event loop thread
    h.register(c.url, h.instance())
    tag = etag_of(c.url)
    n = 40
    watches = [h.Background(lambda: h.watch(c.url, tag, 30)) for _ in range(n)]
    h.wait_watchers(c.url, n)
    # a client that goes away while its watch is held is forgotten
    s = socket.create_connection(("127.0.0.1", c.port))
    s.sendall(f"GET /api/controller/models?wait=30 HTTP/1.1\r\nHost: x\r\n"
              f"If-None-Match: {tag}\r\n\r\n".encode())
    h.wait_watchers(c.url, n + 1)
    s.close()
    h.wait_watchers(c.url, n)
    # other requests are served at once while the watches are held
    for i in range(10):
        t0 = time.monotonic()
        h.eq(h.request("GET", c.url + "/api/health").status, 200)
        h.list_models(c.url)
        h.heartbeat(c.url, h.instance())
        h.check(time.monotonic() - t0 < 0.5, "requests are not blocked by held watches")
    # one change answers every watch
    h.register(c.url, h.instance(port=8002))
    t_change = time.monotonic()
    for w in watches:
        r = w.result(10)
        h.eq(r.status, 200)
        h.eq(len(r.json()), 2)
        h.check(w.t_end - t_change < WAKE_BOUND_S, f"answered {w.t_end - t_change:.2f}s late")
    h.wait_watchers(c.url, 0)


if __name__ == "__main__":
    h.main(globals())
