"""The worker's pass-through limits, as real processes over loopback:

- back-pressure: an engine streaming ~200 MB to a client that reads
  nothing for seconds does not grow the worker (the transfer from the
  engine pauses while the client is behind, and resumes when it drains);
  the client then gets the whole stream, well formed and in order;
- the memory budget (--memory_budget_bytes): answers buffered past it are
  refused with 503 + Retry-After (OpenAI's error shape) before the head,
  or end with an SSE error event after it; /metrics shows used, peak and
  refused bytes;
- secrets through side doors: passwords inside --upstream and
  --controller_addr never appear in logs, /api/health, /metrics or error
  bodies, and an engine's 401/403 text that echoes the key is never passed
  through.

The engine is tests/lib/stub_engine.py answering as FloodEngine says."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from stub_engine import StubEngine, completion  # noqa: E402
from test_backends import MSGS, post, proxy  # noqa: E402

MiB = 1024 * 1024


class FloodEngine(StubEngine):
    """An OpenAI-compatible engine that answers any POST with `events`
    events of `size` bytes each (the request's max_tokens and "pad"
    fields), streamed as fast as the socket takes them (SSE ending with
    [DONE]) or as one JSON answer (stream false). Each event carries its
    sequence number. A request whose model is "auth" gets a 401 whose body
    echoes the Authorization header it came with, as some engines do;
    model "chat" streams chat deltas of `seed` bytes each (the field DB-GPT's
    requests carry through); model "crlf" ends its lines with CRLF.
    `sent` counts the bytes of the streams written so far; `auth_seen` the
    Authorization headers of the requests."""

    def __init__(self):
        self.sent = 0
        self.auth_seen = []
        super().__init__(self.answer, protocol="HTTP/1.0")  # the body ends at the close

    def answer(self, ex):
        body = ex.body
        auth = ex.headers.get("Authorization") or ""
        self.auth_seen.append(auth)
        if body.get("model") == "auth":
            ex.send_json(401, {"error": {
                "message": f"Incorrect API key provided: {auth[len('Bearer '):]}",
                "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        n, size = int(body.get("max_tokens") or 1), int(body.get("pad") or 100)
        if body.get("model") == "chat":
            size = int(body.get("seed") or 100)
        pad = b"x" * size
        eol = b"\r\n" if body.get("model") == "crlf" else b"\n"
        if not body.get("stream"):
            ex.send_json(200, completion("y" * (n * size), model=body["model"]))
            return
        ex.start_stream()
        try:
            for i in range(n):
                if body.get("model") == "chat":
                    ev = (b'data: {"choices":[{"index":0,"delta":{"content":"%s"},'
                          b'"finish_reason":null}]}\n\n' % pad)
                else:
                    ev = b'data: {"i":%d,"pad":"%s"}%s%s' % (i, pad, eol, eol)
                ex.write(ev, flush=False)
                self.sent += len(ev)
            ex.write(b"data: [DONE]" + eol + eol, flush=False)
        except (BrokenPipeError, ConnectionResetError):
            pass


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise h.Failure("no VmRSS")


def dechunk(data):
    """The body of a chunked HTTP/1.1 answer; fails unless it is well framed."""
    out, pos = [], 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            h.eq(data[pos:pos + 2], b"\r\n", "the last chunk ends the body:")
            h.eq(len(data), pos + 2, "nothing after the last chunk:")
            return b"".join(out)
        out.append(data[pos:pos + size])
        h.eq(data[pos + size:pos + size + 2], b"\r\n", "each chunk ends with CRLF:")
        pos += size + 2


def test_stream_back_pressure(t):
    eng = FloodEngine()
    try:
        p = proxy(t, eng.url, models="flood")
        pid = p.p.pid
        # warm up: a short stream through the same path
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS, "stream": True,
                                             "max_tokens": 20, "pad": 1000})
        h.eq(r.status, 200)
        base, sent0 = rss_bytes(pid), eng.sent
        n, size = 3200, 64 * 1024  # ~200 MiB
        body = json.dumps({"model": "flood", "messages": MSGS, "stream": True, "max_tokens": n,
                           "pad": size}).encode()
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        # the client reads nothing for 4 s: the worker must not buffer the flood
        peak, t0 = base, time.monotonic()
        while time.monotonic() - t0 < 4:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        sent_while_paused = eng.sent - sent0
        print(f"    worker RSS {base / MiB:.1f} MiB at start, peak {peak / MiB:.1f} MiB while "
              f"the client read nothing; the engine wrote {sent_while_paused / MiB:.1f} MiB")
        h.check(peak - base < 40 * MiB,
                f"the worker grew by {(peak - base) / MiB:.1f} MiB (limit 40) for a client that "
                f"reads nothing")
        h.check(sent_while_paused < 64 * MiB,
                f"the engine was paused (it wrote {sent_while_paused / MiB:.1f} MiB)")
        # now the client reads everything: a whole, well-formed stream
        s.settimeout(60)
        t0 = time.monotonic()
        data = bytearray()
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            data += b
        s.close()
        data = bytes(data)
        print(f"    then read {len(data) / MiB:.1f} MiB in {time.monotonic() - t0:.1f} s")
        head, _, rest = data.partition(b"\r\n\r\n")
        h.check(head.startswith(b"HTTP/1.1 200"), f"{head[:200]!r}")
        h.check(b"transfer-encoding: chunked" in head.lower(), f"{head!r}")
        sse = dechunk(rest)
        events = sse.split(b"\n\n")
        h.eq(events[-1], b"", "the stream ends with a blank line:")
        h.eq(events[-2], b"data: [DONE]", "the stream ends with [DONE]:")
        h.eq(len(events), n + 2)
        for i, ev in enumerate(events[:n]):
            want = b'data: {"i":%d,"pad":"' % i
            if not ev.startswith(want) or not ev.endswith(b'"}') or len(ev) != len(want) + size + 2:
                raise h.Failure(f"event {i} is wrong: {ev[:60]!r}... ({len(ev)} bytes)")
        h.eq(eng.sent - sent0,
             sum(len(b'data: {"i":%d,"pad":""}\n\n' % i) + size for i in range(n)))
        after = rss_bytes(pid)
        print(f"    worker RSS {after / MiB:.1f} MiB after the stream")
        # the worker still serves
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS, "stream": True,
                                             "max_tokens": 3, "pad": 10})
        h.eq(r.status, 200)
        h.check(r.body.endswith(b"data: [DONE]\n\n"), f"{r.body[-100:]!r}")
        h.check(h.metric(p.url, "roster_worker_stream_pauses_total") >= 1, "pauses counted")
        h.eq(h.metric(p.url, "roster_memory_budget_used_bytes"), 0.0, "all given back:")
    finally:
        eng.close()


def raw_post(port, body):
    """A socket that sent a chat request and reads nothing yet."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
              + data)
    return s


def read_all(s, timeout=60):
    s.settimeout(timeout)
    data = bytearray()
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        data += b
    s.close()
    return bytes(data)


def test_memory_budget(t):
    eng = FloodEngine()
    try:
        budget = 1 * MiB
        p = proxy(t, eng.url, models="flood", args=[
            "--memory_budget_bytes", str(budget), "--stream_buffer_bytes", str(8 * MiB)])
        h.eq(h.metric(p.url, "roster_memory_budget_bytes"), float(budget))
        # within the budget: served
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 4, "pad": 1000})
        h.eq(r.status, 200)
        h.eq(len(r.json()["choices"][0]["message"]["content"]), 4000)
        # an answer that would be buffered past it: 503 + Retry-After before the head
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 2, "pad": MiB})
        h.check_error(r.status, r.body, 503, "an answer past the budget")
        h.eq(r.json()["error"]["code"], "memory_budget_exceeded")
        h.eq(r.header("Retry-After"), "1")
        # DB-GPT's answer likewise (its error frame under 503)
        r = post(p, "/api/worker/generate", {"model": "flood", "prompt": "hi",
                                             "max_new_tokens": 2, "pad": MiB})
        h.eq(r.status, 200, "DB-GPT's generate: the engine's events carry no text")
        # a request body larger than the whole budget: refused on arrival
        r = post(p, "/v1/chat/completions", {"model": "flood", "max_tokens": 1,
                                             "messages": [{"role": "user",
                                                           "content": "z" * (budget + 1)}]})
        h.check_error(r.status, r.body, 503, "a request past the budget")
        h.eq(r.json()["error"]["code"], "memory_budget_exceeded")
        h.eq(len(eng.auth_seen), 3, "the refused request never reached the engine")
        # a stream whose client is behind by more than the budget: an error
        # event after what was sent, and no [DONE]
        s = raw_post(p.port, {"model": "flood", "messages": MSGS, "stream": True,
                              "max_tokens": 3200, "pad": 64 * 1024})
        h.wait_until(lambda: h.metric(p.url, "roster_memory_budget_refused_total") >= 3, 20,
                     what="the stream's refusal")
        data = read_all(s)
        head, _, rest = data.partition(b"\r\n\r\n")
        h.check(head.startswith(b"HTTP/1.1 200"), f"{head[:100]!r}")
        events = [e for e in dechunk(rest).split(b"\n\n") if e]
        h.check(len(events) >= 2, f"some events before the error ({len(events)})")
        h.check(events[0].startswith(b'data: {"i":0,'), f"{events[0][:40]!r}")
        last = json.loads(events[-1][len(b"data: "):])
        h.eq(last["error"]["code"], "memory_budget_exceeded", f"{last}")
        h.check(b"[DONE]" not in events[-2], "no [DONE] before the error")
        h.eq(h.metric(p.url, "roster_memory_budget_used_bytes"), 0.0, "all given back:")
        peak = h.metric(p.url, "roster_memory_budget_peak_bytes")
        h.check(0 < peak <= budget, f"peak {peak} within the budget")
        h.eq(h.metric(p.url, "roster_memory_budget_refused_total"), 3.0)
        # and the worker still serves
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 4, "pad": 1000})
        h.eq(r.status, 200)
        h.check("memory budget" in p.logs(), "refusals are logged")
    finally:
        eng.close()


def test_max_answer_bytes(t):
    eng = FloodEngine()
    try:
        p = proxy(t, eng.url, models="flood", args=["--max_answer_bytes", "65536"])
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 1, "pad": 60000})
        h.eq(r.status, 200)
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 2, "pad": 60000})
        h.check_error(r.status, r.body, 502, "an answer past --max_answer_bytes")
        h.check("--max_answer_bytes" in r.json()["error"]["message"], f"{r.json()}")
        # streams are not buffered whole: no such limit
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "stream": True, "max_tokens": 4, "pad": 60000})
        h.eq(r.status, 200)
        h.check(r.body.endswith(b"data: [DONE]\n\n"))
        h.eq(h.metric(p.url, "roster_memory_budget_used_bytes"), 0.0)
    finally:
        eng.close()



def test_crlf_events_pass_through(t):
    eng = FloodEngine()
    try:
        p = proxy(t, eng.url, models="crlf")
        r = post(p, "/v1/chat/completions", {"model": "crlf", "messages": MSGS, "stream": True,
                                             "max_tokens": 40, "pad": 30000})
        h.eq(r.status, 200)
        want = b"".join(b'data: {"i":%d,"pad":"%s"}\r\n\r\n' % (i, b"x" * 30000)
                        for i in range(40)) + b"data: [DONE]\r\n\r\n"
        h.check(r.body == want, "CRLF events forwarded unchanged")
    finally:
        eng.close()


def dbgpt_stream_socket(port, n, size):
    data = json.dumps({"model": "chat", "prompt": "hi", "max_new_tokens": n,
                       "seed": size}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/worker/generate_stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
              + data)
    return s


def test_dbgpt_stream_bounded(t):
    """DB-GPT's stream repeats the whole text in every frame: a client that
    reads nothing must not make the worker hold them; past the budget the
    stream ends with an error frame."""
    eng = FloodEngine()
    try:
        p = proxy(t, eng.url, models="chat")
        pid = p.p.pid
        r = post(p, "/api/worker/generate_stream", {"model": "chat", "prompt": "hi",
                                                    "max_new_tokens": 5, "seed": 10})
        frames = [json.loads(f) for f in r.body.split(b"\0") if f]
        h.eq(frames[-1]["text"], "x" * 50, f"{frames[-1]}")
        base = rss_bytes(pid)
        s = dbgpt_stream_socket(p.port, 2000, 16 * 1024)  # 32 MiB of text, ~32 GiB of frames
        peak, t0 = base, time.monotonic()
        while time.monotonic() - t0 < 3:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        print(f"    worker RSS {base / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB for a DB-GPT "
              f"client that reads nothing")
        h.check(peak - base < 40 * MiB, f"grew by {(peak - base) / MiB:.1f} MiB")
        s.close()
        h.wait_until(lambda: h.metric(p.url, "roster_worker_in_flight") == 0, 10,
                     what="the cancelled stream to end")
        h.eq(h.metric(p.url, "roster_memory_budget_used_bytes"), 0.0)
        # a budget smaller than the text: an error frame ends the stream
        q = proxy(t, eng.url, name="small", models="chat",
                  args=["--memory_budget_bytes", str(MiB)])
        data = read_all(dbgpt_stream_socket(q.port, 200, 16 * 1024))
        head, _, rest = data.partition(b"\r\n\r\n")
        h.check(head.startswith(b"HTTP/1.1 200"), f"{head[:100]!r}")
        frames = [json.loads(f) for f in dechunk(rest).split(b"\0") if f]
        h.check(len(frames) >= 2, f"{len(frames)} frames")
        h.eq(frames[-1]["error_code"], 1, "an error frame last:")
        h.check("--memory_budget_bytes" in frames[-1]["text"], f"{frames[-1]['text']}")
        h.eq(h.metric(q.url, "roster_memory_budget_refused_total"), 1.0)
        h.eq(h.metric(q.url, "roster_memory_budget_used_bytes"), 0.0)
    finally:
        eng.close()


def builtin_stream_socket(port, path, body):
    """A socket that sent a streamed generation and reads nothing yet (a
    small receive buffer: the kernel holds little of it for the client)."""
    data = json.dumps(body).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % (path.encode(), len(data)) + data)
    return s


def test_builtin_stream_back_pressure(t):
    """The builtin model's streams pause while their client is behind: DB-GPT
    frames repeat the whole text (a 4,096-token answer is ~40 MB of frames),
    so 4 clients that read nothing would otherwise hold ~170 MB in the
    worker. Then each client reads its whole stream, well formed."""
    from test_backends import engine
    w = engine(t, "builtin", args=["--concurrency", "16", "--stream_buffer_bytes", "65536"])
    pid = w.p.pid
    r = post(w, "/api/worker/generate_stream", {"model": "tiny", "prompt": "hi",
                                                "max_new_tokens": 50})
    h.eq(r.status, 200)
    base = rss_bytes(pid)
    n_dbgpt, n_sse = 4, 2
    socks = [builtin_stream_socket(w.port, "/api/worker/generate_stream",
                                   {"model": "tiny", "prompt": f"hi {i}", "max_new_tokens": 4096,
                                    "seed": i}) for i in range(n_dbgpt)]
    socks += [builtin_stream_socket(w.port, "/v1/chat/completions",
                                    {"model": "tiny", "messages": MSGS, "max_tokens": 4096,
                                     "stream": True, "seed": i}) for i in range(n_sse)]
    peak, t0 = base, time.monotonic()
    while time.monotonic() - t0 < 3:
        peak = max(peak, rss_bytes(pid))
        time.sleep(0.05)
    print(f"    worker RSS {base / MiB:.1f} MiB at start, peak {peak / MiB:.1f} MiB while "
          f"{len(socks)} builtin streams' clients read nothing")
    h.check(peak - base < 40 * MiB,
            f"the worker grew by {(peak - base) / MiB:.1f} MiB (limit 40) for clients that "
            f"read nothing")
    # (the SSE streams, ~0.8 MB each, may fit in the kernel's socket buffers)
    h.check(h.metric(w.url, "roster_worker_stream_pauses_total") >= n_dbgpt,
            "every DB-GPT stream paused")
    h.check(h.metric(w.url, "roster_worker_in_flight") >= n_dbgpt, "all still running")
    # now each client reads it all: whole, well-formed streams
    total = 0
    for i, s in enumerate(socks):
        data = read_all(s, timeout=120)
        total += len(data)
        head, _, rest = data.partition(b"\r\n\r\n")
        h.check(head.startswith(b"HTTP/1.1 200"), f"{head[:200]!r}")
        body = dechunk(rest)
        if i < n_dbgpt:
            h.check(body.endswith(b"\0"), "the last frame ends with its NUL")
            frames = [json.loads(f) for f in body.split(b"\0")[:-1]]
            for a, b in zip(frames, frames[1:]):
                if not b["text"].startswith(a["text"]) or b["error_code"] != 0:
                    raise h.Failure(f"stream {i}: frames not cumulative: {a} then {b}")
            h.eq(frames[-1]["finish_reason"], "length", f"stream {i}:")
            h.eq(frames[-1]["usage"]["completion_tokens"], 4096, f"stream {i}:")
        else:
            events = body.split(b"\n\n")
            h.eq(events[-1], b"", "the stream ends with a blank line:")
            h.eq(events[-2], b"data: [DONE]", "the stream ends with [DONE]:")
            chunks = [json.loads(e[6:]) for e in events[:-2]]
            h.eq(chunks[-1]["choices"][0]["finish_reason"], "length")
            h.eq(len(chunks), 4096 + 2, "a role chunk, a chunk per token, a finish chunk:")
    print(f"    then read {total / MiB:.1f} MiB; worker RSS {rss_bytes(pid) / MiB:.1f} MiB")
    h.wait_until(lambda: h.metric(w.url, "roster_worker_in_flight") == 0, 10,
                 what="the streams to end")
    h.eq(h.metric(w.url, "roster_memory_budget_used_bytes"), 0.0, "all given back:")


def test_builtin_stream_budget(t):
    """Past --memory_budget_bytes a builtin DB-GPT stream ends with an error
    frame, and a request whose prompt does not fit gets 503 + Retry-After;
    all the budget is given back."""
    from test_backends import engine
    w = engine(t, "builtin", args=["--memory_budget_bytes", str(256 * 1024),
                                   "--stream_buffer_bytes", str(8 * MiB)])
    s = builtin_stream_socket(w.port, "/api/worker/generate_stream",
                              {"model": "tiny", "prompt": "hi", "max_new_tokens": 4096})
    time.sleep(1.0)  # the queue grows past the budget while the client reads nothing
    data = read_all(s)
    head, _, rest = data.partition(b"\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.1 200"), f"{head[:200]!r}")
    frames = [json.loads(f) for f in dechunk(rest).split(b"\0") if f]
    h.eq(frames[-1]["error_code"], 1, "an error frame last:")
    h.check("--memory_budget_bytes" in frames[-1]["text"], f"{frames[-1]}")
    # before the head: 503 + Retry-After (the budget is smaller than a request's copy)
    r = post(w, "/v1/chat/completions", {"model": "tiny", "max_tokens": 5, "stream": True,
                                         "messages": [{"role": "user", "content": "x" * 300000}]})
    h.eq(r.status, 503, f"{r.body[:200]!r}")
    h.eq(r.json()["error"]["code"], "memory_budget_exceeded")
    h.eq(r.header("Retry-After"), "1")
    h.check(h.metric(w.url, "roster_memory_budget_refused_total") >= 2, "refusals counted")
    h.wait_until(lambda: h.metric(w.url, "roster_worker_in_flight") == 0, 10,
                 what="the streams to end")
    h.eq(h.metric(w.url, "roster_memory_budget_used_bytes"), 0.0, "all given back:")
    # small answers still fit
    r = post(w, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "max_tokens": 20,
                                         "stream": True})
    h.eq(r.status, 200)
    h.check(r.body.endswith(b"data: [DONE]\n\n"), f"{r.body[-100:]!r}")


def with_password(url, pw):
    return url.replace("http://", f"http://u:{pw}@", 1)


def test_secrets_through_side_doors(t):
    """Canary passwords in --upstream and --controller_addr, and an engine
    key that the engine echoes in its 401: none of them appears in any log,
    HTTP answer or printed output, whatever fails."""
    canaries = ["canarypw1", "canarypw2", "canarypw3", "canarypw4", "sk-canary-key-0123456789"]
    seen = []  # every answer and output, grepped at the end

    def keep(r):
        seen.append(f"{r.status} {r.headers} {r.body!r}")
        return r

    eng = FloodEngine()
    dead_sock, dead = h.dead_port()
    try:
        c = t.controller()
        ctl_list = (f"{with_password(c.url, 'canarypw2')},"
                    f"{with_password(f'http://127.0.0.1:{dead}', 'canarypw2')}")
        p = proxy(t, with_password(eng.url, "canarypw1"), controller=ctl_list, models="flood,auth",
                  args=["--upstream_api_key_env", "ROSTER_TEST_KEY", "--heartbeat_interval", "0.2",
                        "--log_level", "debug"],
                  env={"ROSTER_TEST_KEY": canaries[4]})
        h.wait_until(lambda: h.request("GET", p.url + "/api/health").json()["registered"], 10,
                     what="registration")
        r = keep(h.request("GET", p.url + "/api/health"))
        h.check("u:***@" in r.json()["controller"], f"the controller, masked: {r.json()}")
        r = keep(post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                                  "max_tokens": 2, "pad": 10}))
        h.eq(r.status, 200)
        h.eq(eng.auth_seen[-1], "Bearer " + canaries[4], "the key still goes to the engine:")
        # (a) the engine refuses the key and echoes it: roster's own message
        r = keep(post(p, "/v1/chat/completions", {"model": "auth", "messages": MSGS}))
        h.check_error(r.status, r.body, 502, "the engine refused the key")
        h.eq(r.json()["error"]["code"], "upstream_auth")
        h.check("refused the worker's credentials (HTTP 401)" in r.json()["error"]["message"],
                f"{r.json()}")
        r = keep(post(p, "/api/worker/generate_stream", {"model": "auth", "prompt": "hi"}))
        h.check(b"credentials" in r.body, f"{r.body!r}")
        r = keep(post(p, "/api/worker/generate", {"model": "auth", "prompt": "hi"}))
        h.check(r.status >= 500, f"{r}")
        # (b) the engine down: the error names it without its password
        eng.close()
        r = keep(post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS}))
        h.check_error(r.status, r.body, 503, "the engine down")
        h.check("u:***@127.0.0.1" in r.json()["error"]["message"], f"{r.json()}")
        r = keep(post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                                  "stream": True}))
        h.check_error(r.status, r.body, 503, "the engine down (stream)")
        # the apiserver, with a password in its controller list
        a = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr",
                            with_password(c.url, "canarypw3"), "--log_level", "debug"])
        h.wait_until(lambda: h.request("GET", a.url + "/api/health").json()["controllers"][
            "reachable"], 10, what="the apiserver's table")
        r = keep(h.request("GET", a.url + "/api/health"))
        h.check("u:***@" in r.json()["controllers"]["current"], f"{r.json()}")
        keep(h.request("GET", a.url + "/metrics"))
        # the controller dies: the worker fails over to the dead one, the
        # apiserver loses its table; both log it
        c.kill()
        h.wait_until(lambda: "no controller of 2 answers" in p.logs(), 10,
                     what="the worker to notice")
        h.wait_until(lambda: "trying the next one" in a.logs(), 10,
                     what="the apiserver to notice")
        for w in (p, a):
            keep(h.request("GET", w.url + "/api/health"))
            keep(h.request("GET", w.url + "/metrics"))
        r = keep(post(a, "/v1/chat/completions", {"model": "flood", "messages": MSGS}))
        h.check(r.status >= 400)
        # printed output: --check, the CLI's errors
        for args in (["start", "worker", "--model_name", "x", "--backend", "openai",
                      "--upstream", with_password(eng.url, "canarypw1"),
                      "--controller_addr", ctl_list, "--check"],
                     ["start", "apiserver", "--controller_addr",
                      with_password(f"http://127.0.0.1:{dead}", "canarypw3"), "--check"],
                     ["model", "list", "--controller_addr",
                      with_password(f"http://127.0.0.1:{dead}", "canarypw4")],
                     ["model", "list", "--controller_addr",
                      with_password(f"http://127.0.0.1:{dead}", "canarypw4") + ","
                      + with_password(f"http://127.0.0.1:{dead}", "canarypw4")],
                     ["health", "--url",
                      with_password(f"http://127.0.0.1:{dead}", "canarypw4") + "/api/health"]):
            r = h.cli(args)
            seen.append(f"{args[:2]}: {r.returncode} {r.stdout} {r.stderr}")
            h.check("u:***@" in r.stdout + r.stderr, f"{args[:2]}: the URL is shown, masked: "
                    f"{r.stdout} {r.stderr}")
        logs = {w.name: w.logs() for w in (p, a)}
        h.check("refused the worker's credentials" in logs["proxy"])
        for canary in canaries:
            for name, text in logs.items():
                h.check(canary not in text, f"{canary} in the log of {name}:\n"
                        + "\n".join(x for x in text.splitlines() if canary in x)[:2000])
            for out in seen:
                h.check(canary not in out, f"{canary} in an answer or output: {out[:2000]}")
    finally:
        eng.close()
        dead_sock.close()


if __name__ == "__main__":
    h.main(globals())
