"""`roster key create|list|revoke|usage` and `roster alias set|list|rm`
against a real controller (SQLite, only the cluster secret authorises) and
two apiservers: a created key is printed once, on stdout only, and works;
the list (table and --json) holds no hash; a revoked key is refused within
1 s; --purge frees the name; usage sums the apiservers' /metrics; aliases
round-trip; errors (no secret, a name taken, an unknown name, bad
arguments) exit non-zero with the controller's message; no process log
and no stderr holds the key.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_apiserver import apiserver  # noqa: E402
from test_cli import parse_table  # noqa: E402

SECRET = "cli-settings-secret"
SECRET_ENV = {"ROSTER_CLUSTER_SECRET": SECRET}
IN_FORCE_S = 1.0
KEY_COLUMNS = ["Name", "Prefix", "Models", "RPM", "TPM", "Priority", "Expires", "Revoked",
               "Created"]
EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_NOPERM = 64, 65, 69, 77


def setup(t, apis=1):
    c = t.controller(args=["--trusted_networks", ""], env=SECRET_ENV)
    a = [apiserver(t, [c], env=SECRET_ENV, name=f"api{i}") for i in range(1, apis + 1)]
    return c, a


def roster(c, args, secret=True, env=None):
    e = {"CONTROLLER_ADDRESS": c.url}
    if secret:
        e.update(SECRET_ENV)
    e.update(env or {})
    return h.cli(args, env=e)


def ok(r, what):
    h.check(r.returncode == 0,
            f"{what}: exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def fails(r, code, words, what):
    h.eq(r.returncode, code, f"{what}: exit status (stderr {r.stderr!r})")
    for w in words:
        h.check(w in r.stderr, f"{what}: {w!r} not in stderr {r.stderr!r}")
    return r


def models_status(a, key):
    return h.request("GET", a.url + "/v1/models",
                     headers={"Authorization": f"Bearer {key}"} if key else {}).status


def within(apis, cond, timeout=5.0):
    t0 = time.monotonic()
    while not all(cond(a) for a in apis):
        if time.monotonic() - t0 > timeout:
            raise h.Failure(f"not in force after {timeout}s")
        time.sleep(0.01)  # polling interval, not a readiness wait
    return time.monotonic() - t0


def create(c, name, args=()):
    r = ok(roster(c, ["key", "create", name] + list(args)), f"key create {name}")
    lines = r.stdout.splitlines()
    h.check("not shown again" in r.stdout, f"the warning: {r.stdout!r}")
    key = lines[-1]
    h.check(key.startswith("sk-roster-") and len(key) == 50 and " " not in key,
            f"the key alone on the last line: {lines!r}")
    h.eq(r.stdout.count(key), 1, "the key printed once")
    h.eq(r.stderr, "", "nothing on stderr")
    return key


def test_keys_within_a_second(t):
    c, (a1, a2) = setup(t, apis=2)
    key = create(c, "team-a", ["--models", "tiny, other", "--rpm", "60", "--tpm", "1000",
                               "--priority", "3", "--expires_in_days", "2"])
    dt = within([a1, a2], lambda a: models_status(a, key) == 200)
    h.check(dt < IN_FORCE_S, f"the key works on both apiservers after {dt:.2f}s")
    h.eq(models_status(a1, ""), 401, "keys exist: a request without one")

    # --json: the controller's answer, the key in it, no hash
    r = ok(roster(c, ["key", "create", "b", "--json", "--expires_at",
                      str(int(time.time()) + 3600)]), "create --json")
    made = json.loads(r.stdout)
    key_b = made["key"]
    h.check("hash" not in made and made["name"] == "b", f"{made}")
    h.check(abs(made["expires_ms"] / 1000 - time.time() - 3600) < 60, f"{made}")

    # list: the table, and --json, never a hash or a key
    r = ok(roster(c, ["key", "list"]), "key list")
    rows = parse_table(r.stdout)
    h.eq(rows[0], KEY_COLUMNS, "columns")
    by = {row[0]: row for row in rows[1:]}
    h.eq(sorted(by), ["b", "team-a"])
    row = by["team-a"]
    h.eq(row[1:6], [key[:16], "tiny, other", "60", "1000", "3"], "team-a's cells")
    h.check(row[6].startswith("20") and row[7] == "-" and row[8].startswith("20"), f"{row}")
    h.eq(by["b"][2:5], ["(all)", "-", "-"])
    r = ok(roster(c, ["key", "list", "--json"]), "key list --json")
    listed = {k["name"]: k for k in json.loads(r.stdout)}
    h.eq(listed["team-a"]["models"], ["tiny", "other"])
    h.eq((listed["team-a"]["rpm"], listed["team-a"]["tpm"], listed["team-a"]["priority"]),
         (60, 1000, 3))
    h.check(key[16:] not in r.stdout and key_b[16:] not in r.stdout and "hash" not in r.stdout,
            "no key, no hash in the list")

    # revoke: refused on both apiservers within 1 s; the list says when
    r = ok(roster(c, ["key", "revoke", "team-a"]), "revoke")
    h.check("revoked" in r.stdout, r.stdout)
    dt = within([a1, a2], lambda a: models_status(a, key) == 401)
    h.check(dt < IN_FORCE_S, f"the revoked key refused on both apiservers after {dt:.2f}s")
    rows = parse_table(ok(roster(c, ["key", "list"]), "list").stdout)
    h.check([row for row in rows if row[0] == "team-a"][0][7].startswith("20"), f"{rows}")
    fails(roster(c, ["key", "create", "team-a"]), EX_DATAERR, ["409", "exists"],
          "a revoked key's name is still taken")
    # --purge deletes it: gone from the list, the name free again
    ok(roster(c, ["key", "revoke", "team-a", "--purge"]), "purge")
    h.eq(sorted(k["name"] for k in json.loads(roster(c, ["key", "list", "--json"]).stdout)),
         ["b"])
    key2 = create(c, "team-a")
    h.check(key2 != key, "a new key")

    # errors: the controller's message, and an exit status that says what
    fails(roster(c, ["key", "list"], secret=False), EX_NOPERM,
          ["401", "ROSTER_CLUSTER_SECRET"], "no secret")
    fails(roster(c, ["key", "create", "x"], env={"ROSTER_CLUSTER_SECRET": "wrong"}), EX_NOPERM,
          ["401"], "a wrong secret")
    fails(roster(c, ["key", "create", "b"]), EX_DATAERR, ["409", "exists already"], "a name taken")
    fails(roster(c, ["key", "revoke", "nope"]), EX_DATAERR, ["404", "nope"], "an unknown key")
    fails(roster(c, ["key", "create", "bad name"]), EX_DATAERR, ["422"], "a bad name")
    dead_sock, dead = h.dead_port()
    try:
        fails(roster(c, ["key", "list"], env={"CONTROLLER_ADDRESS": f"http://127.0.0.1:{dead}"}),
              EX_UNAVAILABLE, ["no controller answered"], "no controller")
    finally:
        dead_sock.close()
    for args in (["key"], ["key", "nosuch"], ["key", "create"], ["key", "create", "a", "b"],
                 ["key", "create", "a", "--bogus"], ["key", "create", "a", "--priority", "10"],
                 ["key", "create", "a", "--rpm", "x"],
                 ["key", "create", "a", "--expires_at", "2000000000", "--expires_in_days", "1"],
                 ["key", "create", "a", "--models", "tiny,,x"], ["key", "revoke"],
                 ["key", "list", "extra"], ["key", "usage"], ["alias", "set", "g"],
                 ["alias", "rm"], ["alias", "list", "--purge"]):
        r = roster(c, args)
        h.eq(r.returncode, EX_USAGE, f"{args}: exit status (stderr {r.stderr!r})")
        h.check(r.stderr.strip() and r.stdout == "", f"{args}: the reason on stderr only")
    for args in (["key", "--help"], ["alias", "--help"], ["key", "create", "--help"],
                 ["key", "usage", "--help"], ["alias", "set", "--help"]):
        r = ok(roster(c, args), str(args))
        h.check("usage: roster" in r.stdout, f"{args}: {r.stdout[:200]!r}")
    h.check("--expires_in_days" in roster(c, ["key", "create", "--help"]).stdout, "create's options")

    # the keys are in no process log
    for p in t.procs:
        log = p.logs()
        for k in (key, key_b, key2):
            h.check(k[16:] not in log, f"{p.name}'s log holds no key")


def chat(a, key, max_tokens):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens}
    return h.request("POST", a.url + "/v1/chat/completions", body=body,
                     headers={"Authorization": f"Bearer {key}"})


def usage_of(c, args):
    r = ok(roster(c, ["key", "usage"] + args), f"usage {args}")
    rows = parse_table(r.stdout)
    return rows[0], {row[0]: row[1:] for row in rows[1:]}


def test_usage_sums_apiservers(t):
    c, (a1, a2) = setup(t, apis=2)
    t.start("w1", ["start", "worker", "--model_name", "tiny", "--host", "127.0.0.1",
                   "--controller_addr", c.url, "--heartbeat_interval", "0.5"], env=SECRET_ENV)
    key = create(c, "team-a", ["--rpm", "1000"])  # (tokens are counted for keys with limits)
    create(c, "idle")
    within([a1, a2], lambda a: models_status(a, key) == 200)
    for _ in range(3):
        h.eq(models_status(a1, key), 200)
    h.eq(models_status(a2, key), 200)
    # tokens: a chat on each apiserver (2 and 3 completion tokens)
    for a, n in ((a1, 2), (a2, 3)):
        h.wait_until(lambda a=a: chat(a, key, n).status == 200, 10, what=f"{a.name} chats")
    h.eq(models_status(a2, "sk-roster-no-such-key"), 401)
    ok(roster(c, ["key", "revoke", "team-a"]), "revoke")
    within([a1, a2], lambda a: models_status(a, key) == 401)

    def sample(labels):
        name = ("roster_api_key_rejected_total" if "reason" in labels else
                "roster_api_key_tokens_total" if "kind" in labels else
                "roster_api_key_requests_total")
        return sum(h.metric_sample(a.url, name, labels) or 0 for a in (a1, a2))

    admitted = sample({"key": "team-a"})
    prompt = sample({"key": "team-a", "kind": "prompt"})
    completion = sample({"key": "team-a", "kind": "completion"})
    h.check(prompt > 0 and completion >= 5, f"tokens counted: {prompt} {completion}")
    revoked = sample({"key": "team-a", "reason": "revoked"})
    invalid = sample({"key": "", "reason": "invalid"})
    h.check(admitted >= 5 and revoked >= 2 and invalid >= 1, f"{admitted} {revoked} {invalid}")
    one = h.metric_sample(a1.url, "roster_api_key_requests_total", {"key": "team-a"})
    h.check(0 < one < admitted, "both apiservers admitted some")

    bases = f"{a1.url},{a2.url}/v1/"
    head, rows = usage_of(c, ["--api_base", bases])
    h.eq(head[:2], ["Key", "Requests"])
    col = {name: i for i, name in enumerate(head[1:])}
    h.check("Rejected (revoked)" in col and "Rejected (invalid)" in col, f"columns {head}")
    h.eq(int(rows["team-a"][col["Requests"]]), admitted, "requests summed over both")
    h.eq(int(rows["team-a"][col["Tokens (prompt)"]]), prompt, "prompt tokens summed over both")
    h.eq(int(rows["team-a"][col["Tokens (completion)"]]), completion, "completion tokens")
    h.eq(int(rows["team-a"][col["Rejected (revoked)"]]), revoked, "revoked summed over both")
    h.eq(int(rows["(no such key)"][col["Rejected (invalid)"]]), invalid, "unknown keys")
    h.check("idle" not in rows, "a key no apiserver has counted is not listed")

    # one key, and --json
    head, rows = usage_of(c, ["team-a", "--api_base", bases])
    h.eq(sorted(rows), ["team-a"])
    r = ok(roster(c, ["key", "usage", "--json", "--api_base", bases]), "usage --json")
    doc = json.loads(r.stdout)
    h.eq(len(doc["apiservers"]), 2)
    h.eq(doc["keys"]["team-a"]["requests"], admitted)
    h.eq(doc["keys"]["team-a"]["rejected"]["revoked"], revoked)
    h.eq(doc["keys"]["team-a"]["tokens"], {"prompt": prompt, "completion": completion})

    # an apiserver that cannot be read: the sums of the others, and exit 69
    dead_sock, dead = h.dead_port()
    try:
        r = roster(c, ["key", "usage", "--api_base", f"{a1.url},http://127.0.0.1:{dead}"])
        h.eq(r.returncode, EX_UNAVAILABLE, f"{r.stderr}")
        h.check(str(dead) in r.stderr and "leave out 1" in r.stderr, r.stderr)
        rows = {row[0]: row for row in parse_table(r.stdout)}
        h.eq(int(rows["team-a"][1]), one)
        h.check("(no such key)" not in rows, "no row for unknown keys where none came")
        r = roster(c, ["key", "usage", "--api_base", f"http://127.0.0.1:{dead}"])
        h.eq(r.returncode, EX_UNAVAILABLE, f"{r.stderr}")
    finally:
        dead_sock.close()


def test_aliases(t):
    c, _ = setup(t, apis=0)
    r = ok(roster(c, ["alias", "set", "gpt-4o", "glm-4-9b-chat,qwen2-7b"]), "alias set")
    h.check("glm-4-9b-chat, qwen2-7b" in r.stdout, r.stdout)
    ok(roster(c, ["alias", "set", "fast", "tiny", "tiny2"]), "alias set, models as arguments")
    rows = parse_table(ok(roster(c, ["alias", "list"]), "alias list").stdout)
    h.eq(rows[0], ["Name", "Models", "Updated"])
    h.eq(sorted(row[:2] for row in rows[1:]),
         [["fast", "tiny, tiny2"], ["gpt-4o", "glm-4-9b-chat, qwen2-7b"]])
    # set again replaces the list
    ok(roster(c, ["alias", "set", "fast", "tiny3"]), "alias set again")
    got = {a["name"]: a["models"] for a in
           json.loads(ok(roster(c, ["alias", "list", "--json"]), "list --json").stdout)}
    h.eq(got, {"gpt-4o": ["glm-4-9b-chat", "qwen2-7b"], "fast": ["tiny3"]})
    ok(roster(c, ["alias", "rm", "fast"]), "alias rm")
    got = [a["name"] for a in json.loads(roster(c, ["alias", "list", "--json"]).stdout)]
    h.eq(got, ["gpt-4o"])
    fails(roster(c, ["alias", "rm", "fast"]), EX_DATAERR, ["404", "fast"], "remove it again")
    fails(roster(c, ["alias", "set", "g", "a,b,c,d,e,f,g,h,i"]), EX_DATAERR, ["422"],
          "too many models")
    fails(roster(c, ["alias", "list"], secret=False), EX_NOPERM, ["401"], "no secret")


def test_config(t):
    c, _ = setup(t, apis=0)
    r = ok(roster(c, ["config", "set", "tiny", "routing=least_inflight", "max_attempts=2"]),
           "config set")
    h.check("'tiny'" in r.stdout, r.stdout)
    r = ok(roster(c, ["config", "get"]), "config get")
    h.check("routing = least_inflight" in r.stdout and "max_attempts = 2" in r.stdout, r.stdout)
    ok(roster(c, ["config", "set", "tiny", "max_attempts="]), "config set KEY= removes")
    got = json.loads(ok(roster(c, ["config", "get", "tiny", "--json"]), "get --json").stdout)
    h.eq((got["routing"], got.get("max_attempts")), ("least_inflight", None))
    fails(roster(c, ["config", "set", "tiny", "routing=fastest"]), EX_DATAERR, ["422", "routing"],
          "a policy that does not exist")
    fails(roster(c, ["config", "set", "tiny", "max_attempts"]), 64, ["KEY=VALUE"], "no '='")
    fails(roster(c, ["config", "set", "tiny", "queue_max=many"]), 64, ["number"], "not a number")
    ok(roster(c, ["config", "rm", "tiny"]), "config rm")
    fails(roster(c, ["config", "get", "tiny"]), EX_DATAERR, ["no settings"], "nothing left")
    fails(roster(c, ["config", "get"], secret=False), EX_NOPERM, ["401"], "no secret")


if __name__ == "__main__":
    h.main(globals())
