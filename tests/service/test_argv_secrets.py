"""Secrets given as flags leave the process's arguments: the controller,
the worker, the apiserver and the webserver started with canary values for
--cluster_secret, --registry_db_password and --api_keys on the command
line (both "--flag value" and "--flag=value"): /proc/PID/cmdline holds no
canary once the process listens, the log names each flag (and never its
value) with a warning that the environment is the better place, and the
secrets still work: requests with them succeed, requests without are
refused.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

CS = "canary-cluster-7f3a9c"
DBPW = "canary-dbpw-51e2"
KEY1 = "sk-canary-key-one-92b1"
KEY2 = "sk-canary-key-two-0c4d"
CANARIES = (CS, DBPW, KEY1, KEY2)


def cmdline(p):
    with open(f"/proc/{p.p.pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def check_scrubbed(p, flags):
    """No canary in the arguments; the flags themselves are still there."""
    args = cmdline(p)
    joined = b"\0".join(args)
    for c in CANARIES:
        h.check(c.encode() not in joined, f"{p.name}: {c} still in /proc/PID/cmdline: {args}")
    for f in flags:
        h.check(any(a == f.encode() or a.startswith(f.encode() + b"=x") for a in args),
                f"{p.name}: {f} no longer in the arguments: {args}")
    log = p.logs()
    for c in CANARIES:
        h.check(c not in log, f"{p.name}: {c} in the log")
    for f in flags:
        canonical = "--" + f[2:].replace("-", "_")
        h.check(f"{canonical} was given on the command line" in log and "environment" in log,
                f"{p.name}: no warning about {f}:\n{log[-2000:]}")


def test_roles(t):
    # the controller: both forms; the password is accepted (SQLite ignores it)
    c = t.controller(args=["--trusted_networks", "", "--cluster_secret", CS,
                           f"--registry_db_password={DBPW}"], wrapper=[])
    check_scrubbed(c, ["--cluster_secret", "--registry_db_password"])
    h.request("POST", c.url + "/api/controller/models", h.instance()).error(
        401, "a write without the secret")
    h.register(c.url, h.instance(), headers={"X-Roster-Secret": CS})
    h.eq(len(h.list_models(c.url)), 1)

    # a worker registers with the secret it was given on argv
    w = t.start("wrk", ["start", "worker", "--model_name", "tiny", "--host", "127.0.0.1",
                        "--controller_addr", c.url, "--heartbeat_interval", "0.5",
                        "--embed_dim", "32", f"--cluster-secret={CS}"], wrapper=[])
    check_scrubbed(w, ["--cluster-secret"])
    h.wait_until(lambda: any(m["model_name"] == "tiny@llm" for m in h.list_models(c.url)),
                 what="the worker to register (with the secret from its argv)")

    # the apiserver: client keys and the cluster secret
    a = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url,
                        f"--api_keys={KEY1},{KEY2}", "--cluster_secret", CS], wrapper=[])
    check_scrubbed(a, ["--api_keys", "--cluster_secret"])
    h.request("GET", a.url + "/v1/models").error(401, "no key")
    h.request("GET", a.url + "/v1/models",
              headers={"Authorization": "Bearer " + "x" * len(KEY1)}).error(401, "the x's")

    def routable():
        r = h.request("GET", a.url + "/v1/models", headers={"Authorization": f"Bearer {KEY2}"})
        return r.status == 200 and any(m["id"] == "tiny" for m in r.json()["data"])
    h.wait_until(routable, what="the worker at the apiserver (with the key from argv)")
    r = h.request("POST", a.url + "/v1/chat/completions",
                  {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 3}, headers={"Authorization": f"Bearer {KEY1}"})
    h.eq(r.status, 200, f"a chat with the key: {r}")
    for p in (a, w, c):
        p.stop_clean()


def test_webserver(t):
    web = t.start("web", ["start", "webserver", "--host", "127.0.0.1", "--data_dir",
                          os.path.join(t.tmp, "data"), "--api_keys", KEY1,
                          f"--cluster_secret={CS}"], wrapper=[])
    check_scrubbed(web, ["--api_keys", "--cluster_secret"])
    h.request("GET", web.url + "/v1/models").error(401, "no key")
    r = h.request("GET", web.url + "/v1/models", headers={"Authorization": f"Bearer {KEY1}"})
    h.eq(r.status, 200, f"/v1/models with the key: {r}")
    web.stop_clean()


def test_cli_model(t):
    """A short-lived command scrubs too (its warning goes to stderr)."""
    c = t.controller(args=["--trusted_networks", ""], env={"ROSTER_CLUSTER_SECRET": CS})
    h.register(c.url, h.instance(), headers={"X-Roster-Secret": CS})
    r = h.cli(["model", "set", "--controller_addr", c.url, "--model_name", "vicuna@llm",
               "--host", "127.0.0.1", "--port", "8001", "--weight", "3", "--cluster_secret", CS])
    h.eq(r.returncode, 0, r.stderr)
    h.check(CS not in r.stderr and CS not in r.stdout, "the secret printed")
    h.check("--cluster_secret" in r.stderr, f"no warning: {r.stderr!r}")
    h.eq(h.find(h.list_models(c.url))["weight"], 3.0)


if __name__ == "__main__":
    h.main(globals())
