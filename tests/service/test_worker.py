"""Workers as real processes: registration through any controller of a list,
failover when the controller in use is killed, start-up with every
controller down, deregistration on SIGTERM, and the builtin embedder and language model over
OpenAI's and DB-GPT's endpoints."""
import base64
import json
import math
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

DIM = 32


def worker(t, controllers, name="wrk", models="emb", args=(), wait=True):
    argv = ["start", "worker", "--model_name", models, "--worker_type", "text2vec",
            "--host", "127.0.0.1", "--controller_addr", ",".join(controllers),
            "--embed_dim", str(DIM)] + list(args)
    return t.start(name, argv, wait=wait)


def health(w):
    r = h.request("GET", w.url + "/api/health")
    h.eq(r.status, 200)
    return r.json()


def rows(ctl_url, port):
    """{model_name: healthy} of the instances at 127.0.0.1:port."""
    return {i["model_name"]: i["healthy"] for i in h.list_models(ctl_url)
            if i["host"] == "127.0.0.1" and i["port"] == port}


def registered_on(ctl_url, w, models=("emb@text2vec",)):
    r = rows(ctl_url, w.port)
    return all(r.get(m) is True for m in list(models) + ["WorkerManager@service"])


def embed(w, inp, **extra):
    r = h.request("POST", w.url + "/v1/embeddings", dict(model="emb", input=inp, **extra))
    h.eq(r.status, 200, f"{r}")
    return r.json()


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def test_embeddings(t):
    c = t.controller()
    w = worker(t, [c.url], models="emb, emb2")
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quantum chromodynamics lecture",
             "", "日本語のテキスト"]
    doc = embed(w, texts)
    h.eq(doc["object"], "list")
    h.eq(doc["model"], "emb")
    h.eq([d["index"] for d in doc["data"]], list(range(len(texts))))
    vecs = [d["embedding"] for d in doc["data"]]
    for v in vecs:
        h.eq(len(v), DIM, "dimension:")
        h.check(abs(norm(v) - 1) < 1e-5, f"unit norm, got {norm(v)}")
    h.check(cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.3,
            "texts sharing words are closer than unrelated ones")
    h.eq(doc["usage"]["prompt_tokens"], doc["usage"]["total_tokens"])
    h.check(doc["usage"]["prompt_tokens"] >= 12, f"usage: {doc['usage']}")
    # deterministic: the same text, another request, another process
    h.eq(embed(w, texts[0])["data"][0]["embedding"], vecs[0], "same text, same vector:")
    w2 = worker(t, [c.url], name="wrk2")
    h.eq(embed(w2, texts[0])["data"][0]["embedding"], vecs[0], "same vector in another process:")
    # base64: little-endian float32, the same numbers
    b = embed(w, texts[0], encoding_format="base64")["data"][0]["embedding"]
    raw = base64.b64decode(b)
    h.eq(len(raw), 4 * DIM)
    h.check(all(abs(x - y) < 1e-6 for x, y in zip(struct.unpack(f"<{DIM}f", raw), vecs[0])),
            "base64 decodes to the float vector")
    # dimensions: the leading components, renormalised
    v8 = embed(w, texts[0], dimensions=8)["data"][0]["embedding"]
    h.eq(len(v8), 8)
    h.check(abs(norm(v8) - 1) < 1e-5)
    h.check(cos(v8, vecs[0][:8]) > 0.9999, "dimensions keeps the direction of the prefix")
    # DB-GPT's endpoint: a bare list of vectors
    r = h.request("POST", w.url + "/api/worker/embeddings", {"model": "emb2", "input": texts[:2]})
    h.eq(r.status, 200)
    h.eq(r.json(), vecs[:2], "DB-GPT embeddings equal the OpenAI ones:")
    r = h.request("POST", w.url + "/api/worker/count_token", {"model": "emb", "prompt": "a b, c"})
    h.eq((r.status, r.json()), (200, 3))
    r = h.request("POST", w.url + "/api/worker/model_metadata", {"model": "emb"})
    h.eq(r.status, 200)
    h.eq((r.json()["model"], r.json()["metadata"]["dimension"]), ("emb", DIM))
    r = h.request("GET", w.url + "/v1/models")
    h.eq([m["id"] for m in r.json()["data"]], ["emb", "emb2"])
    h.eq(h.metric(w.url, "roster_worker_requests_total"), 7, "inference requests counted:")


def test_bad_input(t):
    c = t.controller()
    w = worker(t, [c.url], args=["--max_body_bytes", "4096"])
    url = w.url + "/v1/embeddings"
    cases = [
        ("malformed JSON", b'{"model": "emb", "input": ', 400),
        ("not an object", b'["emb"]', 400),
        ("missing model", {"input": "x"}, 400),
        ("model not a string", {"model": 5, "input": "x"}, 400),
        ("unknown model", {"model": "nope", "input": "x"}, 404),
        ("missing input", {"model": "emb"}, 400),
        ("token arrays", {"model": "emb", "input": [1, 2, 3]}, 400),
        ("empty input list", {"model": "emb", "input": []}, 400),
        ("input object", {"model": "emb", "input": {"a": 1}}, 400),
        ("bad encoding_format", {"model": "emb", "input": "x", "encoding_format": "hex"}, 400),
        ("dimensions 0", {"model": "emb", "input": "x", "dimensions": 0}, 400),
        ("dimensions too large", {"model": "emb", "input": "x", "dimensions": DIM + 1}, 400),
        ("dimensions fractional", {"model": "emb", "input": "x", "dimensions": 1.5}, 400),
        ("too many inputs", {"model": "emb", "input": ["a"] * 2049}, (400, 413)),
        ("body too large", {"model": "emb", "input": "x" * 5000}, 413),
        ("deep nesting", b'{"model":"emb","input":' + b"[" * 40 + b"]" * 40 + b"}", 400),
    ]
    for label, body, status in cases:
        r = h.request("POST", url, body)
        h.check_error(r.status, r.body, status, label, r.header("Content-Type"))
    r = h.request("POST", w.url + "/api/worker/count_token", {"model": "emb"})
    h.check_error(r.status, r.body, 400, "count_token without prompt")
    r = h.request("GET", w.url + "/v1/nothing")
    h.check_error(r.status, r.body, 404, "unknown path")
    # the worker still serves after all that
    h.eq(len(embed(w, "ok")["data"][0]["embedding"]), DIM)


def test_registers_through_second_when_first_is_down(t):
    c = t.controller()
    sock, port = h.dead_port()
    try:
        for i in range(3):  # the starting controller is random: try a few starts
            w = worker(t, [f"http://127.0.0.1:{port}", c.url], name=f"wrk{i}",
                       args=["--heartbeat_interval", "1", "--control_timeout_ms", "500"])
            h.wait_until(lambda: registered_on(c.url, w), 5,
                         what="registration through the live controller")
            h.eq(health(w)["controller"], c.url)
            h.check(health(w)["registered"] is True)
            h.eq(w.stop(), 0)
    finally:
        sock.close()


def test_failover_keeps_instance_healthy(t):
    db = t.mysql_database()
    ctls = [t.controller(f"ctl{i}", db=db) for i in range(2)]
    w = worker(t, [c.url for c in ctls], args=["--heartbeat_interval", "0.5",
                                               "--control_timeout_ms", "500"])
    for c in ctls:
        h.wait_until(lambda c=c: registered_on(c.url, w), 5, what=f"registration on {c.name}")
    used = health(w)["controller"]
    victim = next(c for c in ctls if c.url == used)
    survivor = next(c for c in ctls if c.url != used)
    victim.kill()
    t_kill = time.monotonic()
    # the lease is 1.5 s: watch for three of them that it never lapses
    moved = None
    while time.monotonic() - t_kill < 4.5:
        h.check(registered_on(survivor.url, w),
                f"instance unhealthy on {survivor.name} {time.monotonic() - t_kill:.2f}s after "
                f"killing {victim.name}: {rows(survivor.url, w.port)}")
        if moved is None and health(w)["controller"] == survivor.url:
            moved = time.monotonic() - t_kill
        time.sleep(0.05)
    h.check(moved is not None and moved < 0.5 + 0.5 + 0.5,
            f"heartbeats moved to {survivor.name} after {moved}s (interval 0.5 s, timeout 0.5 s)")


def test_starts_with_every_controller_down(t):
    sock, port = h.dead_port()
    sock.close()  # nothing listens there until the controller below starts
    w = worker(t, [f"http://127.0.0.1:{port}"], args=["--heartbeat_interval", "1"])
    time.sleep(1.0)
    h.check(w.alive(), "the worker keeps running while no controller answers")
    hl = health(w)
    h.eq((hl["registered"], hl["controller"]), (False, None))
    h.eq(len(embed(w, "served meanwhile")["data"][0]["embedding"]), DIM)
    port_file = os.path.join(t.tmp, "late.port")
    c = h.Proc(t, "late", ["start", "controller", "--host", "127.0.0.1", "--port", str(port),
                           "--port_file", port_file, "--registry_db_name", t.sqlite_path],
               port_file=port_file)
    t.procs.append(c)
    c.wait_port()
    t_up = time.monotonic()
    h.wait_until(lambda: registered_on(c.url, w), 5, what="registration once a controller is up")
    # backoff is capped at the heartbeat interval (1 s) plus jitter
    h.check(time.monotonic() - t_up < 2.5, "registered within the capped backoff")


def test_sigterm_deregisters(t):
    c = t.controller()
    w = worker(t, [c.url], models="emb,emb2", args=["--heartbeat_interval", "0.5"])
    h.wait_until(lambda: registered_on(c.url, w, ("emb@text2vec", "emb2@text2vec")), 5,
                 what="registration")
    h.eq(w.stop(), 0, "exit code after SIGTERM:")
    h.eq(rows(c.url, w.port), {"emb@text2vec": False, "emb2@text2vec": False,
                               "WorkerManager@service": False}, "rows after SIGTERM:")
    h.eq([i for i in h.list_models(c.url, healthy_only="true") if i["port"] == w.port], [])
    h.check("deregistered emb@text2vec" in w.logs())


def chat(w, **body):
    body.setdefault("model", "tiny")
    body.setdefault("messages", [{"role": "user", "content": "How does a worker register?"}])
    r = h.request("POST", w.url + "/v1/chat/completions", body)
    h.eq(r.status, 200, f"{r}")
    return r.json()


def test_builtin_language_model(t):
    c = t.controller()
    w = t.start("llm", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", c.url])
    h.wait_until(lambda: registered_on(c.url, w, ("tiny@llm",)), 5, what="registration")
    d = chat(w, temperature=0, max_tokens=20)
    h.eq((d["object"], d["model"], d["choices"][0]["message"]["role"]),
         ("chat.completion", "tiny", "assistant"))
    h.check(d["id"].startswith("chatcmpl-"))
    text = d["choices"][0]["message"]["content"]
    h.check(len(text.split()) >= 5, f"some text: {text!r}")
    u = d["usage"]
    h.eq((u["completion_tokens"], d["choices"][0]["finish_reason"]), (20, "length"),
         "max_tokens is honoured:")
    h.eq(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"])
    # temperature 0 is deterministic whatever the seed
    h.eq(chat(w, temperature=0, max_tokens=20, seed=99)["choices"][0]["message"]["content"], text)
    # a seed makes sampling repeatable
    a = chat(w, temperature=1, seed=1234, max_tokens=30)["choices"][0]["message"]["content"]
    b = chat(w, temperature=1, seed=1234, max_tokens=30)["choices"][0]["message"]["content"]
    h.eq(a, b, "same seed, same text:")
    seen = {chat(w, temperature=1.5, seed=s, max_tokens=30)["choices"][0]["message"]["content"]
            for s in range(8)}
    h.check(len(seen) > 1, "different seeds sample differently")
    # a stop sequence ends the text before it
    words = text.split()
    stop = words[len(words) // 2]
    d = chat(w, temperature=0, max_tokens=20, stop=[stop, "zzz-never"])
    got = d["choices"][0]["message"]["content"]
    h.eq((got, d["choices"][0]["finish_reason"]), (text[:text.index(stop)], "stop"),
         f"stop {stop!r}:")
    # completions and DB-GPT's generate use the same model
    r = h.request("POST", w.url + "/v1/completions",
                  {"model": "tiny", "prompt": "The controller", "temperature": 0, "max_tokens": 12})
    h.eq(r.status, 200)
    h.eq(r.json()["object"], "text_completion")
    comp = r.json()["choices"][0]["text"]
    r = h.request("POST", w.url + "/api/worker/generate",
                  {"model": "tiny", "prompt": "The controller", "temperature": 0,
                   "max_new_tokens": 12})
    h.eq(r.status, 200)
    g = r.json()
    h.eq((g["text"], g["error_code"], "content" in g), (comp, 0, False))
    r = h.request("POST", w.url + "/api/worker/model_metadata", {"model": "tiny"})
    h.check(r.json()["chat_model"] is True)
    # bad requests
    url = w.url + "/v1/chat/completions"
    msgs = [{"role": "user", "content": "hi"}]
    for label, body in [
        ("temperature too high", {"model": "tiny", "messages": msgs, "temperature": 3}),
        ("max_tokens 0", {"model": "tiny", "messages": msgs, "max_tokens": 0}),
        ("max_tokens fractional", {"model": "tiny", "messages": msgs, "max_tokens": 1.5}),
        ("top_p 0", {"model": "tiny", "messages": msgs, "top_p": 0}),
        ("n 2", {"model": "tiny", "messages": msgs, "n": 2}),
        ("stream not a bool", {"model": "tiny", "messages": msgs, "stream": "yes"}),
        ("stream_options not an object", {"model": "tiny", "messages": msgs, "stream": True,
                                          "stream_options": 5}),
        ("no messages", {"model": "tiny"}),
        ("empty messages", {"model": "tiny", "messages": []}),
        ("message without role", {"model": "tiny", "messages": [{"content": "x"}]}),
        ("content a number", {"model": "tiny", "messages": [{"role": "user", "content": 5}]}),
        ("five stops", {"model": "tiny", "messages": msgs, "stop": ["a", "b", "c", "d", "e"]}),
        ("empty stop", {"model": "tiny", "messages": msgs, "stop": ""}),
        ("unknown model", {"model": "nope", "messages": msgs}),
    ]:
        r = h.request("POST", url, body)
        h.check_error(r.status, r.body, 404 if label == "unknown model" else 400, label)
    r = h.request("POST", w.url + "/v1/embeddings", {"model": "tiny", "input": "x"})
    h.check_error(r.status, r.body, 400, "embeddings from a language model")
    e = worker(t, [c.url])
    r = h.request("POST", e.url + "/v1/chat/completions", {"model": "emb", "messages": msgs})
    h.check_error(r.status, r.body, 400, "chat with an embedding model")


def sse_events(r):
    """The JSON payloads of an SSE body, and whether it ended with [DONE]."""
    h.check(r.header("Content-Type").startswith("text/event-stream"), "SSE content type")
    parts = [p for p in r.body.decode().split("\n\n") if p]
    h.check(all(p.startswith("data: ") for p in parts), f"SSE framing: {parts[:3]}")
    payloads = [p[len("data: "):] for p in parts]
    done = payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads if p != "[DONE]"], done


def stream_text(events, chat=True):
    if chat:
        return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    return "".join(e["choices"][0]["text"] for e in events if e["choices"])


def test_streaming(t):
    w = t.start("llm", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1"])
    msgs = [{"role": "user", "content": "What does the registrar do?"}]
    for params in [dict(temperature=0, max_tokens=25), dict(temperature=1, seed=42, max_tokens=25),
                   dict(temperature=0, max_tokens=40, stop=["the", "zz"])]:
        full = chat(w, messages=msgs, **params)
        r = h.request("POST", w.url + "/v1/chat/completions",
                      dict(model="tiny", messages=msgs, stream=True,
                           stream_options={"include_usage": True}, **params))
        h.eq(r.status, 200)
        h.eq(r.header("Transfer-Encoding"), "chunked")
        events, done = sse_events(r)
        h.check(done, "the stream ends with data: [DONE]")
        h.eq(events[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        h.check(all(e["object"] == "chat.completion.chunk" and e["id"] == events[0]["id"]
                    for e in events), "one id, chunk objects")
        h.eq(stream_text(events), full["choices"][0]["message"]["content"],
             f"streamed text equals the whole answer ({params}):")
        h.eq(events[-2]["choices"][0]["finish_reason"], full["choices"][0]["finish_reason"])
        h.eq(events[-1]["choices"], [])
        h.eq(events[-1]["usage"], full["usage"], "the usage chunk:")
        h.check(len(events) >= 4, "token by token")
    # an HTTP/1.0 client gets no chunked encoding: the stream ends with the connection
    body = json.dumps({"model": "tiny", "messages": msgs, "stream": True, "max_tokens": 5,
                       "temperature": 0}).encode()
    raw = h.raw(w.port, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    head, _, payload = raw.partition(b"\r\n\r\n")
    h.check(head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower(), f"{head!r}")
    h.check(payload.endswith(b"data: [DONE]\n\n"), f"HTTP/1.0 stream body: {payload[-80:]!r}")
    # completions
    full = h.request("POST", w.url + "/v1/completions",
                     {"model": "tiny", "prompt": "The worker", "temperature": 0, "max_tokens": 15})
    r = h.request("POST", w.url + "/v1/completions",
                  {"model": "tiny", "prompt": "The worker", "temperature": 0, "max_tokens": 15,
                   "stream": True})
    events, done = sse_events(r)
    h.check(done)
    h.eq(stream_text(events, chat=False), full.json()["choices"][0]["text"])
    # DB-GPT: NUL-terminated JSON frames with cumulative text
    body = {"model": "tiny", "prompt": "The worker", "temperature": 0, "max_new_tokens": 15}
    whole = h.request("POST", w.url + "/api/worker/generate", body).json()["text"]
    r = h.request("POST", w.url + "/api/worker/generate_stream", body)
    h.eq(r.status, 200)
    h.check(r.body.endswith(b"\0"), "every frame ends with a NUL byte")
    frames = [json.loads(f) for f in r.body.split(b"\0") if f]
    h.check(len(frames) >= 3, "several frames")
    for a, b in zip(frames, frames[1:]):
        h.check(b["text"].startswith(a["text"]), f"cumulative: {a['text']!r} -> {b['text']!r}")
    h.eq((frames[-1]["text"], frames[-1]["finish_reason"], frames[-1]["error_code"]),
         (whole, "length", 0))


def open_stream(port, body, headers=None):
    """A raw connection with a streamed chat request under way (three SSE
    events read), for closing it mid-stream."""
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
              b"application/json\r\n%sContent-Length: %d\r\n\r\n" % (extra, len(data)) + data)
    got = b""
    while got.count(b"data: ") < 3:
        chunk = s.recv(65536)
        h.check(chunk, f"the stream ended early: {got[-300:]!r}")
        got += chunk
    return s


def check_cancelled_within_1s(w):
    """Worker w counts one cancelled request within 1 s of the client leaving."""
    t0 = time.monotonic()
    h.wait_until(lambda: h.metric(w.url, "roster_worker_cancelled_total") == 1.0, 1.0,
                 interval=0.02, what=f"{w.name} to see the cancellation")
    h.check(time.monotonic() - t0 < 1.0, "cancelled within 1 s")


def test_stream_cancelled_when_client_disconnects(t):
    w = t.start("llm", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1",
                        "--decode_delay_ms", "50"])
    s = open_stream(w.port, {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                             "stream": True, "max_tokens": 1000})
    h.eq(h.metric(w.url, "roster_worker_in_flight"), 1.0)
    s.close()
    check_cancelled_within_1s(w)
    h.eq(h.metric(w.url, "roster_worker_in_flight"), 0.0, "nothing left in flight:")


def test_sigterm_finishes_streams(t):
    c = t.controller()
    w = t.start("llm", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", c.url,
                        "--heartbeat_interval", "0.5", "--decode_delay_ms", "20"])
    h.wait_until(lambda: registered_on(c.url, w, ("tiny@llm",)), 5, what="registration")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 60, "temperature": 0}
    bg = h.Background(lambda: h.request("POST", w.url + "/v1/chat/completions", body,
                                        timeout=20))
    h.wait_until(lambda: h.metric(w.url, "roster_worker_in_flight") == 1.0, 5,
                 what="the stream to start")
    w.signal(signal.SIGTERM)
    h.wait_until(lambda: [i for i in h.list_models(c.url, healthy_only="true")
                          if i["port"] == w.port] == [], 2,
                 what="the instance to leave the routable set")
    r = bg.result(20)
    events, done = sse_events(r)
    h.check(done, "the stream in flight at SIGTERM finished")
    h.eq(events[-1]["choices"][0]["finish_reason"], "length")
    h.eq(w.wait_exit(15), 0, "exit code:")


def test_back_pressure(t):
    c = t.controller()
    w = t.start("llm", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", c.url,
                        "--heartbeat_interval", "0.5", "--decode_delay_ms", "20",
                        "--concurrency", "2", "--max_queue", "1"])
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "max_tokens": 50, "temperature": 0}
    bgs = [h.Background(lambda: h.request("POST", w.url + "/v1/chat/completions", body,
                                          timeout=20)) for _ in range(3)]
    h.wait_until(lambda: (h.metric(w.url, "roster_worker_in_flight"),
                          h.metric(w.url, "roster_worker_queued")) == (2.0, 1.0), 5,
                 what="two running and one queued")
    t0 = time.monotonic()
    r = h.request("POST", w.url + "/v1/chat/completions", dict(body, stream=False))
    h.check(time.monotonic() - t0 < 0.5, "the refusal is immediate")
    err = h.check_error(r.status, r.body, 429, "over capacity", r.header("Content-Type"))
    h.eq((err["type"], err["code"], r.header("Retry-After")),
         ("rate_limit_exceeded", "model_at_capacity", "1"))
    # the heartbeats carry the load report to the registry
    h.wait_until(lambda: h.find(h.list_models(c.url, view="full"), model="tiny@llm",
                                port=w.port)["load"] == {"in_flight": 2, "queue_length": 1,
                                                         "capacity": 2}, 3,
                 what="the load report in view=full")
    for bg in bgs:
        events, done = sse_events(bg.result(20))
        h.check(done and events[-1]["choices"][0]["finish_reason"] == "length",
                "every admitted request completes, the queued one too")
    h.eq(h.metric(w.url, "roster_worker_rejected_total"), 1.0)
    h.wait_until(lambda: h.metric(w.url, "roster_worker_in_flight") == 0.0, 2, what="idle")


def test_queue_wait_is_bounded(t):
    w = t.start("llm", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1",
                        "--decode_delay_ms", "50", "--concurrency", "1",
                        "--queue_timeout_ms", "300"])
    body = {"model": "tiny", "prompt": "The worker", "max_tokens": 40, "temperature": 0}
    bg = h.Background(lambda: h.request("POST", w.url + "/v1/completions", body, timeout=20))
    h.wait_until(lambda: h.metric(w.url, "roster_worker_in_flight") == 1.0, 5, what="busy")
    t0 = time.monotonic()
    r = h.request("POST", w.url + "/v1/completions", body)
    waited = time.monotonic() - t0
    err = h.check_error(r.status, r.body, 503, "queue timeout")
    h.eq((err["code"], r.header("Retry-After")), ("queue_timeout", "1"))
    h.check(0.25 <= waited < 1.5, f"503 after the queue timeout (0.3 s), got {waited:.2f}s")
    h.eq(bg.result(20).status, 200, "the running request is unaffected:")


def test_apply(t):
    secret = "s3cr3t-apply"
    c = t.controller()
    w = t.start("llm", ["start", "worker", "--model_name", "a,b", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", c.url,
                        "--heartbeat_interval", "0.5"], env={"ROSTER_CLUSTER_SECRET": secret})
    h.wait_until(lambda: registered_on(c.url, w, ("a@llm", "b@llm")), 5, what="registration")
    url = w.url + "/api/worker/apply"
    good = {"X-Roster-Secret": secret}

    def apply(body, headers=good):
        r = h.request("POST", url, body, headers=headers)
        return r

    for hdrs in ({}, {"X-Roster-Secret": "wrong"}, {"Authorization": "Bearer nope"}):
        r = apply({"model": "a", "apply_type": "stop"}, hdrs)
        h.check_error(r.status, r.body, 401, f"apply with {hdrs}")
    h.eq(rows(c.url, w.port)["a@llm"], True, "a rejected apply changes nothing:")
    r = apply({"model": "a", "apply_type": "stop", "worker_type": "llm", "params": {}})
    h.eq(r.status, 200)
    doc = r.json()
    h.eq((sorted(doc), doc["success"]), (["message", "success", "timecost"], True))
    h.wait_until(lambda: rows(c.url, w.port).get("a@llm") is False, 2,
                 what="the stopped model to leave the registry's healthy set")
    h.eq(rows(c.url, w.port)["b@llm"], True, "the other model keeps serving:")
    msgs = [{"role": "user", "content": "hi"}]
    r = h.request("POST", w.url + "/v1/chat/completions", {"model": "a", "messages": msgs})
    err = h.check_error(r.status, r.body, 503, "a stopped model")
    h.eq(err["code"], "model_stopped")
    time.sleep(1.2)  # two heartbeat periods: a stopped model is not heartbeated back
    h.eq(rows(c.url, w.port)["a@llm"], False, "still stopped after heartbeats:")
    h.eq(chat(w, model="b", max_tokens=3)["object"], "chat.completion")
    h.eq(apply({"model": "a", "apply_type": "start"}, {"Authorization": "Bearer " + secret})
         .json()["success"], True)
    h.wait_until(lambda: rows(c.url, w.port).get("a@llm") is True, 2, what="a back")
    h.eq(chat(w, model="a", max_tokens=3)["object"], "chat.completion")
    h.eq(apply({"model": "b", "apply_type": "update_params", "params": {"weight": 3}})
         .json()["success"], True)
    h.wait_until(lambda: h.find(h.list_models(c.url), model="b@llm", port=w.port)["weight"] == 3.0,
                 2, what="the new weight in the registry")
    for body, what in [({"model": "zz", "apply_type": "stop"}, "unknown model"),
                       ({"model": "a", "apply_type": "explode"}, "unknown apply_type"),
                       ({"model": "a", "apply_type": "stop", "worker_type": "text2vec"},
                        "wrong worker_type"),
                       ({"model": "a", "apply_type": "update_params", "params": {"weight": -1}},
                        "bad weight")]:
        r = apply(body)
        h.eq((r.status, r.json()["success"]), (200, False), f"{what}:")
    r = h.request("POST", url, b"{not json", headers=good)
    h.check_error(r.status, r.body, 400, "bad JSON")
    h.eq(rows(c.url, w.port)["a@llm"], True, "failed applies change nothing:")


def test_cli(t):
    r = h.cli(["start", "worker", "--help"])
    h.eq(r.returncode, 0)
    for flag in ("--model_name", "--controller_addr", "--worker_register_host",
                 "--heartbeat_interval", "--concurrency", "--embed_dim", "--upstream",
                 "--engine_cmd", "--upstream_api_key_env"):
        h.check(flag in r.stdout, f"{flag} in --help")
    for args, needle in [
        ([], "--model_name is required"),
        (["--model_name", "m", "--worker_type", "chat"], "--worker_type"),
        (["--model_name", "m", "--worker_type", "text2vec", "--backend", "openai"],
         "needs --upstream"),
        (["--model_name", "a@b", "--worker_type", "text2vec"], "no '@'"),
        (["--model_name", "m", "--worker_type", "text2vec", "--controller_addr", "ftp://x",
          "--port", "0"], "not an http"),
    ]:
        r = h.cli(["start", "worker"] + args, timeout=10)
        h.eq(r.returncode, 64, f"exit code of {args}: {r.stderr}")
        h.check(needle in r.stderr, f"{args}: stderr {r.stderr!r} lacks {needle!r}")


if __name__ == "__main__":
    h.main(globals())
