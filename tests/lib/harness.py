"""Service-test harness: real roster processes over loopback, real signals.

Stdlib only. A test file defines functions named test_*(t) and ends with
`harness.main(globals())`. Each test gets a Ctx `t` with its own temp dir;
every process it starts is stopped at the end, and the test fails if any
process crashed, exited non-zero when stopped, or printed a sanitizer
report.

Environment (set by ctest, see tests/CMakeLists.txt):
  ROSTER_BIN               the roster binary
  ROSTER_TEST_MARIADB_ENV  KEY=VALUE file written by tests/lib/mariadb.sh
  ROSTER_TEST_KEEP=1       keep temp dirs (paths are printed)
  ROSTER_TEST_ONLY=name    run only tests whose name contains `name`
  ROSTER_TEST_SKIP=a,b     skip tests whose name contains a or b
  ROSTER_TEST_WRAPPER=cmd  run every roster process under cmd (e.g. valgrind)

Processes get a clean environment: ROSTER_* option variables and
CONTROLLER_ADDRESS inherited from the caller's shell are removed, so a
developer's settings cannot leak into a test.
"""

import glob
import http.client
import json
import os
import shlex
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

BIN = os.path.abspath(os.environ.get(
    "ROSTER_BIN", os.path.join(os.path.dirname(__file__), "../../build/roster")))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer", "==ERROR")


# Variables of the caller's environment that a roster process would read as
# options: removed so that tests are hermetic (the test's own values win).
_KEEP_ROSTER_VARS = ("ROSTER_BIN", "ROSTER_TEST_")


def clean_env(extra=None):
    """os.environ without roster option variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not ((k.startswith("ROSTER_") and not k.startswith(_KEEP_ROSTER_VARS))
                   or k in ("CONTROLLER_ADDRESS", "CONTROLLER_REGISTRY_DB_PASSWORD"))}
    # active probes (on by default in roster) send workers requests of their
    # own, which tests counting a worker's requests would see: off unless a
    # test turns them on (test_probe.py passes --probe_interval_ms)
    env["ROSTER_PROBE_INTERVAL_MS"] = "0"
    env.update(extra or {})
    return env


def sanitizer_report(text):
    """The first sanitizer marker found in text, or None."""
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


class Failure(AssertionError):
    pass


def check(cond, msg="check failed"):
    if not cond:
        raise Failure(msg)


def eq(a, b, msg=""):
    if a != b:
        raise Failure(f"{msg} expected {b!r}, got {a!r}")


def wait_until(fn, timeout=10.0, interval=0.05, what="condition"):
    """Polls fn() until it returns a truthy value; returns it or fails."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the condition may fail while waiting
            last_exc = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}"
                  + (f" (last error: {last_exc!r})" if last_exc else ""))


# ---- HTTP -------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error(self, status=None, what=""):
        """Checks that this is a client error (4xx, or exactly `status`) whose
        body is roster's JSON error {"error":{"message","type","param","code"}};
        returns the inner object."""
        return check_error(self.status, self.body, status, what, self.header("Content-Type"))

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


def request(method, url, body=None, headers=None, timeout=5.0):
    """One request on a fresh connection (as DB-GPT's clients do)."""
    assert url.startswith("http://")
    hostport, _, path = url[7:].partition("/")
    host, _, port = hostport.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        conn.request(method, "/" + path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def raw(port, data, timeout=5.0, host="127.0.0.1", read_until_close=True):
    """Sends raw bytes; returns everything the server sent back until it
    closed the connection (or the timeout)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def check_error(status, body, want_status=None, what="", content_type=None):
    """See Response.error(); usable on raw responses too."""
    label = f"{what}: " if what else ""
    if want_status is not None:
        if isinstance(want_status, (tuple, list, set)):
            check(status in want_status, f"{label}status {status} not in {sorted(want_status)}: "
                  f"{body[:300]!r}")
        else:
            eq(status, want_status, f"{label}status ({body[:300]!r}):")
    else:
        check(400 <= status < 500, f"{label}expected a 4xx, got {status}: {body[:300]!r}")
    if content_type is not None:
        check(content_type.split(";")[0].strip() == "application/json",
              f"{label}error Content-Type is {content_type!r}")
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise Failure(f"{label}error body is not JSON ({e}): {body[:300]!r}") from None
    check(isinstance(doc, dict) and list(doc.keys()) == ["error"],
          f"{label}error body must be {{\"error\": ...}}: {body[:300]!r}")
    err = doc["error"]
    check(isinstance(err, dict) and sorted(err.keys()) == ["code", "message", "param", "type"],
          f"{label}error object keys: {body[:300]!r}")
    check(isinstance(err["message"], str) and err["message"],
          f"{label}error.message must be a non-empty string")
    check(isinstance(err["type"], str) and err["type"], f"{label}error.type must be a string")
    check(err["param"] is None, f"{label}error.param must be null")
    check(isinstance(err["code"], (str, int)) and not isinstance(err["code"], bool),
          f"{label}error.code must be a string or number")
    return err


def raw_exchange(port, chunks, timeout=5.0, pause=0.0, host="127.0.0.1"):
    """Sends `chunks` (bytes objects) one by one, `pause` seconds apart,
    stopping early when the server answers or closes (a server may answer
    413/431 and close before the client has sent everything). Returns
    (response bytes, seconds from the first byte sent to the end of the
    response)."""
    s = socket.create_connection((host, port), timeout=timeout)
    out = b""
    t0 = time.monotonic()
    try:
        for i, chunk in enumerate(chunks):
            r, _, _ = select.select([s], [], [], pause if i else 0)
            if r:
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
            if response_complete(out):
                break
        return out, time.monotonic() - t0
    finally:
        s.close()


def response_complete(data):
    """True when data holds a whole response (headers and Content-Length body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            try:
                return len(body) >= int(v.strip())
            except ValueError:
                return True
    return True


def parse_raw_response(data):
    """(status, headers dict lower-case, body) of the first response in data."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", len(body)))
    return status, hdrs, body[:n]


class SSEStream:
    """A server-sent-events response read incrementally over a raw socket
    (chunked or not): read_events() returns (event, data) pairs."""

    def __init__(self, port, path, headers=None, host="127.0.0.1"):
        self.s = socket.create_connection((host, port), timeout=5)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.head = None
        self.chunked = False
        self.text = ""   # decoded body not yet split into events
        self.events = []

    def _feed(self, data):
        self.raw += data
        if self.head is None:
            head, sep, rest = self.raw.partition(b"\r\n\r\n")
            if not sep:
                return
            self.head = head.decode("latin-1")
            self.status = int(self.head.split()[1])
            self.chunked = "transfer-encoding: chunked" in self.head.lower()
            self.raw = rest
        if self.chunked:
            while True:
                size_line, sep, rest = self.raw.partition(b"\r\n")
                if not sep:
                    break
                n = int(size_line.split(b";")[0], 16)
                if len(rest) < n + 2:
                    break
                self.text += rest[:n].decode("utf-8")
                self.raw = rest[n + 2:]
        else:
            self.text += self.raw.decode("utf-8", "ignore")
            self.raw = b""
        while "\n\n" in self.text:
            block, _, self.text = self.text.partition("\n\n")
            kind, data = "message", []
            for line in block.split("\n"):
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            if data:
                self.events.append((kind, "\n".join(data)))

    def read_events(self, n, timeout=5.0):
        """Up to n events, waiting at most `timeout` for them."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            self._feed(data)
        out, self.events = self.events[:n], self.events[n:]
        return out

    def close(self):
        self.s.close()


def socket_stream(port, path, headers=None):
    return SSEStream(port, path, headers)


# ---- processes -----------------------------------------------------------------

class Proc:
    """A roster process with its logs in the test's temp dir."""

    def __init__(self, ctx, name, argv, env=None, port_file=None, wrapper=None, exe=None):
        self.ctx = ctx
        self.name = name
        self.argv = argv
        self.port_file = port_file
        self.log_path = os.path.join(ctx.tmp, f"{name}.log")
        full_env = clean_env(env)
        self.log = open(self.log_path, "ab")
        if wrapper is None and os.environ.get("ROSTER_TEST_WRAPPER"):  # [] means none
            wrapper = shlex.split(os.environ["ROSTER_TEST_WRAPPER"])
        cmd = (wrapper or []) + [exe or BIN] + argv
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                  cwd=ctx.tmp, start_new_session=True)
        self.expect_kill = False
        self.port = None

    def wait_port(self, timeout=20.0):
        def ready():
            if self.p.poll() is not None:
                raise Failure(f"{self.name} exited with {self.p.returncode} before listening:\n"
                              + self.logs()[-3000:])
            try:
                with open(self.port_file) as f:
                    txt = f.read().strip()
                return int(txt) if txt else None
            except FileNotFoundError:
                return None
        self.port = wait_until(ready, timeout, what=f"{self.name} to listen")
        return self.port

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def logs(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def kill(self):
        """SIGKILL, on purpose: not a test failure."""
        self.expect_kill = True
        self.signal(signal.SIGKILL)
        self.p.wait(10)

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code (SIGKILL after timeout)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
                raise Failure(f"{self.name} did not stop within {timeout}s of SIGTERM")
        return self.p.returncode

    def wait_exit(self, timeout=15.0):
        """Waits (sending nothing) for the process to exit; returns its code."""
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{self.name} still running after {timeout}s") from None

    def stop_clean(self, timeout=15.0):
        """SIGTERM; fails unless the process exits 0 within `timeout`.
        Returns the seconds it took."""
        t0 = time.monotonic()
        rc = self.stop(timeout)
        dt = time.monotonic() - t0
        if rc != 0:
            raise Failure(f"{self.name} exited with {rc} on SIGTERM:\n{self.logs()[-3000:]}")
        self.check_clean()
        return dt

    def check_clean(self):
        out = self.logs()
        if sanitizer_report(out):
            raise Failure(f"{self.name}: sanitizer report:\n{out[-6000:]}")
        rc = self.p.returncode
        if rc is not None and rc != 0 and not self.expect_kill:
            raise Failure(f"{self.name} exited with {rc}:\n{out[-3000:]}")


class Ctx:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"roster-{name}-")
        self.procs = []
        self.databases = []

    def start(self, name, argv, env=None, wrapper=None, wait=True, exe=None):
        """Starts `roster <argv>` (or `exe <argv>`) with --port 0 and a port file."""
        port_file = os.path.join(self.tmp, f"{name}.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        argv = list(argv) + ["--port", "0", "--port_file", port_file]
        p = Proc(self, name, argv, env=env, port_file=port_file, wrapper=wrapper, exe=exe)
        self.procs.append(p)
        if wait:
            p.wait_port()
        return p

    @property
    def sqlite_path(self):
        return os.path.join(self.tmp, "registry.db")

    def controller(self, name="ctl", db="sqlite", args=(), env=None, wrapper=None, wait=True):
        """A controller on SQLite (a file in the temp dir: every controller of
        the test shares it), on MariaDB (db=a database name from
        self.mysql_database()), or db=None for no --registry_db_* options
        (pass your own in args, e.g. --registry_type embedded)."""
        argv = ["start", "controller", "--host", "127.0.0.1"]
        env = dict(env or {})
        if db is None:
            pass
        elif db == "sqlite":
            argv += ["--registry_db_name", self.sqlite_path]
        else:
            m = mariadb()
            argv += ["--registry_db_type", "mysql", "--registry_db_name", db,
                     "--registry_db_host", m["host"], "--registry_db_port", str(m["port"]),
                     "--registry_db_user", m["user"]]
            env["ROSTER_REGISTRY_DB_PASSWORD"] = m["password"]
        return self.start(name, argv + list(args), env=env, wrapper=wrapper, wait=wait)

    def mysql_database(self):
        """Creates a fresh MariaDB database for this test; returns its name."""
        name = f"rt_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        sql(f"CREATE DATABASE `{name}`")
        self.databases.append(name)
        return name

    def cleanup(self, failed):
        errors = []
        for p in self.procs:
            try:
                if p.p.poll() is None:
                    p.stop()
                p.check_clean()
            except Failure as e:
                errors.append(str(e))
            finally:
                p.log.close()
        for d in self.databases:
            try:
                sql(f"DROP DATABASE IF EXISTS `{d}`")
            except Exception:  # noqa: BLE001 - best effort (the server may be down)
                pass
        if failed or os.environ.get("ROSTER_TEST_KEEP"):
            print(f"    temp dir kept: {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return errors


# ---- MariaDB ---------------------------------------------------------------------

_MARIADB = None


def mariadb():
    """Connection settings of the private MariaDB of this test run."""
    global _MARIADB
    if _MARIADB is None:
        path = os.environ.get("ROSTER_TEST_MARIADB_ENV")
        if not path or not os.path.exists(path):
            raise Failure("ROSTER_TEST_MARIADB_ENV is not set or missing: the MariaDB fixture "
                          "(tests/lib/mariadb.sh start) did not run")
        env = {}
        with open(path) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k:
                    env[k] = v.strip().strip("'\"")
        _MARIADB = {"host": env["ROSTER_TEST_MYSQL_HOST"], "port": int(env["ROSTER_TEST_MYSQL_PORT"]),
                    "user": env["ROSTER_TEST_MYSQL_USER"],
                    "password": env["ROSTER_TEST_MYSQL_PASSWORD"],
                    "socket": env.get("ROSTER_TEST_MYSQL_SOCKET"), "env_file": path,
                    "dir": os.path.dirname(path)}
    return _MARIADB


def sql(statement, database=None, timeout=30):
    """Runs SQL through the mariadb client; returns rows as lists of strings."""
    m = mariadb()
    cmd = ["mariadb", "--protocol=TCP", "-h", m["host"], "-P", str(m["port"]), "-u", m["user"],
           "--batch", "--skip-column-names", "-e", statement]
    if database:
        cmd.insert(1, database)
    env = dict(os.environ, MYSQL_PWD=m["password"])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise Failure(f"SQL failed: {statement}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines()]


def mariadb_ctl(action):
    """kill | restart | stop | start the shared MariaDB (fault tests)."""
    m = mariadb()
    script = os.path.join(os.path.dirname(__file__), "mariadb.sh")
    subprocess.run([script, action, m["dir"]], check=True, timeout=120)


# ---- test bodies -------------------------------------------------------------------

def instance(model="vicuna@llm", host="127.0.0.1", port=8001, **extra):
    """A register/heartbeat body exactly as DB-GPT 0.8's client sends it."""
    body = {"model_name": model, "host": host, "port": port, "weight": 1.0,
            "check_healthy": True, "healthy": False, "enabled": True, "prompt_template": None,
            "last_heartbeat": None, "remove_from_registry": False}
    body.update(extra)
    return body


def list_url(url, model=None, healthy_only=None, view=None, wait=None):
    q = []
    if model is not None:
        q.append("model_name=" + model.replace("@", "%40"))
    if healthy_only is not None:
        q.append(f"healthy_only={healthy_only}")
    if view:
        q.append(f"view={view}")
    if wait is not None:
        q.append(f"wait={wait}")
    return f"{url}/api/controller/models" + ("?" + "&".join(q) if q else "")


def list_models(url, model=None, healthy_only=None, view=None, headers=None, timeout=5.0):
    r = request("GET", list_url(url, model, healthy_only, view), headers=headers, timeout=timeout)
    if r.status != 200:
        raise Failure(f"list failed: {r}")
    return r.json()


def watch(url, etag, wait, model=None, healthy_only=None, view=None, headers=None):
    """A watch (long poll): the list with If-None-Match and wait=SECS.
    Returns the Response (200 with the new list, or 304)."""
    hdrs = {"If-None-Match": etag}
    hdrs.update(headers or {})
    return request("GET", list_url(url, model, healthy_only, view, wait), headers=hdrs,
                   timeout=wait + 15.0)


def metric(url, name, headers=None):
    """The value of an unlabelled sample in /metrics (None if absent)."""
    r = request("GET", url + "/metrics", headers=headers)
    if r.status != 200:
        raise Failure(f"/metrics failed: {r}")
    for line in r.body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_watchers(url, n, timeout=10.0):
    """Waits until the controller holds `n` watches (its roster_watchers gauge)."""
    wait_until(lambda: metric(url, "roster_watchers") == n, timeout,
               what=f"{n} watch(es) held by {url}")


def keys(items):
    return sorted((i["model_name"], i["host"], i["port"]) for i in items)


def register(url, body=None, headers=None, heartbeat=False, **fields):
    """Registers (or heartbeats) h.instance(**fields) and checks the DB-GPT
    answer: status 200, body `true`."""
    if body is None:
        body = instance(**fields)
    path = "/api/controller/heartbeat" if heartbeat else "/api/controller/models"
    r = request("POST", url + path, body, headers=headers)
    if (r.status, r.body) != (200, b"true"):
        raise Failure(f"{'heartbeat' if heartbeat else 'register'} {body.get('model_name')} "
                      f"{body.get('host')}:{body.get('port')} failed: {r}")
    return r


def heartbeat(url, body=None, headers=None, **fields):
    return register(url, body, headers=headers, heartbeat=True, **fields)


def find(items, model="vicuna@llm", host="127.0.0.1", port=8001):
    """The listed object for one instance, or None."""
    for i in items:
        if (i["model_name"], i["host"], i["port"]) == (model, host, port):
            return i
    return None


def admin(url, body, headers=None):
    return request("POST", url + "/api/roster/instance", body, headers=headers)


def cli(args, env=None, timeout=30):
    """Runs `roster <args>` to completion (clean environment plus `env`);
    fails on a sanitizer report. Returns the CompletedProcess (text)."""
    r = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                       env=clean_env(env))
    if sanitizer_report(r.stdout + r.stderr):
        raise Failure(f"roster {' '.join(args)}: sanitizer report:\n{r.stderr[-6000:]}")
    return r


def free_ports(n):
    """n distinct ports free on 127.0.0.1 now (bound together, then
    released), for processes that must be given their ports."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def dead_port():
    """(socket, port): a loopback port that refuses connections for as long
    as the returned socket stays open (bound, never listening)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def faketime_env(offset):
    """Environment that runs a process under libfaketime with its clock moved
    by `offset` ("+300s", "-300s"). Works with ASan builds too."""
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
                  + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    if not libs:
        raise Failure("libfaketime is not installed (Debian package 'faketime')")
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"LD_PRELOAD": libs[0], "FAKETIME": offset, "FAKETIME_NO_CACHE": "1",
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


def in_threads(fns, timeout=60.0):
    """Runs each callable in its own thread; returns their results in order,
    re-raising the first exception."""
    results = [None] * len(fns)
    errors = []

    def run(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
        if th.is_alive():
            raise Failure(f"a thread did not finish within {timeout}s")
    if errors:
        raise errors[0]
    return results


class Background:
    """Runs fn() in a thread; .result() joins and returns (or re-raises)."""

    def __init__(self, fn):
        self._value = None
        self._error = None
        self.t_start = time.monotonic()
        self.t_end = None
        self._th = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._th.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in result()
            self._error = e
        self.t_end = time.monotonic()

    def done(self):
        return not self._th.is_alive()

    def result(self, timeout=30.0):
        self._th.join(timeout)
        if self._th.is_alive():
            raise Failure(f"background call still running after {timeout}s")
        if self._error:
            raise self._error
        return self._value


# ---- runner ---------------------------------------------------------------------------

def main(ns):
    tests = [(n, f) for n, f in ns.items() if n.startswith("test_") and callable(f)]
    only = os.environ.get("ROSTER_TEST_ONLY")
    if only:
        tests = [(n, f) for n, f in tests if only in n]
    skip = [s for s in os.environ.get("ROSTER_TEST_SKIP", "").split(",") if s]
    tests = [(n, f) for n, f in tests if not any(s in n for s in skip)]
    failed = 0
    t_all = time.monotonic()
    for name, fn in tests:
        ctx = Ctx(name)
        t0 = time.monotonic()
        ok = True
        try:
            fn(ctx)
        except Exception:  # noqa: BLE001 - report any failure of the test body
            ok = False
            traceback.print_exc()
        errors = ctx.cleanup(not ok)
        if errors:
            ok = False
            for e in errors:
                print(e)
        dt = time.monotonic() - t0
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({dt:.1f}s)", flush=True)
        failed += not ok
    print(f"{len(tests) - failed}/{len(tests)} passed in {time.monotonic() - t_all:.1f}s")
    sys.exit(1 if failed else 0)


# ---- fault and security suites (test_chaos.py, test_security.py) ---------------------

def metric_sample(url, name, labels=None, headers=None):
    """The value of a sample of `name` whose labels contain every k="v" of
    `labels` (a dict); the first match, or None."""
    r = request("GET", url + "/metrics", headers=headers)
    if r.status != 200:
        raise Failure(f"/metrics failed: {r}")
    want = [f'{k}="{v}"' for k, v in (labels or {}).items()]
    for line in r.body.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        lab = line[len(name):].rpartition(" ")[0]
        if all(w in lab for w in want):
            return float(line.rsplit(" ", 1)[1])
    return None


def proc_rss_bytes(pid):
    """Resident set size of a process (VmRSS), in bytes; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def mariadb_pid():
    """The pid of the shared MariaDB server now (it changes on restart)."""
    with open(os.path.join(mariadb()["dir"], "pid")) as f:
        return int(f.read().strip())


def sqlite_dump(path, table="dbgpt_cluster_registry_instance"):
    """Every row of `table` in the SQLite file, sorted, as one bytes value
    (read-only; works while a controller holds the file in WAL mode)."""
    import sqlite3
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        con.close()
    return "\n".join(sorted(repr(r) for r in rows)).encode()


def sse_check(body):
    """Parses an SSE body; returns (events, done, error) where events are the
    decoded JSON data objects, done is True when it ends with [DONE], and
    error the error object of a final error event. Fails on a data line
    that is neither JSON nor [DONE], or on anything after [DONE]."""
    events, done, error = [], False, None
    text = body.decode("utf-8")
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [ln[5:].lstrip(" ") for ln in block.split("\n") if ln.startswith("data:")]
        if not data:
            continue
        check(not done and error is None, f"SSE data after the end of the stream: {block[:200]!r}")
        payload = "\n".join(data)
        if payload == "[DONE]":
            done = True
            continue
        try:
            doc = json.loads(payload)
        except ValueError:
            raise Failure(f"SSE data is not JSON: {payload[:200]!r}") from None
        if isinstance(doc, dict) and "error" in doc:
            error = doc["error"]
        else:
            events.append(doc)
    return events, done, error


class LoadClient:
    """A steady rate of chat requests (plain and streamed, alternating)
    through one API endpoint, each on a fresh connection, from a thread
    pool; records every request as a dict: t0, t1 (monotonic), stream, ok,
    status, error. Use start(), then stop() (waits for those in flight)."""

    def __init__(self, url, model, rate=20.0, max_tokens=8, timeout=30.0, headers=None,
                 threads=48):
        import concurrent.futures
        self.url, self.model, self.rate = url, model, rate
        self.max_tokens, self.timeout = max_tokens, timeout
        self.headers = dict(headers or {})
        self.records = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads)
        self._futures = []
        self._th = None
        self.t_start = None

    def _one(self, n):
        stream = n % 2 == 1
        rec = {"t0": time.monotonic(), "t1": None, "stream": stream, "ok": False,
               "status": None, "error": None}
        body = {"model": self.model, "max_tokens": self.max_tokens, "stream": stream,
                "messages": [{"role": "user", "content": f"request {n}: what is a lease?"}]}
        try:
            r = request("POST", self.url + "/v1/chat/completions", body, headers=self.headers,
                        timeout=self.timeout)
            rec["status"] = r.status
            if r.status != 200:
                rec["error"] = f"status {r.status}: {r.body[:200]!r}"
            elif stream:
                events, done, error = sse_check(r.body)
                if error is not None:
                    rec["error"] = f"SSE error event: {error}"
                elif not done:
                    rec["error"] = "stream without [DONE]"
                elif not events:
                    rec["error"] = "stream without chunks"
                else:
                    rec["ok"] = True
            else:
                doc = r.json()
                if doc.get("choices") and doc["choices"][0]["message"]["content"] is not None:
                    rec["ok"] = True
                else:
                    rec["error"] = f"no choices: {r.body[:200]!r}"
        except Exception as e:  # noqa: BLE001 - every failure is a recorded failure
            rec["error"] = repr(e)
        rec["t1"] = time.monotonic()
        with self._lock:
            self.records.append(rec)

    def _run(self):
        n = 0
        self.t_start = time.monotonic()
        while not self._stop.is_set():
            due = self.t_start + n / self.rate
            now = time.monotonic()
            if due > now:
                self._stop.wait(due - now)
                continue
            self._futures.append(self._pool.submit(self._one, n))
            n += 1

    def start(self):
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()
        return self

    def stop(self, timeout=60.0):
        self._stop.set()
        self._th.join(10)
        import concurrent.futures
        concurrent.futures.wait(self._futures, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            return sorted(self.records, key=lambda r: r["t0"])


def load_figures(records, since=None, until=None):
    """Figures of the records that started in [since, until): dict with
    n, failed, failures (first 5 errors), p50/p99/max latency in seconds."""
    sel = [r for r in records if (since is None or r["t0"] >= since)
           and (until is None or r["t0"] < until)]
    lat = sorted(r["t1"] - r["t0"] for r in sel)
    bad = [r for r in sel if not r["ok"]]

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0
    return {"n": len(sel), "failed": len(bad), "failures": [r["error"] for r in bad[:5]],
            "p50": pct(0.5), "p99": pct(0.99), "max": lat[-1] if lat else 0.0}


def fmt_figures(f):
    return (f"{f['n']} requests, {f['failed']} failed, latency p50 {f['p50'] * 1000:.0f} ms "
            f"p99 {f['p99'] * 1000:.0f} ms max {f['max'] * 1000:.0f} ms")


def sql_root(statement, timeout=30):
    """Runs SQL as MariaDB's root over the fixture's Unix socket (for what
    the 'roster' user may not do, such as granting privileges)."""
    m = mariadb()
    cmd = ["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot", "--batch",
           "--skip-column-names", "-e", statement]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise Failure(f"SQL (root) failed: {statement}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines()]
