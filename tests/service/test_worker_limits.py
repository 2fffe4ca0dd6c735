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

The engines are small stdlib HTTP servers in this file (FloodEngine)."""
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_backends import MSGS, post, proxy  # noqa: E402

MiB = 1024 * 1024


class FloodEngine:
    """An OpenAI-compatible engine that answers any POST with `events`
    events of `size` bytes each (the request's max_tokens and "pad"
    fields), streamed as fast as the socket takes them (SSE ending with
    [DONE]) or as one JSON answer (stream false). Each event carries its
    sequence number. A request whose model is "auth" gets a 401 whose body
    echoes the Authorization header it came with, as some engines do.
    `sent` counts the bytes of the streams written so far."""

    def __init__(self):
        self.sent = 0
        self.auth_seen = []
        eng = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends at the close

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization") or ""
                eng.auth_seen.append(auth)
                if body.get("model") == "auth":
                    out = json.dumps({"error": {
                        "message": f"Incorrect API key provided: {auth[len('Bearer '):]}",
                        "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                n, size = int(body.get("max_tokens") or 1), int(body.get("pad") or 100)
                pad = b"x" * size
                if not body.get("stream"):
                    out = json.dumps({"id": "x", "object": "chat.completion", "created": 1,
                                      "model": body["model"], "choices": [{
                                          "index": 0, "finish_reason": "stop", "message": {
                                              "role": "assistant",
                                              "content": "y" * (n * size)}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for i in range(n):
                        ev = b'data: {"i":%d,"pad":"%s"}\n\n' % (i, pad)
                        self.wfile.write(ev)
                        eng.sent += len(ev)
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
        h.eq(eng.sent - sent0, sum(len(b'data: {"i":%d,"pad":""}\n\n' % i) + size for i in range(n)))
        after = rss_bytes(pid)
        print(f"    worker RSS {after / MiB:.1f} MiB after the stream")
        # the worker still serves
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS, "stream": True,
                                             "max_tokens": 3, "pad": 10})
        h.eq(r.status, 200)
        h.check(r.body.endswith(b"data: [DONE]\n\n"), f"{r.body[-100:]!r}")
        h.check(h.metric(p.url, "roster_worker_stream_pauses_total") >= 1, "pauses counted")
        h.eq(h.metric(p.url, "roster_worker_memory_used_bytes"), 0.0, "all given back:")
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
        h.eq(h.metric(p.url, "roster_worker_memory_budget_bytes"), float(budget))
        # within the budget: served
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 4, "pad": 1000})
        h.eq(r.status, 200)
        h.eq(len(r.json()["choices"][0]["message"]["content"]), 4000)
        # an answer that would be buffered past it: 503 + Retry-After before the head
        r = post(p, "/v1/chat/completions", {"model": "flood", "messages": MSGS,
                                             "max_tokens": 2, "pad": MiB})
        h.check_error(r.status, r.body, 503, "an answer past the budget")
        h.eq(r.json()["error"]["code"], "over_memory_budget")
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
        h.eq(r.json()["error"]["code"], "over_memory_budget")
        h.eq(len(eng.auth_seen), 3, "the refused request never reached the engine")
        # a stream whose client is behind by more than the budget: an error
        # event after what was sent, and no [DONE]
        s = raw_post(p.port, {"model": "flood", "messages": MSGS, "stream": True,
                              "max_tokens": 3200, "pad": 64 * 1024})
        h.wait_until(lambda: h.metric(p.url, "roster_worker_memory_refused_total") >= 3, 20,
                     what="the stream's refusal")
        data = read_all(s)
        head, _, rest = data.partition(b"\r\n\r\n")
        h.check(head.startswith(b"HTTP/1.1 200"), f"{head[:100]!r}")
        events = [e for e in dechunk(rest).split(b"\n\n") if e]
        h.check(len(events) >= 2, f"some events before the error ({len(events)})")
        h.check(events[0].startswith(b'data: {"i":0,'), f"{events[0][:40]!r}")
        last = json.loads(events[-1][len(b"data: "):])
        h.eq(last["error"]["code"], "over_memory_budget", f"{last}")
        h.check(b"[DONE]" not in events[-2], "no [DONE] before the error")
        h.eq(h.metric(p.url, "roster_worker_memory_used_bytes"), 0.0, "all given back:")
        peak = h.metric(p.url, "roster_worker_memory_peak_bytes")
        h.check(0 < peak <= budget, f"peak {peak} within the budget")
        h.eq(h.metric(p.url, "roster_worker_memory_refused_total"), 3.0)
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
        h.eq(h.metric(p.url, "roster_worker_memory_used_bytes"), 0.0)
    finally:
        eng.close()


if __name__ == "__main__":
    h.main(globals())
