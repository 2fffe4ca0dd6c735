"""The apiserver's hardening (issue 11): Prometheus label values escaped as
the text format allows; /api/health stops naming a SIGKILLed controller at
once; --instance_networks enforced on the routing table and before every
connection (a canary outside the networks gets zero connections); the
memory budget (503 + Retry-After past it, used back to 0, bounded RSS);
and a slow client never gets the instance ejected."""
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

MSGS = [{"role": "user", "content": "How does a worker register?"}]
CHAT = {"model": "tiny", "messages": MSGS, "max_tokens": 2, "temperature": 0}


def worker(t, c, name, model="tiny", args=()):
    return t.start(name, ["start", "worker", "--model_name", model, "--host", "127.0.0.1",
                          "--controller_addr", c.url, "--heartbeat_interval", "0.5"]
                   + list(args))


def apiserver(t, controllers, args=(), name="api"):
    return t.start(name, ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr",
                          ",".join(c.url for c in controllers)] + list(args))


def health(a):
    return h.request("GET", a.url + "/api/health").json()


def metrics_text(url):
    r = h.request("GET", url + "/metrics")
    h.eq(r.status, 200, "/metrics")
    return r.body.decode("utf-8")


def metric(url, name):
    return h.metric(url, name)


def wait_listed(a, model, timeout=10):
    """Waits until the apiserver's table has `model` (name@type) at all."""
    h.wait_until(lambda: model in metrics_text(a.url), timeout,
                 what=f"{model!r} in the apiserver's table")


def insert_row(db, model, host, port):
    """A row written straight into the SQLite registry (as a controller
    without checks, or DB-GPT's, would): alive for ever (check_healthy 0)."""
    now_ms = int(time.time() * 1000)
    con = sqlite3.connect(db, timeout=10)
    try:
        con.execute(
            "INSERT INTO dbgpt_cluster_registry_instance (model_name, host, port, weight, "
            "check_healthy, healthy, enabled, last_heartbeat, sys_code, roster_lease_ms, "
            "roster_updated_ms) VALUES (?, ?, ?, 1.0, 0, 1, 1, datetime('now'), '', 0, ?)",
            (model, host, port, now_ms))
        con.commit()
    finally:
        con.close()


# ---- Prometheus label values ---------------------------------------------------------------

# one sample line of the text format 0.0.4, label values as the format allows
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{' + _LABEL + r'(?:,' + _LABEL + r')*\})? '
                     r'[-+0-9.eEInfa]+$')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def label_values(text, name):
    """Every value of label `name` in the exposition (unescaped)."""
    out = set()
    for m in re.finditer(name + r'="((?:[^"\\\n]|\\[\\"n])*)"', text):
        out.add(unescape(m.group(1)))
    return out


def test_prometheus_label_escaping(t):
    c = t.controller()
    worker(t, c, "w")
    weird = 'we"ird\\na\nme-模型-🦙@llm'
    insert_row(t.sqlite_path, weird, "127.0.0.1", 9)
    a = apiserver(t, [c])
    h.wait_until(lambda: weird in label_values(metrics_text(a.url), "model"), 10,
                 what="the weird model in /metrics")
    text = metrics_text(a.url)
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        h.check(_SAMPLE.match(line), f"not a valid text-format sample: {line!r}")
    h.check("\\x" not in text, "no \\x escapes (the text format has none)")
    # each family's samples together, under one TYPE line written before them
    types, seen, last = {}, set(), None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            h.check(name not in types, f"one TYPE line per family: {name}")
            types[name] = line.split()[3]
            continue
        if not line or line.startswith("#"):
            continue
        name = line.split("{")[0].split(" ")[0]
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if re.sub(
            r"_(bucket|sum|count)$", "", name) in types and types[
            re.sub(r"_(bucket|sum|count)$", "", name)] == "histogram" else name
        h.check(fam in types, f"a TYPE line before the samples of {fam}")
        if fam != last:
            h.check(fam not in seen, f"the samples of {fam} are not together")
            seen.add(fam)
            last = fam
    h.check('model="we\\"ird\\\\na\\nme-模型-🦙@llm"' in text,
            "the name escaped exactly as \\\" \\\\ \\n, UTF-8 as it is")
    h.check(any(v == "tiny@llm" for v in label_values(text, "model")))
    for v in ("roster_memory_budget_bytes", "roster_memory_budget_used_bytes",
              "roster_memory_budget_peak_bytes", "roster_memory_budget_refused_total"):
        h.check(metric(a.url, v) is not None, f"{v} in /metrics")


# ---- /api/health after a controller's SIGKILL ------------------------------------------------

def current(a):
    j = health(a)["controllers"]
    return j["current"], j["reachable"]


def test_health_after_sigkill(t):
    c1, c2 = t.controller("c1"), t.controller("c2")
    worker(t, c1, "w")
    a = apiserver(t, [c1, c2], args=["--control_timeout_ms", "4000"])
    h.wait_until(lambda: current(a)[1], 10, what="a controller in use")
    # the other one is alive: the watcher moves to it at once
    cur = current(a)[0]
    dead, other = (c1, c2) if cur == c1.url else (c2, c1)
    time.sleep(0.5)  # a long poll is held now
    dead.kill()
    t0 = time.monotonic()
    h.wait_until(lambda: current(a) == (other.url, True), 2, interval=0.02,
                 what="health to name the live controller")
    print(f"    live controller named after {time.monotonic() - t0:.2f}s")


def test_health_after_sigkill_next_one_slow(t):
    # the next controller does not answer for a while (SIGSTOP): health must
    # stop naming the dead controller at once, not after the next one's
    # --control_timeout_ms
    c1, c2 = t.controller("c1"), t.controller("c2")
    a = apiserver(t, [c1, c2], args=["--control_timeout_ms", "4000"])
    h.wait_until(lambda: current(a)[1], 10, what="a controller in use")
    cur = current(a)[0]
    dead, other = (c1, c2) if cur == c1.url else (c2, c1)
    time.sleep(0.5)
    other.signal(signal.SIGSTOP)
    try:
        dead.kill()
        t0 = time.monotonic()
        h.wait_until(lambda: current(a)[0] != dead.url, 1.0, interval=0.02,
                     what="health to stop naming the SIGKILLed controller")
        print(f"    dead controller no longer named after {time.monotonic() - t0:.2f}s")
        j = health(a)["controllers"]
        h.eq(j["reachable"], False, "the next one has not answered yet:")
        h.check(dead.url in (j["error"] or ""), f"the error says which one failed: {j}")
    finally:
        other.signal(signal.SIGCONT)
    h.wait_until(lambda: current(a) == (other.url, True), 10, what="the live controller")


# ---- --instance_networks ----------------------------------------------------------------

class Canary:
    """A listener on 127.0.0.9 that counts connections (and answers none)."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.9", 0))
        self.s.listen(64)
        self.s.settimeout(0.1)
        self.port = self.s.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.s.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.th.join(2)
        self.s.close()


def chat(url, body, timeout=10):
    return h.request("POST", url + "/v1/chat/completions", body, timeout=timeout)


def test_instance_networks_apiserver(t):
    canary = Canary()
    try:
        c = t.controller()  # no --instance_networks: it takes any address
        worker(t, c, "w")
        h.register(c.url, model="canary@llm", host="127.0.0.9", port=canary.port,
                   check_healthy=False, healthy=True)
        # the row is listed as routable by the controller...
        h.check(any(i["host"] == "127.0.0.9" and i["routable"]
                    for i in h.list_models(c.url, view="full")), "listed by the controller")
        a = apiserver(t, [c], args=["--instance_networks", "127.0.0.1/32"])
        wait_listed(a, "canary@llm")
        h.wait_until(lambda: chat(a.url, CHAT).status == 200, 10, what="tiny served")
        # ...but never by this apiserver
        for _ in range(5):
            r = chat(a.url, dict(CHAT, model="canary"))
            err = r.error(503, "canary")
            h.eq(err["code"], "no_routable_instance")
            h.check("--instance_networks" in err["message"], err["message"])
            h.eq(r.header("Retry-After"), "1")
        r = chat(a.url, dict(CHAT, model="canary", stream=True))
        h.eq(r.status, 503, "a stream too")
        models = [m["id"] for m in h.request("GET", a.url + "/v1/models").json()["data"]]
        h.eq(models, ["tiny"], "the canary's model is not offered:")
        text = metrics_text(a.url)
        h.check('instance="127.0.0.9:' not in text, "no routable canary instance in /metrics")
        h.check("outside --instance_networks" in a.logs(), "the exclusion is logged")
        h.eq(health(a)["table"]["excluded"], 1, "health counts the excluded row:")
        h.eq(canary.accepted, 0, "the canary received no connection:")
        # the other model is unaffected
        h.eq(chat(a.url, CHAT).status, 200)
    finally:
        canary.close()
    h.eq(canary.accepted, 0, "the canary received no connection:")


def test_instance_networks_webserver(t):
    canary = Canary()
    try:
        # cluster mode: the dashboard says why the row is not routable
        c = t.controller()
        h.register(c.url, model="canary@llm", host="127.0.0.9", port=canary.port,
                   check_healthy=False, healthy=True)
        web = t.start("web", ["start", "webserver", "--host", "127.0.0.1", "--controller_addr",
                              c.url, "--instance_networks", "127.0.0.1/32", "--data_dir",
                              t.tmp])

        def row():
            r = h.request("GET", web.url + "/api/dashboard/instances?model=canary%40llm")
            items = r.json().get("items", []) if r.status == 200 else []
            return items[0] if items and items[0].get("excluded") else None
        it = h.wait_until(row, 10, what="the dashboard's row")
        h.eq(it["routable"], False, "not routable at this server:")
        h.check("--instance_networks" in it["excluded"], it)
        r = chat(web.url, dict(CHAT, model="canary"))
        h.eq(r.error(503)["code"], "no_routable_instance")
        h.eq(canary.accepted, 0, "the canary received no connection:")

        # embedded: the same flag restricts the embedded controller's writes
        emb = t.start("emb", ["start", "webserver", "--host", "127.0.0.1", "--instance_networks",
                              "127.0.0.1/32", "--data_dir", os.path.join(t.tmp, "emb"),
                              "--light", "--remote_embedding"])
        r = h.request("POST", emb.url + "/api/controller/models",
                      h.instance(model="canary@llm", host="127.0.0.9", port=canary.port))
        h.eq(r.error(403)["code"], "address_not_allowed")
    finally:
        canary.close()
    h.eq(canary.accepted, 0, "the canary received no connection:")


# ---- the memory budget ------------------------------------------------------------------------

class Quiet(ThreadingHTTPServer):
    """A threading HTTP server that does not print a client's reset."""
    daemon_threads = True
    request_queue_size = 256  # the apiserver opens many connections at once

    def handle_error(self, request, client_address):
        pass


class BigEngine:
    """A stand-in instance answering every chat with a `size`-byte JSON body."""

    def __init__(self, size):
        body = json.dumps({"id": "x", "object": "chat.completion", "model": "big",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant",
                                                    "content": "x" * size}}]}).encode()
        self.body = body
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                try:
                    self.wfile.write(outer.body)
                except OSError:
                    pass

        self.srv = Quiet(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def rss_kib(pid, field="VmHWM"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_meaningful():
    """False under a sanitizer or a wrapper (valgrind), whose own memory
    the process's RSS includes."""
    if os.environ.get("ROSTER_TEST_WRAPPER"):
        return False
    with open(h.BIN, "rb") as f:
        return b"__asan_init" not in f.read()


def test_memory_budget(t):
    size = 6 * 1024 * 1024
    eng = BigEngine(size)
    try:
        c = t.controller()
        h.register(c.url, model="big@llm", host="127.0.0.1", port=eng.port,
                   check_healthy=False, healthy=True)
        a = apiserver(t, [c], args=["--memory_budget_bytes", str(8 * 1024 * 1024),
                                    "--stream_buffer_bytes", "65536"])
        wait_listed(a, "big@llm")
        body = dict(CHAT, model="big")
        h.eq(metric(a.url, "roster_memory_budget_bytes"), 8 * 1024 * 1024)
        results = []
        lock = threading.Lock()

        def client():
            for _ in range(4):
                try:
                    r = chat(a.url, body, timeout=30)
                except OSError as e:
                    with lock:
                        results.append(("error", str(e)))
                    continue
                with lock:
                    results.append((r.status, r))
        h.in_threads([client for _ in range(8)], timeout=120)
        statuses = [s for s, _ in results]
        h.check("error" not in statuses, f"no connection failed: {statuses}")
        h.check(set(statuses) <= {200, 503}, f"200 or 503 only: {statuses}")
        h.check(statuses.count(503) >= 1, f"some refused past the budget: {statuses}")
        for s, r in results:
            if s == 200:
                h.eq(len(r.body), len(eng.body), "a served answer is whole:")
            else:
                err = r.error(503)
                h.eq(err["code"], "memory_budget_exceeded")
                h.eq(r.header("Retry-After"), "1")
        h.eq(metric(a.url, "roster_memory_budget_used_bytes"), 0,
             "every byte given back after the load:")
        peak = metric(a.url, "roster_memory_budget_peak_bytes")
        h.check(0 < peak <= 8 * 1024 * 1024, f"the peak stays under the budget: {peak}")
        h.check(metric(a.url, "roster_memory_budget_refused_total") >= statuses.count(503))
        hwm = rss_kib(a.p.pid)
        print(f"    {statuses.count(200)} served, {statuses.count(503)} refused; "
              f"peak RSS {hwm / 1024:.1f} MiB")
        # 8 clients x 6 MiB answers held whole (and copied) would pass 96 MiB
        if rss_meaningful():
            h.check(hwm < 64 * 1024, f"peak RSS bounded by the budget: {hwm} KiB")
        h.check(a.alive(), "the apiserver is up")
        r = chat(a.url, body, timeout=30)
        h.eq(r.status, 200, "alone, an answer within the budget is served:")
        h.eq(len(r.body), len(eng.body))
        h.eq(metric(a.url, "roster_memory_budget_used_bytes"), 0)
    finally:
        eng.close()


def test_memory_budget_streams(t):
    c = t.controller()
    worker(t, c, "w")
    # one stream's first reservation (64 KiB read + a 16 KiB step of its
    # queue) does not fit in 64 KiB
    a = apiserver(t, [c], args=["--memory_budget_bytes", "65536",
                                "--stream_buffer_bytes", "131072"])
    h.wait_until(lambda: chat(a.url, CHAT).status == 200, 10, what="tiny served")
    r = chat(a.url, dict(CHAT, stream=True, max_tokens=50))
    err = r.error(503, "a stream past the budget")
    h.eq(err["code"], "memory_budget_exceeded")
    h.eq(r.header("Retry-After"), "1")
    h.eq(chat(a.url, CHAT).status, 200, "small whole answers still fit")
    h.eq(metric(a.url, "roster_memory_budget_used_bytes"), 0)
    h.check(metric(a.url, "roster_memory_budget_refused_total") >= 1)
    # with room for it, the same stream goes through
    b = apiserver(t, [c], args=["--memory_budget_bytes", "1048576",
                                "--stream_buffer_bytes", "131072"], name="api2")
    h.wait_until(lambda: chat(b.url, CHAT).status == 200, 10, what="tiny served")
    r = chat(b.url, dict(CHAT, stream=True, max_tokens=50))
    h.eq(r.status, 200)
    h.check(r.body.endswith(b"data: [DONE]\n\n"), "a whole stream")
    h.eq(metric(b.url, "roster_memory_budget_used_bytes"), 0)


def test_memory_budget_many_streams(t):
    """A stream that keeps up reserves 80 KiB of the budget, not
    --stream_buffer_bytes: in 1 MiB with 512 KiB stream buffers, eight
    streams open at once all go through (each reserving its whole buffer
    up front, only one did)."""
    c = t.controller()
    worker(t, c, "w", args=["--decode_delay_ms", "100", "--concurrency", "16"])
    a = apiserver(t, [c], args=["--memory_budget_bytes", "1048576",
                                "--stream_buffer_bytes", "524288"])
    h.wait_until(lambda: chat(a.url, dict(CHAT, max_tokens=1)).status == 200, 10,
                 what="tiny served")
    results = [None] * 8

    def one(i):
        results[i] = chat(a.url, dict(CHAT, stream=True, max_tokens=10), timeout=30)

    ths = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for th in ths:
        th.start()
    # all eight are open at once: each holds its reservation
    h.wait_until(lambda: metric(a.url, "roster_memory_budget_used_bytes") >= 8 * 80 * 1024, 10,
                 what="eight streams open together")
    for th in ths:
        th.join(60)
    for r in results:
        h.eq(r.status, 200, "every stream admitted:")
        h.check(r.body.endswith(b"data: [DONE]\n\n"), "a whole stream")
    h.eq(metric(a.url, "roster_memory_budget_used_bytes"), 0)
    h.eq(metric(a.url, "roster_memory_budget_refused_total"), 0)


# ---- a slow client does not get the instance ejected -------------------------------------------

class StreamEngine:
    """A stand-in instance: a chat with "stream": true gets SSE events as
    fast as the connection takes them (up to `total` bytes); any other gets a
    small whole answer."""

    def __init__(self, total=64 * 1024 * 1024):
        event = b"data: " + json.dumps({"id": "s", "object": "chat.completion.chunk",
                                        "choices": [{"index": 0, "delta":
                                                     {"content": "y" * 900}}]}).encode() + b"\n\n"
        small = json.dumps({"id": "x", "object": "chat.completion", "model": "eng",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant",
                                                     "content": "ok"}}]}).encode()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                try:
                    if not req.get("stream"):
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(small)))
                        self.end_headers()
                        self.wfile.write(small)
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    sent = 0
                    while sent < total:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        sent += len(event)
                    self.wfile.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
                except OSError:
                    self.close_connection = True

        self.srv = Quiet(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_slow_client_does_not_eject(t):
    eng = StreamEngine()
    try:
        c = t.controller()
        h.register(c.url, model="eng@llm", host="127.0.0.1", port=eng.port,
                   check_healthy=False, healthy=True)
        a = apiserver(t, [c], args=["--request_timeout_ms", "2000", "--stream_buffer_bytes",
                                    "65536", "--eject_ms", "60000"])
        body = {"model": "eng", "messages": MSGS}
        h.wait_until(lambda: chat(a.url, body).status == 200, 10, what="eng served")
        data = json.dumps(dict(body, stream=True)).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(20)
        s.connect(("127.0.0.1", a.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        # read nothing past the whole request's deadline: the apiserver holds
        # the instance back for this client, then gives up on the request
        h.wait_until(lambda: metric(a.url, 'roster_api_model_stream_pauses_total'
                                           '{model="eng@llm"}'), 5,
                     what="the instance paused for the slow client")
        time.sleep(2.5)
        got = b""
        while not got.endswith(b"0\r\n\r\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        s.close()
        h.check(b"request_timeout_ms" in got[-2000:],
                f"the stream ended with the deadline's error event: {got[-300:]!r}")
        label = '{model="eng@llm",instance="127.0.0.1:%d"}' % eng.port
        h.eq(metric(a.url, "roster_api_instance_ejected" + label), 0, "not ejected:")
        h.eq(metric(a.url, "roster_api_instance_ejections_total" + label), 0, "no ejection:")
        h.eq(metric(a.url, 'roster_api_model_ejections_total{model="eng@llm"}'), 0)
        # other clients keep being routed to it (its model's only instance)
        for _ in range(10):
            h.eq(chat(a.url, body).status, 200, "still routed to:")
        h.check("event ejected" not in a.logs(), "no ejection event")
    finally:
        eng.close()


if __name__ == "__main__":
    h.main(globals())
