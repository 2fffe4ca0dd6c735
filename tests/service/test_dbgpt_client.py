"""DB-GPT's own inference client against roster's workers.

DB-GPT's web server reaches a model worker through RemoteWorkerManager and
RemoteModelWorker (dbgpt/model/cluster/worker/remote_worker.py). This file
ports the few lines of that client which read a worker's answers, faithfully
(DB-GPT itself is not installed here, and its code is not vendored):

- generate_stream: POST /api/worker/generate_stream, the raw body split on
  b"\\0", each non-empty piece decoded as UTF-8, json.loads, then
  ModelOutput(**frame); the HTTP status is never looked at;
- generate: POST /api/worker/generate, status 200 or 201 else an exception
  carrying the body, then ModelOutput(**response.json());
- count_token: POST /api/worker/count_token with {"prompt": ...} only.

Each frame is built with both ModelOutput classes DB-GPT has shipped: the
current one (dbgpt/core/interface/llm.py: `text` or `content`, never both,
other keys filtered) and the older plain dataclass (no `content`, no extra
key allowed). A frame must be exactly what ModelOutput.to_dict() writes.
The builtin backend and the openai backend (a roster worker proxying to a
builtin one, or to an engine that fails on purpose) are both checked,
streamed and not, error frames included.
"""
import dataclasses
import http.client
import json
import os
import sys
import typing

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_backends import MisbehavingEngine, engine, proxy  # noqa: E402

# ModelOutput.to_dict(): these keys, in this order
FRAME_KEYS = ["error_code", "text", "incremental", "model_context", "finish_reason", "usage",
              "metrics"]
# ModelInferenceMetrics fields present in every DB-GPT release that has metrics
METRICS_KEYS = ["collect_index", "start_time_ms", "end_time_ms", "current_time_ms",
                "first_token_time_ms", "first_completion_time_ms", "first_completion_tokens",
                "prompt_tokens", "completion_tokens", "total_tokens", "speed_per_second",
                "current_gpu_infos", "avg_gpu_infos"]


# ---- the port of DB-GPT's client side ------------------------------------------

class ModelOutputCurrent:
    """dbgpt.core.interface.llm.ModelOutput since `content` (0.7, 0.8)."""

    def __init__(self, error_code, text=None, content=None, **kwargs):
        if text is not None and content is not None:
            raise ValueError("Cannot pass both text and content")
        elif text is not None:
            self.content = {"type": "text", "object": {"data": text, "format": "text"}}
        elif content is not None:
            self.content = content
        else:
            raise ValueError("Must pass either text or content")
        self.error_code = error_code
        self.incremental = False
        self.model_context = self.finish_reason = self.usage = self.metrics = None
        for k, v in kwargs.items():
            if k in ["incremental", "model_context", "finish_reason", "usage", "metrics"]:
                setattr(self, k, v)

    @property
    def text(self):
        return self.content["object"]["data"]


@dataclasses.dataclass
class ModelOutputOld:
    """ModelOutput before `content` existed (0.5): a plain dataclass."""
    text: str
    error_code: int
    incremental: bool = False
    model_context: typing.Optional[dict] = None
    finish_reason: typing.Optional[str] = None
    usage: typing.Optional[dict] = None
    metrics: typing.Optional[dict] = None


CLIENTS = (ModelOutputCurrent, ModelOutputOld)


def _post(w, path, params, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=timeout)
    conn.request("POST", path, json.dumps(params), {"Content-Type": "application/json"})
    return conn, conn.getresponse()


def generate_stream(w, params):
    """RemoteModelWorker.async_generate_stream: (raw frames, status). The
    status is returned for the test only; the client never reads it."""
    conn, r = _post(w, "/api/worker/generate_stream", params)
    delimiter = b"\0"
    buffer = b""
    frames = []
    try:
        while True:
            raw_chunk = r.read1(65536)
            if not raw_chunk:
                break
            buffer += raw_chunk
            while delimiter in buffer:
                chunk, buffer = buffer.split(delimiter, 1)
                if not chunk:
                    continue
                chunk = chunk.decode()
                frames.append(json.loads(chunk))
    finally:
        conn.close()
    return frames, r.status


def generate(w, params, cls):
    """RemoteModelWorker.async_generate."""
    conn, r = _post(w, "/api/worker/generate", params)
    try:
        body = r.read()
    finally:
        conn.close()
    if r.status not in [200, 201]:
        raise Exception(f"Request to /generate failed, error: {body.decode()}")
    return json.loads(body), cls(**json.loads(body))


def count_token(w, prompt):
    """RemoteModelWorker.async_count_token: the body is {"prompt": ...} only."""
    conn, r = _post(w, "/api/worker/count_token", {"prompt": prompt})
    try:
        body = r.read()
    finally:
        conn.close()
    if r.status not in [200, 201]:
        raise Exception(f"Request to /count_token failed, error: {body.decode()}")
    return json.loads(body)


def parse_stream_resp(data, skip_echo_len, has_echo_default):
    """BaseOutputParser.parse_model_stream_resp_ex (has_echo defaulted to
    True in older releases, False in newer ones)."""
    model_context = data.get("model_context")
    has_echo = has_echo_default
    if model_context and "prompt_echo_len_char" in model_context:
        prompt_echo_len_char = int(model_context.get("prompt_echo_len_char", -1))
        has_echo = bool(model_context.get("echo", False))
        if prompt_echo_len_char != -1:
            skip_echo_len = prompt_echo_len_char
    if data.get("error_code", 0) == 0:
        return data["text"][skip_echo_len:].strip() if has_echo else data["text"].strip()
    return data["text"] + f" (error_code: {data['error_code']})"


# ---- checks --------------------------------------------------------------------

def outputs(frame):
    """The frame as every client builds it; fails if one refuses it."""
    h.eq(list(frame.keys()), FRAME_KEYS, "frame keys (ModelOutput.to_dict()):")
    built = []
    for cls in CLIENTS:
        try:
            built.append(cls(**frame))
        except Exception as e:  # noqa: BLE001 - reported as the failure
            raise h.Failure(f"{cls.__name__}(**frame) raised {e!r} on {frame}") from None
    for o in built:
        h.eq((o.text, o.error_code, o.finish_reason, o.usage), (frame["text"],
             frame["error_code"], frame["finish_reason"], frame["usage"]), f"{type(o).__name__}:")
    return built


def check_success_stream(frames, usage_each_frame):
    """Cumulative text, metrics and usage of a successful stream; returns the
    last frame."""
    h.check(len(frames) >= 3, f"several frames: {frames}")
    prev = None
    for i, f in enumerate(frames):
        outputs(f)
        h.eq((f["error_code"], f["incremental"]), (0, False))
        h.eq(f["model_context"], {"prompt_echo_len_char": -1, "has_format_prompt": False,
                                  "echo": False}, "model_context:")
        h.eq(f["finish_reason"], None if i < len(frames) - 1 else f["finish_reason"])
        m = f["metrics"]
        h.eq(list(m.keys()), METRICS_KEYS, "metrics keys:")
        h.eq(m["collect_index"], i + 1, "collect_index counts the frames:")
        h.check(m["start_time_ms"] <= m["current_time_ms"] == m["end_time_ms"], f"times: {m}")
        if f["text"]:
            h.check(m["start_time_ms"] <= m["first_token_time_ms"] <= m["current_time_ms"],
                    f"first token time: {m}")
        h.eq((m["current_gpu_infos"], m["avg_gpu_infos"]), (None, None))
        u = f["usage"]
        if usage_each_frame or i == len(frames) - 1:
            h.check(isinstance(u, dict), f"usage on frame {i}: {f}")
            h.eq(sorted(u), ["completion_tokens", "prompt_tokens", "total_tokens"])
            h.check(u["prompt_tokens"] > 0, f"prompt tokens: {u}")
            h.eq(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"])
            h.eq((m["prompt_tokens"], m["completion_tokens"], m["total_tokens"]),
                 (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]), "metrics tokens:")
        else:
            h.eq((u, m["total_tokens"]), (None, None), f"usage before the engine reports it ({i}):")
        if prev is not None:
            h.check(f["text"].startswith(prev["text"]),
                    f"cumulative text: {prev['text']!r} -> {f['text']!r}")
            if usage_each_frame:
                h.check(u["completion_tokens"] >= prev["usage"]["completion_tokens"], "tokens grow")
        # DB-GPT's output parsers leave the text whole (the worker never echoes
        # the prompt), whatever skip length the caller passes
        for default in (True, False):
            h.eq(parse_stream_resp(f, 40, default), f["text"].strip(), "output parser:")
        prev = f
    return frames[-1]


def check_error_frame(f, needle):
    outputs(f)
    h.eq(f["error_code"], 1)
    h.check(needle in f["text"], f"error text lacks {needle!r}: {f['text']!r}")
    h.eq([f[k] for k in ("model_context", "finish_reason", "usage", "metrics")],
         [None, None, None, None], "an error frame's other fields, as DB-GPT writes them:")
    h.check(parse_stream_resp(f, 0, True).endswith("(error_code: 1)"), "parser shows the error")


PROMPT = {"model": "tiny", "prompt": "The worker", "temperature": 0, "max_new_tokens": 12}
MESSAGES = {"model": "tiny", "temperature": 0, "max_new_tokens": 12, "echo": True,
            "messages": [{"role": "system", "content": "You answer briefly."},
                         {"role": "human", "content": "How does a worker register?"},
                         {"role": "ai", "content": "Through a controller."},
                         {"role": "human", "content": "And then?"}]}


def test_builtin_backend(t):
    w = t.start("wrk", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1"])
    lasts = []
    for params in (PROMPT, MESSAGES):
        frames, status = generate_stream(w, params)
        h.eq(status, 200)
        last = check_success_stream(frames, usage_each_frame=True)
        lasts.append(last)
        h.eq((last["finish_reason"], last["usage"]["completion_tokens"]), ("length", 12))
        for cls in CLIENTS:
            raw, out = generate(w, params, cls)
            outputs(raw)
            h.eq((out.text, out.finish_reason, out.usage), (last["text"], "length", last["usage"]),
                 f"generate = the stream's last frame ({cls.__name__}):")
            h.eq(list(raw["metrics"].keys()), METRICS_KEYS)
    # a stop sequence ends the stream with finish_reason stop
    frames, _ = generate_stream(w, dict(PROMPT, stop=[lasts[0]["text"].split()[-1]]))
    h.eq(frames[-1]["finish_reason"], "stop")
    outputs(frames[-1])
    # the client raises on a refused generate, with the worker's reason
    for cls in CLIENTS:
        try:
            generate(w, dict(PROMPT, model="nope"), cls)
            raise h.Failure("generate of an unknown model must raise")
        except h.Failure:
            raise
        except Exception as e:  # noqa: BLE001 - the client's own exception
            h.check("not served by this worker" in str(e), f"{e}")


def test_openai_backend(t):
    e = engine(t)
    p = proxy(t, e.url + "/v1")
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    for params in (PROMPT, MESSAGES):
        # what the engine answers the chat completion the worker sends up
        msgs = ([{"role": roles[m["role"]], "content": m["content"]} for m in params["messages"]]
                if "messages" in params else [{"role": "user", "content": params["prompt"]}])
        want = h.request("POST", e.url + "/v1/chat/completions",
                         {"model": "tiny", "messages": msgs, "temperature": 0,
                          "max_tokens": 12}).json()
        frames, status = generate_stream(p, params)
        h.eq(status, 200)
        last = check_success_stream(frames, usage_each_frame=False)
        h.eq((last["text"], last["finish_reason"], last["usage"]),
             (want["choices"][0]["message"]["content"], "length", want["usage"]),
             "the engine's answer and usage:")
        for cls in CLIENTS:
            raw, out = generate(p, params, cls)
            outputs(raw)
            h.eq((out.text, out.finish_reason, out.usage), (last["text"], "length", last["usage"]))
    # the engine refuses connections: the stream is one error frame (under
    # 503, which the client does not read); generate raises with the reason
    e.kill()
    frames, status = generate_stream(p, PROMPT)
    h.eq((status, len(frames)), (503, 1), f"{frames}")
    check_error_frame(frames[0], "does not accept connections")
    for cls in CLIENTS:
        try:
            generate(p, PROMPT, cls)
            raise h.Failure("generate with the engine down must raise")
        except h.Failure:
            raise
        except Exception as ex:  # noqa: BLE001 - the client's own exception
            h.check("does not accept connections" in str(ex), f"{ex}")


def test_openai_backend_error_frames(t):
    m = MisbehavingEngine()
    try:
        p = proxy(t, m.url, models="drop,key", args=["--upstream_idle_timeout_ms", "1000"])
        # the engine breaks off mid-stream: text frames, then an error frame
        frames, status = generate_stream(p, {"model": "drop", "prompt": "hi"})
        h.eq(status, 200)
        h.check(len(frames) >= 2, f"{frames}")
        for f in frames[:-1]:
            outputs(f)
            h.eq(f["error_code"], 0)
        h.eq(frames[-2]["text"], "hello hello ")
        check_error_frame(frames[-1], "mid-stream")
        # an engine that ignores stream: an answer that is not a stream
        # gives no text and no usage: the last frame still parses, usage null
        frames, status = generate_stream(p, {"model": "key", "prompt": "hi"})
        h.eq(status, 200)
        for f in frames:
            outputs(f)
        h.eq((frames[-1]["usage"], frames[-1]["metrics"]["total_tokens"]), (None, None))
    finally:
        m.close()


def test_count_token_with_prompt_only(t):
    one = t.start("one", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                          "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1"])
    text = "How does a worker register, and with whom?"
    want = h.request("POST", one.url + "/api/worker/count_token",
                     {"model": "tiny", "prompt": text}).json()
    h.check(want > 0)
    h.eq(count_token(one, text), want, "DB-GPT's count_token (prompt only):")
    emb = t.start("emb", ["start", "worker", "--model_name", "emb", "--worker_type", "text2vec",
                          "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1"])
    h.eq(count_token(emb, "a b, c"), 3, "an embedding worker counts words:")
    # several models: the model must be named, and the answer says which
    two = t.start("two", ["start", "worker", "--model_name", "a,b", "--worker_type", "llm",
                          "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1"])
    r = h.request("POST", two.url + "/api/worker/count_token", {"prompt": text})
    err = h.check_error(r.status, r.body, 400, "count_token without a model on a two-model worker")
    h.check("'model' is required" in err["message"] and "'a', 'b'" in err["message"],
            err["message"])
    try:
        count_token(two, text)
        raise h.Failure("DB-GPT's client must raise on the 400")
    except h.Failure:
        raise
    except Exception as e:  # noqa: BLE001 - the client's own exception
        h.check("'model' is required" in str(e), f"{e}")
    h.eq(h.request("POST", two.url + "/api/worker/count_token",
                   {"model": "b", "prompt": text}).json(), want)
    # a stopped model is refused as every endpoint refuses it; bad bodies are 400
    r = h.request("POST", one.url + "/api/worker/apply", {"model": "tiny", "apply_type": "stop"})
    h.eq(r.json()["success"], True)
    r = h.request("POST", one.url + "/api/worker/count_token", {"prompt": text})
    h.eq(h.check_error(r.status, r.body, 503, "stopped")["code"], "model_stopped")
    for body in ({}, {"prompt": 3}, [], b"{bad"):
        r = h.request("POST", emb.url + "/api/worker/count_token", body)
        h.check_error(r.status, r.body, 400, f"count_token {body!r}")


if __name__ == "__main__":
    h.main(globals())
