"""`roster start webserver`: the README's run command on the embedded default
(the whole system in one process, checked with the official openai npm
package), external workers joining it, cluster mode, the dashboard's data
and actions over HTTP (the browser test is test_dashboard.py), bad options,
and a clean SIGTERM.
"""
import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(ROOT, "tests", "node")
MSGS = [{"role": "user", "content": "How does a worker register?"}]


def webserver(t, args=(), env=None, name="web", wait=True):
    return t.start(name, ["start", "webserver", "--host", "127.0.0.1", "--data_dir",
                          os.path.join(t.tmp, "data")] + list(args), env=env, wait=wait)


def models(url, headers=None):
    r = h.request("GET", url + "/v1/models", headers=headers)
    h.eq(r.status, 200, f"/v1/models: {r}")
    return sorted(m["id"] for m in r.json()["data"])


def wait_models(url, want, headers=None, timeout=15.0):
    return h.wait_until(lambda: set(want) <= set(models(url, headers)), timeout,
                        what=f"/v1/models to list {want}")


def state(url, headers=None):
    """The dashboard's state (waiting out the "starting" 503 of a webserver
    whose feed has not run yet)."""
    def get():
        r = h.request("GET", url + "/api/dashboard/state", headers=headers)
        if r.status == 503 and b'"starting"' in r.body:
            return None
        h.eq(r.status, 200, f"state: {r}")
        return r.json()
    return h.wait_until(get, 10, what="the dashboard's first state")


def instances(url, model, headers=None, **q):
    qs = "&".join([f"model={model.replace('@', '%40')}"] + [f"{k}={v}" for k, v in q.items()])
    return h.request("GET", f"{url}/api/dashboard/instances?{qs}", headers=headers)


def wait_dash(url, model, headers=None):
    """Until the dashboard's snapshot has the model (it follows the routing
    table within a few milliseconds)."""
    h.wait_until(lambda: instances(url, model, headers=headers).status == 200, 5,
                 what=f"the dashboard to list {model}")


def test_run_script_embedded_default(t):
    """The README's run command: scripts/run.sh (ROSTER_BIN: the binary under
    test instead of a fresh build). Within seconds the builtin models are
    listed, the openai package chats (plain and streamed) and embeds, and the
    registry is a SQLite file under the data directory."""
    if not shutil.which("node"):
        raise h.Failure("node is not installed (scripts/deps.sh test installs it)")
    data = os.path.join(t.tmp, "data")
    t0 = time.monotonic()
    # (a script: never under ROSTER_TEST_WRAPPER; the other tests run the binary so)
    web = t.start("run", ["--data_dir", data], env={"ROSTER_BIN": h.BIN},
                  exe=os.path.join(ROOT, "scripts", "run.sh"), wrapper=[])
    wait_models(web.url, ["roster-chat", "roster-embed"])
    ready = time.monotonic() - t0
    h.check(ready < 10, f"the builtin models took {ready:.1f}s to be listed")
    out = web.logs()
    h.check(f"OpenAI base URL  {web.url}/v1" in out, f"the base URL is printed:\n{out[-2000:]}")
    h.check(f"dashboard        {web.url}/" in out, "the dashboard URL is printed")
    # a model that is registered but has nothing routable, for the SDK's 503
    h.register(web.url, h.instance(model="zero@llm", port=9, weight=0))
    env = dict(os.environ, ROSTER_BASE_URL=web.url + "/v1", ROSTER_API_KEY="any",
               ROSTER_CHAT_MODEL="roster-chat", ROSTER_EMB_MODEL="roster-embed",
               ROSTER_ZERO_MODEL="zero")
    p = subprocess.run(["node", os.path.join(NODE_DIR, "openai_client.mjs")], env=env,
                       capture_output=True, text=True, timeout=60)
    h.eq(p.returncode, 0, f"node: {p.stderr[-3000:]}")
    res = json.loads(p.stdout)
    h.eq(res["models"], ["roster-chat", "roster-embed"], "models.list:")
    h.eq((res["chat"]["object"], res["chat"]["finish"]), ("chat.completion", "length"))
    h.check(res["chat"]["text"], "a chat answer")
    h.eq(res["stream"]["text"], res["chat"]["text"], "the streamed text reassembled (temperature 0):")
    h.check(res["stream"]["chunks"] >= 20, f"streamed chunk by chunk: {res['stream']['chunks']}")
    h.eq(res["embeddings"]["n"], 2)
    h.check(abs(res["embeddings"]["norm"] - 1) < 1e-5, "unit vectors")
    h.eq(res["no_instance"]["status"], 503)
    h.eq(res["unknown_model"]["status"], 404)
    # the registry: a SQLite file under the data directory, with the models' rows
    db = os.path.join(data, "roster.db")
    with open(db, "rb") as f:
        h.eq(f.read(16), b"SQLite format 3\x00", "registry file header:")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {r[0] for r in con.execute("SELECT model_name FROM dbgpt_cluster_registry_instance")}
    finally:
        con.close()
    h.check({"roster-chat@llm", "roster-embed@text2vec", "WorkerManager@service"} <= rows,
            f"rows: {rows}")
    web.stop_clean()


def test_health_metrics_and_sigterm(t):
    web = webserver(t)
    wait_models(web.url, ["roster-chat", "roster-embed"])
    # "starting" (503) until every builtin instance is registered
    r = h.wait_until(lambda: (lambda r: r if r.status == 200 else None)(
        h.request("GET", web.url + "/api/health")), 10, what="health 200")
    doc = r.json()
    h.eq((doc["status"], doc["mode"]), ("ok", "embedded"))
    h.eq(doc["registry"]["database"]["backend"], "sqlite")
    h.eq(sorted(w["model"] for w in doc["workers"]), ["roster-chat@llm", "roster-embed@text2vec"])
    h.check(all(w["registered"] for w in doc["workers"]), "the builtin models are registered")
    m = h.request("GET", web.url + "/metrics").body.decode()
    for name in ('roster_http_requests_total{class="2xx"}', "roster_view_instances",
                 "roster_api_model_requests_total", "roster_registry_writes_total"):
        h.check(name in m, f"/metrics has {name}")
    h.eq(m.count("# TYPE roster_http_requests_total "), 1, "one HTTP section:")
    # the controller API is on the same port
    items = h.list_models(web.url, "roster-chat@llm")
    h.eq([(i["host"], i["healthy"]) for i in items], [("127.0.0.1", True)])
    port = items[0]["port"]
    dt = web.stop_clean()
    h.check(dt < 5, f"SIGTERM took {dt:.1f}s")
    out = web.logs()
    h.check("deregistered roster-chat@llm" in out, "the builtin models deregister on SIGTERM")
    # the row stays, unhealthy (as a DB-GPT worker's deregistration leaves it)
    db = os.path.join(t.tmp, "data", "roster.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT healthy FROM dbgpt_cluster_registry_instance WHERE "
                          "model_name='roster-chat@llm' AND port=?", (port,)).fetchone()
    finally:
        con.close()
    h.eq(row, (0,), "stored healthy flag after the drain:")


def test_external_worker_joins_and_leases(t):
    """It is a controller: another worker registers with it and is routed to;
    when that worker dies its lease runs out and the 503 says so."""
    web = webserver(t, ["--light"])
    w = t.start("ext", ["start", "worker", "--model_name", "ext", "--host", "127.0.0.1",
                        "--heartbeat_interval", "0.3", "--controller_addr", web.url])
    wait_models(web.url, ["ext"])
    h.eq(models(web.url), ["ext"], "--light: no builtin model")
    r = h.request("POST", web.url + "/v1/chat/completions",
                  {"model": "ext", "messages": MSGS, "max_tokens": 5})
    h.eq(r.status, 200, f"chat through the webserver: {r}")
    h.check(h.metric(w.url, "roster_worker_requests_total") >= 1, "the external worker served it")
    w.kill()
    h.wait_until(lambda: not h.list_models(web.url, "ext@llm", healthy_only=True), 5,
                 what="the dead worker's lease to run out")
    r = h.request("POST", web.url + "/v1/chat/completions",
                  {"model": "ext", "messages": MSGS, "max_tokens": 5})
    msg = r.error(503)["message"]
    h.check("leases ran out" in msg and "1 registered" in msg, f"the 503 explains: {msg!r}")
    ev = h.request("GET", web.url + "/api/dashboard/events").json()["events"]
    kinds = [(e["kind"], e["model"], e["port"]) for e in ev]
    h.check(("joined", "ext@llm", w.port) in kinds, f"joined event: {kinds}")
    h.check(("unhealthy", "ext@llm", w.port) in kinds, f"unhealthy event: {kinds}")


def test_cluster_mode(t):
    """--controller_addr: the API and the dashboard in front of controllers;
    LLM_MODEL and EMBEDDING_MODEL name the models; registry options refused."""
    c = t.controller()
    w = t.start("llm", ["start", "worker", "--model_name", "glm", "--host", "127.0.0.1",
                        "--controller_addr", c.url])
    t.start("emb", ["start", "worker", "--model_name", "t2v", "--worker_type", "text2vec",
                    "--host", "127.0.0.1", "--controller_addr", c.url])
    web = webserver(t, ["--light", "--remote_embedding", "--controller_addr", c.url],
                    env={"LLM_MODEL": "glm", "EMBEDDING_MODEL": "t2v"})
    wait_models(web.url, ["glm", "t2v"])
    st = state(web.url)
    h.eq((st["server"]["mode"], st["server"]["llm_model"], st["server"]["embedding_model"]),
         ("cluster", "glm", "t2v"))
    h.eq([(x["url"], x["ok"]) for x in st["controllers"]], [(c.url, True)])
    h.check(not os.path.exists(os.path.join(t.tmp, "data")), "no data directory in cluster mode")
    r = h.request("POST", web.url + "/v1/embeddings", {"model": "t2v", "input": "hi"})
    h.eq(r.status, 200, f"{r}")
    h.eq(h.request("GET", web.url + "/api/controller/models").status, 404,
         "no controller API in cluster mode:")
    health = h.request("GET", web.url + "/api/health").json()
    h.eq((health["status"], health["mode"]), ("ok", "cluster"))
    h.check("registry" not in health, "no registry of its own")
    del w
    r = h.cli(["start", "webserver", "--controller_addr", c.url, "--registry_db_type", "mysql"])
    h.eq(r.returncode, 64, f"registry options with --controller_addr: {r.stderr}")
    h.check("--registry_db_type configures the embedded controller" in r.stderr, r.stderr)


def test_dashboard_data(t):
    web = webserver(t)
    wait_models(web.url, ["roster-chat", "roster-embed"])
    wait_dash(web.url, "roster-chat@llm")
    for _ in range(20):
        h.eq(h.request("POST", web.url + "/v1/chat/completions",
                       {"model": "roster-chat", "messages": MSGS, "max_tokens": 3}).status, 200)

    def traffic_seen():
        st = state(web.url)
        m = {x["model"]: x for x in st["models"]}
        chat = m.get("roster-chat@llm")
        return st if chat and chat["requests"] >= 20 and chat["rps"] is not None else None
    st = h.wait_until(traffic_seen, 10, what="the state to count the chats")
    h.eq(st["server"]["mode"], "embedded")
    h.eq(st["server"]["base_url"], web.url + "/v1")
    h.eq(sorted(m["model"] for m in st["models"]),
         ["WorkerManager@service", "roster-chat@llm", "roster-embed@text2vec"])
    chat = next(m for m in st["models"] if m["model"] == "roster-chat@llm")
    h.eq((chat["instances"], chat["alive"], chat["routable"], chat["capacity"]), (1, 1, 1, 5))
    h.check(chat["p50_ms"] is not None and chat["p99_ms"] >= chat["p50_ms"], f"{chat}")
    h.eq(chat["error_rate"], 0)
    h.eq(st["controllers"][0]["ok"], True)
    r = instances(web.url, "roster-chat@llm")
    h.eq(r.status, 200, f"{r}")
    page = r.json()
    h.eq((page["total"], len(page["items"])), (1, 1))
    it = page["items"][0]
    h.eq((it["host"], it["healthy"], it["routable"], it["enabled"], it["weight"]),
         ("127.0.0.1", True, True, True, 1.0))
    h.eq(it["lease_ms"], 15000, "three heartbeats of 5 s:")
    h.check(0 <= it["heartbeat_age_ms"] < 15000, f"{it['heartbeat_age_ms']}")
    h.check(it["requests"] >= 20, f"{it}")
    # filters and paging
    h.eq(instances(web.url, "roster-chat@llm", status="unhealthy").json()["total"], 0)
    h.eq(instances(web.url, "roster-chat@llm", q="127.0.0").json()["total"], 1)
    h.eq(instances(web.url, "roster-chat@llm", q="10.9.9").json()["total"], 0)
    h.eq(instances(web.url, "roster-chat@llm", offset=1).json()["items"], [])
    instances(web.url, "nope@llm").error(404)
    instances(web.url, "roster-chat@llm", limit=0).error(400)
    instances(web.url, "roster-chat@llm", status="bogus").error(400)
    h.request("GET", web.url + "/api/dashboard/instances").error(400)
    h.request("GET", web.url + "/api/dashboard/events?after=x").error(400)
    ev = h.request("GET", web.url + "/api/dashboard/events?after=0").json()
    h.check(ev["events_seq"] >= len(ev["events"]) > 0, f"{ev}")
    h.eq(h.request("GET", f"{web.url}/api/dashboard/events?after={ev['events_seq']}")
         .json()["events"], [])


def test_dashboard_stream(t):
    """The live feed: the state at once, the recent events, then a new event
    (a worker joining) within a second, without asking."""
    web = webserver(t, ["--light"])
    # "the recent events" needs some: the feed thread records the builtin
    # workers joining on its own schedule (with none yet the feed's first
    # message is the state alone, and the next tick another state)
    h.wait_until(lambda: h.request("GET", web.url + "/api/dashboard/events").json()["events"],
                 5, what="the first events of the embedded webserver")
    s = h.socket_stream(web.port, "/api/dashboard/stream")
    try:
        first = s.read_events(2, timeout=5)
        h.eq([e[0] for e in first], ["state", "events"])
        h.eq(json.loads(first[0][1])["server"]["mode"], "embedded")
        w = t.start("late", ["start", "worker", "--model_name", "late", "--host", "127.0.0.1",
                             "--controller_addr", web.url])
        t0 = time.monotonic()

        def joined():
            for kind, data in s.read_events(1, timeout=0.5):
                if kind == "events" and any(e["kind"] == "joined" and e["port"] == w.port
                                            for e in json.loads(data)):
                    return True
            return False
        h.wait_until(joined, 5, interval=0, what="the joined event on the feed")
        h.check(time.monotonic() - t0 < 3, "the feed carried it promptly")
    finally:
        s.close()


def test_dashboard_actions(t):
    web = webserver(t, env={"ROSTER_CLUSTER_SECRET": "s3cret"})
    wait_models(web.url, ["roster-chat"])
    wait_dash(web.url, "roster-chat@llm")
    inst = h.list_models(web.url, "roster-chat@llm")[0]
    target = {"model_name": "roster-chat@llm", "host": inst["host"], "port": inst["port"]}
    sec = {"X-Roster-Secret": "s3cret"}
    st = state(web.url)
    h.eq(st["server"]["secret_required"], True)
    # refused without or with a wrong secret, and for bad bodies
    err = h.request("POST", web.url + "/api/dashboard/instance", dict(target, weight=0)).error(401)
    h.eq(err["code"], "cluster_secret_required")
    err = h.request("POST", web.url + "/api/dashboard/instance", dict(target, weight=0),
                    headers={"X-Roster-Secret": "nope"}).error(401)
    h.eq(err["code"], "bad_cluster_secret")
    h.request("POST", web.url + "/api/dashboard/instance", b"{not json", headers=sec).error(400)
    h.request("POST", web.url + "/api/dashboard/instance", dict(target), headers=sec).error(400)
    h.request("POST", web.url + "/api/dashboard/instance", dict(target, weight=-1),
              headers=sec).error(400)
    err = h.request("POST", web.url + "/api/dashboard/instance",
                    dict(target, port=1, weight=0), headers=sec).error(404)
    h.eq(err["code"], "instance_not_found")
    h.request("POST", web.url + "/api/dashboard/apply", dict(target, apply_type="explode"),
              headers=sec).error(400)
    h.eq(h.list_models(web.url, "roster-chat@llm")[0]["weight"], 1.0, "nothing changed:")
    # drain: weight 0 through the controller
    r = h.request("POST", web.url + "/api/dashboard/instance", dict(target, weight=0),
                  headers=sec)
    h.eq(r.status, 200, f"{r}")
    h.eq(r.json()["ok"], True)
    h.eq((r.json()["result"]["weight"], r.json()["result"]["routable"]), (0.0, False),
         "the controller's answer: the instance as it is now:")
    h.eq(h.list_models(web.url, "roster-chat@llm")[0]["weight"], 0.0, "drained:")

    def refused():  # once the watch has carried the drain to the routing table
        r = h.request("POST", web.url + "/v1/chat/completions",
                      {"model": "roster-chat", "messages": MSGS, "max_tokens": 3})
        return r if r.status == 503 else None
    r = h.wait_until(refused, 5, what="no routable instance once drained")
    h.check("drained" in r.json()["error"]["message"], r.json()["error"]["message"])
    # the override cleared: the worker's weight again; disable and enable
    r = h.request("POST", web.url + "/api/dashboard/instance", dict(target, weight=None),
                  headers=sec)
    h.eq(r.status, 200, f"clear the override: {r}")
    h.eq(h.list_models(web.url, "roster-chat@llm")[0]["weight"], 1.0)
    h.eq(h.request("POST", web.url + "/api/dashboard/instance", dict(target, enabled=False),
                   headers=sec).status, 200)
    h.eq(h.list_models(web.url, "roster-chat@llm")[0]["enabled"], False)
    h.eq(h.request("POST", web.url + "/api/dashboard/instance", dict(target, enabled=True),
                   headers=sec).status, 200)
    # stop and start the model on its worker
    r = h.request("POST", web.url + "/api/dashboard/apply", dict(target, apply_type="stop"),
                  headers=sec)
    h.eq(r.status, 200, f"{r}")
    h.eq(r.json()["ok"], True, f"{r.json()}")
    h.wait_until(lambda: not h.list_models(web.url, "roster-chat@llm", healthy_only=True), 5,
                 what="the stopped model to leave the routable set")
    r = h.request("POST", web.url + "/api/dashboard/apply", dict(target, apply_type="start"),
                  headers=sec)
    h.eq(r.status, 200, f"{r}")
    h.wait_until(lambda: h.list_models(web.url, "roster-chat@llm", healthy_only=True), 5,
                 what="the started model to come back")
    want = ("drained", "undrained", "disabled", "enabled", "unhealthy", "healthy")

    def kinds():  # the feed sees the registry on its own schedule, after the list does
        got = [e["kind"] for e in
               h.request("GET", web.url + "/api/dashboard/events").json()["events"]]
        return got if all(k in got for k in want) else None
    h.wait_until(kinds, 10, what=f"events {want} reported")
    h.check("s3cret" not in web.logs(), "the secret is never logged")


def test_api_keys_and_static_files(t):
    web = webserver(t, env={"ROSTER_API_KEYS": "sk-dash"})
    key = {"Authorization": "Bearer sk-dash"}
    wait_models(web.url, ["roster-chat"], headers=key)
    for path in ("/api/dashboard/state", "/api/dashboard/stream", "/api/dashboard/events",
                 "/api/dashboard/instances?model=roster-chat%40llm"):
        err = h.request("GET", web.url + path).error(401)
        h.eq(err["code"], "invalid_api_key", path)
    h.eq(state(web.url, key)["server"]["api_keys"], True)
    wait_dash(web.url, "roster-chat@llm", key)
    inst = h.list_models(web.url, "roster-chat@llm")[0]
    h.request("POST", web.url + "/api/dashboard/instance",
              {"model_name": "roster-chat@llm", "host": inst["host"], "port": inst["port"],
               "weight": 0}).error(401)
    # no secret configured: actions from loopback, with the key
    r = h.request("POST", web.url + "/api/dashboard/instance",
                  {"model_name": "roster-chat@llm", "host": inst["host"], "port": inst["port"],
                   "weight": 2}, headers=key)
    h.eq(r.status, 200, f"{r}")
    # the static files: no key, strict headers, ETags
    for path, ctype in (("/", "text/html"), ("/dashboard.css", "text/css"),
                        ("/dashboard.js", "text/javascript")):
        r = h.request("GET", web.url + path)
        if r.status == 404:
            raise h.Failure(f"{path}: this build has no dashboard file")
        h.eq(r.status, 200, path)
        h.check(r.header("Content-Type").startswith(ctype), f"{path}: {r.header('Content-Type')}")
        csp = r.header("Content-Security-Policy") or ""
        h.check("default-src 'self'" in csp and "script-src 'self'" in csp, f"{path}: CSP {csp}")
        h.eq(r.header("X-Content-Type-Options"), "nosniff")
        etag = r.header("ETag")
        h.eq(h.request("GET", web.url + path, headers={"If-None-Match": etag}).status, 304)
    page = h.request("GET", web.url + "/").body.decode()
    h.check("http://" not in page.replace("http://www.w3.org", "") and "https://" not in page,
            "nothing fetched from elsewhere")


def test_dashboard_10k_instances(t):
    """10,000 instances in 100 models: the state carries one entry per model
    (not the instances), a page of one model is 50 rows, both answer fast."""
    web = webserver(t, ["--light"])
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        for m in range(100):
            for i in range(100):
                body = json.dumps(h.instance(model=f"m{m:03d}@llm", host=f"10.1.{m}.{i + 1}",
                                             port=8000))
                conn.request("POST", "/api/controller/models", body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                h.eq((r.status, r.read()), (200, b"true"), f"register m{m} #{i}")
    finally:
        conn.close()
    st = h.wait_until(lambda: (lambda s: s if s["table"]["instances"] == 10000 else None)(
        state(web.url)), 15, what="the dashboard to hold 10,000 instances")
    h.eq(len(st["models"]), 100)
    raw = h.request("GET", web.url + "/api/dashboard/state").body
    h.check(len(raw) < 100_000, f"the state is {len(raw)} bytes for 100 models")
    t0 = time.monotonic()
    r = instances(web.url, "m042@llm", limit=50, offset=50)
    dt = time.monotonic() - t0
    h.eq(r.status, 200)
    page = r.json()
    h.eq((page["total"], len(page["items"])), (100, 50))
    h.check(dt < 0.5, f"a page took {dt * 1000:.0f} ms")
    h.eq(instances(web.url, "m042@llm", q="10.1.42.7").json()["total"], 11, "q filters:")


def test_registry_url_embedded(t):
    """The embedded controller takes --registry_db_url too; the file it
    names is used instead of --data_dir's."""
    db = os.path.join(t.tmp, "elsewhere.db")
    web = webserver(t, ["--registry_db_url", f"sqlite:///{db}"])
    wait_models(web.url, ["roster-chat"])
    h.check(os.path.exists(db), "the URL's file holds the registry")
    h.check(not os.path.exists(os.path.join(t.tmp, "data", "roster.db")), "not --data_dir's")
    health = h.request("GET", web.url + "/api/health").json()
    h.eq(health["registry"]["database"]["backend"], "sqlite")


def test_access_log_sampling(t):
    """--access_log_sample N logs one request in N (a 5xx always); the
    builtin models do not log the requests the API already logged."""
    web = webserver(t, ["--access_log_sample", "10"])
    wait_models(web.url, ["roster-chat"])
    before = web.logs().count("POST /v1/chat/completions")
    for _ in range(100):
        h.eq(h.request("POST", web.url + "/v1/chat/completions",
                       {"model": "roster-chat", "messages": MSGS, "max_tokens": 2}).status, 200)
    logged = web.logs().count("POST /v1/chat/completions") - before
    h.eq(logged, 10, "one line in ten:")
    # a 5xx is always logged: a model with nothing routable
    h.register(web.url, h.instance(model="gone@llm", port=9, weight=0))
    h.wait_until(lambda: "gone" in json.dumps(state(web.url)["models"]), 5, what="gone listed")
    for _ in range(3):
        h.eq(h.request("POST", web.url + "/v1/chat/completions",
                       {"model": "gone", "messages": MSGS}).status, 503)
    h.eq(web.logs().count("status=503"), 3, "every 5xx logged:")


def test_browser_forgery_refused(t):
    """With no secret, loopback is what authorises writes and actions: a page
    of another site (or one reached under a DNS name: rebinding) must not be
    able to make the operator's browser send them."""
    web = webserver(t)
    wait_models(web.url, ["roster-chat"])
    wait_dash(web.url, "roster-chat@llm")
    inst = h.list_models(web.url, "roster-chat@llm")[0]
    drain = {"model_name": "roster-chat@llm", "host": inst["host"], "port": inst["port"],
             "weight": 0}
    evil = h.instance(model="roster-chat@llm", host="evil.example", port=80, weight=1000)
    port = web.port
    cases = [
        ({"Origin": "http://evil.example"}, "cross-site page"),
        ({"Origin": "null"}, "sandboxed page"),
        ({"Sec-Fetch-Site": "cross-site"}, "cross-site fetch"),
        ({"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"}, "rebinding"),
    ]
    for hdrs, what in cases:
        err = h.request("POST", web.url + "/api/controller/models", evil, headers=hdrs).error(403)
        h.eq(err["code"], "cross_site_request", what)
        err = h.request("POST", web.url + "/api/dashboard/instance", drain, headers=hdrs).error(403)
        h.eq(err["code"], "cross_site_request", what)
    # a "simple" request (text/plain): no JSON, no action
    err = h.request("POST", web.url + "/api/dashboard/instance", json.dumps(drain),
                    headers={"Content-Type": "text/plain"}).error(415)
    h.eq(err["code"], "unsupported_media_type")
    h.eq([i["host"] for i in h.list_models(web.url, "roster-chat@llm")], [inst["host"]],
         "nothing registered:")
    h.eq(h.list_models(web.url, "roster-chat@llm")[0]["weight"], 1.0, "nothing drained:")
    # the dashboard's own page (same origin, an address) and non-browser clients pass
    own = {"Origin": f"http://127.0.0.1:{port}", "Host": f"127.0.0.1:{port}"}
    h.eq(h.request("POST", web.url + "/api/dashboard/instance", drain, headers=own).status, 200)
    h.register(web.url, h.instance(model="ok@llm", port=9))


def test_protect_reads_covers_the_dashboard(t):
    """--protect_reads: the registry's data is not republished by the
    dashboard's routes or /metrics to untrusted peers."""
    web = webserver(t, ["--protect_reads", "--trusted_networks", "127.0.0.2/32"],
                    env={"ROSTER_CLUSTER_SECRET": "s3cret"})
    sec = {"X-Roster-Secret": "s3cret"}
    wait_models(web.url, ["roster-chat"])
    for path in ("/api/controller/models", "/api/dashboard/state",
                 "/api/dashboard/instances?model=roster-chat%40llm", "/api/dashboard/events",
                 "/metrics"):
        h.request("GET", web.url + path).error(401)
    h.eq(h.request("GET", web.url + "/api/dashboard/state", headers=sec).status, 200)
    h.eq(h.request("GET", web.url + "/metrics", headers=sec).status, 200)
    h.eq(h.request("GET", web.url + "/api/health").status, 200, "health stays open:")


def test_action_in_flight_does_not_hold_the_exit(t):
    """A stop/start sent to a worker that never answers is cancelled by the
    shutdown: SIGTERM exits within the grace, not after the call's timeout."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        web = webserver(t, ["--light", "--control_timeout_ms", "30000", "--shutdown_grace_ms",
                            "1000"])
        h.register(web.url, h.instance(model="m@llm", port=hole.getsockname()[1],
                                       check_healthy=False))
        wait_dash(web.url, "m@llm")
        body = {"model_name": "m@llm", "host": "127.0.0.1", "port": hole.getsockname()[1],
                "apply_type": "restart"}
        call = h.Background(lambda: h.request("POST", web.url + "/api/dashboard/apply", body,
                                              timeout=40))
        time.sleep(0.5)
        dt = web.stop_clean()
        h.check(dt < 4, f"SIGTERM took {dt:.1f}s with an action in flight")
        try:
            r = call.result(10)
            h.eq(r.status, 502, f"{r}")
        except Exception:  # noqa: BLE001 - the connection may close before the answer
            pass
    finally:
        hole.close()


def test_bad_options(t):
    cases = [
        (["--model_name", "a@b"], 64, "without '@'"),
        (["--threads", "0"], 64, "--threads"),
        (["--routing", "fastest"], 64, "--routing"),
        (["--bogus"], 64, "unknown option --bogus"),
        (["--data_dir", "/proc/roster-cannot"], 73, "cannot create"),
        (["--registry_db_name", "/nonexistent-dir/r.db"], 78, "does not exist"),
        (["--registry_db_url", "postgres://u@h/db"], 64, "registry_db_url"),
        (["--registry_db_host", "mysql://u@h/db", "--registry_db_type", "mysql"], 64,
         "--registry_db_url"),
    ]
    for args, code, text in cases:
        r = h.cli(["start", "webserver", "--host", "127.0.0.1", "--port", "0"] + args, timeout=20)
        h.eq(r.returncode, code, f"{args}: {r.stderr[-500:]}")
        h.check(text in r.stderr, f"{args}: {r.stderr[-500:]!r}")
    r = h.cli(["start", "webserver", "--help"])
    h.eq(r.returncode, 0)
    for text in ("--controller_addr", "--light", "--remote_embedding", "--data_dir",
                 "API server options", "--api_keys", "controller options", "--registry_db_type"):
        h.check(text in r.stdout, f"--help mentions {text}")


h.main(globals())
