"""`roster model list|set|start|stop|restart` against real controllers and
workers: DB-GPT's table columns, --json, model filters, CONTROLLER_ADDRESS
and --controller_addr lists (the first controller that answers wins; dead
ones are skipped), what the error says when none answers or one answers
503, the admin changes of `model set`, DB-GPT's start/stop/restart through
the workers' /api/worker/apply (selection by --host/--port, the cluster
secret, every way a worker can fail), and each command's --help.
(`roster model chat` is in test_cli_chat.py.)
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

COLUMNS = ["Model Name", "Model Type", "Host", "Port", "Healthy", "Enabled", "Prompt Template",
           "Last Heartbeat", "Weight", "Load"]


def parse_table(out):
    """Rows of the +---+ framed table as lists of stripped cells (header first)."""
    rows = []
    for line in out.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        else:
            h.check(line.startswith("+") and set(line) <= set("+-"), f"unexpected line {line!r}")
    return rows


def ok(r, what):
    h.check(r.returncode == 0, f"{what}: exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def setup_instances(url):
    h.register(url, h.instance(prompt_template="vicuna_v1.1",
                               load={"in_flight": 2, "queue_length": 1, "capacity": 8}))
    h.register(url, h.instance(port=8002, weight=2.5))
    h.register(url, h.instance(model="vicuna@text2vec", port=8101))
    h.register(url, h.instance(model="bge@reranker", host="10.0.0.7", port=9000))
    r = h.request("DELETE", url + "/api/controller/models?model_name=vicuna%40llm&host=127.0.0.1"
                  "&port=8002")
    h.eq(r.status, 200)


def test_model_list_table_and_json(t):
    c = t.controller()
    setup_instances(c.url)
    r = ok(h.cli(["model", "list"], env={"CONTROLLER_ADDRESS": c.url}), "model list")
    rows = parse_table(r.stdout)
    h.eq(rows[0], COLUMNS, "table columns:")
    body = {(row[0], row[1], row[2], row[3]): row for row in rows[1:]}
    h.eq(sorted(body), sorted([("vicuna", "llm", "127.0.0.1", "8001"), ("vicuna", "llm", "127.0.0.1", "8002"),
                               ("vicuna", "text2vec", "127.0.0.1", "8101"),
                               ("bge", "reranker", "10.0.0.7", "9000")]))
    row = body[("vicuna", "llm", "127.0.0.1", "8001")]
    h.eq(row[4:7], ["True", "True", "vicuna_v1.1"])
    h.check(row[7].startswith("20") and "T" in row[7], f"Last Heartbeat cell: {row[7]!r}")
    h.eq(row[8], "1.0")
    h.eq(row[9], "2/8 q=1", "Load cell:")
    row = body[("vicuna", "llm", "127.0.0.1", "8002")]
    h.eq((row[4], row[8]), ("False", "2.5"))

    # --json prints the controller's list, parseable
    r = ok(h.cli(["model", "list", "--json", "--controller_addr", c.url]), "model list --json")
    items = json.loads(r.stdout)
    h.eq(h.keys(items), h.keys(h.list_models(c.url)))

    # --model_name with --model_type, or name@type
    for args in (["--model_name", "vicuna"], ["--model_name", "vicuna", "--model_type", "llm"],
                 ["--model_name", "vicuna@llm"]):
        r = ok(h.cli(["model", "list", "--json", "--controller_addr", c.url] + args), str(args))
        h.eq(sorted(i["port"] for i in json.loads(r.stdout)), [8001, 8002], f"{args}:")
    r = ok(h.cli(["model", "list", "--json", "--controller_addr", c.url, "--model_name", "vicuna",
                  "--model_type", "text2vec"]), "text2vec")
    h.eq([i["port"] for i in json.loads(r.stdout)], [8101])
    r = ok(h.cli(["model", "list", "--controller_addr", c.url, "--model_name", "nosuch"]), "nosuch")
    h.eq(parse_table(r.stdout), [COLUMNS], "no rows for an unknown model:")


def test_controller_addr_failover(t):
    c = t.controller()
    setup_instances(c.url)
    dead_sock, dead = h.dead_port()
    try:
        dead_url = f"http://127.0.0.1:{dead}"
        want = h.keys(h.list_models(c.url))
        for env, args in (({"CONTROLLER_ADDRESS": f"{dead_url},{c.url}"}, []),
                          ({}, ["--controller_addr", f"{dead_url},{c.url}"]),
                          ({}, ["--controller_addr", f"{dead_url}, 127.0.0.1:{c.port}/"]),
                          ({"CONTROLLER_ADDRESS": dead_url}, ["--controller_addr", c.url])):
            r = ok(h.cli(["model", "list", "--json"] + args, env=env), f"{env} {args}")
            h.eq(h.keys(json.loads(r.stdout)), want, f"{env} {args}:")
        # no controller answers: non-zero exit and a clear message
        r = h.cli(["model", "list", "--controller_addr", f"{dead_url},{dead_url}"])
        h.check(r.returncode != 0, "model list with only dead controllers must fail")
        h.check("no controller answered" in r.stderr and str(dead) in r.stderr,
                f"message: {r.stderr!r}")
        h.eq(r.stdout, "", "nothing on stdout when no controller answers:")
        r = h.cli(["model", "list"], env={"CONTROLLER_ADDRESS": dead_url})
        h.check(r.returncode != 0 and "no controller answered" in r.stderr, r.stderr)
        r = h.cli(["model", "set", "--controller_addr", dead_url, "--model_name", "vicuna@llm",
                   "--host", "127.0.0.1", "--port", "8001", "--weight", "0"])
        h.check(r.returncode != 0 and "no controller answered" in r.stderr, r.stderr)
    finally:
        dead_sock.close()


def test_model_set(t):
    c = t.controller()
    setup_instances(c.url)
    base = ["model", "set", "--controller_addr", c.url, "--model_name", "vicuna", "--host",
            "127.0.0.1", "--port", "8001"]
    r = ok(h.cli(base + ["--weight", "0"]), "set --weight 0")
    h.eq(json.loads(r.stdout)["weight"], 0.0)
    h.check(h.find(h.list_models(c.url, healthy_only="true")) is None, "weight 0 drains")
    r = ok(h.cli(base + ["--clear_weight"]), "set --clear_weight")
    h.eq(json.loads(r.stdout)["weight_override"], None)
    h.check(h.find(h.list_models(c.url, healthy_only="true")) is not None)
    r = ok(h.cli(base + ["--enabled", "false"]), "set --enabled false")
    h.eq(h.find(h.list_models(c.url))["enabled"], False)
    h.check(h.find(h.list_models(c.url, healthy_only="true")) is None)
    r = ok(h.cli(base + ["--enabled", "true", "--weight", "3"]), "set --enabled true --weight 3")
    got = h.find(h.list_models(c.url))
    h.eq((got["enabled"], got["weight"]), (True, 3.0))
    # the dead-first list works for set too; the table shows the new weight
    dead_sock, dead = h.dead_port()
    try:
        ok(h.cli(["model", "set", "--controller_addr", f"http://127.0.0.1:{dead},{c.url}",
                  "--model_name", "vicuna@llm", "--host", "127.0.0.1", "--port", "8001",
                  "--weight", "4"]), "set through a dead-first list")
    finally:
        dead_sock.close()
    rows = parse_table(ok(h.cli(["model", "list", "--controller_addr", c.url]), "list").stdout)
    h.eq([r[8] for r in rows if r[:4] == ["vicuna", "llm", "127.0.0.1", "8001"]], ["4.0"])
    # errors: unknown instance, nothing to change
    r = h.cli(base[:-1] + ["9999", "--weight", "1"])
    h.check(r.returncode != 0 and "404" in r.stderr, f"unknown instance: {r.returncode} {r.stderr!r}")
    r = h.cli(base)
    h.check(r.returncode != 0 and r.stderr, "set without a change must fail")


# ---- start, stop, restart ---------------------------------------------------------

def llm_worker(t, c, name="wrk", models="tiny", env=None):
    w = t.start(name, ["start", "worker", "--model_name", models, "--worker_type", "llm",
                       "--host", "127.0.0.1", "--controller_addr", c.url,
                       "--heartbeat_interval", "0.5"], env=env)
    h.wait_until(lambda: routable(c, w.port, models + "@llm"), 5, what=f"{name} routable")
    return w


def routable(c, port, model="tiny@llm"):
    return h.find(h.list_models(c.url, healthy_only="true"), model=model, port=port) is not None


def apply(c, cmd, *args, env=None):
    return h.cli(["model", cmd, "--controller_addr", c.url] + list(args), env=env)


def test_model_stop_start_restart(t):
    c = t.controller()
    w = llm_worker(t, c)
    line = f"127.0.0.1:{w.port} tiny@llm: "
    r = ok(apply(c, "stop", "--model_name", "tiny", "--model_type", "llm"), "stop")
    h.eq((r.stdout, r.stderr), (line + "stop tiny\n", ""), "stop prints the worker's message:")
    h.wait_until(lambda: not routable(c, w.port), 5, what="the stopped instance to leave the "
                 "routable set")
    r = h.request("POST", w.url + "/v1/chat/completions",
                  {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    h.eq(h.check_error(r.status, r.body, 503, "a stopped model")["code"], "model_stopped")
    # a stopped instance is listed unhealthy, and can be started again
    h.eq(h.find(h.list_models(c.url), model="tiny@llm", port=w.port)["healthy"], False)
    r = ok(apply(c, "start", "--model_name", "tiny@llm"), "start")
    h.eq(r.stdout, line + "start tiny\n")
    h.wait_until(lambda: routable(c, w.port), 5, what="the started instance to be routable")
    h.eq(h.request("POST", w.url + "/v1/chat/completions",
                   {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 2}).status, 200)
    r = ok(apply(c, "restart", "--model_name", "tiny"), "restart")
    h.eq(r.stdout, line + "restart tiny\n")
    h.wait_until(lambda: routable(c, w.port), 5, what="the restarted instance to be routable")
    time.sleep(1.2)  # two heartbeats: it stays there
    h.check(routable(c, w.port), "still routable after the restart")


def test_model_apply_selects_host_and_port(t):
    c = t.controller()
    a = llm_worker(t, c, "a")
    b = llm_worker(t, c, "b")
    o = llm_worker(t, c, "o", models="other")
    r = ok(apply(c, "stop", "--model_name", "tiny", "--port", str(a.port)), "stop --port")
    h.eq(r.stdout, f"127.0.0.1:{a.port} tiny@llm: stop tiny\n", "only the instance at --port:")
    h.wait_until(lambda: not routable(c, a.port), 5, what="a out")
    h.check(routable(c, b.port) and routable(c, o.port, "other@llm"), "the others keep serving")
    r = ok(apply(c, "start", "--model_name", "tiny", "--host", "127.0.0.1", "--port",
                 str(a.port)), "start --host --port")
    h.eq(r.stdout.count("\n"), 1)
    h.wait_until(lambda: routable(c, a.port), 5, what="a back")
    # every instance of the model, one line each; the other model untouched
    r = ok(apply(c, "stop", "--model_name", "tiny", "--host", "127.0.0.1"), "stop --host")
    h.eq(sorted(r.stdout.splitlines()), sorted(f"127.0.0.1:{p} tiny@llm: stop tiny"
                                               for p in (a.port, b.port)))
    h.wait_until(lambda: not routable(c, a.port) and not routable(c, b.port), 5, what="both out")
    h.check(routable(c, o.port, "other@llm"), "other@llm keeps serving")
    ok(apply(c, "start", "--model_name", "tiny"), "start all")
    h.wait_until(lambda: routable(c, a.port) and routable(c, b.port), 5, what="both back")
    # nothing matches: a clear message, no worker touched
    for args, needle in [(["--host", "10.9.9.9"], "none of the 2 instance(s) of tiny@llm is at "
                                                  "host 10.9.9.9"),
                         (["--port", "1"], "none of the 2 instance(s) of tiny@llm is at port 1"),
                         (["--host", "127.0.0.1", "--port", "1"], "is at 127.0.0.1:1"),
                         (["--model_type", "text2vec"], "no instance of tiny@text2vec is "
                                                        "registered")]:
        r = apply(c, "stop", "--model_name", "tiny", *args)
        h.eq(r.returncode, 65, f"{args}: {r.stderr}")
        h.check(needle in r.stderr and r.stdout == "", f"{args}: {r.stderr!r}")
    h.check(routable(c, a.port) and routable(c, b.port), "no match changes nothing")
    r = apply(c, "stop")
    h.check(r.returncode == 64 and "needs --model_name" in r.stderr, r.stderr)


def test_model_apply_errors(t):
    secret = "apply-s3cret"
    c = t.controller()
    w = llm_worker(t, c, env={"ROSTER_CLUSTER_SECRET": secret})
    # a worker with a secret refuses without it: exit 77, its message and a hint
    r = apply(c, "stop", "--model_name", "tiny")
    h.eq(r.returncode, 77, f"{r.stderr}")
    h.check(f"127.0.0.1:{w.port} tiny@llm: the worker refused (HTTP 401)" in r.stderr
            and "needs the cluster secret" in r.stderr and "ROSTER_CLUSTER_SECRET" in r.stderr,
            r.stderr)
    h.check(routable(c, w.port), "a refused stop changes nothing")
    r = apply(c, "stop", "--model_name", "tiny", env={"ROSTER_CLUSTER_SECRET": "wrong"})
    h.eq(r.returncode, 77)
    h.check("--cluster_secret or" not in r.stderr, "no hint when a secret was given")
    r = ok(apply(c, "stop", "--model_name", "tiny", env={"ROSTER_CLUSTER_SECRET": secret}),
           "stop with the secret")
    h.wait_until(lambda: not routable(c, w.port), 5, what="stopped with the secret")
    ok(apply(c, "start", "--model_name", "tiny", "--cluster_secret", secret), "--cluster_secret")
    h.wait_until(lambda: routable(c, w.port), 5, what="started with the secret")
    # the worker does not serve that model@type: it says so (success false)
    h.register(c.url, model="tiny@text2vec", port=w.port)
    r = apply(c, "stop", "--model_name", "tiny", "--model_type", "text2vec",
              env={"ROSTER_CLUSTER_SECRET": secret})
    h.eq(r.returncode, 1, r.stderr)
    h.check("the worker did not stop it: this worker serves no model 'tiny' of type 'text2vec'"
            in r.stderr, r.stderr)
    # an unreachable worker; a server without /api/worker/apply (404, its message)
    dead_sock, dead = h.dead_port()
    try:
        h.register(c.url, model="ghost@llm", port=dead)
        r = apply(c, "stop", "--model_name", "ghost")
        h.eq(r.returncode, 69, r.stderr)
        h.check(f"127.0.0.1:{dead} ghost@llm: cannot reach the worker" in r.stderr, r.stderr)
        h.register(c.url, model="ghost@llm", port=c.port)  # the controller: no such path
        r = apply(c, "restart", "--model_name", "ghost")
        h.check(r.returncode in (1, 69), f"the first failure decides the exit code: {r}")
        h.check(f"127.0.0.1:{c.port} ghost@llm: the worker refused (HTTP 404): " in r.stderr
                and "cannot reach the worker" in r.stderr, r.stderr)
        h.eq(r.stdout, "")
        r = apply(c, "restart", "--model_name", "ghost", "--port", str(c.port))
        h.eq(r.returncode, 1, r.stderr)
    finally:
        dead_sock.close()
    # no controller answers
    r = h.cli(["model", "stop", "--model_name", "tiny", "--controller_addr", f"http://127.0.0.1:{dead}"])
    h.check(r.returncode == 69 and "no controller answered" in r.stderr, r.stderr)


def test_controller_errors_are_reported(t):
    """A controller that answers 503 is quoted, with its URL; several failing
    controllers are each described."""
    # a controller whose MySQL server does not answer serves 503 until it does
    db_sock, db_port = h.dead_port()
    t.dead_db = db_sock  # held open (refusing) for the whole test
    bad = t.controller("bad", db=None, args=["--registry_db_type", "mysql", "--registry_db_host",
                                             "127.0.0.1", "--registry_db_port", str(db_port),
                                             "--registry_db_connect_timeout_ms", "200"])
    r = h.request("GET", bad.url + "/api/controller/models")
    h.eq(r.status, 503, f"{r}")
    msg = r.json()["error"]["message"]
    for cmd in (["model", "list"], ["model", "list", "--json"],
                ["model", "stop", "--model_name", "tiny"]):
        r = h.cli(cmd + ["--controller_addr", bad.url])
        h.eq(r.returncode, 69, f"{cmd}: {r.stderr}")
        h.check("no controller answered" not in r.stderr, f"{cmd}: {r.stderr!r}")
        h.check(r.stderr.startswith(f"roster: the controller at {bad.url}/api/controller/models"
                                    "?view=full") and f" answered HTTP 503: {msg}\n" in r.stderr,
                f"{cmd}: {r.stderr!r}")
        h.eq(r.stdout, "")
    dead_sock, dead = h.dead_port()
    try:
        r = h.cli(["model", "list", "--controller_addr", f"{bad.url},http://127.0.0.1:{dead}"])
        h.eq(r.returncode, 69)
        h.check(f"{bad.url}: HTTP 503: {msg}" in r.stderr and f"127.0.0.1:{dead}: " in r.stderr,
                f"each controller described: {r.stderr!r}")
        h.eq(r.stderr.count("\n"), 1, "briefly, on one line:")
        # a working controller after them answers
        c = t.controller()
        r = ok(h.cli(["model", "list", "--json", "--controller_addr",
                      f"{bad.url},http://127.0.0.1:{dead},{c.url}"]), "third answers")
        h.eq(json.loads(r.stdout), [])
    finally:
        dead_sock.close()
    r = h.cli(["model", "list", "--controller_addr", " , "])
    h.check(r.returncode == 69 and "no controller address given" in r.stderr, r.stderr)


def test_help_once(t):
    r = h.cli(["model", "--help"])
    h.eq((r.returncode, r.stdout.count("usage:")), (0, 1), r.stdout)
    for cmd in ("list", "set", "start", "stop", "restart", "chat"):
        h.check(f"roster model {cmd} " in r.stdout, f"{cmd} in roster model --help")
    want = {"list": ["--json", "--model_type"], "set": ["--weight", "--enabled", "--host"],
            "start": ["--host", "--port", "--cluster_secret"],
            "stop": ["--host", "--port", "--model_type"], "restart": ["--port"],
            "chat": ["--system", "--temperature", "--max_tokens", "--api_base", "--api_key",
                     "--idle_timeout_ms"]}
    for cmd, flags in want.items():
        for help_flag in ("--help", "-h"):
            r = h.cli(["model", cmd, help_flag])
            h.eq(r.returncode, 0)
            h.eq(r.stdout.count("usage:"), 1, f"model {cmd} {help_flag}: {r.stdout}")
            h.check(r.stdout.startswith(f"usage: roster model {cmd} "), r.stdout[:80])
            for f in flags + ["--model_name", "--controller_addr"]:
                h.check(f + " " in r.stdout, f"{f} in model {cmd} --help")
    # each command takes only its own options
    r = h.cli(["model", "chat", "--help"])
    h.check("--json" not in r.stdout and "--weight" not in r.stdout, "chat's help is chat's")
    r = h.cli(["model", "list", "--help"])
    h.check("--api_base" not in r.stdout, "list's help is list's")
    r = h.cli(["model", "list", "--api_base", "http://x"])
    h.check(r.returncode == 64 and "unknown option --api_base" in r.stderr, r.stderr)
    r = h.cli(["help", "model"])
    h.eq((r.returncode, r.stdout.count("usage:")), (0, 1))
    r = h.cli(["model", "explode"])
    h.check(r.returncode == 64 and "unknown model command 'explode'" in r.stderr, r.stderr)


if __name__ == "__main__":
    h.main(globals())
