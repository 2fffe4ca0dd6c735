"""The web dashboard in a real browser: Debian's Chromium driven by
playwright-core (tests/browser/dashboard.mjs) against real processes
(controller, builtin workers, `roster start webserver`). The browser does
what a user does (expand, drain with its confirmation, the playground,
watch a killed worker turn unhealthy) and prints what it saw; this file
starts the processes, checks the served files, and checks the browser's
claims against the controller API and the workers' /metrics.

ROSTER_SCREENSHOT_DIR=DIR keeps the screenshots (overview, expanded model,
action dialog, playground, ...) in DIR, prefixed with the test's name."""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_JS = os.path.join(HERE, "..", "browser", "dashboard.mjs")
NODE_DIR = os.path.join(HERE, "..", "node")
CHROMIUM = os.environ.get("ROSTER_CHROMIUM", "/usr/bin/chromium")
HB = 0.5  # heartbeat interval of the test's workers: a 1.5 s lease
LEASE_MS = int(3 * HB * 1000)
KEY = "sk-dash-test-key"
SECRET = "dash-cluster-secret"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "What is roster?"}],
        "max_tokens": 4, "temperature": 0}


def need_browser():
    missing = []
    if not shutil.which("node"):
        missing.append("node")
    if not os.path.exists(CHROMIUM):
        missing.append(CHROMIUM)
    pw = os.path.join(NODE_DIR, "node_modules", "playwright-core", "package.json")
    if not os.path.exists(pw):
        missing.append("tests/node/node_modules/playwright-core")
    if missing:
        raise h.Failure(f"missing {', '.join(missing)} (scripts/deps.sh test installs them)")


def worker(t, c, name, model, wtype="llm", args=()):
    return t.start(name, ["start", "worker", "--model_name", model, "--worker_type", wtype,
                          "--host", "127.0.0.1", "--controller_addr", c.url,
                          "--heartbeat_interval", str(HB), "--embed_dim", "32"] + list(args))


def webserver(t, args=(), name="web"):
    return t.start(name, ["start", "webserver", "--host", "127.0.0.1"] + list(args))


def inst(w):
    return f"127.0.0.1:{w.port}"


def addr(row):
    """host:port of a controller list row."""
    return f"{row['host']}:{row['port']}"


def served(w):
    return int(h.metric(w.url, "roster_worker_requests_total") or 0)


def routable(ws, model, headers=None):
    r = h.request("GET", ws.url + "/v1/models", headers=headers)
    if r.status != 200:
        return 0
    return {m["id"]: m["instances"] for m in r.json()["data"]}.get(model, 0)


def browser(t, scenario="acceptance", timeout=180, **env):
    """Runs tests/browser/dashboard.mjs; returns what it printed."""
    need_browser()
    e = dict(os.environ, ROSTER_SCENARIO=scenario, ROSTER_CHROMIUM=CHROMIUM,
             ROSTER_SCREENSHOT_TAG=t.name.replace("test_", ""))
    for k, v in env.items():
        e["ROSTER_" + k.upper()] = v if isinstance(v, str) else json.dumps(v)
    p = subprocess.run(["node", BROWSER_JS], env=e, capture_output=True, text=True,
                       timeout=timeout)
    lines = p.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise h.Failure(f"the browser printed no result (exit {p.returncode}):\n"
                        f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}") from None
    with open(os.path.join(t.tmp, f"browser-{scenario}.json"), "w") as f:
        json.dump(out, f, indent=1)  # kept with ROSTER_TEST_KEEP=1
    if out.get("error"):
        raise h.Failure(f"the browser failed after steps {[s['step'] for s in out['steps']]}: "
                        f"{out['error']}\nconsole: {out['console']}\n"
                        f"http errors: {out['http_errors']}")
    h.eq(p.returncode, 0, f"node: {p.stderr[-2000:]}")
    return out


def check_clean_page(out, expected_401=0):
    """No console error, no uncaught exception, no failed or refused request,
    no reload; exactly the 401s the run provoked on purpose."""
    h.eq(out["page_errors"], [], "uncaught exceptions in the page:")
    h.eq(out["console"], [], "console errors and warnings:")
    h.eq(out["failed_requests"], [], "failed requests:")
    h.eq(out["http_errors"], [], "HTTP errors:")
    h.eq(out["expected_401"], expected_401, "401s (no key yet, a wrong key, a wrong secret):")
    h.eq(out["console_401"], expected_401, "console lines about those 401s:")
    h.eq(out["loads"], 1, "page loads (no reload):")


def check_static(ws, headers=None):
    """The three files: types, the CSP, nothing inline, nothing external."""
    want = {"/": "text/html", "/dashboard.css": "text/css", "/dashboard.js": "javascript"}
    bodies = {}
    for path, ctype in want.items():
        r = h.request("GET", ws.url + path, headers=headers)
        h.eq(r.status, 200, f"GET {path}:")
        h.check(ctype in (r.header("Content-Type") or ""), f"{path}: {r.header('Content-Type')}")
        csp = r.header("Content-Security-Policy") or ""
        h.check("default-src 'self'" in csp and "script-src 'self'" in csp
                and "style-src 'self'" in csp, f"{path}: CSP {csp!r}")
        bodies[path] = r.body.decode()
    html = bodies["/"]
    h.check(re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, "no inline <script>")
    h.check("<style" not in html and not re.search(r"\sstyle\s*=", html), "no inline style")
    h.check(not re.search(r"\son[a-z]+\s*=", html), "no inline event handler")
    for path, body in bodies.items():
        h.check(not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", body),
                f"{path} names no external URL")
    return bodies


def controller_row(c, model, w):
    rows = h.list_models(c.url, model=model, view="full")
    for r in rows:
        if r["host"] == "127.0.0.1" and r["port"] == w.port:
            return r
    raise h.Failure(f"{model} {inst(w)} not in the controller's list: {rows}")


def chat_through(ws, n, headers=None):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", ws.port, timeout=10)
    try:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", json.dumps(CHAT), hdrs)
            r = conn.getresponse()
            body = r.read()
            h.eq(r.status, 200, f"chat through the webserver: {body[:300]!r}")
    finally:
        conn.close()


def cluster(t, secret=None, web_args=()):
    """A controller, two llm workers and an embedder, a webserver in front."""
    sargs = ["--cluster_secret", secret] if secret else []
    c = t.controller(args=sargs)
    w1 = worker(t, c, "llm1", "chat", args=sargs)
    w2 = worker(t, c, "llm2", "chat", args=sargs)
    e = worker(t, c, "emb", "emb", wtype="text2vec", args=sargs)
    ws = webserver(t, ["--controller_addr", c.url] + sargs + list(web_args))
    return c, w1, w2, e, ws


def acceptance(t, c, w1, w2, e, ws, key=None, secret=None, kill=True):
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    h.wait_until(lambda: routable(ws, "chat", auth) == 2 and routable(ws, "emb", auth) == 1, 15,
                 what="the webserver to route to both chat instances and the embedder")
    check_static(ws)
    env = dict(dashboard_url=ws.url + "/", chat_model="chat",
               expect=[{"model": "chat@llm", "instance": inst(w1)},
                       {"model": "chat@llm", "instance": inst(w2)},
                       {"model": "emb@text2vec", "instance": inst(e)}],
               drain={"model": "chat@llm", "instance": inst(w1)})
    if kill:
        e.expect_kill = True  # the browser SIGKILLs it, then the controller
        env["kill"] = {"model": "emb@text2vec", "instance": inst(e), "pid": e.p.pid}
        c.expect_kill = True
        env["kill_controller"] = {"pid": c.p.pid}
    if key:
        env["api_key"] = key
    if secret:
        env["cluster_secret"] = secret
    out = browser(t, **env)
    check_clean_page(out, expected_401=(2 if key else 0) + (1 if secret else 0))
    h.eq(out["mode"], "cluster")
    h.eq(out["base_url"], ws.url + "/v1", "the base URL to copy:")
    h.eq(out["listed"], {f"chat@llm {inst(w1)}": "healthy", f"chat@llm {inst(w2)}": "healthy",
                         f"emb@text2vec {inst(e)}": "healthy"}, "rows listed:")

    # drain: the page showed the server's answer, and the controller has it
    d = out["drain"]
    h.eq((d["weight_before"], d["weight_after"]), ("1", "0"), "row weight before/after:")
    h.eq(d["result_kind"], "ok", f"drain answer {d['result_text']!r}:")
    h.check(c.url in d["result_text"], f"the answer names the controller: {d['result_text']!r}")
    h.check("Drain" in d["dialog_text"] and inst(w1) in d["dialog_text"],
            f"the confirmation names the instance: {d['dialog_text']!r}")
    h.eq(d["button_after"], 1, "Undrain offered after draining:")
    # (read through a second controller on the same registry: the browser
    # may have killed the first)
    reader = t.controller(name="reader")
    row = controller_row(reader, "chat@llm", w1)
    h.eq((row["weight"], row["weight_override"]), (0, 0), "registry: drained instance:")
    h.eq(controller_row(reader, "chat@llm", w2)["weight"], 1, "registry: the other one untouched:")
    if secret:
        h.check("secret" in d["secret_error_text"].lower(),
                f"a wrong secret is refused, saying why: {d['secret_error_text']!r}")

    # the playground streamed (after the drain: from w2 only)
    pg = out["playground"]
    h.eq(pg["state"], "done", f"playground: {pg}")
    h.check(pg["chunks"] >= 3, f"streamed in several chunks: {pg['chunks']}")
    h.check(pg["text"].strip(), "a reply")
    h.check(re.fullmatch(r"[\d.]+ (ms|s)", pg["ttft"]), f"time to first token: {pg['ttft']!r}")
    h.check(re.match(r"\d+", pg["tokens"]), f"tokens from the usage chunk: {pg['tokens']!r}")

    if kill:
        # the controller was killed last: the table must be said stale
        cd = out["controller_down"]
        h.check("stale" in cd["banner"], f"stale banner: {cd['banner']!r}")
        h.check(cd["ms"] <= 5000, f"controller down shown after {cd['ms']} ms")
        h.check(cd["rows"] >= 3, "the last known rows are still shown")
        h.check("controller_down" in out["event_kinds"], f"feed: {out['event_kinds']}")

    # no request reached the drained instance, before or after
    h.eq(served(w1), 0, "the drained instance served nothing (playground included):")
    before = served(w2)
    h.check(before >= 1, "the playground's request went to the other instance")
    chat_through(ws, 20, auth)
    h.eq(served(w1), 0, "the drained instance still serves nothing:")
    h.eq(served(w2), before + 20, "the other one served all 20:")

    if kill:
        k = out["kill"]
        h.eq(k["before"], "healthy")
        h.check(k["unhealthy_after_ms"] <= LEASE_MS + 2000,
                f"unhealthy {k['unhealthy_after_ms']} ms after SIGKILL (lease {LEASE_MS} ms + 2 s)")
        h.eq(k["reloads"], 0, "no reload:")
        h.wait_until(lambda: not e.alive(), 5, what="the embedder to be dead")
        h.check("unhealthy" in out["event_kinds"], f"feed: {out['event_kinds']}")
    h.check("drained" in out["event_kinds"], f"feed: {out['event_kinds']}")
    h.check(not out["banner_visible"] and out["conn"] == "live", "connected at the end")
    return out


def test_dashboard_cluster(t):
    c, w1, w2, e, ws = cluster(t)
    acceptance(t, c, w1, w2, e, ws)


def test_dashboard_api_keys_and_secret(t):
    c, w1, w2, e, ws = cluster(t, secret=SECRET, web_args=["--api_keys", KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    # the back end's side of what the page relies on
    h.request("GET", ws.url + "/api/dashboard/state").error(401, "state without a key")
    # the feed thread's first state may trail the routing table (503 "starting")
    h.wait_until(lambda: h.request("GET", ws.url + "/api/dashboard/state",
                                   headers=auth).status == 200, 10,
                 what="the dashboard's first state")
    body = {"model_name": "chat@llm", "host": "127.0.0.1", "port": w1.port, "weight": 0}
    err = h.request("POST", ws.url + "/api/dashboard/instance", body, headers=auth).error(401)
    h.eq(err["code"], "cluster_secret_required")
    err = h.request("POST", ws.url + "/api/dashboard/instance", body,
                    headers=dict(auth, **{"X-Roster-Secret": "nope"})).error(401)
    h.eq(err["code"], "bad_cluster_secret")
    h.eq(controller_row(c, "chat@llm", w1)["weight"], 1, "refused actions changed nothing:")
    acceptance(t, c, w1, w2, e, ws, key=KEY, secret=SECRET, kill=False)
    for p in (ws, c):
        h.check(KEY not in p.logs() and SECRET not in p.logs(), f"{p.name}: secrets not logged")


def test_dashboard_embedded(t):
    """`roster start webserver` alone: the builtin models, plus an outside
    worker registered with it, killed."""
    ws = webserver(t, ["--data_dir", os.path.join(t.tmp, "data"),
                       "--heartbeat_interval", str(HB)])
    h.wait_until(lambda: routable(ws, "roster-chat") == 1 and routable(ws, "roster-embed") == 1,
                 20, what="the builtin models")
    ext = worker(t, ws, "ext", "outside", wtype="text2vec")
    h.wait_until(lambda: routable(ws, "outside") == 1, 10, what="the outside worker")
    rows = h.list_models(ws.url, view="full")
    chat = [r for r in rows if r["model_name"] == "roster-chat@llm"]
    emb = [r for r in rows if r["model_name"] == "roster-embed@text2vec"]
    h.eq((len(chat), len(emb)), (1, 1), f"the builtin instances: {rows}")
    ext.expect_kill = True
    out = browser(t, dashboard_url=ws.url + "/", chat_model="roster-chat",
                  expect=[{"model": "roster-chat@llm", "instance": addr(chat[0])},
                          {"model": "roster-embed@text2vec", "instance": addr(emb[0])},
                          {"model": "outside@text2vec", "instance": inst(ext)}],
                  kill={"model": "outside@text2vec", "instance": inst(ext), "pid": ext.p.pid})
    check_clean_page(out)
    h.eq(out["mode"], "embedded")
    h.check(set(out["listed"].values()) == {"healthy"}, f"{out['listed']}")
    h.eq(out["playground"]["state"], "done", f"{out['playground']}")
    h.check(out["playground"]["chunks"] >= 3, f"{out['playground']}")
    h.check(out["kill"]["unhealthy_after_ms"] <= LEASE_MS + 2000, f"{out['kill']}")


def register_many(c, specs, threads=4):
    """Registers instances that never expire (check_healthy false), over a
    few keep-alive connections. specs: [(model, host, port)]."""
    errors = []

    def run(part):
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30)
        try:
            for model, host, port in part:
                body = h.instance(model, host, port, check_healthy=False,
                                  heartbeat_interval_secs=60,
                                  load={"in_flight": port % 3, "queue_length": 0, "capacity": 4})
                conn.request("POST", "/api/controller/models", json.dumps(body),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    errors.append((r.status, data[:200]))
                    return
        finally:
            conn.close()

    parts = [specs[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=run, args=(p,)) for p in parts]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    if errors:
        raise h.Failure(f"registration failed: {errors[:3]}")


def heartbeat_loop(c, nmodels, stop):
    """Heartbeats the first instance of big and of models m00.. with a
    changing load."""
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    k = 0
    try:
        while not stop.is_set():
            k += 1
            targets = [("big@llm", "10.1.0.1", 30000)]
            targets += [(f"m{i:02d}@llm", f"10.0.{i}.1", 20000) for i in range(nmodels)]
            for model, host, port in targets:
                body = {"model_name": model, "host": host, "port": port,
                        "heartbeat_interval_secs": 60,
                        "load": {"in_flight": k % 4, "queue_length": 0, "capacity": 4}}
                conn.request("POST", "/api/controller/heartbeat", json.dumps(body),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise h.Failure(f"heartbeat: {r.status}")
            stop.wait(1.0)
    finally:
        conn.close()


def test_dashboard_10000_instances(t):
    """99 models of 50 instances and one of 5,050: the page stays small
    and quiet (paged groups, 50 rows per open group, requests per tick
    bounded by the open groups on screen)."""
    c = t.controller()
    specs = [(f"m{i:02d}@llm", f"10.0.{i}.1", 20000 + j) for i in range(99) for j in range(50)]
    specs += [("big@llm", f"10.1.{j // 250}.{j % 250 + 1}", 30000 + j) for j in range(5050)]
    t0 = time.monotonic()
    register_many(c, specs)
    print(f"    registered {len(specs)} instances in {time.monotonic() - t0:.1f}s")
    ws = webserver(t, ["--controller_addr", c.url])

    def loaded():
        r = h.request("GET", ws.url + "/api/dashboard/state", timeout=10)
        return r.status == 200 and r.json()["table"]["instances"] == 10000

    h.wait_until(loaded, 30, what="the webserver's table to hold 10,000 instances")
    # meanwhile one instance of every model heartbeats with a new load
    # every second: the models' versions keep changing
    stop = threading.Event()
    beats = threading.Thread(target=heartbeat_loop, args=(c, 99, stop))
    beats.start()
    try:
        out = browser(t, "scale", dashboard_url=ws.url + "/",
                      scale={"search": "m4", "search_hits": 10, "model": "big@llm",
                             "change": {"url": c.url + "/api/roster/instance",
                                        "body": {"model_name": "big@llm", "host": "10.1.0.10",
                                                 "port": 30009, "weight": 0},
                                        "instance": "10.1.0.10:30009"}})
    finally:
        stop.set()
        beats.join()
    check_clean_page(out)
    h.eq(out["groups_in_dom"], 50, "model groups in the DOM (one page):")
    h.eq(out["groups_page_info"], "models 1–50 of 100")
    h.eq(out["max_rows_per_group"], 50, "rows per open group:")
    h.check(out["rows_in_dom"] <= 50 * out["expanded_groups"], f"{out['rows_in_dom']} rows")
    h.check(out["rows_in_dom"] < 1000, f"only groups on screen load rows: {out['rows_in_dom']}")
    # at most one page request per open group on screen per tick (1 s)
    rate, on_screen = out["instances_requests_per_s"], out["expanded_on_screen"]
    h.check(rate <= on_screen * 1.2 + 1,
            f"no polling storm: {rate:.1f} page requests/s with {out['expanded_groups']} groups "
            f"open, {on_screen} on screen")
    h.eq(out["search_groups"], 10, "search m4 -> m40..m49:")
    h.eq(out["big_page_info"], "1–50 of 5,050")
    h.eq(out["big_last_page_info"], "5,001–5,050 of 5,050")
    h.eq(out["big_rows"], 50)
    # and the open page follows a change made elsewhere (here: the
    # controller; 10.1.0.10 sorts second, on the first page)
    h.check(out["change_shown_ms"] <= 5000, f"a drain shown after {out['change_shown_ms']} ms")
    h.check(out["big_first_rows_ms"] < 5000,
            f"first rows of the big model: {out['big_first_rows_ms']} ms")
    h.check(out["max_longtask_ms"] < 1500,
            f"main thread blocked at most {out['max_longtask_ms']} ms")


if __name__ == "__main__":
    h.main(globals())
