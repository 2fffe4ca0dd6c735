"""Security suite (ctest label `security`, issue 11):

- API keys: every endpoint of the apiserver and the webserver (docs/api.md)
  x {no header, wrong scheme, bad key, good key}; the cluster secret on every
  write, admin and apply endpoint of the controller, the worker and the
  webserver, with the registry table byte-identical after each refusal;
- SSRF: with --instance_networks 127.0.0.1/32, registrations pointing
  outside are refused, and a canary listener on 127.0.0.9 receives no
  connection during the whole suite, even for a row written into the table
  behind the controller's back;
- secrets never logged: canary API key, cluster secret, database password
  and upstream key (and a password inside a URL) through success and
  failure paths; every log, every HTTP answer and /proc/PID/cmdline is
  grepped; CR/LF in user-controlled fields forges no log line;
- bad input: the catalogue of bad_input.py against the controller, and its
  worker and apiserver cases; at least 40 distinct classes, each a 4xx JSON
  answer or a clean close, the process up, no row changed.

(Slow and idle connections: tests/service/test_slow_clients.py.)
"""
import base64
import json
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import bad_input  # noqa: E402
import harness as h  # noqa: E402

TABLE = "dbgpt_cluster_registry_instance"
MSGS = [{"role": "user", "content": "hi"}]


def b64(s):
    return base64.b64encode(s.encode()).decode()


# ---- the canary: an address outside every allowed network --------------------------

class Canary:
    """Listens on 127.0.0.9 (outside --instance_networks 127.0.0.1/32) for the
    whole suite and records every connection."""

    HOST = "127.0.0.9"

    def __init__(self):
        self.hits = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            c.settimeout(0.5)
            try:
                first = c.recv(200)
            except OSError:
                first = b""
            self.hits.append((time.strftime("%H:%M:%S"), addr, first))
            c.close()


CANARY = Canary()


# ---- API keys ----------------------------------------------------------------------

def key_variants(good):
    return [("no header", {}), ("wrong scheme Basic", {"Authorization": "Basic " + b64(good)}),
            ("wrong scheme Token", {"Authorization": "Token " + good}),
            ("key without scheme", {"Authorization": good}),
            ("bad key", {"Authorization": "Bearer not-" + good}),
            ("empty bearer", {"Authorization": "Bearer "}),
            ("good key", {"Authorization": "Bearer " + good})]


def api_routes(chat, emb):
    routes = []
    for prefix in ("/v1/", "/api/v1/"):
        routes += [("GET", prefix + "models", None),
                   ("GET", prefix + "models/" + chat, None),
                   ("POST", prefix + "chat/completions",
                    {"model": chat, "messages": MSGS, "max_tokens": 4}),
                   ("POST", prefix + "chat/completions",
                    {"model": chat, "messages": MSGS, "max_tokens": 4, "stream": True}),
                   ("POST", prefix + "completions", {"model": chat, "prompt": "hi", "max_tokens": 4}),
                   ("POST", prefix + "embeddings", {"model": emb, "input": ["a", "b"]})]
    return routes


def head_status(port, method, path, headers, body=None):
    """Status of an answer read only up to its headers (for endless streams)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return int(out.split(b" ", 2)[1]), out
    finally:
        s.close()


def check_key_matrix(url, port, routes, open_routes, good, extra=None, stream_paths=()):
    """Every route x every variant: 401 invalid_api_key unless the good key;
    open routes answer the same to all. Returns the number of requests."""
    n, failures = 0, []
    for what, hdrs in key_variants(good):
        hdrs = dict(hdrs, **(extra or {}))
        for method, path, body in routes:
            n += 1
            label = f"{method} {path} with {what}"
            try:
                if path in stream_paths:
                    status, raw = head_status(port, method, path, hdrs, body)
                    if what == "good key":
                        h.eq(status, 200, f"{label}:")
                    else:
                        h.eq(status, 401, f"{label}:")
                    continue
                r = h.request(method, url + path, body, headers=hdrs, timeout=10)
                if what == "good key":
                    h.eq(r.status, 200, f"{label}: {r}")
                else:
                    err = r.error(401, label)
                    h.eq(err["code"], "invalid_api_key", f"{label} code:")
            except Exception as e:  # noqa: BLE001 - report every failing combination
                failures.append(str(e)[:300])
        for method, path in open_routes:
            n += 1
            r = h.request(method, url + path, headers=hdrs)
            if r.status != 200:
                failures.append(f"{method} {path} with {what}: open route answered {r}")
    if failures:
        raise h.Failure(f"{len(failures)} of {n} key checks failed:\n  " + "\n  ".join(failures))
    return n


def chat_worker(t, name, ctl_url, model="chat", worker_type="llm", args=(), env=None):
    return t.start(name, ["start", "worker", "--model_name", model, "--worker_type", worker_type,
                          "--host", "127.0.0.1", "--controller_addr", ctl_url,
                          "--heartbeat_interval", "60", "--embed_dim", "16"] + list(args), env=env)


def routed(api_url, models, headers=None):
    h.wait_until(lambda: set(models) <= {m["id"] for m in h.request(
        "GET", api_url + "/v1/models", headers=headers).json()["data"]}, 15,
        what=f"the apiserver to route {models}")


def test_api_keys_apiserver(t):
    key = "k-good-0b1c"
    c = t.controller()
    chat_worker(t, "chat", c.url)
    chat_worker(t, "emb", c.url, model="emb", worker_type="text2vec")
    api = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url],
                  env={"ROSTER_API_KEYS": "k-other," + key})
    good = {"Authorization": "Bearer " + key}
    routed(api.url, ["chat", "emb"], good)
    n = check_key_matrix(api.url, api.port, api_routes("chat", "emb"),
                         [("GET", "/api/health"), ("GET", "/metrics")], key)
    print(f"    apiserver: {n} key checks")


def web_instances(web):
    items = h.list_models(web.url)
    return {i["model_name"]: i for i in items}


def start_webserver(t, key, secret, name="web"):
    web = t.start(name, ["start", "webserver", "--host", "127.0.0.1", "--heartbeat_interval", "60",
                         "--trusted_networks", "", "--data_dir", os.path.join(t.tmp, name)],
                  env={"ROSTER_API_KEYS": key, "ROSTER_CLUSTER_SECRET": secret})
    h.wait_until(lambda: h.request("GET", web.url + "/api/health").status == 200, 20,
                 what="the webserver's builtin models")
    return web


def test_api_keys_webserver(t):
    key, secret = "k-web-77aa", "s-web-1234"
    web = start_webserver(t, key, secret)
    inst = web_instances(web)["roster-chat@llm"]
    target = {"model_name": "roster-chat@llm", "host": inst["host"], "port": inst["port"]}
    routes = api_routes("roster-chat", "roster-embed") + [
        ("GET", "/api/dashboard/state", None),
        ("GET", "/api/dashboard/stream", None),
        ("GET", "/api/dashboard/events?after=0", None),
        ("GET", "/api/dashboard/instances?model=roster-chat%40llm", None),
        ("POST", "/api/dashboard/instance", dict(target, enabled=True)),
        ("POST", "/api/dashboard/apply", dict(target, apply_type="start")),
    ]
    opens = [("GET", "/"), ("GET", "/dashboard.css"), ("GET", "/dashboard.js"),
             ("GET", "/api/health"), ("GET", "/metrics")]
    n = check_key_matrix(web.url, web.port, routes, opens, key,
                         extra={"X-Roster-Secret": secret},
                         stream_paths=("/api/dashboard/stream",))
    print(f"    webserver: {n} key checks")


# ---- the cluster secret --------------------------------------------------------------

def secret_variants(secret):
    return [("no header", {}), ("wrong scheme Basic", {"Authorization": "Basic " + b64(secret)}),
            ("secret without scheme", {"Authorization": secret}),
            ("bad X-Roster-Secret", {"X-Roster-Secret": "not-" + secret}),
            ("empty X-Roster-Secret", {"X-Roster-Secret": ""}),
            ("bad bearer", {"Authorization": "Bearer not-" + secret}),
            ("secret with a trailing space", {"X-Roster-Secret": secret + " "}),
            ("good X-Roster-Secret", {"X-Roster-Secret": secret}),
            ("good bearer", {"Authorization": "Bearer " + secret})]


def ctl_writes(key):
    q = (f"model_name={key['model_name'].replace('@', '%40')}&host={key['host']}"
         f"&port={key['port']}")
    return [("register", "POST", "/api/controller/models", h.instance(port=8102)),
            ("heartbeat", "POST", "/api/controller/heartbeat",
             h.instance(model=key["model_name"], host=key["host"], port=key["port"])),
            ("admin", "POST", "/api/roster/instance", dict(key, weight=0)),
            ("deregister", "DELETE", "/api/controller/models?" + q, None),
            ("remove", "DELETE", "/api/controller/models?" + q + "&remove_from_registry=true",
             None)]


def check_secret_matrix(url, writes, secret, dump, restore, extra=None, good_ok=(200,)):
    """Every write x every secret variant: refused with 401 and the table
    byte-identical; the good secrets succeed (restore() puts the table back).
    Returns the number of refusals checked."""
    failures, n = [], 0
    for what, hdrs in secret_variants(secret):
        hdrs = dict(hdrs, **(extra or {}))
        for name, method, path, body in writes:
            before = dump()
            r = h.request(method, url + path, body, headers=hdrs)
            label = f"{name} ({method} {path[:40]}) with {what}"
            try:
                if what.startswith("good"):
                    h.check(r.status in good_ok, f"{label}: {r}")
                    restore()
                else:
                    n += 1
                    r.error(401, label)
                    after = dump()
                    h.check(after == before, f"{label}: the table changed:\n{before!r}\n->\n{after!r}")
            except Exception as e:  # noqa: BLE001 - report every failing combination
                failures.append(str(e)[:600])
    if failures:
        raise h.Failure(f"{len(failures)} secret checks failed:\n  " + "\n  ".join(failures))
    return n


def test_cluster_secret_controller_and_worker(t):
    secret = "s-ctl-5a5a"
    env = {"ROSTER_CLUSTER_SECRET": secret}
    c = t.controller(args=["--trusted_networks", ""], env=env)
    auth = {"X-Roster-Secret": secret}
    base = h.instance(port=8101)
    h.register(c.url, base, headers=auth)
    w = chat_worker(t, "w", c.url, env=env)
    h.wait_until(lambda: h.find(h.list_models(c.url), "chat@llm", "127.0.0.1", w.port), 10,
                 what="the worker's registration")
    key = {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8101}

    def dump():
        return h.sqlite_dump(t.sqlite_path)

    def restore():
        h.register(c.url, base, headers=auth)
        r = h.request("DELETE", c.url + "/api/controller/models?model_name=vicuna%40llm"
                      "&host=127.0.0.1&port=8102&remove_from_registry=true", headers=auth)
        h.eq(r.status, 200)
    n = check_secret_matrix(c.url, ctl_writes(key), secret, dump, restore)
    # the worker's apply endpoint
    applies = [("apply " + a, "POST", "/api/worker/apply", body) for a, body in [
        ("update_params", {"model": "chat", "apply_type": "update_params", "params": {"weight": 2}}),
        ("stop", {"model": "chat", "apply_type": "stop"}),
        ("restart", {"model": "chat", "apply_type": "restart"}),
        ("start", {"model": "chat", "apply_type": "start"})]]

    def restore_worker():
        h.wait_until(lambda: h.find(h.list_models(c.url), "chat@llm", "127.0.0.1", w.port), 10,
                     what="the worker's instance back")
    good = [v for v in secret_variants(secret) if v[0] == "good X-Roster-Secret"]
    variants = [v for v in secret_variants(secret) if not v[0].startswith("good")] + good
    failures = []
    for what, hdrs in variants:
        for name, method, path, body in applies:
            before = dump()
            r = h.request(method, w.url + path, body, headers=hdrs, timeout=10)
            label = f"worker {name} with {what}"
            try:
                if what.startswith("good"):
                    h.eq(r.status, 200, f"{label}: {r}")
                    restore_worker()
                else:
                    n += 1
                    r.error(401, label)
                    h.check(dump() == before, f"{label}: the table changed")
            except Exception as e:  # noqa: BLE001
                failures.append(str(e)[:400])
    h.eq(failures, [], "worker apply:")
    print(f"    {n} refused writes, the table byte-identical after each")


def test_cluster_secret_webserver(t):
    key, secret = "k-web-9d9d", "s-web-4e4e"
    web = start_webserver(t, key, secret)
    inst = web_instances(web)["roster-chat@llm"]
    target = {"model_name": "roster-chat@llm", "host": inst["host"], "port": inst["port"]}
    auth = {"X-Roster-Secret": secret, "Authorization": "Bearer " + key}
    path = os.path.join(t.tmp, "web", "roster.db")
    base = h.instance(port=8101)
    h.register(web.url, base, headers=auth)
    writes = ctl_writes({"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8101})

    def restore():
        h.register(web.url, base, headers={"X-Roster-Secret": secret})
        h.request("DELETE", web.url + "/api/controller/models?model_name=vicuna%40llm"
                  "&host=127.0.0.1&port=8102&remove_from_registry=true",
                  headers={"X-Roster-Secret": secret})
    n = check_secret_matrix(web.url, writes, secret, lambda: h.sqlite_dump(path), restore)
    # the dashboard's actions: with the API key, the secret decides
    failures = []
    for what, hdrs in secret_variants(secret):
        if what == "good bearer":
            continue  # the Authorization header carries the API key here
        hdrs = dict(hdrs)
        if "Authorization" in hdrs:
            continue
        hdrs["Authorization"] = "Bearer " + key
        for p, body in [("/api/dashboard/instance", dict(target, enabled=True)),
                        ("/api/dashboard/apply", dict(target, apply_type="start"))]:
            before = h.sqlite_dump(path)
            r = h.request("POST", web.url + p, body, headers=hdrs, timeout=10)
            try:
                if what.startswith("good"):
                    h.eq(r.status, 200, f"{p} with {what}: {r}")
                else:
                    n += 1
                    err = r.error(401, f"{p} with {what}")
                    h.check(err["code"] in ("cluster_secret_required", "bad_cluster_secret"),
                            f"{p} with {what}: code {err['code']}")
                    h.check(h.sqlite_dump(path) == before, f"{p} with {what}: the table changed")
            except Exception as e:  # noqa: BLE001
                failures.append(str(e)[:400])
    h.eq(failures, [], "dashboard actions:")
    print(f"    webserver: {n} refused writes and actions, the table byte-identical after each")


# ---- SSRF ----------------------------------------------------------------------------

def accepts(argv):
    return h.cli(argv + ["--check"]).returncode == 0


def table_version(api):
    return h.request("GET", api.url + "/api/health").json()["table"]["version"]


def test_ssrf_instance_networks(t):
    nets = ["--instance_networks", "127.0.0.1/32"]
    c = t.controller(args=nets)
    w = chat_worker(t, "w", c.url, args=["--heartbeat_interval", "1"])
    api_argv = ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url,
                "--eject_ms", "100"]
    api_has_nets = accepts(api_argv + nets)
    api = t.start("api", api_argv + (nets if api_has_nets else []))
    routed(api.url, ["chat"])
    before = h.sqlite_dump(t.sqlite_path)
    outside = [CANARY.HOST, "127.0.0.2", "10.0.0.1", "0.0.0.0", "::1", "::ffff:127.0.0.9",
               "2130706441", "0x7f000009", "127.1", "0177.0.0.9", "localhost", "[127.0.0.9]",
               "127.0.0.9.nip.io", "127.0.0.1.", " 127.0.0.1", "127.0.0.1\t"]
    failures = []
    for host in outside:
        for path in ("/api/controller/models", "/api/controller/heartbeat"):
            r = h.request("POST", c.url + path, h.instance(model="chat@llm", host=host,
                                                           port=CANARY.port))
            try:
                h.check_error(r.status, r.body, (403, 422), f"{path} host {host!r}",
                              r.header("Content-Type"))
            except h.Failure as e:
                failures.append(str(e))
    h.eq(failures, [], "registrations outside --instance_networks:")
    h.eq(h.sqlite_dump(t.sqlite_path), before, "the table after the refused registrations:")
    # a row written behind the controller's back (by a controller without the
    # flag, a DB-GPT controller, or before the flag was set)
    version0 = table_version(api)
    con = sqlite3.connect(t.sqlite_path, timeout=10)
    try:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({TABLE})") if r[1] != "id"]
        now_ms = int(time.time() * 1000)
        sel = []
        for col in cols:
            sel.append({"host": "?", "port": "?", "roster_updated_ms": str(now_ms),
                        "roster_lease_ms": "3600000"}.get(col, col))
        con.execute(f"INSERT INTO {TABLE} ({', '.join(cols)}) SELECT {', '.join(sel)} FROM {TABLE} "
                    "WHERE model_name = 'chat@llm' AND port = ?", (CANARY.HOST, CANARY.port, w.port))
        con.commit()
    finally:
        con.close()
    # listed within a full refresh of the view (--view_refresh_ms 5000)
    h.wait_until(lambda: h.find(h.list_models(c.url, model="chat@llm"), "chat@llm", CANARY.HOST,
                                CANARY.port), 8, what="the planted row to be listed")
    h.wait_until(lambda: table_version(api) != version0, 5,
                 what="the apiserver to take the new list")
    listed = h.find(h.list_models(c.url, model="chat@llm"), "chat@llm", CANARY.HOST, CANARY.port)
    routable = h.find(h.list_models(c.url, model="chat@llm", healthy_only="true"), "chat@llm",
                      CANARY.HOST, CANARY.port)
    results = []
    for i in range(30):
        r = h.request("POST", api.url + "/v1/chat/completions",
                      {"model": "chat", "messages": MSGS, "max_tokens": 2, "stream": i % 2 == 1})
        results.append(r.status)
    print(f"    apiserver --instance_networks: {'accepted' if api_has_nets else 'UNKNOWN FLAG'}; "
          f"the planted row listed: {listed is not None} (healthy_only: {routable is not None}); "
          f"30 chats: {sorted(set(results))}; canary connections so far: {len(CANARY.hits)}")
    problems = []
    if not api_has_nets:
        problems.append("the apiserver does not accept --instance_networks")
    if routable is not None:
        problems.append(f"the controller lists the planted row outside --instance_networks as "
                        f"routable: {routable}")
    if CANARY.hits:
        problems.append(f"{len(CANARY.hits)} connection(s) to the canary: {CANARY.hits[:3]}")
    if set(results) != {200}:
        problems.append(f"chats while the planted row exists: {sorted(set(results))}")
    h.eq(problems, [], "SSRF:")


# ---- secrets never logged --------------------------------------------------------------

CANARIES = {
    "api key": "CANARY-APIKEY-4f1e8b2c9a",
    "cluster secret": "CANARY-SECRET-7d3a6e0f51",
    "database password": "CANARY-DBPW-2b9c4d7e13",
    "upstream key": "CANARY-UPSTREAM-8e5f1a3c77",
    "URL password": "CANARY-URLPW-6a2d9f4b08",
}


class KeyedEngine:
    """An OpenAI-compatible engine that wants `Bearer <key>`. Model 'deny'
    (or a wrong key) gets a 401 that echoes the key it was sent, as some
    engines do."""

    def __init__(self, key):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, obj, ctype="application/json"):
                out = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                self.reply(200, {"object": "list", "data": [{"id": "gpt", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                got = self.headers.get("Authorization", "")
                if got != "Bearer " + key or body.get("model") == "deny":
                    self.reply(401, {"error": {"message": f"Incorrect API key provided: {got}",
                                               "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                    return
                if body.get("stream"):
                    ev = b"".join(b"data: " + json.dumps({
                        "id": "x", "object": "chat.completion.chunk", "created": 1,
                        "model": "gpt", "choices": [{"index": 0, "delta": {"content": w},
                                                     "finish_reason": None}]}).encode() + b"\n\n"
                        for w in ("hello ", "world")) + b"data: [DONE]\n\n"
                    self.reply(200, ev, "text/event-stream")
                    return
                self.reply(200, {"id": "x", "object": "chat.completion", "created": 1,
                                 "model": "gpt", "choices": [{"index": 0, "message": {
                                     "role": "assistant", "content": "ok"},
                                     "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                           "total_tokens": 2}})

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Recorder:
    """h.request that keeps every answer (status line, headers, body) to grep."""

    def __init__(self):
        self.answers = []

    def __call__(self, method, url, body=None, headers=None, timeout=10.0):
        try:
            r = h.request(method, url, body, headers=headers, timeout=timeout)
        except OSError as e:
            self.answers.append((f"{method} {url}", repr(e)))
            return None
        text = "\n".join(f"{k}: {v}" for k, v in r.headers) + "\n" + r.body.decode("utf-8",
                                                                                    "replace")
        self.answers.append((f"{method} {url} -> {r.status}", text))
        return r


def wait_listening_or_exit(p, timeout=15):
    """True once p listens; False if it exited first."""
    def ready():
        if not p.alive():
            return "exited"
        try:
            with open(p.port_file) as f:
                txt = f.read().strip()
            if txt:
                p.port = int(txt)
                return "up"
        except FileNotFoundError:
            pass
        return None
    return h.wait_until(ready, timeout, what=f"{p.name} to listen or exit") == "up"


def test_secrets_never_logged(t):
    cn = CANARIES
    m = h.mariadb()
    db = t.mysql_database()
    user = f"canary{os.getpid()}"
    h.sql_root(f"CREATE OR REPLACE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{cn['database password']}'")
    h.sql_root(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'127.0.0.1'")
    eng = KeyedEngine(cn["upstream key"])
    rq = Recorder()
    outputs = []  # (where, text) of CLI runs
    try:
        secret = cn["cluster secret"]
        sec_env = {"ROSTER_CLUSTER_SECRET": secret}
        mysql = ["--registry_db_type", "mysql", "--registry_db_name", db, "--registry_db_host",
                 m["host"], "--registry_db_port", str(m["port"]), "--registry_db_user", user,
                 "--trusted_networks", "", "--log_level", "debug", "--access_log"]
        c1 = t.controller("c1", db=None, args=mysql,
                          env=dict(sec_env, ROSTER_REGISTRY_DB_PASSWORD=cn["database password"]))
        url_env = {"ROSTER_REGISTRY_DB_URL": f"mysql://{user}:{cn['database password']}@"
                                             f"{m['host']}:{m['port']}/{db}"}
        c2 = t.controller("c2", db=None, args=["--trusted_networks", "", "--log_level", "debug"],
                          env=dict(sec_env, **url_env))
        # the password as a flag: moved out of argv, or refused in favour of the environment
        c3 = t.controller("c3-argv", db=None, wait=False,
                          args=mysql + ["--registry_db_password", cn["database password"]],
                          env=sec_env)
        c3_up = wait_listening_or_exit(c3)
        c3.expect_kill = not c3_up  # refusing to start is a correct answer
        # a wrong password (failure path): never printed either
        bad = t.controller("c-badpw", db=None, wait=False, args=mysql,
                           env=dict(sec_env, ROSTER_REGISTRY_DB_PASSWORD=cn["database password"]
                                    + "-wrong"))
        bad_up = wait_listening_or_exit(bad)
        bad.expect_kill = not bad_up  # exiting on a wrong password is correct
        if bad_up:
            rq("GET", bad.url + "/api/health")
            rq("POST", bad.url + "/api/controller/models", h.instance(port=8301),
               headers={"X-Roster-Secret": secret})
        ctl = f"{c1.url},{c2.url}"
        wargs = ["--log_level", "debug", "--heartbeat_interval", "1"]
        w1 = chat_worker(t, "w1", ctl, args=wargs, env=sec_env)
        # a cluster secret as a flag, and a password inside --controller_addr
        w2 = chat_worker(t, "w2-argv", f"http://roster:{cn['URL password']}@"
                         f"127.0.0.1:{c1.port},{c2.url}", model="chat2",
                         args=wargs + ["--cluster_secret", secret])
        key_env = dict(sec_env, ROSTER_TEST_ENGINE_KEY=cn["upstream key"])
        proxy_args = wargs + ["--backend", "openai", "--upstream_api_key_env",
                              "ROSTER_TEST_ENGINE_KEY"]
        p1 = chat_worker(t, "p1", ctl, model="gpt,deny",
                         args=proxy_args + ["--upstream", eng.url], env=key_env)
        p2 = chat_worker(t, "p2-urlpw", ctl, model="gpt2",
                         args=proxy_args + ["--upstream_model", "gpt", "--upstream",
                                            f"http://u:{cn['URL password']}@127.0.0.1:"
                                            f"{eng.port}/v1"], env=key_env)
        api = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr",
                              ctl, "--log_level", "debug"],
                      env=dict(sec_env, ROSTER_API_KEYS=cn["api key"]))
        api2 = t.start("api2-argv", ["start", "apiserver", "--host", "127.0.0.1",
                                     "--controller_addr", ctl, "--api_keys", cn["api key"]],
                       env=sec_env)
        web = t.start("web", ["start", "webserver", "--host", "127.0.0.1", "--trusted_networks", "",
                              "--data_dir", os.path.join(t.tmp, "web"), "--log_level", "debug"],
                      env={"ROSTER_API_KEYS": cn["api key"], "ROSTER_CLUSTER_SECRET": secret})
        good = {"Authorization": "Bearer " + cn["api key"]}
        routed(api.url, ["chat", "chat2", "gpt", "gpt2", "deny"], good)
        # success paths
        for a in (api, api2):
            for model in ("chat", "chat2", "gpt", "gpt2"):
                for stream in (False, True):
                    r = rq("POST", a.url + "/v1/chat/completions",
                           {"model": model, "messages": MSGS, "max_tokens": 4, "stream": stream},
                           headers=good)
                    h.eq(r.status, 200, f"{a.name} {model} stream={stream}: {r}")
        for p in (c1, c2, w1, w2, p1, p2, api, api2, web):
            rq("GET", p.url + "/api/health", headers=good)
            rq("GET", p.url + "/metrics", headers=good)
        h.wait_until(lambda: h.request("GET", web.url + "/api/health").status == 200, 20,
                     what="the webserver")
        rq("GET", web.url + "/api/dashboard/state", headers=good)
        rq("POST", web.url + "/v1/chat/completions",
           {"model": "roster-chat", "messages": MSGS, "max_tokens": 4}, headers=good)
        # failure paths: bad keys, bad secrets, the engine's 401 echoing its key
        for hdrs in ({}, {"Authorization": "Bearer wrong"},
                     {"Authorization": "Basic " + b64(cn["api key"])}):
            rq("POST", api.url + "/v1/chat/completions", {"model": "chat", "messages": MSGS},
               headers=hdrs)
            rq("GET", web.url + "/api/dashboard/state", headers=hdrs)
        for hdrs in ({}, {"X-Roster-Secret": "wrong"}, {"X-Roster-Secret": secret}):
            for c in (c1, c2):
                rq("POST", c.url + "/api/controller/models", h.instance(port=8302), headers=hdrs)
            rq("POST", w1.url + "/api/worker/apply",
               {"model": "chat", "apply_type": "update_params", "params": {"weight": 1}},
               headers=hdrs)
        for via, hdrs in ((api, good), (p1, {})):
            for stream in (False, True):
                r = rq("POST", via.url + "/v1/chat/completions",
                       {"model": "deny", "messages": MSGS, "stream": stream}, headers=hdrs)
                h.check(r.status >= 400, f"engine 401 through {via.name}: {r}")
        for stream in (False, True):
            rq("POST", p1.url + "/api/worker/generate" + ("_stream" if stream else ""),
               {"model": "deny", "prompt": "hi"})
        outputs.append(("roster start worker --check", h.cli(
            ["start", "worker", "--model_name", "x", "--backend", "openai", "--upstream",
             f"http://u:{cn['URL password']}@127.0.0.1:1/v1", "--upstream_api_key_env",
             "ROSTER_TEST_ENGINE_KEY", "--check"], env=key_env)))
        outputs.append(("roster start controller --check", h.cli(
            ["start", "controller", "--check"] + mysql,
            env=dict(sec_env, ROSTER_REGISTRY_DB_PASSWORD=cn["database password"]))))
        outputs.append(("roster start apiserver --check", h.cli(
            ["start", "apiserver", "--check"], env=dict(sec_env, ROSTER_API_KEYS=cn["api key"]))))
        outputs.append(("roster model list", h.cli(
            ["model", "list", "--controller_addr",
             f"http://roster:{cn['URL password']}@127.0.0.1:1,{c2.url}"], env=sec_env)))
        # a dead engine, then a dead controller
        eng.close()
        for model in ("gpt", "gpt2"):
            r = rq("POST", api.url + "/v1/chat/completions", {"model": model, "messages": MSGS},
                   headers=good)
        rq("POST", p2.url + "/v1/chat/completions", {"model": "gpt2", "messages": MSGS})
        c1.kill()
        for p in (w1, w2, p1, p2):
            h.wait_until(lambda p=p: h.request("GET", p.url + "/api/health").json()[
                "controller"] == c2.url, 10, what=f"{p.name} to fail over to c2")
        for p in (w1, w2, p1, p2, api):
            rq("GET", p.url + "/api/health", headers=good)
        r = rq("POST", api.url + "/v1/chat/completions", {"model": "chat", "messages": MSGS,
                                                           "max_tokens": 3}, headers=good)
        h.eq(r.status, 200, f"chat after c1 died: {r}")
        # grep everything
        cmdlines = {}
        for p in t.procs:
            if p.alive():
                with open(f"/proc/{p.p.pid}/cmdline", "rb") as f:
                    cmdlines[p.name] = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        hits = []
        for what, value in CANARIES.items():
            for p in t.procs:
                if value in p.logs():
                    line = next(ln for ln in p.logs().splitlines() if value in ln)
                    hits.append(f"{what} in the log of {p.name}: {line[:220]}")
            for where, text in rq.answers:
                if value in text:
                    hits.append(f"{what} in the answer to {where}: "
                                f"{text[max(0, text.find(value) - 120):][:240]!r}")
            for name, cmd in cmdlines.items():
                if value in cmd:
                    hits.append(f"{what} in /proc/PID/cmdline of {name}")
            for where, r in outputs:
                if value in r.stdout + r.stderr:
                    hits.append(f"{what} in the output of {where}")
        n_log_lines = sum(len(p.logs().splitlines()) for p in t.procs)
        print(f"    {len(t.procs)} processes ({n_log_lines} log lines), {len(rq.answers)} HTTP "
              f"answers, {len(outputs)} CLI outputs grepped for {len(CANARIES)} canaries; "
              f"c3 with the password as a flag {'started' if c3_up else 'refused to start'}; "
              f"wrong-password controller {'started' if bad_up else 'exited'}")
        for hit in hits:
            print("    HIT " + hit)
        h.eq(hits, [], "secrets found:")
    finally:
        try:
            eng.close()
        except OSError:
            pass
        h.sql_root(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


# ---- CR/LF in user-controlled fields ---------------------------------------------------

FORGED = "FORGED-LOG-LINE"


def test_crlf_forges_no_log_line(t):
    c = t.controller(args=["--log_level", "debug", "--access_log"])
    w = chat_worker(t, "w", c.url, args=["--log_level", "debug"])
    api = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url,
                          "--log_level", "debug"])
    routed(api.url, ["chat"])
    inj = [f"x\n{FORGED} a", f"x\r\n{FORGED} b", f"x\r{FORGED} c", f"x\u2028{FORGED} d",
           f"x\u0085{FORGED} e"]
    sent = 0
    for s in inj:
        for target in (api, w):
            for stream in (False, True):
                h.request("POST", target.url + "/v1/chat/completions",
                          {"model": s, "messages": MSGS, "stream": stream,
                           "user": s}, headers={"X-Session-Id": "s"})
                sent += 1
            h.request("POST", target.url + "/v1/embeddings", {"model": s, "input": ["a"]})
            h.request("GET", target.url + "/v1/models/" + urllib.parse.quote(s))
            sent += 2
        h.request("POST", w.url + "/api/worker/generate", {"model": s, "prompt": "hi"})
        h.request("POST", w.url + "/api/worker/apply", {"model": s, "apply_type": "stop"})
        for body in (h.instance(model=s + "@llm"), h.instance(host=s),
                     h.instance(prompt_template=s)):
            h.request("POST", c.url + "/api/controller/models", body)
            h.request("POST", c.url + "/api/controller/heartbeat", body)
            sent += 2
        h.request("POST", c.url + "/api/roster/instance", {"model_name": s, "host": "127.0.0.1",
                                                           "port": 1, "weight": 1})
        sent += 3
    # in the path, the query and the headers (percent-encoded, and raw where HTTP allows)
    for p in (c, w, api):
        for path in (f"/nope%0D%0A{FORGED}", f"/api/controller/models?model_name=x%0A{FORGED}"
                     f"%40llm", f"/v1/models/x%0d%0a{FORGED}"):
            h.request("GET", p.url + path)
            sent += 1
        for raw in (f"GET /x\n{FORGED} HTTP/1.1\r\nHost: x\r\n\r\n",
                    f"GET /x\r{FORGED} HTTP/1.1\r\nHost: x\r\n\r\n",
                    f"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\r{FORGED}\r\n\r\n",
                    f"GET /api/health HTTP/1.1\r\nHost: x\r\nUser-Agent: a\n{FORGED}: x\r\n\r\n",
                    f"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a%0A{FORGED}\r\n\r\n",
                    f"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Session-Id: a\r{FORGED}\r\n\r\n"):
            h.raw(p.port, raw.encode(), timeout=2, read_until_close=False)
            sent += 1
    h.request("DELETE", c.url + f"/api/controller/models?model_name=x%0D%0A{FORGED}%40llm"
              "&host=127.0.0.1&port=1")
    for p in (c, w, api):  # the last access-log lines are written
        h.request("GET", p.url + "/api/health", headers={"X-Request-Id": "crlf-last"})
        h.wait_until(lambda p=p: "crlf-last" in p.logs(), 5, what=f"{p.name}'s access log")
    forged, mentions = [], 0
    for p in t.procs:
        text = p.logs()
        mentions += text.count(FORGED)
        for line in re.split(r"\r\n|\r|\n|\u2028|\u0085", text):
            if line.lstrip().startswith(FORGED) or line.lstrip().startswith(FORGED[:6]):
                forged.append(f"{p.name}: {line[:200]!r}")
    print(f"    {sent} requests with CR/LF in user fields; {mentions} mentions of the marker in "
          f"the logs, {len(forged)} forged lines")
    h.eq(forged[:10], [], "log lines that start with attacker text:")
    for p in (c, w, api):
        h.eq(h.request("GET", p.url + "/api/health").status, 200, f"{p.name} still up:")


# ---- bad input -----------------------------------------------------------------------

def test_bad_input_classes(t):
    c = t.controller(args=bad_input.CTL_ARGS)
    bad_input.setup_baseline(c.url)
    w = chat_worker(t, "w", c.url, args=["--cluster_secret", bad_input.SECRET])
    e = chat_worker(t, "emb", c.url, model="emb", worker_type="text2vec",
                    args=["--cluster_secret", bad_input.SECRET])
    api = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url])
    routed(api.url, ["chat", "emb"])
    dump = lambda: h.sqlite_dump(t.sqlite_path)  # noqa: E731
    classes = {}
    t0 = time.monotonic()
    failures = []
    # the controller: the whole catalogue (test_bad_input.py also runs it)
    try:
        n = bad_input.run_matrix(c.port, c.url, table_state=dump)
        classes["controller"] = {bad_input.case_class(x) for x in bad_input.all_cases()}
    except h.Failure as ex:
        failures.append(f"controller: {ex}")
        n = 0
    # the worker and the apiserver
    for name, target, cases in [
            ("worker", w, bad_input.inference_cases("worker", "chat", "chat")
             + bad_input.worker_only_cases("worker") + bad_input.framing_cases("worker")),
            ("embedder", e, [x for x in bad_input.inference_cases("embedder", "emb", "emb")
                             if x.cls.startswith("embeddings:") and "chat model" not in x.cls]),
            ("apiserver", api, bad_input.inference_cases("apiserver", "chat", "emb")
             + bad_input.framing_cases("apiserver"))]:
        try:
            classes[name] = bad_input.run_cases(target.port, target.url, cases,
                                                health_urls=[c.url], table_state=dump)
        except h.Failure as ex:
            failures.append(f"{name}: {ex}")
            classes[name] = {bad_input.case_class(x) for x in cases}
        n += len(cases)
    distinct = set().union(*classes.values())
    print(f"    {n} bad-input cases in {time.monotonic() - t0:.1f}s; distinct classes: "
          + ", ".join(f"{k} {len(v)}" for k, v in classes.items())
          + f"; {len(distinct)} distinct in all")
    for p in (c, w, e, api):
        h.check(p.alive(), f"{p.name} died")
    h.eq(failures, [], "bad input:")
    h.check(len(distinct) >= 40, f"only {len(distinct)} distinct bad-input classes")


# ---- last: the canary saw nothing during the whole suite ----------------------------------

def test_zz_canary_untouched(t):
    del t
    print(f"    canary {CANARY.HOST}:{CANARY.port}: {len(CANARY.hits)} connections")
    h.eq(CANARY.hits, [], "connections to the canary outside the allowed networks (whole suite):")


if __name__ == "__main__":
    h.main(globals())
