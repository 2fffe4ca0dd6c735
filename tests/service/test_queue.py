"""The apiserver's wait queue (--queue_timeout_ms, --queue_max), with real
processes: workers with a small --concurrency and --max_queue 0 (they
answer 429 model_at_capacity when full) running the builtin model slowed
by --decode_delay_ms.

- a burst of twice the cluster's capacity, streams among it, gets no
  failure when the apiserver may queue; with --queue_timeout_ms 0 (no
  queue: the behaviour before it) the same burst gets 429s;
- the bound holds: past --queue_max waiters, exactly the surplus gets 429
  queue_full with Retry-After, and every admitted request is served;
- the deadline holds: waiters get 503 queue_timeout with Retry-After at
  --queue_timeout_ms, not much later;
- a client that disconnects while waiting leaves the queue at once (the
  roster_api_queued gauge drops), and SIGTERM answers the waiters at once
  and the apiserver still exits cleanly."""
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

MSGS = [{"role": "user", "content": "hello"}]
QUEUED = 'roster_api_queued{model="tiny@llm"}'


def worker(t, c, name, concurrency, delay_ms):
    return t.start(name, ["start", "worker", "--model_name", "tiny", "--host", "127.0.0.1",
                          "--controller_addr", c.url, "--heartbeat_interval", "0.5",
                          "--concurrency", str(concurrency), "--max_queue", "0",
                          "--decode_delay_ms", str(delay_ms)])


def apiserver(t, c, name, args=()):
    return t.start(name, ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url,
                          "--threads", "2"] + list(args))


def routable(a, n):
    def ok():
        r = h.request("GET", a.url + "/v1/models")
        return r.status == 200 and {m["id"]: m["instances"]
                                    for m in r.json()["data"]}.get("tiny") == n
    h.wait_until(ok, 10, what=f"{n} routable instances at {a.name}")


def metric(a, name):
    v = h.metric(a.url, name)
    return float(v) if v is not None else 0.0


def chat(port, tokens, stream=False, timeout=30):
    """One request on its own connection: (status, headers, body, seconds)."""
    body = {"model": "tiny", "messages": MSGS, "max_tokens": tokens, "temperature": 0,
            "stream": stream}
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.monotonic() - t0
    finally:
        c.close()


def burst(port, n, tokens, stream_every=0):
    """n requests at once (every stream_every-th streamed); their results in
    the order sent."""
    out = [None] * n

    def one(i):
        stream = stream_every > 0 and i % stream_every == 0
        try:
            out[i] = chat(port, tokens, stream) + (stream,)
        except OSError as e:
            out[i] = (0, {}, str(e).encode(), 0.0, stream)
    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    return out


def check_served(r, what):
    st, _, body, _, stream = r
    h.eq(st, 200, f"{what}: {body[:300]!r}")
    if stream:
        h.check(body.rstrip().endswith(b"data: [DONE]"), f"{what}: a whole stream: {body[-200:]!r}")
    else:
        h.check(json.loads(body)["choices"][0]["message"]["content"] != "", what)


def hold_slot(port, tokens):
    """A request that holds a slot (on a thread); returns the thread and
    a list that gets its result."""
    res = []
    th = threading.Thread(target=lambda: res.append(chat(port, tokens)))
    th.start()
    return th, res


def busy(w):
    h.wait_until(lambda: metric(w, "roster_worker_in_flight") == 1.0, 5, interval=0.02,
                 what="the worker's slot to be taken")


def raw_request(port, tokens):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = json.dumps({"model": "tiny", "messages": MSGS, "max_tokens": tokens}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
              b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return s


def test_burst_of_twice_the_capacity(t):
    """Two workers of 2 slots each (capacity 4), requests of ~0.4 s: a burst
    of 8, a third of them streamed, all served through the queue; the same
    burst without a queue gets 429s."""
    c = t.controller()
    for i in range(2):
        worker(t, c, f"w{i}", 2, 100)
    a = apiserver(t, c, "api", ["--queue_timeout_ms", "10000"])
    a0 = apiserver(t, c, "api0", ["--queue_timeout_ms", "0"])
    routable(a, 2)
    routable(a0, 2)

    res = burst(a.port, 8, 4, stream_every=3)
    for i, r in enumerate(res):
        check_served(r, f"request {i} of the burst through the queue")
    h.check(metric(a, 'roster_api_queue_wait_seconds_count{model="tiny@llm"}') >= 4,
            "at least the surplus waited")
    h.eq(metric(a, QUEUED), 0.0, "nobody waits any more")
    h.eq(metric(a, 'roster_api_queue_rejected_total{model="tiny@llm"}'), 0.0)
    h.eq(metric(a, 'roster_api_queue_timeouts_total{model="tiny@llm"}'), 0.0)

    res = burst(a0.port, 8, 4, stream_every=3)
    failed = [r for r in res if r[0] != 200]
    h.check(len(failed) >= 2, f"without a queue the burst fails in part: {[r[0] for r in res]}")
    for st, hdrs, body, _, _ in failed:
        h.check_error(st, body, 429, "no queue: at capacity at once")
        h.eq(hdrs.get("retry-after"), "1")
        h.eq(json.loads(body)["error"]["code"], "model_at_capacity")


def test_bound(t):
    """One slot, --queue_max 3. A long request holds the slot and a stream
    waits (the queued gauge shows it); then of 5 more at once, two wait and
    exactly three get 429 queue_full with Retry-After at once. Every
    admitted request is served, the stream whole."""
    c = t.controller()
    w = worker(t, c, "w", 1, 100)
    a = apiserver(t, c, "api", ["--queue_timeout_ms", "10000", "--queue_max", "3"])
    routable(a, 1)
    th, held = hold_slot(a.port, 12)
    busy(w)
    streamed = []
    st = threading.Thread(target=lambda: streamed.append(chat(a.port, 3, stream=True) + (True,)))
    st.start()
    h.wait_until(lambda: metric(a, QUEUED) == 1.0, 5, interval=0.02, what="the stream to wait")
    res = burst(a.port, 5, 2)
    full = [r for r in res if r[0] == 429]
    h.eq(len(full), 3, f"exactly the surplus refused: {[r[0] for r in res]}")
    for st_, hdrs, body, dt, _ in full:
        h.check_error(st_, body, 429, "past --queue_max")
        h.eq(hdrs.get("retry-after"), "1")
        h.eq(json.loads(body)["error"]["code"], "queue_full")
        h.check(dt < 1.0, f"refused at once, not after a wait ({dt:.2f} s)")
    for r in res:
        if r[0] != 429:
            check_served(r, "an admitted request")
    st.join(10)
    check_served(streamed[0], "the stream that waited")
    th.join(10)
    h.eq(held[0][0], 200)
    h.eq(metric(a, 'roster_api_queue_rejected_total{model="tiny@llm"}'), 3.0)
    h.eq(metric(a, 'roster_api_queue_wait_seconds_count{model="tiny@llm"}'), 3.0)

    # a slot held by a client this apiserver never sees (straight to the
    # worker): its waiter learns of the free slot from the table's load
    # reports or its probe, soon after the slot frees
    th, held = hold_slot(w.port, 8)
    busy(w)
    st, _, body, dt = chat(a.port, 1)
    th.join(10)
    h.eq((held[0][0], st), (200, 200), f"both served: {body[:200]!r}")
    h.check(dt < held[0][3] + 1.5, f"served {dt - held[0][3]:.2f} s after the slot freed")
    h.eq(metric(a, 'roster_api_queue_wait_seconds_count{model="tiny@llm"}'), 4.0)


def test_deadline_disconnect_and_shutdown(t):
    """One slot held ~3 s. Two waiters with --queue_timeout_ms 800 get 503
    queue_timeout near 0.8 s. A waiter whose client closes leaves the queue
    at once. At SIGTERM a waiter gets 503 shutting_down at once, the
    request in flight finishes, and the apiserver exits 0."""
    c = t.controller()
    w = worker(t, c, "w", 1, 300)
    a = apiserver(t, c, "api", ["--queue_timeout_ms", "800"])
    routable(a, 1)

    th, held = hold_slot(a.port, 10)
    busy(w)
    res = burst(a.port, 2, 2, stream_every=2)
    for st, hdrs, body, dt, _ in res:
        h.check_error(st, body, 503, "past the deadline")
        h.eq(hdrs.get("retry-after"), "1")
        h.eq(json.loads(body)["error"]["code"], "queue_timeout")
        h.check(0.7 <= dt <= 1.8, f"answered at the deadline (0.8 s), not {dt:.2f} s")
    h.eq(metric(a, 'roster_api_queue_timeouts_total{model="tiny@llm"}'), 2.0)
    h.eq(metric(a, QUEUED), 0.0)

    # a client that goes away while waiting leaves the queue at once
    b = apiserver(t, c, "api-long", ["--queue_timeout_ms", "60000"])
    routable(b, 1)
    th.join(10)
    h.eq(held[0][0], 200, "the request that held the slot")
    th, held = hold_slot(b.port, 10)
    busy(w)
    s = raw_request(b.port, 2)
    h.wait_until(lambda: metric(b, QUEUED) == 1.0, 5, what="the request to wait")
    s.close()
    t0 = time.monotonic()
    h.wait_until(lambda: metric(b, QUEUED) == 0.0, 1.0, interval=0.02,
                 what="the disconnected client to leave the queue")
    h.check(time.monotonic() - t0 < 1.0)
    h.eq(metric(b, 'roster_api_queue_wait_seconds_count{model="tiny@llm"}'), 1.0)

    # SIGTERM: the waiter gets its answer at once, the running request ends
    waiter = []
    wt = threading.Thread(target=lambda: waiter.append(chat(b.port, 2)))
    wt.start()
    h.wait_until(lambda: metric(b, QUEUED) == 1.0, 5, what="a waiter")
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    wt.join(10)
    st, hdrs, body, _ = waiter[0]
    h.check_error(st, body, 503, "a waiter at shutdown")
    h.eq(json.loads(body)["error"]["code"], "shutting_down")
    h.check(time.monotonic() - t0 < 1.0, "answered at once")
    th.join(10)
    h.eq(held[0][0], 200, "the request in flight at SIGTERM finished")
    h.eq(b.wait_exit(10), 0)
    b.check_clean()


if __name__ == "__main__":
    h.main(globals())
