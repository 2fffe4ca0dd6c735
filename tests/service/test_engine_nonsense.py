"""An engine behind `--backend openai` that answers nonsense with a 200
(docs/api.md: 502 `upstream_bad_response`), as real processes over
loopback:

- a plain answer whose body is not a JSON object (random bytes, an array,
  text) is a 502 upstream_bad_response in OpenAI's error shape, never a 200,
  and the engine's bytes are not passed through (at most a short escaped
  excerpt in the message); a stream request the engine answered with
  application/json likewise; a valid JSON answer to a stream request still
  passes;
- a stream whose data lines are not JSON (or not UTF-8), including a last
  event without its blank line, ends after the good events with an SSE
  error event (code upstream_bad_response) and no [DONE];
- DB-GPT's generate_stream over the same engine ends with an error frame.

The engine is tests/lib/stub_engine.py answering as nonsense() says."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from stub_engine import StubEngine, chat_chunk, completion, sse  # noqa: E402
from test_backends import MSGS, post, proxy  # noqa: E402

GARBAGE = b"\x00\xff\xfeGARBAGE-MARK<script>\n\r\x85 \xe2\x80\xa8" + bytes(range(256)) * 4


def chunk(text):
    return sse(chat_chunk(text))


COMPLETION = json.dumps(completion("fine")).encode()

# model -> (content type, body); "sse:" models stream these events
PLAIN = {
    "garbage": ("application/json", b'{"choices": [{"message": ' + GARBAGE),
    "array": ("application/json", b"[1, 2, 3]"),
    "text": ("text/plain", b"GARBAGE-MARK: the engine is confused"),
    "empty": ("application/json", b""),
    "json_for_stream": ("application/json", COMPLETION),
}
STREAMS = {
    "sse_not_json": [chunk("hello "), b"data: {GARBAGE-MARK is not json\n\n", chunk("more "),
                     b"data: [DONE]\n\n"],
    "sse_binary": [chunk("hello "), b"data: " + GARBAGE.replace(b"\n", b" ").replace(b"\r", b" ")
                   + b"\n\n", b"data: [DONE]\n\n"],
    "sse_latin1": [chunk("hello "), b'data: {"choices":"GARBAGE-MARK \xe9t\xe9"}\n\n',
                   b"data: [DONE]\n\n"],
    "sse_unended": [chunk("hello "), b"data: GARBAGE-MARK unended"],
    "sse_ok_multiline": [chunk("hello "), b'data: {"choices":\ndata: []}\n\n', b"data: [DONE]\n\n"],
}

MODELS = ",".join(list(PLAIN) + list(STREAMS))  # the worker serves at most 16

# event data that is not one JSON object, and data that is (chosen by the
# request's "user" field, which the worker passes through)
BAD_JSON = [b'{"a":1,}', b'{"a" 1}', b'{"a":01}', b'{"a":tru}', b'{"a":"x"} extra', b'{"a":[1,]}',
            b'{"a":-}', b'{"a":1.}', b'{"a":1e}', b'{"a":"\\q"}', b'{"a":"x\tb"}', b'{a:1}',
            b'{"a":"unterminated}', b'{"a":1', b'[{"a":1}]', b'"str"', b'42', b'null', b'{}}',
            b'{"a":"\\u0000"}', b"{'a':1}", b'{"a":NaN}', b'\xef\xbb\xbf{"a":1}']
GOOD_JSON = [b'{}', b' { "a" : [ ] , "b" : { } } ', b'{"n":[-0,1.5,-2e10,3E+2,4e-1,0.25]}',
             b'{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00","t":true,"f":false,"z":null}',
             b'{"deep":' + b"[" * 30 + b"{}" + b"]" * 30 + b"}", '{"u":"\u00e9\u65e5"}'.encode()]
for i, bad in enumerate(BAD_JSON):
    STREAMS[f"bad{i}"] = [chunk("hello "), b"data: " + bad + b"\n\n", b"data: [DONE]\n\n"]
    PLAIN[f"plainbad{i}"] = ("application/json", bad)
STREAMS["good_mix"] = [b"data: " + g + b"\n\n" for g in GOOD_JSON] + [b"data: [DONE]\n\n"]
PLAIN.update({f"plaingood{i}": ("application/json", g) for i, g in enumerate(GOOD_JSON)})


def nonsense(ex):
    """Answers the model (or the request's "user" field) names: a PLAIN
    body or a STREAMS stream, each status 200."""
    model = ex.body.get("user") or ex.body["model"]
    if model in PLAIN:
        ex.send_body(200, *PLAIN[model])
        return
    ex.start_stream()
    for ev in STREAMS[model]:
        ex.write(ev)


def NonsenseEngine():  # noqa: N802 - an engine, as the other tests' engines
    return StubEngine(nonsense, protocol="HTTP/1.0")  # the body ends at the close


def check_not_passed(r, what):
    h.check(b"GARBAGE-MARK" not in r.body or len(r.body) < 1200,
            f"{what}: the engine's nonsense is passed through: {r.body[:300]!r}")
    h.check(b"\xff" not in r.body and b"\x85" not in r.body
            and b"\xe2\x80\xa8" not in r.body,
            f"{what}: raw bytes of the engine's answer reach the client: {r.body[:300]!r}")


def bad_502(r, what):
    h.eq(r.status, 502, f"{what}: {r.body[:300]!r}")
    err = r.json()["error"]
    h.eq(err["code"], "upstream_bad_response", f"{what}:")
    h.eq(err["type"], "server_error", f"{what}:")
    h.check(len(err["message"]) < 600, f"{what}: a short message: {err['message']!r}")
    check_not_passed(r, what)


def events_of(body):
    h.check(body.endswith(b"\n\n"), f"ends with a whole event: {body[-100:]!r}")
    return [e for e in body.split(b"\n\n") if e]


def test_plain_nonsense_is_502(t):
    eng = NonsenseEngine()
    try:
        p = proxy(t, eng.url, models=MODELS)
        for model in ("garbage", "array", "text", "empty"):
            for path in ("/v1/chat/completions", "/v1/completions"):
                r = post(p, path, {"model": model, "messages": MSGS, "prompt": "x"})
                bad_502(r, f"{model} {path}")
            # a stream request that the engine answered with a whole body
            r = post(p, "/v1/chat/completions", {"model": model, "messages": MSGS,
                                                 "stream": True})
            bad_502(r, f"{model} stream")
        for i, bad in enumerate(BAD_JSON):
            r = post(p, "/v1/chat/completions", {"model": "garbage", "user": f"plainbad{i}",
                                                 "messages": MSGS})
            h.eq(r.status, 502, f"{bad!r}: {r}")
        for i, good in enumerate(GOOD_JSON):
            r = post(p, "/v1/chat/completions", {"model": "garbage", "user": f"plaingood{i}",
                                                 "messages": MSGS})
            h.eq((r.status, r.body), (200, good), "a JSON object passes unchanged:")
        r = post(p, "/v1/embeddings", {"model": "garbage", "input": ["a"]})
        h.eq(r.status, 400, "the proxy is not an embedding model")
        # a JSON answer to a stream request still passes (an engine that ignores stream)
        r = post(p, "/v1/chat/completions", {"model": "json_for_stream", "messages": MSGS,
                                             "stream": True})
        h.eq(r.status, 200, f"{r.body[:200]!r}")
        h.eq(r.body, COMPLETION)
        r = post(p, "/v1/chat/completions", {"model": "json_for_stream", "messages": MSGS})
        h.eq(r.status, 200)
        h.eq(r.json()["choices"][0]["message"]["content"], "fine")
        h.check(h.metric(p.url, "roster_worker_upstream_errors_total") >= 12, "counted")
        logs = p.logs()
        h.check("<script>" not in logs and "\ufffd" not in logs, "the log shows no raw nonsense")
        h.check(p.alive())
    finally:
        eng.close()


def test_stream_nonsense_ends_with_error_event(t):
    eng = NonsenseEngine()
    try:
        p = proxy(t, eng.url, models=MODELS)
        for model in ("sse_not_json", "sse_binary", "sse_latin1", "sse_unended"):
            r = post(p, "/v1/chat/completions", {"model": model, "messages": MSGS,
                                                 "stream": True})
            h.eq(r.status, 200, f"{model}: the stream had begun")
            h.check(r.header("Content-Type").startswith("text/event-stream"), model)
            check_not_passed(r, model)
            evs = events_of(r.body)
            h.eq(evs[0], chunk("hello ").rstrip(b"\n"), f"{model}: the good event first:")
            h.check(b"[DONE]" not in r.body, f"{model}: no [DONE] after nonsense: {r.body!r}")
            h.eq(len(evs), 2, f"{model}: {evs!r}")
            h.check(evs[1].startswith(b"data: "), f"{model}: {evs[1]!r}")
            err = json.loads(evs[1][6:])["error"]
            h.eq(err["code"], "upstream_bad_response", f"{model}:")
            h.check(len(err["message"]) < 600, f"{model}: {err['message']!r}")
        # every kind of invalid JSON is caught, and every kind of valid object passes
        for i, bad in enumerate(BAD_JSON):
            r = post(p, "/v1/chat/completions", {"model": "garbage", "user": f"bad{i}",
                                                 "messages": MSGS,
                                                 "stream": True})
            evs = events_of(r.body)
            h.eq(len(evs), 2, f"{bad!r}: {evs!r}")
            h.eq(json.loads(evs[1][6:])["error"]["code"], "upstream_bad_response", f"{bad!r}")
        r = post(p, "/v1/chat/completions", {"model": "garbage", "user": "good_mix",
                                             "messages": MSGS,
                                             "stream": True})
        h.eq(r.body, b"".join(STREAMS["good_mix"]), "valid events pass unchanged:")
        # data split over several data: lines is one JSON object: it passes
        r = post(p, "/v1/chat/completions", {"model": "sse_ok_multiline", "messages": MSGS,
                                             "stream": True})
        h.eq(r.status, 200)
        h.check(r.body.endswith(b"data: [DONE]\n\n"), f"{r.body!r}")
        # DB-GPT's stream over the same engine: frames, then an error frame
        for model in ("sse_not_json", "sse_binary", "sse_latin1", "sse_unended"):
            r = post(p, "/api/worker/generate_stream", {"model": model, "prompt": "hi"})
            h.eq(r.status, 200, model)
            check_not_passed(r, f"dbgpt {model}")
            frames = [json.loads(f) for f in r.body.split(b"\0") if f]
            h.check(frames and frames[0]["text"] == "hello ", f"{model}: {frames!r}")
            h.eq(frames[-1]["error_code"], 1, f"{model}: an error frame last: {frames[-1]}")
            h.check(frames[-1]["text"].startswith("the engine failed mid-stream"),
                    f"{frames[-1]['text']!r}")
            r = post(p, "/api/worker/generate", {"model": model, "prompt": "hi"})
            h.eq(r.status, 502, f"dbgpt generate {model}: {r.body[:200]!r}")
            h.eq(r.json()["error"]["code"], "upstream_bad_response")
        h.check(p.alive())
        h.eq(h.metric(p.url, "roster_memory_budget_used_bytes"), 0.0)
    finally:
        eng.close()


if __name__ == "__main__":
    h.main(globals())
