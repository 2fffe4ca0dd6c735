"""The apiserver as a real process in front of real controllers and workers:
the official openai npm package against it, the routing policies (weights,
weight 0, sessions), failover (kill -9, SIGSTOP, every controller killed),
cancellation, and bad input."""
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_worker import check_cancelled_within_1s, open_stream  # noqa: E402

NODE_DIR = os.path.join(os.path.dirname(__file__), "..", "node")
MSGS = [{"role": "user", "content": "How does a worker register?"}]
CHAT = {"model": "tiny", "messages": MSGS, "max_tokens": 2, "temperature": 0}


def worker(t, c, name, model="tiny", wtype="llm", weight=1, args=()):
    return t.start(name, ["start", "worker", "--model_name", model, "--worker_type", wtype,
                          "--host", "127.0.0.1", "--controller_addr", c.url,
                          "--heartbeat_interval", "0.5", "--weight", str(weight),
                          "--embed_dim", "32"] + list(args))


def apiserver(t, controllers, args=(), env=None, name="api", wait=True):
    return t.start(name, ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr",
                          ",".join(c.url for c in controllers)] + list(args), env=env, wait=wait)


def instances(a, model="tiny", headers=None):
    r = h.request("GET", a.url + "/v1/models", headers=headers)
    if r.status != 200:
        return 0
    return {m["id"]: m["instances"] for m in r.json()["data"]}.get(model, 0)


def wait_instances(a, n, model="tiny", headers=None):
    h.wait_until(lambda: instances(a, model, headers) == n, 10,
                 what=f"{n} routable instances of {model} at the apiserver")


def served(w):
    return int(h.metric(w.url, "roster_worker_requests_total"))


class Client:
    """One keep-alive connection."""

    def __init__(self, port, timeout=10):
        self.port, self.timeout = port, timeout
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path, body, headers=None):
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.c.request("POST", path, data, hdrs)
            r = self.c.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        except (OSError, http.client.HTTPException):
            self.c.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise


def test_openai_sdk(t):
    if not shutil.which("node"):
        raise h.Failure("node is not installed (scripts/deps.sh test installs it)")
    c = t.controller()
    w = worker(t, c, "llm")
    worker(t, c, "emb", model="emb", wtype="text2vec")
    worker(t, c, "zero", model="zero", weight=0)
    a = apiserver(t, [c], env={"ROSTER_API_KEYS": "sk-roster-1,sk-roster-2"})
    auth = {"Authorization": "Bearer sk-roster-2"}
    wait_instances(a, 1, headers=auth)
    wait_instances(a, 1, model="emb", headers=auth)
    env = dict(os.environ, ROSTER_BASE_URL=a.url + "/v1", ROSTER_API_KEY="sk-roster-1",
               ROSTER_CHAT_MODEL="tiny", ROSTER_EMB_MODEL="emb", ROSTER_ZERO_MODEL="zero")
    p = subprocess.run(["node", os.path.join(NODE_DIR, "openai_client.mjs")], env=env,
                       capture_output=True, text=True, timeout=60)
    h.eq(p.returncode, 0, f"node: {p.stderr[-3000:]}")
    out = json.loads(p.stdout)
    h.eq(out["models"], ["emb", "tiny"], "models.list (zero has no routable instance):")
    h.eq(out["model"], "tiny")
    direct = h.request("POST", w.url + "/v1/chat/completions",
                       {"model": "tiny", "messages": MSGS, "temperature": 0, "max_tokens": 20,
                        "seed": 7}).json()
    want = direct["choices"][0]["message"]["content"]
    h.eq((out["chat"]["object"], out["chat"]["text"], out["chat"]["finish"]),
         ("chat.completion", want, "length"))
    h.eq(out["chat"]["usage"]["completion_tokens"], 20)
    h.eq(out["stream"]["text"], want, "streamed text reassembled by the SDK:")
    h.check(out["stream"]["chunks"] >= 20, f"chunk by chunk: {out['stream']['chunks']}")
    h.eq(out["stream"]["usage"]["completion_tokens"], 20)
    h.eq(out["completion"]["object"], "text_completion")
    h.check(len(out["completion"]["text"]) > 0)
    h.eq((out["embeddings"]["n"], out["embeddings"]["dims"]), (2, [32, 32]))
    h.check(abs(out["embeddings"]["norm"] - 1) < 1e-5)
    h.check(out["embeddings"]["same"], "base64 (the SDK's default) and float agree")
    h.eq((out["bad_key"]["class"], out["bad_key"]["status"]), ("AuthenticationError", 401))
    h.eq((out["unknown_model"]["class"], out["unknown_model"]["status"]), ("NotFoundError", 404))
    h.eq((out["no_instance"]["class"], out["no_instance"]["status"]),
         ("InternalServerError", 503))
    h.check("sk-roster" not in a.logs(), "keys never logged")


def test_weights(t):
    c = t.controller()
    w1 = worker(t, c, "w1", weight=1)
    w3 = worker(t, c, "w3", weight=3)
    w0 = worker(t, c, "w0", weight=0)
    a = apiserver(t, [c])
    wait_instances(a, 2)
    cl = Client(a.port)
    n = 10000
    for _ in range(n):
        st, body, _ = cl.post("/v1/chat/completions", CHAT)
        h.eq(st, 200, f"{body[:200]!r}")
    got1, got3 = served(w1), served(w3)
    h.eq(got1 + got3, n, "every request served once:")
    h.eq(served(w0), 0, "weight 0 gets nothing:")
    share = got3 / n
    h.check(abs(share - 0.75) <= 0.03, f"weights 1:3 -> {got1}:{got3} ({share:.3f} on weight 3)")
    # the other weighted policies, fewer requests each
    for policy in ["weighted_random", "round_robin", "least_inflight"]:
        b = apiserver(t, [c], args=["--routing", policy], name=f"api-{policy}")
        wait_instances(b, 2)
        before1, before3 = served(w1), served(w3)
        cl = Client(b.port)
        for _ in range(2000):
            h.eq(cl.post("/v1/chat/completions", CHAT)[0], 200)
        d1, d3 = served(w1) - before1, served(w3) - before3
        h.eq(d1 + d3, 2000)
        if policy != "least_inflight":  # sequential requests: every instance idle, ties random
            h.check(abs(d3 / 2000 - 0.75) <= 0.05, f"{policy}: {d1}:{d3}")
        h.eq(served(w0), 0, f"{policy}: weight 0 gets nothing")


def test_session_affinity(t):
    c = t.controller()
    ws = [worker(t, c, f"s{i}") for i in range(3)]
    a = apiserver(t, [c], args=["--routing", "session"])
    wait_instances(a, 3)
    cl = Client(a.port)

    def served_if_alive(w):
        return served(w) if w.alive() else 0

    def where(session, use_user):
        before = [served_if_alive(w) for w in ws]
        for _ in range(4):
            body = dict(CHAT, user=session) if use_user else CHAT
            hdrs = {} if use_user else {"X-Session-Id": session}
            h.eq(cl.post("/v1/chat/completions", body, hdrs)[0], 200)
        moved = [served_if_alive(w) - b for w, b in zip(ws, before)]
        h.eq(sorted(moved), [0, 0, 4], f"session {session}: one instance serves it all")
        return moved.index(4)

    sessions = [f"user-{i}" for i in range(24)]
    first = {s: where(s, i % 2 == 0) for i, s in enumerate(sessions)}
    h.check(len(set(first.values())) == 3, f"sessions spread over the instances: {first}")
    h.eq({s: where(s, i % 2 == 0) for i, s in enumerate(sessions)}, first, "sticky:")
    gone = first[sessions[0]]
    ws[gone].stop()
    wait_instances(a, 2)
    ws_alive = [i for i in range(3) if i != gone]
    for i, s in enumerate(sessions):
        now = where(s, i % 2 == 0)
        if first[s] != gone:
            h.eq(now, first[s], f"session {s} on a surviving instance stays put")
        else:
            h.check(now in ws_alive)


def load(a, stop, results, body=CHAT):
    cl = Client(a.port, timeout=10)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            st = cl.post("/v1/chat/completions", body)[0]
        except OSError as e:
            st = f"error {e}"
        results.append((t0, st))


def test_kill9_under_load(t):
    c = t.controller()
    w1 = worker(t, c, "k1")
    worker(t, c, "k2")
    a = apiserver(t, [c])
    wait_instances(a, 2)
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=load, args=(a, stop, results)) for _ in range(4)]
    for th in threads:
        th.start()
    time.sleep(1)
    w1.kill()
    killed = time.monotonic()
    time.sleep(2)
    stop.set()
    for th in threads:
        th.join(15)
    after = [st for t0, st in results if t0 > killed]
    h.check(len(after) > 100, f"steady load after the kill: {len(after)} requests")
    h.eq([st for st in after if st != 200], [], "no failed request started after the kill:")
    ej = h.metric(a.url, 'roster_api_model_ejections_total{model="tiny@llm"}')
    h.check(ej is not None and ej >= 1, f"the dead instance was ejected ({ej})")


def test_sigstop_gives_bounded_504_and_ejects(t):
    c = t.controller()
    w1 = worker(t, c, "st1")
    w2 = worker(t, c, "st2")
    a = apiserver(t, [c], args=["--first_byte_timeout_ms", "500", "--eject_ms", "30000"])
    wait_instances(a, 2)
    w1.signal(signal.SIGSTOP)
    try:
        cl = Client(a.port)
        statuses = []
        for _ in range(20):
            t0 = time.monotonic()
            st, body, _ = cl.post("/v1/chat/completions", CHAT)
            dt = time.monotonic() - t0
            statuses.append(st)
            if st == 504:
                h.check(dt < 1.5, f"504 after {dt:.2f}s: bounded by the first-byte timeout")
                h.eq(json.loads(body)["error"]["code"], "upstream_timeout")
        h.eq(statuses.count(504), 1, f"one 504, then the instance is ejected: {statuses}")
        h.check(all(st == 200 for st in statuses if st != 504))
        before = served(w2)
        for _ in range(10):
            h.eq(cl.post("/v1/chat/completions", CHAT)[0], 200)
        h.eq(served(w2) - before, 10, "the stopped worker gets nothing while ejected")
    finally:
        w1.signal(signal.SIGCONT)


class QueueWorker:
    """A fake worker whose accept queue the test can fill: listen(1), and
    accepting only while `accepting` is set. The first request it serves
    is a stream that sends an event every 100 ms until `end_stream` is
    set; the others get a short JSON answer. Every answer closes its
    connection (so each request through the apiserver connects anew)."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)  # the kernel queues backlog + 1 = 2
        self.port = self.ls.getsockname()[1]
        self.accepting, self.paused = threading.Event(), threading.Event()
        self.end_stream, self.closed = threading.Event(), threading.Event()
        self.accepting.set()
        self.served = 0
        self.fill = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.closed.is_set():
            if not self.accepting.is_set():
                self.paused.set()
                time.sleep(0.01)
                continue
            self.paused.clear()
            r, _, _ = select.select([self.ls], [], [], 0.05)
            if r and self.accepting.is_set():
                conn, _ = self.ls.accept()
                self.served += 1
                threading.Thread(target=self._serve, args=(conn, self.served == 1),
                                 daemon=True).start()

    def _serve(self, conn, stream):
        conn.settimeout(10)
        try:
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = conn.recv(65536)
                if not chunk:
                    return  # a connection of the test's own, to fill the queue
                got += chunk
            head, _, body = got.partition(b"\r\n\r\n")
            n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                     if ln.lower().startswith(b"content-length:")][0])
            while len(body) < n:
                body += conn.recv(65536)
            if not stream:
                data = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}]}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data)
                             + data)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            ev = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            while not self.end_stream.wait(0.1):
                conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            done = b"data: [DONE]\n\n"
            conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        except OSError:
            pass
        finally:
            conn.close()

    def fill_queue(self):
        """Stops accepting and fills the accept queue: connects until one
        does not complete (its SYN dropped: the queue is full)."""
        self.accepting.clear()
        h.wait_until(self.paused.is_set, 5, what="the fake worker to stop accepting")
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fill.append(s)
            _, w, _ = select.select([], [s], [], 0.3)
            if not w:
                return
        raise h.Failure("the fake worker's accept queue never filled")

    def drain(self):
        for s in self.fill:
            s.close()
        self.fill = []
        self.accepting.set()

    def close(self):
        self.end_stream.set()
        self.closed.set()
        self.acceptor.join(5)  # out of its select() before the socket closes
        self.drain()
        self.ls.close()


def test_connect_timeout_on_a_busy_instance_is_not_an_ejection(t):
    """A connect that times out on an instance that answers other requests
    (its accept queue is full: overload) is retried, the instance not
    ejected; on an instance not heard from for a second it still ejects."""
    c = t.controller()
    fw = QueueWorker()
    try:
        h.register(c.url, h.instance(model="tiny@llm", port=fw.port))
        a = apiserver(t, [c], args=["--connect_timeout_ms", "200", "--eject_ms", "600000"])
        wait_instances(a, 1)
        ejections = 'roster_api_model_ejections_total{model="tiny@llm"}'
        s = open_stream(a.port, {"model": "tiny", "messages": MSGS, "stream": True})
        fw.fill_queue()
        # the stream keeps the instance heard from while this request waits
        cl = Client(a.port)
        retries = 'roster_api_model_retries_total{model="tiny@llm"}'
        h.eq(h.metric(a.url, retries), 0.0, "retries before")
        st, body, _ = cl.post("/v1/chat/completions", CHAT)
        h.check_error(st, body, 503, "the overloaded instance's request")
        err = json.loads(body)["error"]
        h.eq(err["code"], "upstream_unavailable")
        h.check("overloaded" in err["message"], f"the message says why: {err['message']}")
        # the first connect, then three more on the same (only) instance
        h.eq(h.metric(a.url, retries), 3.0, "new connections to the busy instance")
        h.eq(h.metric(a.url, ejections), 0.0, "ejections of the busy instance")
        fw.drain()
        h.eq(cl.post("/v1/chat/completions", CHAT)[0], 200, "the busy instance, drained")
        fw.end_stream.set()
        s.settimeout(5)
        got = recv_to_end(s)
        s.close()
        h.check(b"[DONE]" in got and b'"error"' not in got, f"the stream ended well: {got[-200:]!r}")
        # silent (no answer for over a second, nothing streaming) and full:
        # a timeout there is no sign of overload, and ejects
        fw.fill_queue()
        time.sleep(1.2)  # past ALIVE_MS (api_proxy.c) since the last answer: the rule under test
        st, body, _ = cl.post("/v1/chat/completions", CHAT)
        h.check_error(st, body, 503, "the silent instance's request")
        h.check("connect timed out" in json.loads(body)["error"]["message"], body)
        h.eq(h.metric(a.url, ejections), 1.0, "ejections of the silent instance")
        fw.drain()
        st, body, _ = cl.post("/v1/chat/completions", CHAT)
        h.check_error(st, body, 503, "the ejected instance")
        h.eq(json.loads(body)["error"]["code"], "no_routable_instance")
    finally:
        fw.close()


def test_serves_from_last_table_when_controllers_die(t):
    c1, c2 = t.controller("c1"), t.controller("c2")
    w = worker(t, c1, "w")
    a = apiserver(t, [c1, c2])
    wait_instances(a, 1)
    # both controllers know the instance (c2 reads c1's write within a poll),
    # so whichever the apiserver asks last gives the same table
    h.wait_until(lambda: any(i["port"] == w.port and i["healthy"] for i in h.list_models(c2.url)),
                 5, what="c2 to list the instance")
    c1.kill()
    c2.kill()
    h.wait_until(lambda: h.request("GET", a.url + "/api/health").json()["status"] == "stale",
                 40, what="the apiserver to notice")
    hl = h.request("GET", a.url + "/api/health")
    h.eq(hl.status, 200, "still serving: 200")
    h.eq(hl.json()["controllers"]["reachable"], False)
    cl = Client(a.port)
    for _ in range(20):
        h.eq(cl.post("/v1/chat/completions", CHAT)[0], 200, "served from the last table")


def test_new_instance_gets_traffic_within_a_second(t):
    c = t.controller()
    worker(t, c, "old")
    a = apiserver(t, [c], args=["--routing", "round_robin"])
    wait_instances(a, 1)
    new = worker(t, c, "new", args=["--heartbeat_interval", "5"])
    h.wait_until(lambda: any(i["port"] == new.port and i["healthy"]
                             for i in h.list_models(c.url)), 5, interval=0.01,
                 what="registration")
    registered = time.monotonic()
    cl = Client(a.port)
    while served(new) == 0:
        h.check(time.monotonic() - registered < 1.0, "traffic within 1 s of registration")
        h.eq(cl.post("/v1/chat/completions", CHAT)[0], 200)


def test_client_disconnect_cancels(t):
    c = t.controller()
    w = worker(t, c, "slow", args=["--decode_delay_ms", "50"])
    a = apiserver(t, [c])
    wait_instances(a, 1)
    s = open_stream(a.port, {"model": "tiny", "messages": MSGS, "stream": True,
                             "max_tokens": 1000})
    h.eq(h.metric(w.url, "roster_worker_in_flight"), 1.0)
    s.close()
    check_cancelled_within_1s(w)


def recv_to_end(s):
    """Bytes from s until a chunked body's last chunk, or the connection's end."""
    got = b""
    while not got.endswith(b"0\r\n\r\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_failure_mid_stream_ends_with_an_error_event(t):
    c = t.controller()
    w = worker(t, c, "dies", args=["--decode_delay_ms", "30"])
    a = apiserver(t, [c])
    wait_instances(a, 1)
    s = open_stream(a.port, {"model": "tiny", "messages": MSGS, "stream": True,
                             "max_tokens": 1000})
    w.kill()
    s.settimeout(5)
    got = recv_to_end(s)
    s.close()
    h.check(b'"code":"upstream_error"' in got, f"an error event: {got[-400:]!r}")
    h.check(b"[DONE]" not in got)


def read_stream(port, body, rcvbuf=None, pause=0.0):
    """The text of a streamed chat read from a raw socket (optionally with a
    small receive buffer, read only after `pause` seconds)."""
    data = json.dumps(body).encode()
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
              b"application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    time.sleep(pause)
    got = recv_to_end(s)
    s.close()
    _, _, payload = got.partition(b"\r\n\r\n")
    out = b""
    while payload:
        n, _, rest = payload.partition(b"\r\n")
        n = int(n, 16)
        if n == 0:
            break
        out += rest[:n]
        payload = rest[n + 2:]
    events = [json.loads(e[6:]) for e in out.decode().split("\n\n") if e.startswith("data: {")]
    h.check(out.endswith(b"data: [DONE]\n\n"), "the stream ends with [DONE]")
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])


def test_slow_client_back_pressure(t):
    c = t.controller()
    w = worker(t, c, "fast")
    a = apiserver(t, [c], args=["--stream_buffer_bytes", "4096"])
    wait_instances(a, 1)
    body = {"model": "tiny", "messages": MSGS, "max_tokens": 4096, "temperature": 0,
            "stream": True}
    want = read_stream(w.port, body)
    h.check(len(want) > 10000, "a long stream")
    got = read_stream(a.port, body, rcvbuf=4096, pause=1.5)
    h.eq(got, want, "a client that fell behind gets every byte:")
    paused = h.metric(a.url, 'roster_api_model_stream_pauses_total{model="tiny@llm"}')
    h.check(paused and paused >= 1, f"the instance was not read meanwhile ({paused} pauses)")


def test_request_id_and_added_time(t):
    c = t.controller()
    w = worker(t, c, "rid")
    a = apiserver(t, [c])
    wait_instances(a, 1)
    st, body, hdrs = Client(a.port).post("/v1/chat/completions", CHAT,
                                         {"X-Request-Id": "trace-7"})
    h.eq(st, 200)
    h.eq(json.loads(body)["id"], "chatcmpl-trace-7", "the worker got the request id:")
    h.eq(hdrs["x-request-id"], "trace-7")
    h.check(0 <= float(hdrs["x-roster-added-ms"]) < 50, f"added time: {hdrs}")
    h.wait_until(lambda: "req=trace-7" in w.logs(), 2, what="the worker's log line")
    line = [x for x in a.logs().splitlines() if "req=trace-7" in x][0]
    h.check("status=200" in line and f"instance=127.0.0.1:{w.port}" in line, line)


def test_bad_input(t):
    c = t.controller()
    worker(t, c, "w")
    a = apiserver(t, [c], args=["--max_body_bytes", "2048"],
                  env={"ROSTER_API_KEYS": "k1"})
    auth = {"Authorization": "Bearer k1"}
    wait_instances(a, 1, headers=auth)
    cl = Client(a.port)
    for label, body, hdrs, want in [
        ("no key", CHAT, {}, 401),
        ("wrong key", CHAT, {"Authorization": "Bearer k2"}, 401),
        ("bad JSON", b"{nope", auth, 400),
        ("not an object", b"[1]", auth, 400),
        ("no model", {"messages": MSGS}, auth, 400),
        ("model not a string", {"model": 5, "messages": MSGS}, auth, 400),
        ("stream not a boolean", dict(CHAT, stream="yes"), auth, 400),
        ("unknown model", dict(CHAT, model="nope"), auth, 404),
        ("too large", dict(CHAT, pad="x" * 4000), auth, 413),
        ("the worker's own 400", dict(CHAT, temperature=9), auth, 400),
    ]:
        st, body, _ = cl.post("/v1/chat/completions", body, hdrs)
        h.check_error(st, body, want, label)
    r = h.request("GET", a.url + "/v1/nothing", headers=auth)
    h.check_error(r.status, r.body, 404, "unknown path")
    r = h.request("GET", a.url + "/v1/chat/completions", headers=auth)
    h.check_error(r.status, r.body, 405, "GET on a POST route")
    h.eq(h.request("GET", a.url + "/api/health").status, 200, "health needs no key")


def test_no_controller_yet(t):
    dead, port = h.dead_port()
    try:
        a = apiserver(t, [type("C", (), {"url": f"http://127.0.0.1:{port}"})])
        r = h.request("GET", a.url + "/api/health")
        h.eq((r.status, r.json()["status"]), (503, "starting"))
        st, body, hdrs = Client(a.port).post("/v1/chat/completions", CHAT)
        h.check_error(st, body, 503, "no table yet")
        h.eq(hdrs.get("retry-after"), "1")
        r = h.cli(["start", "apiserver", "--routing", "fastest"])
        h.eq(r.returncode, 64)
        h.check("--routing" in r.stderr)
    finally:
        dead.close()


if __name__ == "__main__":
    h.main(globals())
