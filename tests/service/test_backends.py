"""The worker's openai and exec backends, as real processes: a roster worker
proxying to a second roster worker (the engine) gives the same answers,
streaming included; upstream failures become clear errors; a client that
disconnects cancels the upstream transfer; the exec backend registers only
once its engine answers, restarts a killed engine and stops it on shutdown.

A few cases need an engine that misbehaves on purpose (drops a stream
half-way, hangs, checks the API key): tests/lib/stub_engine.py plays
it, over loopback."""
import json
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from stub_engine import StubEngine, chat_chunk, completion, sse  # noqa: E402
from test_worker import (check_cancelled_within_1s, open_stream, registered_on, rows, sse_events,
                         stream_text)  # noqa: E402

MSGS = [{"role": "user", "content": "How does a worker register?"}]


def engine(t, name="engine", models="tiny", worker_type="llm", args=()):
    """A builtin roster worker used as the upstream engine (no controller)."""
    return t.start(name, ["start", "worker", "--model_name", models, "--worker_type", worker_type,
                          "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1",
                          "--embed_dim", "16"] + list(args))


def proxy(t, upstream, controller="http://127.0.0.1:1", name="proxy", models="tiny",
          worker_type="llm", args=(), env=None):
    return t.start(name, ["start", "worker", "--model_name", models, "--worker_type", worker_type,
                          "--host", "127.0.0.1", "--controller_addr", controller,
                          "--backend", "openai", "--upstream", upstream] + list(args), env=env)


def post(w, path, body, **kw):
    return h.request("POST", w.url + path, body, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_openai_backend_gives_the_engines_answers(t):
    e = engine(t)
    p = proxy(t, e.url + "/v1/")  # a trailing slash is fine
    for params in [dict(temperature=0, max_tokens=25), dict(temperature=1, seed=7, max_tokens=25),
                   dict(temperature=0, max_tokens=40, stop=["the", "zz"])]:
        body = dict(model="tiny", messages=MSGS, **params)
        direct, via = post(e, "/v1/chat/completions", body), post(p, "/v1/chat/completions", body)
        h.eq((direct.status, via.status), (200, 200))
        d, v = direct.json(), via.json()
        h.eq(v["choices"], d["choices"], f"same choices ({params}):")
        h.eq(v["usage"], d["usage"])
        h.eq(v["object"], "chat.completion")
        # streaming, passed through chunk by chunk
        r = post(p, "/v1/chat/completions",
                 dict(body, stream=True, stream_options={"include_usage": True}))
        h.eq(r.status, 200)
        events, done = sse_events(r)
        h.check(done, "the proxied stream ends with [DONE]")
        h.eq(stream_text(events), d["choices"][0]["message"]["content"],
             f"streamed text through the proxy ({params}):")
        h.eq(events[-1]["usage"], d["usage"], "usage chunk:")
        h.check(len(events) >= 4, "chunk by chunk")
    # completions, stream and not
    body = {"model": "tiny", "prompt": "The controller", "temperature": 0, "max_tokens": 12}
    want = post(e, "/v1/completions", body).json()["choices"][0]["text"]
    h.eq(post(p, "/v1/completions", body).json()["choices"][0]["text"], want)
    events, done = sse_events(post(p, "/v1/completions", dict(body, stream=True)))
    h.check(done)
    h.eq(stream_text(events, chat=False), want)
    # DB-GPT's endpoints are translated to a chat completion upstream
    chat = post(e, "/v1/chat/completions",
                {"model": "tiny", "messages": MSGS, "temperature": 0, "max_tokens": 15}).json()
    text = chat["choices"][0]["message"]["content"]
    dbgpt = {"model": "tiny", "messages": [{"role": "human", "content": MSGS[0]["content"]}],
             "temperature": 0, "max_new_tokens": 15}
    g = post(p, "/api/worker/generate", dbgpt)
    h.eq(g.status, 200, f"{g}")
    h.eq((g.json()["text"], g.json()["error_code"], g.json()["finish_reason"]),
         (text, 0, "length"))
    h.eq(g.json()["usage"]["completion_tokens"], 15)
    r = post(p, "/api/worker/generate_stream", dbgpt)
    h.eq(r.status, 200)
    h.check(r.body.endswith(b"\0"), "frames end with a NUL byte")
    frames = [json.loads(f) for f in r.body.split(b"\0") if f]
    h.check(len(frames) >= 3, "several frames")
    for a, b in zip(frames, frames[1:]):
        h.check(b["text"].startswith(a["text"]), "cumulative text")
    h.eq((frames[-1]["text"], frames[-1]["finish_reason"]), (text, "length"))
    # the request id travels upstream
    r = post(p, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "max_tokens": 2},
             headers={"X-Request-Id": "trace-42"})
    h.eq(r.json()["id"], "chatcmpl-trace-42", "the engine saw the client's request id:")


def test_openai_backend_embeddings(t):
    e = engine(t, models="emb", worker_type="text2vec")
    p = proxy(t, e.url + "/v1", models="emb", worker_type="text2vec")
    texts = ["the cat sat on the mat", "日本語"]
    for fmt in ["float", "base64"]:
        body = {"model": "emb", "input": texts, "encoding_format": fmt}
        h.eq(post(p, "/v1/embeddings", body).json()["data"],
             post(e, "/v1/embeddings", body).json()["data"], f"{fmt} vectors:")
    want = post(e, "/api/worker/embeddings", {"model": "emb", "input": texts}).json()
    got = post(p, "/api/worker/embeddings", {"model": "emb", "input": texts})
    h.eq(got.status, 200, f"{got}")
    h.eq(got.json(), want, "DB-GPT's embeddings through the proxy:")
    h.eq(len(got.json()[0]), 16)
    r = post(p, "/api/worker/embeddings", {"model": "emb", "input": "not a list"})
    h.check_error(r.status, r.body, 400, "DB-GPT embeddings input must be a list")
    r = post(p, "/v1/chat/completions", {"model": "emb", "messages": MSGS})
    h.check_error(r.status, r.body, 400, "chat with an embedding model")


def test_openai_backend_errors(t):
    e = engine(t)
    p = proxy(t, e.url + "/v1")
    # the engine's 4xx on the request becomes a 400 carrying its reason
    r = post(p, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "temperature": 9})
    h.check_error(r.status, r.body, 400, "engine rejects temperature 9")
    h.check("temperature" in r.json()["error"]["message"], f"{r.json()}")
    # what the worker itself can tell
    r = post(p, "/v1/chat/completions", {"model": "nope", "messages": MSGS})
    h.check_error(r.status, r.body, 404, "unknown model")
    r = h.request("POST", p.url + "/v1/chat/completions", b"{not json")
    h.check_error(r.status, r.body, 400, "bad JSON")
    r = post(p, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "stream": "yes"})
    h.check_error(r.status, r.body, 400, "stream not a boolean")
    # a wrong upstream model name: the engine's 404 names the flags to check
    q = proxy(t, e.url + "/v1", name="wrongmodel", args=["--upstream_model", "nope"])
    r = post(q, "/v1/chat/completions", {"model": "tiny", "messages": MSGS})
    h.check_error(r.status, r.body, 502, "engine does not know the upstream model")
    h.check("--upstream_model" in r.json()["error"]["message"], f"{r.json()}")
    h.eq(h.metric(q.url, "roster_worker_upstream_errors_total"), 1.0)
    # --upstream_model renames the model on the way up
    e2 = engine(t, name="engine2", models="real-name")
    q2 = proxy(t, e2.url + "/v1", name="renamed", args=["--upstream_model", "real-name"])
    r = post(q2, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "max_tokens": 3})
    h.eq((r.status, r.json()["model"]), (200, "real-name"))
    # the engine down: 503 with Retry-After, promptly
    e.kill()
    t0 = time.monotonic()
    r = post(p, "/v1/chat/completions", {"model": "tiny", "messages": MSGS})
    h.check_error(r.status, r.body, 503, "engine down")
    h.eq(r.json()["error"]["code"], "upstream_unavailable")
    h.eq(r.header("Retry-After"), "1")
    h.check(time.monotonic() - t0 < 2, "refused at once")
    # bad flags
    for args, what in [(["--backend", "openai"], "--upstream"),
                       (["--backend", "openai", "--upstream", "ftp://x/v1"], "--upstream"),
                       (["--backend", "exec", "--upstream", "http://x/v1"], "--engine_cmd"),
                       (["--upstream", "http://x/v1"], "--backend openai or exec"),
                       (["--backend", "mystery"], "'mystery' is not one of builtin|openai|exec"),
                       (["--backend", "openai", "--upstream", "http://x/v1",
                         "--upstream_api_key_env", "ROSTER_TEST_UNSET_KEY"], "not set")]:
        r = h.cli(["start", "worker", "--model_name", "x"] + args)
        h.eq(r.returncode, 64, f"exit code for {args}:")
        h.check(what in r.stderr, f"{args}: {r.stderr!r}")


def misbehave(ex):
    """An OpenAI-compatible engine that misbehaves on purpose (by model):
    'drop' sends two chunks and closes the connection mid-stream; 'hang'
    sends the headers and then nothing; any other answers normally (the
    tests read the Authorization header each request came with)."""
    mode = ex.body["model"]
    if mode == "hang":
        ex.start_stream()
        ex.write(b"")
        time.sleep(5)
        return
    if mode == "drop":
        ex.start_stream([("Content-Length", "100000")])
        for _ in range(2):
            ex.write(sse(chat_chunk("hello ", model=mode)), flush=False)
        ex.write(b"")
        ex.handler.close_connection = True
        return
    ex.send_json(200, completion("ok", model=mode))


def MisbehavingEngine():  # noqa: N802 - an engine, as the other tests' engines
    return StubEngine(misbehave)


def test_openai_backend_upstream_failures(t):
    m = MisbehavingEngine()
    try:
        key = "sk-test-0123456789abcdef"
        env = {"ROSTER_TEST_ENGINE_KEY": key}
        args = ["--upstream_api_key_env", "ROSTER_TEST_ENGINE_KEY",
                "--upstream_idle_timeout_ms", "1000", "--log_level", "debug"]
        p = proxy(t, m.url, models="key,drop,hang", args=args, env=env)
        r = post(p, "/v1/chat/completions", {"model": "key", "messages": MSGS})
        h.eq((r.status, r.json()["choices"][0]["message"]["content"]), (200, "ok"))
        h.eq(m.requests[-1]["headers"].get("Authorization"), "Bearer " + key,
             "the key goes upstream as a bearer token:")
        # a stream that breaks half-way ends with an error event, not a silent truncation
        r = post(p, "/v1/chat/completions", {"model": "drop", "messages": MSGS, "stream": True})
        h.eq(r.status, 200)
        parts = [x for x in r.body.decode().split("\n\n") if x]
        h.eq(len(parts), 3, f"two chunks and an error event: {parts}")
        last = json.loads(parts[-1][len("data: "):])
        h.eq(last["error"]["code"], "upstream_error")
        h.check("mid-stream" in last["error"]["message"], f"{last}")
        # DB-GPT's stream gets an error frame
        r = post(p, "/api/worker/generate_stream", {"model": "drop", "prompt": "hi"})
        frames = [json.loads(f) for f in r.body.split(b"\0") if f]
        h.eq(frames[-1]["error_code"], 1, f"error frame: {frames[-1]}")
        h.eq(frames[-2]["text"], "hello hello ")
        # a stream silent beyond --upstream_idle_timeout_ms: 504
        t0 = time.monotonic()
        r = post(p, "/v1/chat/completions", {"model": "hang", "messages": MSGS, "stream": True},
                 timeout=10)
        h.check_error(r.status, r.body, 504, "an engine that hangs")
        h.check(time.monotonic() - t0 < 4, "bounded by the idle timeout (1 s), not the 5 s hang")
        h.check(key not in p.logs(), "the key never appears in the logs")
        h.eq(h.metric(p.url, "roster_worker_upstream_errors_total"), 3.0)
    finally:
        m.close()


def test_openai_backend_cancelled_and_back_pressure(t):
    e = engine(t, args=["--decode_delay_ms", "50"])
    p = proxy(t, e.url + "/v1", args=["--concurrency", "1", "--max_queue", "0"])
    s = open_stream(p.port, {"model": "tiny", "messages": MSGS, "stream": True,
                             "max_tokens": 1000})
    # at capacity: the next request is refused at once
    r = post(p, "/v1/chat/completions", {"model": "tiny", "messages": MSGS})
    h.check_error(r.status, r.body, 429, "over capacity")
    h.eq(r.header("Retry-After"), "1")
    h.eq(h.metric(e.url, "roster_worker_in_flight"), 1.0)
    s.close()
    check_cancelled_within_1s(e)
    h.eq(h.metric(p.url, "roster_worker_cancelled_total"), 1.0)
    h.eq(h.metric(p.url, "roster_worker_in_flight"), 0.0)
    r = post(p, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "max_tokens": 3})
    h.eq(r.status, 200, "the slot is free again")


def exec_worker(t, controller, engine_cmd, port, args=()):
    return t.start("exec", ["start", "worker", "--model_name", "tiny", "--host", "127.0.0.1",
                            "--controller_addr", controller, "--heartbeat_interval", "0.5",
                            "--backend", "exec", "--upstream", f"http://127.0.0.1:{port}/v1",
                            "--upstream_model", "eng", "--engine_cmd", engine_cmd,
                            "--engine_probe_interval_ms", "200"] + list(args))


def engine_cmd(port, delay=0):
    cmd = (f"{h.BIN} start worker --model_name eng --host 127.0.0.1 --port {port} "
           f"--controller_addr http://127.0.0.1:1 --log_level warn")
    return f"sleep {delay}; exec {cmd}" if delay else cmd


def health(w):
    return h.request("GET", w.url + "/api/health").json()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_exec_backend_supervises_the_engine(t):
    c = t.controller()
    port = free_port()
    x = exec_worker(t, c.url, engine_cmd(port, delay=1), port)
    # not registered, and refusing clearly, until the engine answers
    h.eq(health(x)["engine"]["state"], "down")
    r = post(x, "/v1/chat/completions", {"model": "tiny", "messages": MSGS})
    h.check_error(r.status, r.body, 503, "engine still starting")
    h.eq(r.json()["error"]["code"], "engine_unavailable")
    h.wait_until(lambda: rows(c.url, x.port).get("WorkerManager@service"), 5,
                 what="WorkerManager registration")
    h.check("tiny@llm" not in rows(c.url, x.port), "no model instance before the engine answers")
    h.wait_until(lambda: registered_on(c.url, x, ("tiny@llm",)), 10, what="registration")
    r = post(x, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "max_tokens": 5})
    h.eq((r.status, r.json()["model"]), (200, "eng"))
    pid = health(x)["engine"]["pid"]
    h.check(pid > 0 and pid_alive(pid))
    # kill the engine: the instance turns unhealthy, then comes back
    os.kill(pid, signal.SIGKILL)
    h.wait_until(lambda: rows(c.url, x.port).get("tiny@llm") is False, 3,
                 what="the instance to turn unhealthy")
    h.wait_until(lambda: registered_on(c.url, x, ("tiny@llm",)), 15,
                 what="the instance to come back")
    hl = health(x)
    h.eq((hl["engine"]["state"], hl["engine"]["restarts"]), ("up", 1))
    h.check(hl["engine"]["pid"] != pid)
    r = post(x, "/v1/chat/completions", {"model": "tiny", "messages": MSGS, "max_tokens": 5})
    h.eq(r.status, 200, "served by the restarted engine")
    h.check("exited: killed by signal 9" in x.logs(), "the log says what happened")
    # SIGTERM: the worker deregisters, stops its engine, exits 0
    pid = hl["engine"]["pid"]
    h.eq(x.stop(), 0)
    h.check(not pid_alive(pid), "the engine is stopped with the worker")
    h.eq(rows(c.url, x.port).get("tiny@llm"), False)


def test_exec_backend_engine_that_never_starts(t):
    c = t.controller()
    port = free_port()
    x = exec_worker(t, c.url, "echo engine failing >&2; exit 3", port)
    h.wait_until(lambda: health(x)["engine"]["restarts"] >= 2, 5, what="restarts")
    time.sleep(1)
    n = health(x)["engine"]["restarts"]
    h.check(n <= 4, f"restarts back off (got {n} in ~2.5 s)")
    h.check("tiny@llm" not in rows(c.url, x.port), "never registered")
    h.check("exited: exit status 3" in x.logs())
    h.eq(x.stop(), 0)


def test_exec_engine_dies_with_a_killed_worker(t):
    port = free_port()
    x = exec_worker(t, "http://127.0.0.1:1", engine_cmd(port), port)
    h.wait_until(lambda: health(x)["engine"]["state"] == "up", 10, what="the engine")
    pid = health(x)["engine"]["pid"]
    x.kill()
    h.wait_until(lambda: not pid_alive(pid), 5, what="the engine to die with its worker")


if __name__ == "__main__":
    h.main(globals())
