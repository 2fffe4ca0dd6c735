"""DB-GPT's "High Availability" walk-through, its commands as DB-GPT's docs
write them with `dbgpt` replaced by `roster` (reference/dbgpt-smmf.md), on
one machine: hosts become loopback ports, the MySQL server is the test run's
private MariaDB, and the workers get `--host 127.0.0.1` (a worker started
without it advertises the machine's address).

    roster start controller --port 8000 --registry_type database
        --registry_db_type mysql --registry_db_name dbgpt --registry_db_host ...
        --registry_db_port 3306 --registry_db_user root --registry_db_password ...
        (twice)
    roster start worker --model_name glm-4-9b-chat --model_path /app/models/glm-4-9b-chat
        --port 8001 --controller_addr "http://server1:8000,http://server2:8000"
    roster start worker --model_name text2vec --model_path ... --worker_type text2vec
        --port 8003 --controller_addr "..."
    LLM_MODEL=glm-4-9b-chat EMBEDDING_MODEL=text2vec roster start webserver --light
        --remote_embedding --controller_addr "..."
    CONTROLLER_ADDRESS="..." roster model list

then a chat and an embedding through the webserver; then one controller is
killed and everything above still works.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(t, name, argv, env=None):
    """Starts `roster <argv>` as written (its own --port), with a port file
    to know when it listens."""
    pf = os.path.join(t.tmp, f"{name}.port")
    p = h.Proc(t, name, list(argv) + ["--port_file", pf], env=env, port_file=pf)
    t.procs.append(p)
    p.wait_port(30)
    return p


def model_rows(out):
    rows = []
    for line in out.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_dbgpt_ha_walkthrough(t):
    m = h.mariadb()
    db = t.mysql_database()
    ports = [free_port() for _ in range(5)]
    ctl_urls = [f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"]
    addr = ",".join(ctl_urls)
    ctls = []
    for i in range(2):
        ctls.append(run(t, f"controller{i + 1}", [
            "start", "controller",
            "--port", str(ports[i]),
            "--registry_type", "database",
            "--registry_db_type", "mysql",
            "--registry_db_name", db,
            "--registry_db_host", m["host"],
            "--registry_db_port", str(m["port"]),
            "--registry_db_user", m["user"],
            "--registry_db_password", m["password"]]))
    run(t, "llm-worker", [
        "start", "worker", "--model_name", "glm-4-9b-chat",
        "--model_path", "/app/models/glm-4-9b-chat",
        "--port", str(ports[2]),
        "--controller_addr", addr,
        "--host", "127.0.0.1"])
    run(t, "embedding-worker", [
        "start", "worker", "--model_name", "text2vec",
        "--model_path", "/app/models/text2vec-large-chinese",
        "--worker_type", "text2vec",
        "--port", str(ports[3]),
        "--controller_addr", addr,
        "--host", "127.0.0.1"])
    web = run(t, "webserver", [
        "start", "webserver",
        "--light",
        "--remote_embedding",
        "--controller_addr", addr,
        "--port", str(ports[4])],
        env={"LLM_MODEL": "glm-4-9b-chat", "EMBEDDING_MODEL": "text2vec"})

    def listed():
        r = h.cli(["model", "list"], env={"CONTROLLER_ADDRESS": addr})
        h.eq(r.returncode, 0, f"model list: {r.stderr}")
        rows = model_rows(r.stdout)
        got = {(row[0], row[1], row[4]) for row in rows[1:]}
        want = {("glm-4-9b-chat", "llm", "True"), ("text2vec", "text2vec", "True")}
        return rows if want <= got else None

    rows = h.wait_until(listed, 20, what="`roster model list` to show both models")
    h.eq(rows[0][:8], ["Model Name", "Model Type", "Host", "Port", "Healthy", "Enabled",
                       "Prompt Template", "Last Heartbeat"], "DB-GPT's columns first:")
    services = [r for r in rows[1:] if r[:2] == ["WorkerManager", "service"]]
    h.eq(len(services), 2, "each worker process also registers WorkerManager@service:")

    def chat_and_embed(what):
        r = h.request("POST", web.url + "/v1/chat/completions",
                      {"model": "glm-4-9b-chat", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "What is a controller?"}]})
        h.eq(r.status, 200, f"{what}: chat through the webserver: {r}")
        h.check(r.json()["choices"][0]["message"]["content"], f"{what}: an answer")
        r = h.request("POST", web.url + "/v1/embeddings",
                      {"model": "text2vec", "input": ["server1", "server2"]})
        h.eq(r.status, 200, f"{what}: embedding through the webserver: {r}")
        h.eq(len(r.json()["data"]), 2)

    h.wait_until(lambda: {"glm-4-9b-chat", "text2vec"} <= {
        x["id"] for x in h.request("GET", web.url + "/v1/models").json()["data"]}, 10,
        what="the webserver to route both models")
    chat_and_embed("both controllers up")
    st = h.request("GET", web.url + "/api/dashboard/state").json()
    h.eq(st["server"]["llm_model"], "glm-4-9b-chat")
    h.eq(sorted(c["url"] for c in st["controllers"]), sorted(ctl_urls))

    # the controller the webserver watches dies: the CLI, the webserver and
    # the workers use the other, and the webserver says so at once
    current = h.request("GET", web.url + "/api/health").json()["controllers"]["current"]
    dead = ctl_urls.index(current)
    ctls[dead].kill()
    t0 = time.monotonic()
    h.wait_until(lambda: chat_and_embed("failing over") is None and h.request(
        "GET", web.url + "/api/health").json()["controllers"]["current"] == ctl_urls[1 - dead],
        10, what="the webserver to watch the other controller")
    h.wait_until(lambda: h.request("GET", web.url + "/api/health").json()["status"] == "ok", 5,
                 what="health ok again (not stale for a long-poll)")
    h.check(time.monotonic() - t0 < 6, f"failover reported in {time.monotonic() - t0:.1f}s")
    chat_and_embed("a controller killed")
    h.check(listed(), "model list with a controller dead")
    # the webserver's watch fails over; a new registration is still seen
    run(t, "late-worker", [
        "start", "worker", "--model_name", "glm-4-9b-chat", "--port", str(free_port()),
        "--controller_addr", addr, "--host", "127.0.0.1"])
    def glm_instances():
        data = h.request("GET", web.url + "/v1/models").json()["data"]
        return next((x["instances"] for x in data if x["id"] == "glm-4-9b-chat"), 0)
    h.wait_until(lambda: glm_instances() == 2, 15,
                 what="the webserver to see the new instance through controller 2")
    chat_and_embed("after failover")
    health = h.request("GET", web.url + "/api/health").json()
    h.eq((health["status"], health["controllers"]["current"]), ("ok", ctl_urls[1 - dead]))


h.main(globals())
