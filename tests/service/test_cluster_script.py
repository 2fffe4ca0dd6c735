"""scripts/cluster.sh: DB-GPT's HA walk-through on one machine.

Covers: the script starts a private MariaDB, three controllers, two workers
and the webserver on a free port range and says "cluster ready"; `roster
model list` with CONTROLLER_ADDRESS of the three controllers lists both
models, healthy; a chat and an embedding go through the webserver; with one
controller killed (SIGKILL) the models still list and the chat still works;
SIGINT stops every process the script started (none left, MariaDB
included), removes its temporary directory and exits 0; a port already
taken makes the script refuse to start, naming the port, before it starts
anything.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
READY_S = 120.0  # MariaDB's install and start dominate; the machine is shared
STOP_S = 40.0    # SIGTERM drain (up to 15 s) and MariaDB's stop


def port_free(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def listening(p):
    try:
        socket.create_connection(("127.0.0.1", p), timeout=2).close()
        return True
    except OSError:
        return False


def free_range():
    """(base, web): base..base+20 and web all free right now."""
    for _ in range(200):
        base = int.from_bytes(os.urandom(2), "big") % 20000 + 20000
        web = base + 70
        if all(port_free(p) for p in (base, base + 1, base + 3, base + 10, base + 20, web)):
            return base, web
    raise h.Failure("no free port range found")


class Script:
    """The script as a process: stdout collected by a thread."""

    def __init__(self, t, base, web_port):
        args = ["--port-base", str(base), "--web-port", str(web_port)]
        self.ports = (base, base + 1, base + 3, base + 10, base + 20, web_port)
        self.tmpdir = os.path.join(t.tmp, "clustertmp")
        os.makedirs(self.tmpdir, exist_ok=True)
        self.err_path = os.path.join(t.tmp, "cluster.err")
        self.err = open(self.err_path, "wb")
        env = h.clean_env({"ROSTER_BIN": h.BIN, "TMPDIR": self.tmpdir})
        self.p = subprocess.Popen([os.path.join(SRC, "scripts", "cluster.sh")] + args, stdout=subprocess.PIPE,
                                  stderr=self.err, env=env, cwd=t.tmp, start_new_session=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    def out(self):
        return "\n".join(self.lines)

    def stderr(self):
        self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self):
        def ready():
            if "cluster ready" in self.lines:
                return True
            if self.p.poll() is not None:
                raise h.Failure(f"cluster.sh exited with {self.p.returncode} before it was "
                                f"ready:\n{self.out()}\n{self.stderr()[-4000:]}")
            return False
        h.wait_until(ready, READY_S, interval=0.2, what="cluster.sh to say 'cluster ready'")

    def ours(self, pid):
        """Is `pid` still a process this script started (not a reused pid)?"""
        cl = cmdline(pid) or ""
        return self.tmpdir in cl or any(f"--port {p} " in cl + " " for p in self.ports)

    def kill_all(self):
        """Last resort for a failed test: the script's process group and every
        process it printed that is still its own."""
        for pid in self.pids().values():
            if self.ours(pid):
                os.kill(pid, signal.SIGKILL)
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)

    def pids(self):
        """Process name -> pid, from the banner."""
        out = {}
        for line in self.lines:
            m = re.match(r"\s+(MariaDB|controller \d|LLM worker|text2vec worker|webserver)\s.*"
                         r"\bpid (\d+)$", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def tmp_path(self):
        for line in self.lines:
            m = re.match(r"\s+logs\s+(\S+)$", line)
            if m:
                return m.group(1)
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def list_models(ctl_addr):
    r = h.cli(["model", "list", "--json"], env={"CONTROLLER_ADDRESS": ctl_addr})
    h.eq(r.returncode, 0, f"roster model list: {r.stderr}")
    return {(i["model_name"], i["healthy"]) for i in json.loads(r.stdout)}


def chat(web):
    r = h.request("POST", web + "/v1/chat/completions",
                  {"model": "builtin-llm", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "How does a worker register?"}]},
                  timeout=15)
    h.eq(r.status, 200, f"chat through the webserver: {r}")
    h.check(r.json()["choices"][0]["message"]["content"], f"an answer: {r.json()}")


def test_cluster_up_failover_and_ctrl_c(t):
    base, web_port = free_range()
    ctl_addr = ",".join(f"http://127.0.0.1:{base + d}" for d in (0, 10, 20))
    web = f"http://127.0.0.1:{web_port}"
    s = Script(t, base, web_port)
    try:
        s.wait_ready()
        pids = s.pids()
        h.eq(sorted(pids), sorted(["MariaDB", "controller 1", "controller 2", "controller 3",
                                   "LLM worker", "text2vec worker", "webserver"]),
             f"processes in the banner:\n{s.out()}")
        tmp = s.tmp_path()
        h.check(tmp and tmp.startswith(s.tmpdir) and os.path.isdir(tmp), f"temp dir {tmp!r}")
        h.check(f"CONTROLLER_ADDRESS={ctl_addr}" in s.out(), "the model list example")
        h.check(f"kill {pids['controller 2']}" in s.out(), "the kill hint")
        # both models, healthy, through the controllers; a chat and an embedding
        want = {("builtin-llm@llm", True), ("text2vec@text2vec", True)}
        h.check(want <= list_models(ctl_addr), f"models: {list_models(ctl_addr)}")
        chat(web)
        r = h.request("POST", web + "/v1/embeddings", {"model": "text2vec", "input": ["hi"]})
        h.eq(r.status, 200, f"embedding through the webserver: {r}")
        # one controller dies: everything still answers
        os.kill(pids["controller 1"], signal.SIGKILL)
        h.wait_until(lambda: cmdline(pids["controller 1"]) is None
                     or "roster" not in cmdline(pids["controller 1"]), 10,
                     what="controller 1 to die")
        h.check(want <= list_models(ctl_addr), "models listed with controller 1 dead")
        chat(web)
        h.wait_until(lambda: "controller1 (pid" in s.stderr(), 10,
                     what="the script to report the dead controller")
        # Ctrl-C: everything stops, the temp dir goes
        t0 = time.monotonic()
        s.p.send_signal(signal.SIGINT)
        try:
            rc = s.p.wait(STOP_S)
        except subprocess.TimeoutExpired:
            raise h.Failure(f"cluster.sh still running {STOP_S}s after SIGINT:\n"
                            f"{s.stderr()[-3000:]}") from None
        h.eq(rc, 0, f"exit code after SIGINT ({s.stderr()[-2000:]})")
        h.check(time.monotonic() - t0 < STOP_S, "stopped in time")
        for name, pid in pids.items():
            cl = cmdline(pid)
            h.check(cl is None or ("roster" not in cl and "mariadbd" not in cl),
                    f"{name} (pid {pid}) still runs: {cl}")
        leftover = [pid for pid in os.listdir("/proc") if pid.isdigit()
                    and (cmdline(pid) or "").find(tmp) >= 0]
        h.eq(leftover, [], f"processes still using {tmp}")
        h.check(not os.path.exists(tmp), f"{tmp} was not removed")
        h.eq(os.listdir(s.tmpdir), [], "nothing left in TMPDIR")
        for p in (base, base + 1, base + 3, base + 10, base + 20, web_port):
            h.check(not listening(p), f"something still listens on port {p}")
        h.check("stopped" in s.stderr(), s.stderr()[-2000:])
    finally:
        s.kill_all()
        s.err.close()


def test_ctrl_c_during_start_up(t):
    """SIGINT while MariaDB starts: the script lets it finish starting, stops
    it and everything else, and removes its temporary directory."""
    base, web_port = free_range()
    s = Script(t, base, web_port)
    try:
        h.wait_until(lambda: "starting a private MariaDB" in s.stderr(), 30,
                     what="the script to start MariaDB")
        s.p.send_signal(signal.SIGINT)
        try:
            rc = s.p.wait(STOP_S + 60)
        except subprocess.TimeoutExpired:
            raise h.Failure(f"cluster.sh ignored SIGINT during start-up:\n{s.stderr()}") from None
        h.eq(rc, 0, f"exit code ({s.stderr()[-2000:]})")
        h.check("cluster ready" not in s.lines, "it stopped before the cluster was ready")
        h.eq(os.listdir(s.tmpdir), [], "nothing left in TMPDIR")
        leftover = [pid for pid in os.listdir("/proc") if pid.isdigit()
                    and s.tmpdir in (cmdline(pid) or "")]
        h.eq(leftover, [], f"processes still using {s.tmpdir}")
        for p in (base, base + 1, base + 3, base + 10, base + 20, web_port):
            h.check(not listening(p), f"something listens on port {p}")
    finally:
        s.kill_all()
        s.err.close()


def test_refuses_a_taken_port(t):
    base, web_port = free_range()
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", base + 10))
    taken.listen(1)
    try:
        s = Script(t, base, web_port)
        try:
            rc = s.p.wait(30)
        except subprocess.TimeoutExpired:
            s.kill_all()
            raise h.Failure("cluster.sh started despite a taken port") from None
        s.reader.join(5)
        h.check(rc != 0, "refused: non-zero exit")
        err = s.stderr()
        h.check(f"port {base + 10} (for a controller) is taken" in err, err)
        h.check("--port-base" in err, err)
        h.eq(os.listdir(s.tmpdir), [], "nothing was started (no temp dir)")
        s.err.close()
    finally:
        taken.close()
    # a bad option is a usage error
    r = subprocess.run([os.path.join(SRC, "scripts", "cluster.sh"), "--port-base", "80"],
                       capture_output=True, text=True, timeout=30,
                       env=h.clean_env({"ROSTER_BIN": h.BIN}))
    h.check(r.returncode != 0 and "--port-base" in r.stderr, r.stderr)


h.main(globals())
