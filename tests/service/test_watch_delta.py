"""Incremental watches: view=full names its view version (X-Roster-View) and
since=<that token> answers with a delta (the models whose routing changed,
and the names of all); the apiserver merges deltas into the table it holds
and keeps the state of the models that did not change; a token another
controller (process) cannot answer from gets the full list. Also: a
heartbeat moves view=full's fixed-width heartbeat fields in place (ages of
every instance recomputed) without changing the ETag.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

TOKEN = re.compile(r"^[0-9a-f]{16}-[0-9]+$")
FULL_KEYS = sorted(["model_name", "host", "port", "weight", "check_healthy", "healthy",
                    "enabled", "prompt_template", "last_heartbeat", "remove_from_registry",
                    "model", "worker_type", "alive", "routable", "weight_declared",
                    "weight_override", "lease_ms", "heartbeat_age_ms", "load", "blocked"])


def full(url, since=None, headers=None):
    q = "view=full" + (f"&since={since}" if since is not None else "")
    r = h.request("GET", f"{url}/api/controller/models?{q}", headers=headers)
    h.eq(r.status, 200, f"GET view=full since={since}: {r}")
    return r


def token_of(r):
    tok = r.header("X-Roster-View")
    h.check(tok and TOKEN.match(tok), f"X-Roster-View: {tok!r}")
    return tok


def remove(url, model, port):
    r = h.request("DELETE", f"{url}/api/controller/models?model_name={model.replace('@', '%40')}"
                  f"&host=127.0.0.1&port={port}&remove_from_registry=True")
    h.eq(r.status, 200, f"remove {model}:{port}:")


def test_delta_wire(t):
    c = t.controller()
    for model, port in [("ma@llm", 8001), ("ma@llm", 8011), ("ma@llm", 8021), ("mb@llm", 8002),
                        ("mc@llm", 8003)]:
        h.register(c.url, h.instance(model=model, port=port))
    r = full(c.url)
    h.check(isinstance(r.json(), list) and len(r.json()) == 5, f"the full list: {r.json()}")
    tok1 = token_of(r)
    etag1 = r.header("ETag")
    # without view=full (DB-GPT's clients) nothing changes: no header, a list
    r = h.request("GET", c.url + "/api/controller/models?since=" + tok1)
    h.eq(r.status, 200)
    h.check(r.header("X-Roster-View") is None, "no view token on DB-GPT's list")
    h.check(isinstance(r.json(), list) and len(r.json()) == 5, f"DB-GPT's list: {r.json()}")
    # nothing changed: an empty delta, every model named
    d = full(c.url, since=tok1)
    dj = d.json()
    h.eq((dj["delta"], dj["since"], dj["version"]), (True, tok1, tok1), "empty delta:")
    h.eq((sorted(dj["models"]), dj["changed"], dj["instances"]),
         (["ma@llm", "mb@llm", "mc@llm"], [], []), "empty delta:")
    h.eq(d.header("ETag"), etag1)

    # a new instance of mb, mc removed, md added; ma untouched
    h.register(c.url, h.instance(model="mb@llm", port=8012))
    remove(c.url, "mc@llm", 8003)
    h.register(c.url, h.instance(model="md@llm", port=8004))
    r = full(c.url)
    d = full(c.url, since=tok1)
    dj = d.json()
    h.eq(d.header("ETag"), r.header("ETag"), "the delta's ETag is the full list's:")
    h.eq(token_of(d), token_of(r))
    h.check(token_of(d) != tok1, "a new version")
    h.eq((dj["delta"], dj["since"], dj["version"]), (True, tok1, token_of(r)))
    h.eq(sorted(dj["models"]), ["ma@llm", "mb@llm", "md@llm"], "every current model:")
    h.eq(sorted(dj["changed"]), ["mb@llm", "md@llm"], "the changed ones:")
    h.eq(sorted((i["model_name"], i["port"]) for i in dj["instances"]),
         [("mb@llm", 8002), ("mb@llm", 8012), ("md@llm", 8004)], "their instances:")
    for i in dj["instances"]:
        h.eq(sorted(i.keys()), FULL_KEYS, "view=full's fields:")
        f = dict(h.find(r.json(), model=i["model_name"], port=i["port"]))
        h.check(abs(f.pop("heartbeat_age_ms") - i.pop("heartbeat_age_ms")) < 1000)
        h.eq(i, f, "as in the full list:")

    # a heartbeat (no routing change) changes no model's version
    tok2 = token_of(r)
    h.heartbeat(c.url, h.instance(model="ma@llm", port=8001))
    dj = full(c.url, since=tok2).json()
    h.eq((dj["changed"], dj["instances"]), ([], []), "a heartbeat is not a routing change:")
    # a weight change is
    h.admin(c.url, {"model_name": "ma@llm", "host": "127.0.0.1", "port": 8011, "weight": 3})
    dj = full(c.url, since=tok2).json()
    h.eq(dj["changed"], ["ma@llm"], "an admin weight:")
    h.eq(next(i["weight"] for i in dj["instances"] if i["port"] == 8011), 3.0)

    # tokens it cannot answer from: the full list (never an error)
    epoch, _, ver = tok2.partition("-")
    other = ("1" if epoch[0] == "0" else "0") + epoch[1:]
    for bad in [f"{other}-{ver}", f"{epoch}-{int(ver) + 1000}", "garbage", f"{epoch}-",
                f"{epoch}-1x", "", f"{epoch}-99999999999999999999999"]:
        r = full(c.url, since=bad)
        h.check(isinstance(r.json(), list) and len(r.json()) == 6, f"since={bad!r}: {r.json()}")
        token_of(r)
    # from version 0 everything changed: the cached full list is the smaller answer
    r = full(c.url, since=f"{epoch}-0")
    h.check(isinstance(r.json(), list) and len(r.json()) == 6, f"since=0: {r.json()}")

    # a watch with since= is answered with a delta
    r = full(c.url)
    tok3, etag3 = token_of(r), r.header("ETag")
    url = f"{c.url}/api/controller/models?view=full&wait=20&since={tok3}"
    w = h.Background(lambda: h.request("GET", url, headers={"If-None-Match": etag3},
                                       timeout=35))
    h.wait_watchers(c.url, 1)
    h.register(c.url, h.instance(model="me@llm", port=8005))
    r = w.result(30)
    h.eq(r.status, 200, f"the watch: {r}")
    dj = r.json()
    h.eq((dj["delta"], dj["since"], dj["changed"]), (True, tok3, ["me@llm"]), "the watch's delta:")
    h.eq([(i["model_name"], i["port"]) for i in dj["instances"]], [("me@llm", 8005)])
    h.eq(len(dj["models"]), 4)
    h.check(r.header("ETag") != etag3)
    # and a watch whose ETag still holds gets 304 at the end of its wait
    r = h.request("GET", f"{c.url}/api/controller/models?view=full&wait=1&since={token_of(r)}",
                  headers={"If-None-Match": r.header("ETag")}, timeout=10)
    h.eq(r.status, 304)


def test_failover_gets_full_answer(t):
    c1, c2 = t.controller("c1"), t.controller("c2")
    h.register(c1.url, h.instance(model="ma@llm", port=8001))
    h.wait_until(lambda: h.list_models(c2.url), 5, what="c2 to read c1's write")
    tok1 = token_of(full(c1.url))
    tok2 = token_of(full(c2.url))
    h.check(tok1.split("-")[0] != tok2.split("-")[0], f"one epoch per process: {tok1} {tok2}")
    r = full(c2.url, since=tok1)
    h.check(isinstance(r.json(), list) and len(r.json()) == 1, f"c1's token at c2: {r.json()}")
    h.eq(token_of(r), token_of(full(c2.url)))
    # a restarted controller is a new view too
    c1.stop_clean()
    c1 = t.controller("c1b")
    r = full(c1.url, since=tok1)
    h.check(isinstance(r.json(), list), f"the old token after a restart: {r.json()}")


def apiserver(t, controllers, args=(), name="api"):
    return t.start(name, ["start", "apiserver", "--host", "127.0.0.1", "--log_level", "debug",
                          "--controller_addr", ",".join(c.url for c in controllers)] + list(args))


def routable(a):
    """{model: routable instances} as the apiserver lists them."""
    r = h.request("GET", a.url + "/v1/models")
    return {m["id"]: m["instances"] for m in r.json()["data"]} if r.status == 200 else {}


def tables(a, kind):
    return len(re.findall(r"table version \d+: [^\n]* \(%s\)" % kind, a.logs()))


def ejected(a, model, port):
    return h.metric_sample(a.url, "roster_api_instance_ejected",
                           {"model": model, "instance": f"127.0.0.1:{port}"})


def test_apiserver_merges_delta(t):
    c = t.controller()
    dead_sock, dead = h.dead_port()
    keep = [dead] + list(range(8101, 8106))
    for p in keep:
        h.register(c.url, h.instance(model="keep@llm", port=p))
    h.register(c.url, h.instance(model="gone@llm", port=8201))
    h.register(c.url, h.instance(model="gone@llm", port=8202))
    # a delta answers only while the changed models hold at most half of
    # the instances (else the full list is the smaller answer): ballast
    for p in range(8401, 8409):
        h.register(c.url, h.instance(model="bulk@llm", port=p))
    a = apiserver(t, [c], args=["--eject_ms", "60000", "--max_attempts", "1"])
    h.wait_until(lambda: routable(a) == {"keep": 6, "gone": 2, "bulk": 8}, 10,
                 what="the first table")
    h.eq(tables(a, "full"), 1, "the first table is a full list:")
    # eject keep's dead instance: state of the apiserver only (the registry
    # knows nothing of it) that must survive the tables to come
    for _ in range(30):
        h.request("POST", a.url + "/v1/chat/completions",
                  {"model": "keep", "messages": [{"role": "user", "content": "hi"}]})
        if ejected(a, "keep@llm", dead) == 1:
            break
    h.eq(ejected(a, "keep@llm", dead), 1, "the dead instance ejected:")
    h.wait_until(lambda: h.metric(c.url, "roster_watchers") == 1, 10, what="the watch parked")
    v0 = h.request("GET", a.url + "/api/health").json()["table"]["version"]

    h.register(c.url, h.instance(model="new@llm", port=8301))
    h.wait_until(lambda: routable(a).get("new") == 1, 5, what="the new model routable")
    remove(c.url, "gone@llm", 8201)
    remove(c.url, "gone@llm", 8202)
    h.wait_until(lambda: "gone" not in routable(a), 5, what="the removed model gone")
    h.eq(routable(a), {"keep": 6, "new": 1, "bulk": 8}, "the merged table:")
    h.check(tables(a, "delta") >= 2, f"the changes came as deltas: {a.logs()[-3000:]}")
    h.eq(tables(a, "full"), 1, "no full list since the first:")
    h.check(h.request("GET", a.url + "/api/health").json()["table"]["version"] > v0)
    h.eq(ejected(a, "keep@llm", dead), 1, "the unchanged model's instance still ejected:")
    # the merged table routes: keep's live ports are dead too here, so ask
    # for the model list's detail instead of a completion
    r = h.request("GET", a.url + "/v1/models/new")
    h.eq(r.status, 200, f"/v1/models/new: {r}")
    # a change to keep itself is merged (its routing rebuilt) and its
    # instances keep their state (the same instance identity)
    h.register(c.url, h.instance(model="keep@llm", port=8106))
    h.wait_until(lambda: routable(a).get("keep") == 7, 5, what="keep's new instance")
    h.eq(ejected(a, "keep@llm", dead), 1, "ejection survives a rebuild of the model:")
    h.eq(tables(a, "full"), 1)


def test_apiserver_failover_takes_full_list(t):
    c1, c2 = t.controller("c1"), t.controller("c2")
    for p in range(8101, 8105):
        h.register(c1.url, h.instance(model="keep@llm", port=p))
    h.wait_until(lambda: len(h.list_models(c2.url)) == 4, 5, what="c2 to read c1's writes")
    a = apiserver(t, [c1, c2])
    h.wait_until(lambda: routable(a) == {"keep": 4}, 10, what="the first table")
    h.register(c1.url, h.instance(model="one@llm", port=8201))
    h.wait_until(lambda: routable(a).get("one") == 1, 10, what="one routable")
    h.wait_until(lambda: h.find(h.list_models(c2.url), model="one@llm", port=8201), 5,
                 what="c2 to read it")
    h.wait_until(lambda: tables(a, "delta") >= 1 or tables(a, "full") >= 2, 5, what="a table")
    cur = h.request("GET", a.url + "/api/health").json()["controllers"]["current"]
    first, other = (c1, c2) if cur == c1.url else (c2, c1)
    h.eq(cur, first.url)
    fulls = tables(a, "full")
    first.kill()
    h.wait_until(lambda: tables(a, "full") > fulls, 10, what="a full list from the other")
    h.register(other.url, h.instance(model="two@llm", port=8202))
    h.wait_until(lambda: routable(a).get("two") == 1, 10, what="two routable")
    h.eq(routable(a), {"keep": 4, "one": 1, "two": 1})
    h.eq(h.request("GET", a.url + "/api/health").json()["controllers"]["current"], other.url)
    log = a.logs()
    h.check("does not fit" not in log, f"no delta was refused: {log[-2000:]}")


def test_heartbeat_patches_full_view(t):
    # no table reads after the first: only the heartbeat moves the list
    c = t.controller(args=["--view_refresh_ms", "600000", "--view_poll_ms", "60000"])
    h.register(c.url, h.instance(port=8001))
    h.register(c.url, h.instance(port=8002))
    r1 = full(c.url)
    a1, b1 = h.find(r1.json(), port=8001), h.find(r1.json(), port=8002)
    time.sleep(0.3)  # ages to grow: not a readiness wait
    h.eq(h.heartbeat(c.url, h.instance(port=8001)).status, 200)
    r2 = full(c.url)
    h.eq(r2.header("ETag"), r1.header("ETag"), "a heartbeat keeps the ETag:")
    h.eq(len(r2.body), len(r1.body), "the heartbeat fields are fixed width:")
    ages = re.findall(rb'"heartbeat_age_ms":([ 0-9]*)[,}]', r2.body)
    h.check(len(ages) == 2 and all(len(x) == 12 for x in ages),
            f"ages right-aligned in 12 bytes: {ages}")
    items = json.loads(r2.body)
    a2, b2 = h.find(items, port=8001), h.find(items, port=8002)
    h.check(a2["last_heartbeat"] > a1["last_heartbeat"], f"{a2} after {a1}")
    h.check(0 <= a2["heartbeat_age_ms"] < 250, f"the beaten instance's age: {a2}")
    h.eq(b2["last_heartbeat"], b1["last_heartbeat"], "the other's time:")
    h.check(b2["heartbeat_age_ms"] >= b1["heartbeat_age_ms"] + 250,
            f"the other's age recomputed: {b1['heartbeat_age_ms']} -> {b2['heartbeat_age_ms']}")
    h.check(isinstance(a2["heartbeat_age_ms"], int) and isinstance(b2["heartbeat_age_ms"], int))
    # the per-model view too, and the routable form
    for q in ["model_name=vicuna%40llm&view=full", "view=full&healthy_only=true"]:
        r = h.request("GET", f"{c.url}/api/controller/models?{q}")
        it = h.find(r.json(), port=8001)
        h.eq(it["last_heartbeat"], a2["last_heartbeat"], f"{q}:")


if __name__ == "__main__":
    h.main(globals())
