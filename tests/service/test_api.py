"""DB-GPT API compatibility and roster's extensions, on a SQLite controller.

Covers: register / heartbeat / deregister exactly as DB-GPT's clients send
them, the list's ten fields and their types, model_name and healthy_only
parsing, what a re-registration may and may not change, view=full, the
admin endpoint, leases, /api/health and /metrics, the embedded registry,
and persistence across a restart on the same SQLite file.
"""
import datetime
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

DBGPT_KEYS = sorted(["model_name", "host", "port", "weight", "check_healthy", "healthy",
                     "enabled", "prompt_template", "last_heartbeat", "remove_from_registry"])
FULL_KEYS = sorted(DBGPT_KEYS + ["model", "worker_type", "alive", "routable", "weight_declared",
                                 "weight_override", "lease_ms", "heartbeat_age_ms", "load",
                                 "blocked"])
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


def delete_url(url, model="vicuna@llm", host="127.0.0.1", port=8001, remove="False"):
    """The DELETE DB-GPT's client sends: every ModelInstance field in the
    query, None as an empty value, '@' as %40, booleans as True/False."""
    return (f"{url}/api/controller/models?model_name={model.replace('@', '%40')}&host={host}"
            f"&port={port}&weight=1.0&check_healthy=True&healthy=False&enabled=True"
            f"&prompt_template=&last_heartbeat=&remove_from_registry={remove}")


def check_iso_utc_now(value, slack_s=10.0):
    h.check(isinstance(value, str) and ISO.match(value),
            f"last_heartbeat must look like 2026-11-23T19:32:15.070000, got {value!r}")
    ts = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    h.check(abs((now - ts).total_seconds()) < slack_s,
            f"last_heartbeat {value} is not UTC now ({now.isoformat()})")


def test_register_list_fields(t):
    c = t.controller()
    r = h.request("POST", c.url + "/api/controller/models", h.instance())
    h.eq((r.status, r.body), (200, b"true"), "register:")
    h.eq(r.header("Content-Type").split(";")[0], "application/json")
    r = h.request("GET", c.url + "/api/controller/models")
    h.eq(r.status, 200)
    items = r.json()
    h.eq(len(items), 1)
    it = items[0]
    h.eq(sorted(it.keys()), DBGPT_KEYS, "DB-GPT's ten keys exactly:")
    h.check(b'"weight":1.0' in r.body, f"weight must be written as a float (1.0): {r.body!r}")
    h.check(isinstance(it["weight"], float) and it["weight"] == 1.0)
    h.check(isinstance(it["port"], int) and it["port"] == 8001)
    h.check(it["healthy"] is True and it["enabled"] is True and it["check_healthy"] is True)
    h.check(it["prompt_template"] is None)
    h.check(it["remove_from_registry"] is False)
    check_iso_utc_now(it["last_heartbeat"])

    # heartbeat of an unknown instance registers it on the spot
    r = h.request("POST", c.url + "/api/controller/heartbeat", h.instance(port=8002))
    h.eq((r.status, r.body), (200, b"true"), "heartbeat of an unknown instance:")
    got = h.find(h.list_models(c.url), port=8002)
    h.check(got is not None and got["healthy"] is True, f"heartbeat registered it: {got}")

    # unknown body fields are ignored (as FastAPI does)
    h.register(c.url, h.instance(port=8003, future_field={"nested": [1, 2, {"x": None}]},
                                 another="x", worker_labels=["a"]))
    h.check(h.find(h.list_models(c.url), port=8003) is not None)

    # a worker's heartbeat body may carry only the key (DB-GPT workers do)
    r = h.request("POST", c.url + "/api/controller/heartbeat",
                  {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001})
    h.eq((r.status, r.body), (200, b"true"), "minimal heartbeat:")

    # JSON null for optional fields is the same as absent
    h.register(c.url, {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8004,
                       "weight": None, "check_healthy": None, "enabled": None,
                       "prompt_template": None, "last_heartbeat": None})
    got = h.find(h.list_models(c.url), port=8004)
    h.eq((got["weight"], got["enabled"], got["check_healthy"]), (1.0, True, True))

    # last_heartbeat in the body is ignored (the server sets it)
    h.register(c.url, h.instance(port=8005, last_heartbeat="2001-01-01T00:00:00.000000",
                                 healthy=False))
    got = h.find(h.list_models(c.url), port=8005)
    check_iso_utc_now(got["last_heartbeat"])
    h.check(got["healthy"] is True, "healthy in the body is ignored")


def test_model_name_and_healthy_only_queries(t):
    c = t.controller()
    h.register(c.url, h.instance())
    h.register(c.url, h.instance(port=8002))
    h.register(c.url, h.instance(model="text2vec@text2vec", port=9001))
    h.register(c.url, h.instance(model="WorkerManager@service", port=8001))
    all4 = h.keys(h.list_models(c.url))
    h.eq(len(all4), 4)
    base = c.url + "/api/controller/models"
    for q in ["", "?model_name=", "?healthy_only=false", "?model_name=&healthy_only="]:
        r = h.request("GET", base + q)
        h.eq(r.status, 200, q)
        h.eq(h.keys(r.json()), all4, f"query {q!r} means all models:")
    for q in ["?model_name=vicuna%40llm", "?model_name=vicuna@llm", "?model_name=vicuna%40llm&",
              "?healthy_only=false&model_name=vicuna%40llm"]:
        r = h.request("GET", base + q)
        h.eq(r.status, 200, q)
        h.eq(h.keys(r.json()), [("vicuna@llm", "127.0.0.1", 8001), ("vicuna@llm", "127.0.0.1", 8002)],
             f"query {q!r}:")
    h.eq(h.list_models(c.url, model="nosuch@llm"), [])

    # take 8002 out: deregistered (alive false) -> only 8001 is routable
    r = h.request("DELETE", delete_url(c.url, port=8002))
    h.eq((r.status, r.body), (200, b"true"))
    routable = [("vicuna@llm", "127.0.0.1", 8001)]
    for v in ["true", "True", "1", "TRUE"]:
        h.eq(h.keys(h.list_models(c.url, model="vicuna@llm", healthy_only=v)), routable,
             f"healthy_only={v}:")
    for v in ["false", "False", "0", ""]:
        h.eq(len(h.list_models(c.url, model="vicuna@llm", healthy_only=v)), 2, f"healthy_only={v}:")


def test_deregister_and_remove(t):
    c = t.controller()
    for port in (8001, 8002, 8003, 8004):
        h.register(c.url, h.instance(port=port))

    # DB-GPT's deregister: the row stays, healthy false
    r = h.request("DELETE", delete_url(c.url, port=8001))
    h.eq((r.status, r.body), (200, b"true"), "deregister:")
    got = h.find(h.list_models(c.url), port=8001)
    h.check(got is not None, "deregister keeps the row")
    h.check(got["healthy"] is False, f"deregistered instance is unhealthy: {got}")
    h.check(h.find(h.list_models(c.url, healthy_only="true"), port=8001) is None)
    # the next heartbeat brings it back (DB-GPT semantics)
    h.heartbeat(c.url, port=8001)
    h.check(h.find(h.list_models(c.url, healthy_only="true"), port=8001) is not None)

    # remove_from_registry=true / True / 1 delete the row
    for port, v in ((8002, "true"), (8003, "True"), (8004, "1")):
        r = h.request("DELETE", delete_url(c.url, port=port, remove=v))
        h.eq((r.status, r.body), (200, b"true"), f"remove_from_registry={v}:")
        h.check(h.find(h.list_models(c.url), port=port) is None, f"row {port} deleted ({v})")
    # a short query (only the four fields the server reads) works too
    h.register(c.url, h.instance(port=8005))
    r = h.request("DELETE", c.url + "/api/controller/models?model_name=vicuna@llm&host=127.0.0.1"
                  "&port=8005&remove_from_registry=true")
    h.eq((r.status, r.body), (200, b"true"))
    h.check(h.find(h.list_models(c.url), port=8005) is None)

    # unknown instances: 200 true, nothing created
    before = h.list_models(c.url)
    for v in ("False", "True"):
        r = h.request("DELETE", delete_url(c.url, model="ghost@llm", port=9999, remove=v))
        h.eq((r.status, r.body), (200, b"true"), "deleting an unknown instance:")
    h.eq(h.keys(h.list_models(c.url)), h.keys(before))


def test_reregistration_rules(t):
    c = t.controller()
    h.register(c.url, h.instance(weight=2.0, prompt_template="vicuna_v1.1"))
    got = h.find(h.list_models(c.url))
    h.eq((got["weight"], got["prompt_template"]), (2.0, "vicuna_v1.1"))

    # re-register: declared weight and template change; enabled does not
    h.register(c.url, h.instance(weight=3.5, prompt_template="chatml", enabled=False,
                                 check_healthy=False))
    got = h.find(h.list_models(c.url))
    h.eq((got["weight"], got["prompt_template"], got["enabled"], got["check_healthy"]),
         (3.5, "chatml", True, True), "re-registration (weight, template, enabled, check_healthy):")

    # admin: disable and override the weight; a re-registration keeps both
    r = h.admin(c.url, {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001,
                        "weight": 0.5, "enabled": False})
    h.eq(r.status, 200, f"admin: {r}")
    h.register(c.url, h.instance(weight=4.0, enabled=True))
    full = h.find(h.list_models(c.url, view="full"))
    h.eq((full["enabled"], full["weight"], full["weight_declared"], full["weight_override"]),
         (False, 0.5, 4.0, 0.5), "override and enabled survive re-registration:")

    # a new instance registered with enabled false / weight 0 is listed but not routable
    h.register(c.url, h.instance(port=8002, enabled=False))
    h.register(c.url, h.instance(port=8003, weight=0))
    h.register(c.url, h.instance(port=8004, weight=0.25))
    items = h.list_models(c.url)
    h.eq(h.find(items, port=8002)["enabled"], False)
    h.eq(h.find(items, port=8003)["weight"], 0.0)
    h.check(isinstance(h.find(items, port=8003)["weight"], float), "weight 0 is listed as 0.0")
    h.eq(h.keys(h.list_models(c.url, healthy_only="true")), [("vicuna@llm", "127.0.0.1", 8004)],
         "routable = alive, enabled and weight > 0:")


def test_view_full(t):
    c = t.controller(args=["--heartbeat_timeout_secs", "42"])
    t_reg = time.monotonic()
    h.register(c.url, h.instance())  # DB-GPT worker: no interval -> controller's lease
    h.register(c.url, h.instance(model="qwen@llm", host="10.1.2.3", port=7000,
                                 heartbeat_interval_secs=0.5,
                                 load={"in_flight": 1, "queue_length": 0, "capacity": 4}))
    h.heartbeat(c.url, h.instance(model="qwen@llm", host="10.1.2.3", port=7000,
                                  heartbeat_interval_secs=0.5,
                                  load={"in_flight": 3, "queue_length": 2, "capacity": 8}))
    r = h.request("GET", c.url + "/api/controller/models?view=full")
    h.eq(r.status, 200)
    items = r.json()
    for it in items:
        h.eq(sorted(it.keys()), FULL_KEYS, "view=full keys:")
        h.eq(sorted(it["load"].keys()), ["capacity", "in_flight", "queue_length"])
        h.check(isinstance(it["heartbeat_age_ms"], int) and 0 <= it["heartbeat_age_ms"] < 10000)
    v = h.find(items)
    h.eq((v["model"], v["worker_type"], v["alive"], v["routable"], v["weight_declared"],
          v["weight_override"], v["lease_ms"]),
         ("vicuna", "llm", True, True, 1.0, None, 42000), "DB-GPT worker in view=full:")
    q = h.find(items, model="qwen@llm", host="10.1.2.3", port=7000)
    h.eq(q["lease_ms"], 1500, "lease = 3 x heartbeat_interval_secs:")
    # a heartbeat's load reaches the list with the next full refresh
    # (view_refresh_ms, 1 s by default), not at once
    h.wait_until(lambda: h.find(h.list_models(c.url, view="full"), model="qwen@llm",
                                host="10.1.2.3", port=7000)["load"]
                 == {"in_flight": 3, "queue_length": 2, "capacity": 8}, 3, interval=0.05,
                 what="the load of the last heartbeat in view=full")
    # heartbeat_age_ms grows while no heartbeat arrives (the view is not frozen
    # at the last write), and is never more than the time since the register
    age = h.wait_until(lambda: (lambda a: a if a >= 1000 else None)(
        h.find(h.list_models(c.url, view="full"))["heartbeat_age_ms"]), 4, interval=0.1,
        what="heartbeat_age_ms to reach 1000")
    h.check(age <= (time.monotonic() - t_reg) * 1000 + 100, f"heartbeat_age_ms {age} too large")
    # view=compat is the DB-GPT form; view=full combines with the other parameters
    r = h.request("GET", c.url + "/api/controller/models?view=compat")
    h.eq(r.status, 200)
    for it in r.json():
        h.eq(sorted(it.keys()), DBGPT_KEYS)
    r = h.request("GET", c.url + "/api/controller/models?view=full&healthy_only=true"
                  "&model_name=vicuna%40llm")
    h.eq(r.status, 200)
    h.eq([(i["model_name"], sorted(i.keys()) == FULL_KEYS) for i in r.json()], [("vicuna@llm", True)])


def register_many(url, n, models):
    """n instances over `models` models, through four keep-alive connections."""
    import http.client
    from urllib.parse import urlparse
    port = urlparse(url).port

    def part(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i in range(k, n, 4):
                body = json.dumps(h.instance(model=f"m{i % models:03d}@llm",
                                             host=f"10.2.{i // 250}.{i % 250 + 1}", port=8000))
                conn.request("POST", "/api/controller/models", body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                h.eq((r.status, r.read()), (200, b"true"), f"register #{i}")
        finally:
            conn.close()

    h.in_threads([lambda k=k: part(k) for k in range(4)])


def test_whole_list_built_off_the_loop(t):
    """A whole list of a registry of 2,000 instances or more is built on the
    lists thread and answered from the loop: the same answer (every
    instance, ETag, view token, 304 on a match), counted; a list of one
    model is built in place; a client that leaves while its list is built
    costs nothing."""
    c = t.controller()
    n = 2100
    register_many(c.url, n, 21)

    def offloaded():
        return h.metric(c.url, "roster_lists_offloaded_total")

    base = offloaded()
    r = h.request("GET", c.url + "/api/controller/models")
    h.eq(r.status, 200)
    h.eq(len(r.json()), n, "every instance listed")
    h.eq(offloaded(), base + 1, "built on the lists thread")
    etag = r.header("ETag")
    h.check(etag, f"an ETag: {r}")
    r = h.request("GET", c.url + "/api/controller/models", headers={"If-None-Match": etag})
    h.eq(r.status, 304, "unchanged: not modified")
    r = h.request("GET", c.url + "/api/controller/models?view=full&healthy_only=true")
    h.eq((r.status, len(r.json())), (200, n))
    h.check(r.header("X-Roster-View"), f"view=full carries its token: {r}")
    h.eq(sorted(r.json()[0].keys()), FULL_KEYS)
    h.eq(offloaded(), base + 2)
    r = h.request("GET", c.url + "/api/controller/models?model_name=m007%40llm")
    h.eq((r.status, len(r.json())), (200, n // 21))
    h.eq(offloaded(), base + 2, "one model: built in place")
    # clients that leave while their list is built: nothing breaks, nothing leaks
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", c.port), timeout=5)
        s.sendall(b"GET /api/controller/models?view=full HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    h.wait_until(lambda: offloaded() == base + 7, 5, what="the five lists built")
    h.eq(h.heartbeat(c.url, h.instance(model="m001@llm", host="10.2.0.2", port=8000)).status,
         200)
    r = h.request("GET", c.url + "/api/controller/models?view=full")
    h.eq((r.status, len(r.json())), (200, n))


def test_admin(t):
    c = t.controller()
    key = {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001}
    h.register(c.url, h.instance())
    h.register(c.url, h.instance(port=8002))

    r = h.admin(c.url, dict(key, weight=0))
    h.eq(r.status, 200, f"admin weight 0: {r}")
    rec = r.json()
    h.eq(sorted(rec.keys()), FULL_KEYS, "admin answers with the full record:")
    h.eq((rec["weight"], rec["weight_override"], rec["weight_declared"], rec["routable"]),
         (0.0, 0.0, 1.0, False))
    h.eq(h.keys(h.list_models(c.url, healthy_only="true")), [("vicuna@llm", "127.0.0.1", 8002)],
         "weight 0 drains:")
    h.eq(len(h.list_models(c.url)), 2, "drained instance is still listed")

    r = h.admin(c.url, dict(key, weight=None))
    h.eq(r.status, 200)
    h.eq((r.json()["weight"], r.json()["weight_override"]), (1.0, None), "null clears the override:")
    h.eq(len(h.list_models(c.url, healthy_only="true")), 2)

    r = h.admin(c.url, dict(key, enabled=False))
    h.eq(r.status, 200)
    h.eq((r.json()["enabled"], r.json()["routable"]), (False, False))
    h.eq(h.keys(h.list_models(c.url, healthy_only="true")), [("vicuna@llm", "127.0.0.1", 8002)],
         "enabled false takes it out of rotation:")
    r = h.admin(c.url, dict(key, enabled=True, weight=2.5))
    h.eq(r.status, 200)
    h.eq((r.json()["enabled"], r.json()["weight"]), (True, 2.5))
    h.eq(len(h.list_models(c.url, healthy_only="true")), 2)

    r = h.admin(c.url, dict(key, port=9999, weight=1))
    r.error(404, "admin on an unknown instance")
    r = h.admin(c.url, dict(key))
    r.error(422, "admin with neither weight nor enabled")
    r = h.admin(c.url, {"model_name": "nosuch@llm", "host": "127.0.0.1", "port": 8001,
                        "enabled": True})
    r.error(404, "admin on an unknown model")

    # the override survives re-registration and heartbeats
    h.register(c.url, h.instance(weight=7.0))
    h.heartbeat(c.url, h.instance(weight=9.0))
    got = h.find(h.list_models(c.url, view="full"))
    h.eq((got["weight"], got["weight_declared"]), (2.5, 7.0))


def heartbeat_timed(url, **fields):
    """Heartbeats; returns (sent, answered) monotonic times."""
    t0 = time.monotonic()
    h.heartbeat(url, **fields)
    return t0, time.monotonic()


def healthy_of(url, port):
    got = h.find(h.list_models(url), port=port)
    return got["healthy"] if got else None


def test_lease_expiry(t):
    c = t.controller(args=["--heartbeat_timeout_secs", "1"])
    fast = dict(heartbeat_interval_secs=0.5)
    h.register(c.url, h.instance(port=8001, **fast))
    h.register(c.url, h.instance(port=8002, check_healthy=False, **fast))
    h.register(c.url, h.instance(port=8003))  # no interval: --heartbeat_timeout_secs 1

    # expiry: between lease and lease + margin after the last heartbeat
    for _ in range(2):
        sent, acked = heartbeat_timed(c.url, port=8001, **fast)
        h.wait_until(lambda: time.monotonic() >= sent + 1.2, 2, interval=0.01)
        h.check(healthy_of(c.url, 8001) is True, "still healthy 1.2 s into a 1.5 s lease")
        h.wait_until(lambda: healthy_of(c.url, 8001) is False, 3, interval=0.02,
                     what="the 1.5 s lease to expire")
        expired = time.monotonic()
        h.check(expired - acked >= 1.4, f"expired {expired - acked:.2f}s after the heartbeat")
        h.check(expired - sent <= 1.5 + 0.6,
                f"expired {expired - sent:.2f}s after the heartbeat (lease 1.5 s)")
        h.check(h.find(h.list_models(c.url, healthy_only="true"), port=8001) is None)
        # the next heartbeat brings it back at once
        h.heartbeat(c.url, port=8001, **fast)
        h.eq(healthy_of(c.url, 8001), True, "healthy again on the next heartbeat:")

    # the controller's default lease applies to instances without an interval
    got = h.find(h.list_models(c.url, view="full"), port=8003)
    h.eq(got["lease_ms"], 1000)
    h.wait_until(lambda: healthy_of(c.url, 8003) is False, 3, what="the 1 s default lease")
    # check_healthy=false never expires
    h.eq(healthy_of(c.url, 8002), True, "check_healthy=false instance:")
    h.check(h.find(h.list_models(c.url, healthy_only="true"), port=8002) is not None)


def test_health_and_metrics(t):
    c = t.controller()
    h.register(c.url, h.instance())
    r = h.request("GET", c.url + "/api/health")
    h.eq(r.status, 200)
    doc = r.json()
    h.eq(doc["status"], "ok")
    h.eq(doc["database"]["reachable"], True)
    h.eq(doc["database"]["backend"], "sqlite")
    h.check(isinstance(doc["view"], dict) and doc["view"]["loaded"] is True, f"view: {doc}")
    h.eq(doc["view"]["instances"], 1)

    h.request("GET", c.url + "/nosuch")
    r = h.request("GET", c.url + "/metrics")
    h.eq(r.status, 200)
    h.eq(r.header("Content-Type").split(";")[0], "text/plain")
    text = r.body.decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            h.check(not line or re.match(r"^# (HELP|TYPE) [a-z_:][a-z0-9_:]* ", line),
                    f"bad comment line {line!r}")
            continue
        m = re.match(r'^([a-z_:][a-z0-9_:]*)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (\S+)$', line)
        h.check(m, f"bad sample line {line!r}")
        float(m.group(4))
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    for name in ['roster_http_requests_total{class="2xx"}', 'roster_http_requests_total{class="4xx"}',
                 'roster_registry_writes_total{kind="register"}', "roster_view_instances",
                 "roster_watchers"]:
        h.check(name in samples, f"/metrics lacks {name}")
    h.check(samples['roster_http_requests_total{class="2xx"}'] >= 2)
    h.check(samples['roster_http_requests_total{class="4xx"}'] >= 1)
    h.eq(samples['roster_registry_writes_total{kind="register"}'], 1.0)
    h.eq(samples["roster_view_instances"], 1.0)


def test_sigterm(t):
    c = t.controller()
    h.register(c.url, h.instance())
    etag = h.request("GET", c.url + "/api/controller/models").header("ETag")
    w = h.Background(lambda: h.watch(c.url, etag, 30))
    h.wait_watchers(c.url, 1)
    t0 = time.monotonic()
    c.signal(15)
    r = w.result(10)
    h.check(w.t_end - t0 < 2.0, f"held watch answered {w.t_end - t0:.2f}s after SIGTERM")
    r.error(503, "held watch at shutdown")
    h.eq(c.wait_exit(5), 0, "exit code after SIGTERM:")
    h.check(time.monotonic() - t0 < 5.0, f"exit took {time.monotonic() - t0:.2f}s")
    c.check_clean()
    # an idle controller stops at once too
    c2 = t.controller("idle")
    h.register(c2.url, h.instance())
    h.check(c2.stop_clean(5) < 2.0, "idle controller stops within 2 s of SIGTERM")


def test_sqlite_restart_persists(t):
    c = t.controller("ctl1")
    for port in range(8001, 8011):
        h.register(c.url, h.instance(port=port, prompt_template=f"t{port}"))
    h.check(h.admin(c.url, {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001,
                            "weight": 0, "enabled": False}).status == 200)
    h.request("DELETE", delete_url(c.url, port=8010, remove="true"))
    before = h.list_models(c.url, view="full")
    c.stop_clean()
    c2 = t.controller("ctl2")
    after = h.list_models(c2.url, view="full")  # the first list: loaded before serving
    h.eq(h.keys(after), h.keys(before), "registrations persist across a restart:")
    h.eq(len(after), 9)
    for a in after:
        b = h.find(before, a["model_name"], a["host"], a["port"])
        for k in ("weight", "weight_override", "enabled", "prompt_template", "check_healthy",
                  "lease_ms", "healthy"):
            h.eq(a[k], b[k], f"{a['port']} {k}:")
        h.eq(a["last_heartbeat"][:19], b["last_heartbeat"][:19], "last_heartbeat kept:")


def test_embedded_registry(t):
    c = t.controller("emb1", db=None, args=["--registry_type", "embedded"])
    h.register(c.url, h.instance())
    h.heartbeat(c.url, h.instance(port=8002))
    h.eq(h.keys(h.list_models(c.url)), [("vicuna@llm", "127.0.0.1", 8001),
                                        ("vicuna@llm", "127.0.0.1", 8002)])
    r = h.request("DELETE", delete_url(c.url, remove="True"))
    h.eq((r.status, r.body), (200, b"true"))
    h.eq(len(h.list_models(c.url)), 1)
    h.eq(h.request("GET", c.url + "/api/health").status, 200)
    c.stop_clean()
    leftovers = [f for f in os.listdir(t.tmp) if f.endswith((".db", ".db-wal", ".db-shm"))]
    h.eq(leftovers, [], "the embedded registry writes no file:")
    c2 = t.controller("emb2", db=None, args=["--registry_type", "embedded"])
    h.eq(h.list_models(c2.url), [], "embedded state is lost on exit:")


if __name__ == "__main__":
    h.main(globals())
