"""Cluster settings as data (docs/settings.md): API keys created, listed and
revoked through any controller of three on one MariaDB database, in force
on three apiservers (each watching a different controller) within 1 s, with
no restart; a request in flight when its key is revoked completes; the
database and every log hold no key in clear; expiry, model limits, keys
from --api_keys beside them; bad input and missing secrets refused.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_apiserver import apiserver  # noqa: E402
from test_worker import open_stream as open_raw_stream  # noqa: E402

IN_FORCE_S = 1.0  # a change through one controller is in force on every apiserver within this
SECRET = "settings-test-secret"
SECRET_ENV = {"ROSTER_CLUSTER_SECRET": SECRET}
ADMIN = {"X-Roster-Secret": SECRET}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def cluster(t, api_args=()):
    """Three controllers on one database, a worker, an apiserver per controller.
    Only the secret authorises settings (no trusted network)."""
    db = t.mysql_database()
    closed = ["--trusted_networks", ""]
    ctls = [t.controller(f"c{i}", db=db, args=closed, env=SECRET_ENV) for i in (1, 2, 3)]
    t.start("w1", ["start", "worker", "--model_name", "tiny", "--host", "127.0.0.1",
                   "--controller_addr", ctls[0].url, "--heartbeat_interval", "0.5",
                   "--decode_delay_ms", "40"], env=SECRET_ENV)
    apis = [apiserver(t, [c], args=list(api_args), env=SECRET_ENV, name=f"api{i}")
            for i, c in enumerate(ctls, 1)]
    for a in apis:
        h.wait_until(lambda a=a: models_status(a, {}) in (200, 401) and routable(a), 10,
                     what=f"{a.name} routes tiny")
    return db, ctls, apis


def routable(a):
    r = h.request("GET", a.url + "/api/health")
    return r.status == 200 and r.json().get("table", {}).get("routable", 0) >= 1


def has_settings(a, version):
    """The apiserver has loaded settings `version` (or a later one)."""
    v = h.metric(a.url, "roster_api_settings_version")
    return v is not None and v >= version


def models_status(a, headers):
    return h.request("GET", a.url + "/v1/models", headers=headers).status


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def create_key(ctl, body, status=201):
    r = h.request("POST", ctl.url + "/api/roster/keys", body=json.dumps(body).encode(),
                  headers=ADMIN)
    h.eq(r.status, status, f"create key {body}: {r}")
    return r.json()


def time_until_all(apis, cond, timeout=5.0):
    """Seconds until cond(api) holds on every apiserver (polled together)."""
    t0 = time.monotonic()
    pending = list(apis)
    while pending:
        pending = [a for a in pending if not cond(a)]
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            raise h.Failure(f"not in force on {[a.name for a in pending]} after {timeout}s")
        time.sleep(0.01)  # polling interval, not a readiness wait
    return time.monotonic() - t0


def open_stream(a, headers, max_tokens):
    body = dict(CHAT, stream=True, max_tokens=max_tokens)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers)
    return h.Background(lambda: h.request("POST", a.url + "/v1/chat/completions",
                                          body=json.dumps(body).encode(), headers=hdrs,
                                          timeout=20))


def test_keys_everywhere_within_a_second(t):
    db, ctls, apis = cluster(t)
    # before any key exists the API is open (as with no --api_keys)
    for a in apis:
        h.eq(models_status(a, {}), 200, f"{a.name} open before any key")
    made = create_key(ctls[0], {"name": "team-a"})
    key = made["key"]
    h.check(key.startswith("sk-roster-") and len(key) == 50, f"key shape: {key[:12]}...")
    h.eq(made["prefix"], key[:16])
    h.check("hash" not in made, "the answer holds no hash")
    # (the API was open: "in force" is the key accepted and a request without one refused)
    dt = time_until_all(apis, lambda a: models_status(a, {}) == 401 and
                        models_status(a, bearer(key)) == 200)
    h.check(dt < IN_FORCE_S, f"a key created through c1 works everywhere after {dt:.2f}s")
    for a in apis:
        h.eq(models_status(a, {}), 401, f"{a.name}: keys exist, so a request without one")
        h.eq(models_status(a, bearer(key + "x")), 401, f"{a.name}: a wrong key")
        r = h.request("POST", a.url + "/v1/chat/completions", body=json.dumps(CHAT).encode(),
                      headers=bearer(key))
        h.eq(r.status, 200, f"{a.name} chat with the key: {r}")
    # listed through another controller, without its hash
    r = h.request("GET", ctls[2].url + "/api/roster/keys", headers=ADMIN)
    h.eq(r.status, 200, f"{r}")
    listed = {k["name"]: k for k in r.json()}
    h.check("team-a" in listed and "hash" not in listed["team-a"], f"listed: {listed}")
    h.eq(listed["team-a"]["prefix"], key[:16])

    # revoked through c3 while a stream runs on api1: the stream completes,
    # new requests are refused everywhere within 1 s
    admitted = h.metric_sample(apis[0].url, "roster_api_key_requests_total", {"key": "team-a"})
    s = open_stream(apis[0], bearer(key), max_tokens=25)
    h.wait_until(lambda: h.metric_sample(apis[0].url, "roster_api_key_requests_total",
                                         {"key": "team-a"}) > admitted, 5,
                 what="the stream admitted")
    time.sleep(0.3)  # the stream is under way (25 tokens at 40 ms)
    r = h.request("DELETE", ctls[2].url + "/api/roster/keys?name=team-a", headers=ADMIN)
    h.eq(r.status, 200, f"revoke: {r}")
    h.check(r.json().get("revoked") is True, f"{r}")
    dt = time_until_all(apis, lambda a: models_status(a, bearer(key)) == 401)
    h.check(dt < IN_FORCE_S, f"a key revoked through c3 refused everywhere after {dt:.2f}s")
    got = s.result(20)
    h.eq(got.status, 200, f"the stream in flight: {got}")
    h.check(got.body.rstrip().endswith(b"data: [DONE]"), f"the stream completed: {got.body[-200:]}")
    r = h.request("GET", apis[1].url + "/v1/models", headers=bearer(key))
    h.check(b"revoked" in r.body, f"the refusal says why: {r}")
    h.eq(h.metric_sample(apis[1].url, "roster_api_key_rejected_total",
                         {"key": "team-a", "reason": "revoked"}) >= 1, True)

    # the database and the logs hold no key in clear
    dump = "\n".join("\t".join(row) for row in h.sql("SELECT * FROM roster_settings", db))
    h.check(key not in dump and key[16:] not in dump, "the settings table holds no key")
    h.check(made["prefix"] in dump, "it holds the key's prefix (to tell keys apart)")
    for p in t.procs:
        log = p.logs()
        h.check(key[16:] not in log, f"{p.name}'s log holds no key")

    # a purged key is gone from the list; the name is free again
    r = h.request("DELETE", ctls[1].url + "/api/roster/keys?name=team-a&purge=true", headers=ADMIN)
    h.eq(r.status, 200, f"purge: {r}")
    r = h.request("GET", ctls[1].url + "/api/roster/keys", headers=ADMIN)
    h.eq(r.json(), [], "no key left (read back through the controller that wrote)")
    dt = time_until_all(ctls, lambda c: h.request("GET", c.url + "/api/roster/keys",
                                                  headers=ADMIN).json() == [])
    h.check(dt < IN_FORCE_S, f"the purge listed by every controller after {dt:.2f}s")
    create_key(ctls[0], {"name": "team-a"})


def test_key_limits_and_expiry(t):
    db, ctls, apis = cluster(t, api_args=["--api_keys", "flag-key-1"])
    only = create_key(ctls[1], {"name": "only-tiny", "models": ["tiny"]})["key"]
    other = create_key(ctls[2], {"name": "other", "models": ["not-tiny"]})["key"]
    made = create_key(ctls[0], {"name": "soon", "expires_at": int(time.time()) + 2})
    soon = made["key"]
    time_until_all(apis, lambda a: has_settings(a, made["version"]))
    for a in apis:
        r = h.request("POST", a.url + "/v1/chat/completions", body=json.dumps(CHAT).encode(),
                      headers=bearer(only))
        h.eq(r.status, 200, f"{a.name}: a key limited to tiny uses tiny: {r}")
        r = h.request("POST", a.url + "/v1/chat/completions", body=json.dumps(CHAT).encode(),
                      headers=bearer(other))
        h.check_error(r.status, r.body, 403, "a key limited to another model")
        h.eq(r.json()["error"]["code"], "model_not_allowed")
        # --api_keys keep working beside the keys of the settings
        h.eq(models_status(a, bearer("flag-key-1")), 200, f"{a.name}: a --api_keys key")
    # a stream's tokens count for its key: its usage chunk, or a token per chunk
    a = apis[0]

    def tokens(kind):
        return h.metric_sample(a.url, "roster_api_key_tokens_total",
                               {"key": "only-tiny", "kind": kind}) or 0

    p0, c0 = tokens("prompt"), tokens("completion")
    body = dict(CHAT, stream=True, max_tokens=5, stream_options={"include_usage": True})
    r = h.request("POST", a.url + "/v1/chat/completions", body=json.dumps(body).encode(),
                  headers=dict(bearer(only), **{"Content-Type": "application/json"}), timeout=10)
    h.eq(r.status, 200, f"{r}")
    usage = [json.loads(line[6:]) for line in r.body.decode().splitlines()
             if line.startswith("data: {") and '"usage":{' in line][-1]["usage"]
    h.eq((tokens("prompt") - p0, tokens("completion") - c0),
         (usage["prompt_tokens"], usage["completion_tokens"]), "a stream's usage chunk counted")
    c1 = tokens("completion")
    body.pop("stream_options")
    r = h.request("POST", a.url + "/v1/chat/completions", body=json.dumps(body).encode(),
                  headers=dict(bearer(only), **{"Content-Type": "application/json"}), timeout=10)
    chunks = sum(1 for line in r.body.decode().splitlines()
                 if '"content":"' in line and '"content":""' not in line)
    h.eq(tokens("completion") - c1, chunks, "a stream without usage: a token per content chunk")
    # a stream its client leaves is charged what it passed, not max_tokens:
    # reserving 400 of 1000 each, five left after two content chunks all start
    made = create_key(ctls[0], {"name": "cut", "tpm": 1000})
    time_until_all([a], lambda a: has_settings(a, made["version"]))
    within_one_window()
    body = dict(CHAT, stream=True, max_tokens=400)

    def cut_tokens():
        return h.metric_sample(a.url, "roster_api_key_tokens_total",
                               {"key": "cut", "kind": "completion"}) or 0

    for i in range(5):
        before = cut_tokens()
        open_raw_stream(a.port, body, headers=bearer(made["key"])).close()
        h.wait_until(lambda: cut_tokens() >= before + 2, 5,
                     what=f"stream {i}'s chunks charged when its client left")
    h.wait_until(lambda: models_status(apis[2], bearer(soon)) == 401, 5, what="expiry")
    r = h.request("GET", apis[2].url + "/v1/models", headers=bearer(soon))
    h.check(b"expired" in r.body, f"{r}")


def within_one_window(seconds_needed=8):
    """Waits (at most seconds_needed) so that what follows runs inside one
    minute window of the controllers' clock (this machine's)."""
    into = time.time() % 60
    if into > 60 - seconds_needed:
        time.sleep(60 - into + 0.05)


def spray(apis, key, n, body=None):
    """n requests round-robin over the apiservers from three threads; returns
    the answers (status, headers, body)."""
    body = json.dumps(body or CHAT).encode()
    hdrs = dict(bearer(key), **{"Content-Type": "application/json"})

    def one(i):
        a = apis[i % len(apis)]
        r = h.request("POST", a.url + "/v1/chat/completions", body=body, headers=hdrs)
        return r

    out = []

    def worker_fn(start):
        return [one(i) for i in range(start, n, 3)]

    for part in h.in_threads([lambda s=s: worker_fn(s) for s in range(3)]):
        out += part
    return out


def test_limits_cluster_wide(t):
    db, ctls, apis = cluster(t)
    n = 20
    made = create_key(ctls[0], {"name": "rpm", "rpm": n})
    key = made["key"]
    time_until_all(apis, lambda a: has_settings(a, made["version"]))
    used_by_probes = 0  # GET /v1/models takes no units
    within_one_window()
    first = spray(apis, key, 3 * n)
    ok = [r for r in first if r.status == 200]
    refused = [r for r in first if r.status == 429]
    h.eq(len(ok) + len(refused), 3 * n, f"only 200 or 429: {[r.status for r in first]}")
    h.check(len(ok) + used_by_probes <= n, f"{len(ok)} + {used_by_probes} accepted, limit {n}")
    for r in refused:
        h.check(r.header("Retry-After") and int(r.header("Retry-After")) >= 1, f"{r}")
        h.eq(r.header("x-ratelimit-limit-requests"), str(n))
        h.eq(r.header("x-ratelimit-remaining-requests"), "0")
        h.check(r.header("x-ratelimit-reset-requests").endswith("s"), f"{r}")
        h.eq(r.json()["error"]["code"], "rate_limit_exceeded")
    h.check(ok[0].header("x-ratelimit-limit-requests") == str(n), f"headers on a 200: {ok[0]}")
    # units a node held unused go back within a second: a second round gets
    # exactly the rest of the limit (never more)
    time.sleep(1.0)
    second = spray(apis, key, 3 * n)
    got = len(ok) + used_by_probes + sum(r.status == 200 for r in second)
    h.eq(got, n, "requests accepted over the window across three apiservers (epsilon 0)")
    rej = sum(h.metric_sample(a.url, "roster_api_key_rejected_total",
                              {"key": "rpm", "reason": "rate_limited"}) for a in apis)
    h.eq(rej, 6 * n - (got - used_by_probes), "refusals counted per key")

    # tokens: what the answers report stays within the limit
    tpm = 300
    made = create_key(ctls[1], {"name": "tpm", "tpm": tpm})
    tkey = made["key"]
    time_until_all(apis, lambda a: has_settings(a, made["version"]))
    within_one_window()
    body = dict(CHAT, max_tokens=10)
    est = len(json.dumps(body)) // 4 + 10
    answers = spray(apis, tkey, 60, body) + (time.sleep(1.0) or spray(apis, tkey, 60, body))
    used = sum(r.json()["usage"]["total_tokens"] for r in answers if r.status == 200)
    h.check(all(r.status in (200, 429) for r in answers), "only 200 or 429")
    h.check(tpm - 3 * est <= used <= tpm, f"{used} tokens accepted, limit {tpm} (est {est})")
    r = next(r for r in answers if r.status == 429)
    h.eq(r.header("x-ratelimit-limit-tokens"), str(tpm))
    prompt = sum(h.metric_sample(a.url, "roster_api_key_tokens_total",
                                 {"key": "tpm", "kind": "prompt"}) for a in apis)
    completion = sum(h.metric_sample(a.url, "roster_api_key_tokens_total",
                                     {"key": "tpm", "kind": "completion"}) for a in apis)
    h.eq(prompt + completion, used, "tokens counted per key")


def test_leases_ahead_of_need(t):
    """Under steady traffic a limited key's requests find units: the
    apiserver sizes leases to the key's rate within a tenth of a second of
    a burst and asks for the next one at half a lease, so few requests
    wait for a controller's answer and few calls are made."""
    c = t.controller("c1")
    t.start("w1", ["start", "worker", "--model_name", "tiny", "--host", "127.0.0.1",
                   "--controller_addr", c.url, "--concurrency", "64"])
    a = apiserver(t, [c])
    made = create_key_trusted(c, {"name": "steady", "rpm": 1000000, "tpm": 100000000})
    h.wait_until(lambda: has_settings(a, made["version"]) and routable(a), 10,
                 what="the key and the worker at the apiserver")
    within_one_window(seconds_needed=5)
    n = 1200
    answers = spray([a], made["key"], n)
    h.eq(sum(r.status == 200 for r in answers), n, "every request admitted")
    waits = h.metric(a.url, "roster_api_key_limit_waits_total")
    calls = h.metric(a.url, "roster_api_key_limit_calls_total")
    print(f"  {n} requests: {waits:.0f} waited for units, {calls:.0f} lease calls")
    h.check(waits <= n * 0.05, f"{waits} of {n} requests waited for a lease")
    h.check(calls <= n * 0.05, f"{calls} lease calls for {n} requests")


def create_key_trusted(c, body):
    """A key through a controller that trusts loopback (no secret)."""
    r = h.request("POST", c.url + "/api/roster/keys", body=json.dumps(body).encode())
    h.eq(r.status, 201, f"create key {body}: {r}")
    return r.json()


def test_settings_bad_input(t):
    db = t.mysql_database()
    c = t.controller("c1", db=db, args=["--trusted_networks", ""], env=SECRET_ENV)
    u = c.url
    # the secret is required for every settings route, reads included
    for method, path in [("GET", "/api/roster/settings"), ("GET", "/api/roster/keys"),
                         ("POST", "/api/roster/keys"), ("DELETE", "/api/roster/keys?name=a"),
                         ("PUT", "/api/roster/aliases"), ("GET", "/api/roster/aliases")]:
        r = h.request(method, u + path, body=b"{}" if method in ("POST", "PUT") else None)
        h.check_error(r.status, r.body, 401, f"{method} {path} without the secret")
    cases = [
        (b"{", 400), (b"[]", 422), (b'{"name":""}', 422), (b'{"name":"a b"}', 422),
        (b'{"name":"' + b"x" * 65 + b'"}', 422), (b'{"name":"a","models":"tiny"}', 422),
        (b'{"name":"a","models":[1]}', 422), (b'{"name":"a","rpm":-1}', 422),
        (b'{"name":"a","rpm":1.5}', 422), (b'{"name":"a","priority":10}', 422),
        (b'{"name":"a","expires_at":1}', 422),
    ]
    for body, status in cases:
        r = h.request("POST", u + "/api/roster/keys", body=body, headers=ADMIN)
        h.check_error(r.status, r.body, status, f"create key {body[:40]!r}")
    create_key(c, {"name": "a"})
    r = h.request("POST", u + "/api/roster/keys", body=b'{"name":"a"}', headers=ADMIN)
    h.check_error(r.status, r.body, 409, "a name taken")
    for q, status in [("", 422), ("?name=", 422), ("?name=zz", 404), ("?name=a&purge=maybe", 422)]:
        r = h.request("DELETE", u + "/api/roster/keys" + q, headers=ADMIN)
        h.check_error(r.status, r.body, status, f"revoke {q!r}")
    for body, status in [(b'{"name":"g"}', 422), (b'{"name":"g","models":[]}', 422),
                         (b'{"name":"g","models":["a","b","c","d","e","f","g","h","i"]}', 422)]:
        r = h.request("PUT", u + "/api/roster/aliases", body=body, headers=ADMIN)
        h.check_error(r.status, r.body, status, f"alias {body!r}")
    r = h.request("DELETE", u + "/api/roster/aliases?name=nope", headers=ADMIN)
    h.check_error(r.status, r.body, 404, "remove a missing alias")
    # what was stored before the bad input is intact
    r = h.request("GET", u + "/api/roster/settings", headers=ADMIN)
    h.eq(r.status, 200)
    doc = r.json()
    h.eq([k["name"] for k in doc["keys"]], ["a"])
    h.eq(doc["aliases"], [])
    h.eq(r.header("X-Roster-Settings"), str(doc["version"]))


def usage(c, body, status=200):
    r = h.request("POST", c.url + "/api/roster/keys/usage", body=json.dumps(body).encode(),
                  headers=ADMIN)
    if status != 200:
        h.check_error(r.status, r.body, status, f"usage {body}")
        return None
    h.eq(r.status, 200, f"usage {body}: {r}")
    return {k["name"]: k for k in r.json()["keys"]}, r.json()


def test_usage_leases(t):
    """POST /api/roster/keys/usage, what apiservers call for leases: never
    beyond a key's limit in a window, units given back in the same window
    count again, keys the settings do not hold (unknown, revoked) are
    answered known=false and write no row."""
    c = t.controller("c1", args=["--trusted_networks", ""], env=SECRET_ENV)
    create_key(c, {"name": "lim", "rpm": 10, "tpm": 1000})
    create_key(c, {"name": "gone", "rpm": 10})
    h.eq(h.request("DELETE", c.url + "/api/roster/keys?name=gone", headers=ADMIN).status, 200)
    _, doc = usage(c, {"keys": []})
    if doc["reset_ms"] < 3000:  # the minute window turns within the test: start in the next
        time.sleep(doc["reset_ms"] / 1000 + 0.05)
    keys, doc = usage(c, {"keys": [{"name": "lim", "want_requests": 4, "want_tokens": 300},
                                   {"name": "nobody", "want_requests": 5, "return_requests": 2},
                                   {"name": "gone", "want_requests": 1}]})
    w = doc["window"]
    h.eq((keys["lim"]["known"], keys["lim"]["requests"], keys["lim"]["tokens"]), (True, 4, 300))
    h.eq((keys["lim"]["limit_requests"], keys["lim"]["limit_tokens"]), (10, 1000))
    for name in ("nobody", "gone"):
        h.eq((keys[name]["known"], keys[name]["requests"], keys[name]["used_requests"]),
             (False, 0, 0), f"{name}: {keys[name]}")
    # the rest of the window's budget and no more
    keys, _ = usage(c, {"window": w, "keys": [{"name": "lim", "want_requests": 50,
                                               "want_tokens": 5000}]})
    h.eq((keys["lim"]["requests"], keys["lim"]["tokens"]), (6, 700))
    h.eq((keys["lim"]["used_requests"], keys["lim"]["used_tokens"]), (10, 1000))
    keys, _ = usage(c, {"window": w, "keys": [{"name": "lim", "want_requests": 1}]})
    h.eq(keys["lim"]["requests"], 0, "past the limit")
    # units given back in the same window are granted again
    keys, _ = usage(c, {"window": w, "keys": [{"name": "lim", "return_requests": 3,
                                               "want_requests": 2}]})
    h.eq((keys["lim"]["requests"], keys["lim"]["used_requests"]), (2, 9))
    rows = h.sqlite_dump(t.sqlite_path, table="roster_key_usage").decode()
    h.check("'lim'" in rows and "nobody" not in rows and "gone" not in rows,
            f"only known keys have counters: {rows}")
    # bad input: a clear 4xx, the counters intact
    for body, status in [({"keys": "lim"}, 422), ({"keys": [{"want_requests": 1}]}, 422),
                         ({"keys": [{"name": "lim", "want_requests": -1}]}, 422),
                         ({"keys": [{"name": "lim", "want_tokens": "9"}]}, 422),
                         ({"keys": [{"name": f"k{i}"} for i in range(1025)]}, 422)]:
        usage(c, body, status)
    r = h.request("POST", c.url + "/api/roster/keys/usage", body=b"{", headers=ADMIN)
    h.check_error(r.status, r.body, 400, "bad JSON")
    r = h.request("POST", c.url + "/api/roster/keys/usage", body=b'{"keys":[]}')
    h.check_error(r.status, r.body, 401, "without the secret")
    keys, _ = usage(c, {"window": w, "keys": [{"name": "lim"}]})
    h.eq(keys["lim"]["used_requests"], 9, "after the bad input")


if __name__ == "__main__":
    h.main(globals())
