"""Model aliases from the cluster settings (docs/settings.md): a name that
resolves to an ordered list of models. The first model with a routable
instance serves; when every attempt at it fails before the first byte (its
workers killed), the next one serves the same request, with no failure;
the answer names the model that served (X-Roster-Model, and the body's own
"model"). /v1/models lists aliases; a real model's name wins over an alias.
"""
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_apiserver import apiserver, worker  # noqa: E402

ALIAS = "gpt-4o"
FIRST, SECOND = "glm-4-9b-chat", "qwen2-7b"


def chat(a, model, stream=False):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "stream": stream}
    return h.request("POST", a.url + "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"}, timeout=10)


def set_alias(c, name, models):
    r = h.request("PUT", c.url + "/api/roster/aliases",
                  body=json.dumps({"name": name, "models": models}).encode())
    h.eq(r.status, 200, f"alias {name}: {r}")
    return r.json()["version"]


def listed(a):
    r = h.request("GET", a.url + "/v1/models")
    return {m["id"]: m for m in r.json()["data"]} if r.status == 200 else {}


def test_alias_fallback(t):
    c = t.controller()
    w1 = worker(t, c, "w-first", model=FIRST)
    worker(t, c, "w-second", model=SECOND)
    a = apiserver(t, [c], args=["--eject_ms", "60000"])
    h.wait_until(lambda: FIRST in listed(a) and SECOND in listed(a), 10, what="both models")
    v = set_alias(c, ALIAS, [FIRST, SECOND])
    h.wait_until(lambda: h.metric(a.url, "roster_api_settings_version") >= v, 5,
                 what="the alias at the apiserver")

    # listed, with its models in order and the instances behind them
    m = listed(a)[ALIAS]
    h.eq(m["owned_by"], "roster-alias")
    h.eq(m["models"], [FIRST, SECOND])
    h.eq(m["instances"], 2)
    r = h.request("GET", a.url + "/v1/models/" + ALIAS)
    h.eq(r.status, 200)
    h.eq(r.json()["models"], [FIRST, SECOND])

    # the first model serves, and the answer says so
    r = chat(a, ALIAS)
    h.eq(r.status, 200, f"{r}")
    h.eq(r.header("X-Roster-Model"), FIRST)
    h.eq(r.json()["model"], FIRST)
    r = chat(a, ALIAS, stream=True)
    h.eq(r.status, 200, f"{r}")
    h.check(b"data: [DONE]" in r.body, "a stream through the alias")

    # requests keep coming while every instance of the first model dies
    results, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            r = chat(a, ALIAS)
            results.append((r.status, r.header("X-Roster-Model")))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for th in threads:
        th.start()
    h.wait_until(lambda: len(results) >= 10, 10, what="traffic before the kill")
    w1.kill()
    n_at_kill = len(results)
    h.wait_until(lambda: len(results) >= n_at_kill + 30, 20, what="traffic after the kill")
    stop.set()
    for th in threads:
        th.join(15)
    failed = [r for r in results if r[0] != 200]
    h.eq(failed, [], "requests to the alias that failed")
    h.eq({m for _, m in results[n_at_kill + 5:]}, {SECOND}, "served by the second model after")
    h.check(h.metric_sample(a.url, "roster_api_model_retries_total",
                            {"model": f"{SECOND}@llm"}) is not None, "fallbacks counted")

    # an alias whose first model has no routable instance starts at the next
    set_alias(c, "first-down", [FIRST, SECOND])
    h.wait_until(lambda: "first-down" in listed(a), 5, what="the second alias")
    r = chat(a, "first-down")
    h.eq((r.status, r.header("X-Roster-Model")), (200, SECOND), f"{r}")


def test_alias_errors(t):
    c = t.controller()
    worker(t, c, "w", model=FIRST)
    a = apiserver(t, [c])
    h.wait_until(lambda: FIRST in listed(a), 10, what="the model")
    v = set_alias(c, "nothing", ["no-such-model"])
    set_alias(c, FIRST, [SECOND])  # a model's own name: the model wins
    v = set_alias(c, "embed-only", ["no-such-model", FIRST])
    h.wait_until(lambda: h.metric(a.url, "roster_api_settings_version") >= v, 5,
                 what="the aliases at the apiserver")
    r = chat(a, "nothing")
    h.check_error(r.status, r.body, 404, "an alias of models that do not exist")
    r = chat(a, FIRST)
    h.eq((r.status, r.json()["model"], r.header("X-Roster-Model")), (200, FIRST, None),
         "a model's name is the model, not the alias")
    h.check(listed(a)[FIRST]["owned_by"] == "roster", "listed as the model")
    r = chat(a, "embed-only")
    h.eq((r.status, r.header("X-Roster-Model")), (200, FIRST), "missing models are skipped")
    # an alias removed is gone at once
    r = h.request("DELETE", c.url + "/api/roster/aliases?name=embed-only")
    h.eq(r.status, 200)
    h.wait_until(lambda: chat(a, "embed-only").status == 404, 5, what="the alias removed")


def set_model(c, body):
    r = h.request("PUT", c.url + "/api/roster/models", body=json.dumps(body).encode())
    h.eq(r.status, 200, f"model settings {body}: {r}")
    return r.json()["version"]


def served(w):
    return int(h.metric(w.url, "roster_worker_requests_total"))


def test_model_settings_live(t):
    """Per-model routing settings (policy, session header, timeouts) change
    an apiserver's routing live, and removing them brings the flags back."""
    c = t.controller()
    ws = [worker(t, c, f"w{i}", model="tiny", args=["--decode_delay_ms", "60"]) for i in (1, 2)]
    a = apiserver(t, [c])
    h.wait_until(lambda: listed(a).get("tiny", {}).get("instances") == 2, 10, what="2 instances")

    def in_force(v):
        h.wait_until(lambda: h.metric(a.url, "roster_api_settings_version") >= v, 5,
                     what=f"settings version {v} at the apiserver")

    # consistent hashing on a header of the model's own choosing
    in_force(set_model(c, {"name": "tiny", "routing": "session", "session_header": "X-User"}))
    before = [served(w) for w in ws]
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 1}).encode()
    for _ in range(12):
        r = h.request("POST", a.url + "/v1/chat/completions", body=body,
                      headers={"Content-Type": "application/json", "X-User": "alice"})
        h.eq(r.status, 200, f"{r}")
    got = sorted(served(w) - b for w, b in zip(ws, before))
    h.eq(got, [0, 12], "one user's requests on one instance")

    # a first-byte timeout below the model's answer time: 504, live
    in_force(set_model(c, {"name": "tiny", "first_byte_timeout_ms": 50, "max_attempts": 1}))
    r = chat(a, "tiny")
    h.check_error(r.status, r.body, 504, "the model's own first-byte timeout")
    # removed (null), the flags apply again
    in_force(set_model(c, {"name": "tiny", "first_byte_timeout_ms": None}))
    r = h.request("GET", c.url + "/api/roster/models")
    h.eq(r.json()[0].get("first_byte_timeout_ms"), None)
    h.eq(r.json()[0]["routing"], "session")
    h.eq(chat(a, "tiny").status, 200)
    r = h.request("DELETE", c.url + "/api/roster/models?name=tiny")
    h.eq(r.status, 200)
    # bad settings are refused, nothing stored changes
    for bad in [{"name": "tiny", "routing": "fastest"}, {"name": "tiny", "max_attempts": 0},
                {"name": "tiny", "session_header": "X User"}, {"name": "tiny", "colour": 1},
                {"routing": "p2c"}, {"name": "", "routing": "p2c"}]:
        r = h.request("PUT", c.url + "/api/roster/models", body=json.dumps(bad).encode())
        h.check_error(r.status, r.body, 422, f"model settings {bad}")
    r = h.request("DELETE", c.url + "/api/roster/models?name=tiny")
    h.check_error(r.status, r.body, 404, "no settings left")


if __name__ == "__main__":
    h.main(globals())
