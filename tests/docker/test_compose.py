#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The real run of compose/ha-cluster.yml (tests/docker/run.sh runs it).

Needs a running dockerd, docker-compose, python3-yaml, and the images
roster:local (compose/Dockerfile) and roster-test-mariadb:local
(tests/docker/mariadb.Dockerfile). Every service runs with network_mode: host
on 127.0.0.1 ports picked free here: no traffic leaves loopback.

  1. --check: every roster command line of the shipped combinations of
     Compose files (compose_commands.COMBOS: the HA file with and without
     OPENAI_API_KEY, with ha-builtin.yml) and of the test override, with its
     environment, through `roster ... --check` in the image.
  2. The HA topology (ha-cluster.yml + compose.test.yml): up, every container
     healthy, `roster model list` (in a container of the image) shows every
     instance healthy; chat completions (plain and streamed) and embeddings
     through the apiserver and the webserver, proxied by the workers' openai
     backend to the test's engine with OPENAI_API_KEY; log rotation and the
     non-root user on every roster container.
  3. docker kill of controller-1: requests keep succeeding (counted: none
     may fail), model list through controller-2 answers, the workers move to
     controller-2; docker start brings controller-1 back, and with
     controller-2 killed in turn everything goes on through controller-1.
     Then: ROSTER_ACCESS_LOG_SAMPLE reaches the apiserver and the webserver
     (one access line per 100 requests), and Docker restarted nothing.
  4. down -v leaves no container, network or volume of the project.
  5. The builtin variant (+ ha-builtin.yml), with no OPENAI_API_KEY at all:
     up, healthy, a chat and an embedding through the apiserver, down -v.

Compose 1.29 cannot drop a key that an override does not set (no !reset),
and docker refuses published ports with network_mode: host; so the test
runs the merged configuration that `docker-compose config` prints for the
real files, with only the `ports:` of host-network services removed.

Usage: test_compose.py [--image IMAGE] [--keep]   (--keep: leave the HA
project running at the end of step 3; down -v it yourself)
Prints one line per check and ends with "N passed, N failed".
"""

import argparse
import http.client
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import compose_commands  # noqa: E402
import harness  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COMPOSE = os.path.join(ROOT, "compose")
PROJECT = "rostertest"
PROJECT_BUILTIN = "rostertestbuiltin"
UP_TIMEOUT_S = 180
READY_TIMEOUT_S = 60
FAILOVER_TIMEOUT_S = 30
# the kill windows: at least this long and this many requests
KILL_WINDOW_S = 8
KILL_MIN_REQUESTS = 40
HTTP_TIMEOUT_S = 30

PASSED = 0
FAILED = 0
T0 = time.monotonic()


class Failure(Exception):
    pass


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def check(cond, what):
    """Counts a check; raises Failure when it does not hold."""
    global PASSED, FAILED
    if cond:
        PASSED += 1
        log(f"ok   {what}")
        return
    FAILED += 1
    log(f"FAIL {what}")
    raise Failure(what)


def run(args, env=None, check_rc=True, timeout=600, capture=True):
    p = subprocess.run(args, env=env, timeout=timeout, text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check_rc and p.returncode != 0:
        raise Failure(f"{' '.join(shlex.quote(a) for a in args)} exited {p.returncode}:\n"
                      f"{p.stdout or ''}{p.stderr or ''}")
    return p


# ---- HTTP -------------------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT_S):
    """(status, body bytes) of one request to 127.0.0.1:port."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get_json(port, path, headers=None):
    status, data = request(port, "GET", path, headers=headers)
    return status, (json.loads(data) if data else None)


def chat(port, model, headers=None):
    """A plain chat completion; returns its text, raises Failure otherwise."""
    status, data = request(port, "POST", "/v1/chat/completions", headers=headers, body={
        "model": model, "max_tokens": 12,
        "messages": [{"role": "user", "content": "How does a worker register?"}]})
    if status != 200:
        raise Failure(f"chat on :{port}: HTTP {status}: {data[:300]!r}")
    doc = json.loads(data)
    text = doc["choices"][0]["message"]["content"]
    if not isinstance(text, str) or not text.strip():
        raise Failure(f"chat on :{port}: empty answer: {doc}")
    return text


def chat_stream(port, model, headers=None):
    """A streamed chat completion; returns (chunks with content, text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request("POST", "/v1/chat/completions", headers=h, body=json.dumps({
            "model": model, "stream": True, "max_tokens": 12,
            "messages": [{"role": "user", "content": "What is roster?"}]}))
        r = c.getresponse()
        if r.status != 200:
            raise Failure(f"stream on :{port}: HTTP {r.status}: {r.read()[:300]!r}")
        ctype = r.getheader("Content-Type", "")
        if not ctype.startswith("text/event-stream"):
            raise Failure(f"stream on :{port}: Content-Type {ctype!r}")
        chunks, text, done = 0, "", False
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            doc = json.loads(payload)
            if "error" in doc:
                raise Failure(f"stream on :{port}: error event {doc}")
            delta = doc["choices"][0].get("delta", {}).get("content")
            if delta:
                chunks += 1
                text += delta
        if not done:
            raise Failure(f"stream on :{port}: ended without [DONE]")
        if chunks == 0:
            raise Failure(f"stream on :{port}: no content chunk")
        return chunks, text
    finally:
        c.close()


def embed(port, model, headers=None):
    """Embeddings of two inputs; returns the vectors' dimension."""
    status, data = request(port, "POST", "/v1/embeddings", headers=headers,
                        body={"model": model, "input": ["hello", "world"]})
    if status != 200:
        raise Failure(f"embeddings on :{port}: HTTP {status}: {data[:300]!r}")
    doc = json.loads(data)
    vecs = [d["embedding"] for d in doc["data"]]
    if len(vecs) != 2 or not vecs[0] or len(vecs[0]) != len(vecs[1]):
        raise Failure(f"embeddings on :{port}: bad vectors: {str(doc)[:300]}")
    if not all(isinstance(x, (int, float)) for x in vecs[0]) or vecs[0] == vecs[1]:
        raise Failure(f"embeddings on :{port}: not two distinct numeric vectors")
    return len(vecs[0])


def wait_for(what, fn, timeout):
    """Polls fn() until it returns a true value (returned) or timeout (Failure)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except (OSError, http.client.HTTPException, ValueError, KeyError, Failure) as e:
            last = e
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {timeout}s (last: {last})")
        time.sleep(0.2)


def metric(port, name, labels):
    """The value of one Prometheus sample, or 0 when absent."""
    status, data = request(port, "GET", "/metrics")
    if status != 200:
        raise Failure(f"/metrics on :{port}: HTTP {status}")
    want = f"{name}{{{labels}}} "
    for line in data.decode().splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    return 0.0


# ---- Compose and docker ---------------------------------------------------------------------

class Stack:
    """One Compose project run from the merged configuration of `files`."""

    def __init__(self, project, files, env, image, tmp):
        self.project, self.files, self.env, self.image = project, files, env, image
        self.empty_env = os.path.join(tmp, "empty.env")
        open(self.empty_env, "w").close()
        self.merged = os.path.join(tmp, f"{project}.yml")
        self.cids = {}

    def compose(self, *args, files=None, check_rc=True, timeout=600):
        cmd = ["docker-compose", "--env-file", self.empty_env, "-p", self.project]
        for f in files or [self.merged]:
            cmd += ["-f", f]
        return run(cmd + list(args), env=self.env, check_rc=check_rc, timeout=timeout)

    def config(self, files):
        """The merged configuration of files, as Compose resolves it."""
        return yaml.safe_load(self.compose("config", files=files).stdout)

    def write_merged(self):
        cfg = self.config(self.files)
        bridged = [n for n, svc in cfg["services"].items() if svc.get("network_mode") != "host"]
        check(not bridged, f"{self.project}: every service runs with network_mode: host"
                           + (f" (not: {', '.join(bridged)})" if bridged else ""))
        for svc in cfg["services"].values():
            svc.pop("ports", None)
        with open(self.merged, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        return cfg

    def cid(self, service):
        """The service's container (the same one across docker kill and start)."""
        if service not in self.cids:
            out = run(["docker", "ps", "-a", "--filter",
                       f"label=com.docker.compose.project={self.project}", "--format",
                       '{{.ID}} {{.Label "com.docker.compose.service"}}']).stdout
            self.cids = dict(reversed(line.split()) for line in out.splitlines())
            if service not in self.cids:
                raise Failure(f"{service}: no container")
        return self.cids[service]

    def inspect(self, service):
        return json.loads(run(["docker", "inspect", self.cid(service)]).stdout)[0]

    def health(self, service):
        st = self.inspect(service)["State"]
        return st.get("Health", {}).get("Status") if st.get("Running") else st.get("Status")

    def wait_healthy(self, services, timeout):
        def all_healthy():
            states = {s: self.health(s) for s in services}
            bad = {s: h for s, h in states.items() if h != "healthy"}
            if bad:
                raise Failure(f"not healthy: {bad}")
            return True
        wait_for("every service healthy", all_healthy, timeout)

    def leftovers(self):
        label = f"label=com.docker.compose.project={self.project}"
        out = {}
        for kind, cmd in (("containers", ["docker", "ps", "-a", "-q", "--filter", label]),
                          ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
                          ("volumes", ["docker", "volume", "ls", "-q", "--filter", label])):
            ids = run(cmd).stdout.split()
            if ids:
                out[kind] = ids
        return out

    def logs(self, tail=30):
        p = self.compose("logs", "--no-color", f"--tail={tail}", check_rc=False)
        return p.stdout + p.stderr

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check_rc=False)


def model_list(image, controllers):
    """`roster model list` in a container of the image; (exit code, rows, output)."""
    p = run(["docker", "run", "--rm", "--network", "host", image, "model", "list",
             "--controller_addr", ",".join(f"http://127.0.0.1:{c}" for c in controllers)],
            check_rc=False, timeout=60)
    rows = []
    for line in p.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 5 and cells[0] != "Model Name":
            rows.append(cells)
    return p.returncode, rows, p.stdout + p.stderr


def wait_model_list(image, controllers, expect):
    """Polls until model list through `controllers` shows exactly the
    instances `expect` ({(name, type, port)}), every one healthy."""
    def ok():
        rc, rows, out = model_list(image, controllers)
        if rc != 0:
            raise Failure(f"model list exited {rc}: {out[-300:]}")
        got = {(r[0], r[1], int(r[3])) for r in rows}
        if got != expect:
            raise Failure(f"instances {sorted(got)}, expected {sorted(expect)}")
        if any(r[4] != "True" for r in rows):
            raise Failure("not every instance healthy:\n" + out)
        return out
    return wait_for("model list: every instance healthy", ok, READY_TIMEOUT_S)


# ---- 1. --check of every command line ---------------------------------------------------------

def check_command_lines(stack, image, override):
    """Every roster command line of the repository's combinations of Compose
    files (compose_commands.COMBOS), and of the test's override, through
    --check in a container of the image."""
    combos = [([os.path.join(COMPOSE, f) for f in files], changes, fail)
              for files, changes, fail in compose_commands.COMBOS]
    combos.append(([os.path.join(COMPOSE, "ha-cluster.yml"), override], {}, set()))
    for files, changes, expect_fail in combos:
        env = {k: v for k, v in stack.env.items() if k not in changes}
        env.update({k: v for k, v in changes.items() if v is not None})
        ok, line = compose_commands.check_combo(files, changes, expect_fail, image=image, env=env)
        check(ok, line)


# ---- 2-4. the HA topology -------------------------------------------------------------------

PORT_NAMES = ("DB", "CONTROLLER_1", "CONTROLLER_2", "LLM_WORKER", "EMBEDDING_WORKER",
              "APISERVER", "WEBSERVER", "ENGINE")


def stack_env(image, extra):
    """The environment of a test stack: the caller's without any setting the
    Compose files read, new secrets, free loopback ports for every service
    (ROSTER_TEST_<NAME>_PORT, read by compose.test.yml), and `extra`.
    Returns (env, ports by name)."""
    ports = dict(zip(PORT_NAMES, harness.free_ports(len(PORT_NAMES))))
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("ROSTER_", "COMPOSE_")) or
                   k in ("OPENAI_API_KEY", "OPENAI_API_BASE", "LLM_MODEL", "EMBEDDING_MODEL"))}
    env.update({
        "ROSTER_IMAGE": image,
        "ROSTER_CLUSTER_SECRET": secrets.token_hex(16),
        "ROSTER_REGISTRY_DB_PASSWORD": secrets.token_hex(12),
    })
    env.update({f"ROSTER_TEST_{n}_PORT": str(p) for n, p in ports.items()})
    env.update(extra)
    return env, ports


def ha_run(args, tmp):
    image = args.image
    key = "sk-test-" + secrets.token_hex(8)
    env, ports = stack_env(image, {"OPENAI_API_KEY": key, "LLM_MODEL": "roster-chat",
                                   "EMBEDDING_MODEL": "roster-embed"})
    env["OPENAI_API_BASE"] = f"http://127.0.0.1:{ports['ENGINE']}/v1"
    (p_db, p_c1, p_c2, p_llm, p_emb, p_api, p_web, p_engine) = (ports[n] for n in PORT_NAMES)
    ha = os.path.join(COMPOSE, "ha-cluster.yml")
    builtin = os.path.join(COMPOSE, "ha-builtin.yml")
    override = os.path.join(HERE, "compose.test.yml")
    stack = Stack(PROJECT, [ha, override], env, image, tmp)
    stack.down()  # what an interrupted run left

    check_command_lines(stack, image, override)

    cfg = stack.write_merged()
    services = list(cfg["services"])
    roster_services = [s for s in services if cfg["services"][s].get("image") == image]
    log(f"ports: db {p_db}, controllers {p_c1} {p_c2}, workers {p_llm} {p_emb}, "
        f"apiserver {p_api}, webserver {p_web}, engine {p_engine}")
    try:
        t = time.monotonic()
        p = stack.compose("up", "-d", "--no-build", check_rc=False, timeout=UP_TIMEOUT_S)
        if p.returncode != 0:
            raise Failure(f"docker-compose up: {p.stdout}{p.stderr}\n{stack.logs()}")
        stack.wait_healthy(services, UP_TIMEOUT_S)
        check(True, f"docker-compose up: all {len(services)} services healthy in "
                    f"{time.monotonic() - t:.1f}s ({', '.join(services)})")

        # every roster container: rotated logs, uid 10001
        for s in roster_services + ["db"]:
            lc = stack.inspect(s)["HostConfig"]["LogConfig"]
            check(lc["Type"] == "json-file" and lc["Config"].get("max-size")
                  and lc["Config"].get("max-file"),
                  f"{s}: log rotation {lc['Type']} max-size={lc['Config'].get('max-size')} "
                  f"max-file={lc['Config'].get('max-file')}")
        for s in roster_services:
            uid = run(["docker", "exec", stack.cid(s), "id", "-u"]).stdout.strip()
            check(uid == "10001", f"{s}: runs as uid {uid}")

        expect = {("roster-chat", "llm", p_llm), ("roster-embed", "text2vec", p_emb),
                  ("WorkerManager", "service", p_llm), ("WorkerManager", "service", p_emb)}
        out = wait_model_list(image, [p_c1, p_c2], expect)
        print(out, end="")
        check(True, "roster model list (in a container of the image): 4 instances, all healthy")

        # the API routes need the table from a controller, then both models
        for port, where in ((p_api, "apiserver"), (p_web, "webserver")):
            def both(port=port):
                st, doc = get_json(port, "/v1/models")
                ids = {m["id"] for m in doc["data"]} if st == 200 else set()
                return {"roster-chat", "roster-embed"} <= ids
            wait_for(f"{where} lists both models", both, READY_TIMEOUT_S)

        # the engine really needs the key: the workers pass OPENAI_API_KEY
        st, _ = request(p_engine, "GET", "/v1/models")
        check(st == 401, f"the engine refuses a request without OPENAI_API_KEY (HTTP {st})")
        auth = {"Authorization": f"Bearer {key}"}
        engine_chat0 = metric(p_engine, "roster_api_model_requests_total", 'model="roster-chat@llm"')
        engine_emb0 = metric(p_engine, "roster_api_model_requests_total", 'model="roster-embed@text2vec"')

        for port, where in ((p_api, "apiserver"), (p_web, "webserver")):
            text = chat(port, "roster-chat")
            check(True, f"chat completion through the {where}: {text[:40]!r}")
            n, text = chat_stream(port, "roster-chat")
            check(True, f"streamed chat completion through the {where}: {n} chunks, {text[:40]!r}")
            dim = embed(port, "roster-embed")
            check(dim == 384, f"embeddings through the {where}: 2 vectors of {dim}")
        engine_chat = metric(p_engine, "roster_api_model_requests_total", 'model="roster-chat@llm"')
        engine_emb = metric(p_engine, "roster_api_model_requests_total", 'model="roster-embed@text2vec"')
        check(engine_chat - engine_chat0 >= 4 and engine_emb - engine_emb0 >= 2,
              f"the workers' openai backend proxied them to the engine "
              f"({engine_chat - engine_chat0:.0f} chats, {engine_emb - engine_emb0:.0f} embeddings)")

        # ---- 3. a controller killed ----
        ctl_urls = {p_c1: f"http://127.0.0.1:{p_c1}", p_c2: f"http://127.0.0.1:{p_c2}"}
        for victim, other, vport, oport in (("controller-1", "controller-2", p_c1, p_c2),
                                            ("controller-2", "controller-1", p_c2, p_c1)):
            cid = stack.cid(victim)
            run(["docker", "kill", cid])
            st = stack.inspect(victim)["State"]
            check(not st["Running"], f"docker kill {victim}: {st['Status']} (exit {st['ExitCode']})")
            ok = failed = 0
            errors = []
            moved = False
            listed = False
            t = time.monotonic()
            i = 0
            while (time.monotonic() - t < KILL_WINDOW_S or ok + failed < KILL_MIN_REQUESTS
                   or not (moved and listed)):
                if time.monotonic() - t > FAILOVER_TIMEOUT_S:
                    break
                port = (p_api, p_web)[i % 2]
                try:
                    if i % 3 == 2:
                        embed(port, "roster-embed")
                    else:
                        chat(port, "roster-chat")
                    ok += 1
                except (OSError, http.client.HTTPException, ValueError, KeyError, Failure) as e:
                    failed += 1
                    errors.append(str(e)[:200])
                i += 1
                if not moved:
                    hs = [get_json(p, "/api/health")[1] for p in (p_llm, p_emb)]
                    moved = all(h.get("registered") and h.get("controller") == ctl_urls[oport]
                                for h in hs)
                if not listed and i % 10 == 0:
                    rc, rows, _ = model_list(image, [oport])
                    listed = rc == 0 and len(rows) == 4 and all(r[4] == "True" for r in rows)
            check(failed == 0 and ok >= KILL_MIN_REQUESTS,
                  f"{victim} killed: {ok} requests through the apiserver and the webserver "
                  f"succeeded, {failed} failed" + (f": {errors[:3]}" if errors else ""))
            check(listed, f"{victim} killed: model list through {other} shows 4 healthy instances")
            check(moved, f"{victim} killed: both workers heartbeat through {other}")
            run(["docker", "start", cid])
            stack.wait_healthy([victim], READY_TIMEOUT_S)
            rc, rows, _ = model_list(image, [vport])
            check(rc == 0 and len(rows) == 4,
                  f"docker start {victim}: healthy again, model list through it answers")
        # (controller-2 was killed last: the workers moved to controller-1,
        # the restarted one, and requests went on through it)

        # ROSTER_ACCESS_LOG_SAMPLE (100 by default in the HA file): one
        # access line per 100 requests, not one per request
        for s, port in (("apiserver", p_api), ("webserver", p_web)):
            total = sum(metric(port, "roster_http_requests_total", f'class="{c}xx"')
                        for c in "2345")
            p = run(["docker", "logs", stack.cid(s)])
            lines = sum(1 for ln in (p.stdout + p.stderr).splitlines()
                        if " status=" in ln and " dur_us=" in ln)
            check(total >= 1000 and 1 <= lines <= total / 100 + 2,
                  f"{s}: {lines} access log lines for {total:.0f} requests (1 in 100 sampled)")

        # nobody crashed
        for s in services:
            n = stack.inspect(s)["RestartCount"]
            check(n == 0, f"{s}: restarted {n} times by Docker")
        if args.keep:
            log(f"--keep: project {PROJECT} left running; remove it with: docker-compose "
                f"-p {PROJECT} -f {stack.merged} down -v; rm -r {tmp}")
            return
    except Failure:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        if not args.keep:
            t = time.monotonic()
            stack.down()
            left = stack.leftovers()
            check(not left, f"docker-compose down -v in {time.monotonic() - t:.1f}s: "
                            f"no container, network or volume left {left or ''}")


# ---- 5. the builtin variant --------------------------------------------------------------------

def builtin_run(args, tmp):
    image = args.image
    env, ports = stack_env(image, {})
    (p_db, p_c1, p_c2, p_llm, p_emb, p_api, p_web, p_engine) = (ports[n] for n in PORT_NAMES)
    files = [os.path.join(COMPOSE, "ha-cluster.yml"), os.path.join(COMPOSE, "ha-builtin.yml"),
             os.path.join(HERE, "compose.test.yml")]
    stack = Stack(PROJECT_BUILTIN, files, env, image, tmp)
    stack.down()
    cfg = stack.write_merged()
    # no engine: the builtin models need none
    services = [s for s in cfg["services"] if s != "engine"]
    for s in ("llm-worker", "embedding-worker"):
        del cfg["services"][s]["depends_on"]["engine"]
    del cfg["services"]["engine"]
    with open(stack.merged, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    try:
        t = time.monotonic()
        p = stack.compose("up", "-d", "--no-build", check_rc=False, timeout=UP_TIMEOUT_S)
        if p.returncode != 0:
            raise Failure(f"docker-compose up: {p.stdout}{p.stderr}\n{stack.logs()}")
        stack.wait_healthy(services, UP_TIMEOUT_S)
        check(True, f"builtin variant, no OPENAI_API_KEY: {len(services)} services healthy in "
                    f"{time.monotonic() - t:.1f}s")
        expect = {("roster-chat", "llm", p_llm), ("roster-embed", "text2vec", p_emb),
                  ("WorkerManager", "service", p_llm), ("WorkerManager", "service", p_emb)}
        wait_model_list(image, [p_c1, p_c2], expect)
        hs = get_json(p_llm, "/api/health")[1]
        check(hs.get("backend") == "builtin", f"builtin variant: the LLM worker's backend is "
                                              f"{hs.get('backend')}")

        def models():
            st, doc = get_json(p_api, "/v1/models")
            return st == 200 and {"roster-chat", "roster-embed"} <= {m["id"] for m in doc["data"]}
        wait_for("apiserver lists both models", models, READY_TIMEOUT_S)
        text = chat(p_api, "roster-chat")
        dim = embed(p_api, "roster-embed")
        check(True, f"builtin variant: chat ({text[:30]!r}) and embeddings ({dim}) "
                    f"through the apiserver")
    except Failure:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.down()
        left = stack.leftovers()
        check(not left, f"builtin variant: down -v leaves nothing {left or ''}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="roster:local")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    rc = 0
    tmp = tempfile.mkdtemp(prefix="roster-compose.")
    try:
        ha_run(args, tmp)
        if not args.keep:
            builtin_run(args, tmp)
    except Failure as e:
        if FAILED == 0:
            global_fail(str(e))
        else:
            print(f"\n{e}", file=sys.stderr)
        rc = 1
    except subprocess.TimeoutExpired as e:
        global_fail(f"timed out: {e}")
        rc = 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{PASSED} passed, {FAILED} failed")
    return rc


def global_fail(msg):
    global FAILED
    FAILED += 1
    log(f"FAIL {msg}")


if __name__ == "__main__":
    sys.exit(main())
