"""`roster model list|set` against real controllers: DB-GPT's table columns,
--json, model filters, CONTROLLER_ADDRESS and --controller_addr lists
(the first controller that answers wins; dead ones are skipped), the
error when none answers, and the admin changes of `model set`.
"""
import json
import os
import sys

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


if __name__ == "__main__":
    h.main(globals())
