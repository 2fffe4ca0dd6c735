"""`roster start <role> --check`: every role validates its options, the
environment and the files they name, prints the effective configuration
with secrets masked, and exits (0, or non-zero with the reason) without
binding, connecting or creating anything.
"""
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402


def check(args, env=None, code=0, text=None):
    r = h.cli(["start"] + list(args) + ["--check"], env=env, timeout=20)
    h.eq(r.returncode, code, f"{args}: stdout:\n{r.stdout[-1500:]}\nstderr:\n{r.stderr[-1500:]}")
    if text:
        out = r.stdout + r.stderr
        h.check(text in out, f"{args}: {text!r} not in:\n{out[-2000:]}")
    return r


def listening_port():
    """A port something listens on (a role that tried to bind it would fail)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def test_valid_configurations_bind_and_connect_nothing(t):
    busy, port = listening_port()
    dead, dead_port = h.dead_port()
    try:
        pf = os.path.join(t.tmp, "port")
        db = os.path.join(t.tmp, "reg.db")
        r = check(["controller", "--host", "127.0.0.1", "--port", str(port), "--port_file", pf,
                   "--registry_db_name", db], text="OK: the controller would start")
        h.check("--registry_db_name" in r.stdout and db in r.stdout, "the options are printed")
        h.check("(command line)" in r.stdout and "(default)" in r.stdout, "with where they came from")
        h.check(not os.path.exists(pf) and not os.path.exists(db), "nothing created")
        # MySQL is named, not connected: a dead port is fine
        check(["controller", "--port", str(port), "--registry_db_type", "mysql",
               "--registry_db_host", "127.0.0.1", "--registry_db_port", str(dead_port)],
              text="(not connected)")
        check(["worker", "--model_name", "a,b", "--port", str(port), "--controller_addr",
               f"http://127.0.0.1:{dead_port}"], text="model: b@llm")
        check(["apiserver", "--port", str(port), "--controller_addr",
               f"http://127.0.0.1:{dead_port},http://127.0.0.1:{port}"], text="controllers: 2")
        r = check(["webserver", "--port", str(port), "--data_dir", os.path.join(t.tmp, "d")],
                  text="OK: the webserver would start")
        h.check("embedded mode" in r.stdout and "--registry_db_type" in r.stdout, r.stdout[:500])
        h.check(not os.path.exists(os.path.join(t.tmp, "d")), "the data dir is not created")
        r = check(["webserver", "--port", str(port), "--light", "--controller_addr",
                   f"http://127.0.0.1:{dead_port}"], text="cluster mode")
        h.check("--registry_db_type" not in r.stdout, "no controller options in cluster mode")
        # the option is read from argv only: ROSTER_CHECK does not turn a start into a check
        r = h.cli(["start", "apiserver", "--port", "x"], env={"ROSTER_CHECK": "true"})
        h.eq(r.returncode, 64, "a normal start (here: a bad port)")
    finally:
        busy.close()
        dead.close()


def test_secrets_are_masked(t):
    env = {"ROSTER_CLUSTER_SECRET": "s3cret-cluster", "ROSTER_API_KEYS": "sk-one,sk-two",
           "ROSTER_REGISTRY_DB_PASSWORD": "db-pass-1", "UPSTREAM_KEY": "sk-upstream"}
    for args in (["controller", "--registry_db_type", "mysql"],
                 ["apiserver"],
                 ["webserver"],
                 ["worker", "--model_name", "m", "--backend", "openai", "--upstream",
                  "http://127.0.0.1:9/v1", "--upstream_api_key_env", "UPSTREAM_KEY"]):
        r = check(args, env=env)
        out = r.stdout + r.stderr
        for secret in env.values():
            h.check(secret not in out, f"{args}: {secret} printed")
        h.check("***" in out, f"{args}: masked values shown as ***")
    r = check(["controller", "--registry_db_url", "mysql://roster:url-pass@db:3307/reg"])
    h.check("url-pass" not in r.stdout + r.stderr, "the URL's password is masked")


def test_invalid_configurations(t):
    check(["controller", "--registry_db_name", "/no/such/dir/r.db"], code=78,
          text="does not exist")
    bad = os.path.join(t.tmp, "not-a-db")
    with open(bad, "w") as f:
        f.write("hello, not sqlite\n")
    check(["controller", "--registry_db_name", bad], code=78, text="not a SQLite database")
    check(["controller", "--registry_db_url", "postgres://u@h/db"], code=64)
    check(["controller", "--trusted_networks", "10.0.0.0/99"], code=64, text="--trusted_networks")
    check(["worker"], code=64, text="--model_name is required")
    check(["worker", "--model_name", "m", "--backend", "openai", "--upstream",
           "http://127.0.0.1:9/v1", "--upstream_api_key_env", "NOT_SET_ANYWHERE"], code=64,
          text="NOT_SET_ANYWHERE")
    check(["worker", "--model_name", "a@b"], code=64, text="'@'")
    check(["apiserver", "--controller_addr", "ftp://x"], code=64, text="--controller_addr")
    check(["apiserver", "--routing", "fastest"], code=64, text="--routing")
    check(["webserver", "--registry_db_name", "/no/such/dir/r.db"], code=78, text="does not exist")
    check(["webserver", "--controller_addr", "http://a:1", "--registry_db_type", "mysql"],
          code=64, text="embedded controller")
    check(["controller", "--port_file", "/no/such/dir/p"], code=73, text="--port_file")


h.main(globals())
