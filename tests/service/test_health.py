"""`roster health` against a real controller: exit 0 on HTTP 200 (the
default URL from ROSTER_PORT, or --url), 1 with one line on stderr when the
port is dead, when the controller answers 503 (its database locked), on any
other status, and on a timeout (within --timeout_ms); 64 on usage errors.
"""
import os
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402


def health(args, env=None, timeout=30):
    return h.cli(["health"] + list(args), env=env, timeout=timeout)


def expect(r, code, what, stderr_has=()):
    h.check(r.returncode == code,
            f"{what}: exit {r.returncode}, want {code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    if code == 1:
        lines = r.stderr.splitlines()
        h.check(len(lines) == 1 and lines[0].startswith("roster: health: "),
                f"{what}: want one line on stderr, got {r.stderr!r}")
        h.eq(r.stdout, "", f"{what}: stdout")
    for s in stderr_has:
        h.check(s in r.stderr, f"{what}: {s!r} not in stderr {r.stderr!r}")
    return r


def test_up_is_0(t):
    c = t.controller()
    url = c.url + "/api/health"
    r = expect(health(["--url", url]), 0, "--url of a healthy controller")
    h.eq(r.stdout, f"{url}: HTTP 200\n", "stdout")
    h.eq(r.stderr, "", "stderr")
    # the default URL: http://127.0.0.1:$ROSTER_PORT/api/health
    r = expect(health([], env={"ROSTER_PORT": str(c.port)}), 0, "default URL from ROSTER_PORT")
    h.check(f"http://127.0.0.1:{c.port}/api/health" in r.stdout, r.stdout)
    # --url from the environment, and dashes
    expect(health([], env={"ROSTER_URL": url}), 0, "ROSTER_URL")
    expect(health(["--timeout-ms", "2000", "--url=" + url]), 0, "--timeout-ms, --url=")


def test_dead_port_is_1(t):
    s, port = h.dead_port()
    try:
        expect(health(["--url", f"http://127.0.0.1:{port}/api/health"]), 1, "dead port",
               [f"127.0.0.1:{port}", "connect"])
        # the default URL when ROSTER_PORT is unset is port 8000; ROSTER_PORT picks another
        expect(health([], env={"ROSTER_PORT": str(port)}), 1, "dead ROSTER_PORT",
               [f"http://127.0.0.1:{port}/api/health"])
    finally:
        s.close()


def test_controller_503_is_1(t):
    """A controller whose SQLite file another process holds locked answers
    /api/health with 503: unhealthy, with the status and the start of the
    body on stderr. Once the lock goes, 0 again."""
    path = os.path.join(t.tmp, "locked.db")
    con = sqlite3.connect(path, isolation_level=None, timeout=0)
    con.execute("CREATE TABLE other (x INTEGER)")
    con.execute("BEGIN EXCLUSIVE")
    con.execute("INSERT INTO other VALUES (1)")
    try:
        c = t.controller("ctl", db=None, args=["--registry_db_name", path,
                                               "--registry_db_timeout_ms", "300"])
        url = c.url + "/api/health"
        h.eq(h.request("GET", url).status, 503, "the controller's own answer")
        r = expect(health(["--url", url]), 1, "controller answering 503", ["HTTP 503", url])
        h.check('"loaded":false' in r.stderr.replace(" ", ""), f"body quoted: {r.stderr!r}")
    finally:
        con.execute("COMMIT")
        con.close()
    h.wait_until(lambda: health(["--url", url]).returncode == 0, 15,
                 what="roster health 0 once the lock is gone")
    c.stop_clean()


def test_other_status_is_1(t):
    c = t.controller()
    expect(health(["--url", c.url + "/no/such/path"]), 1, "404", ["HTTP 404", "not_found"])


def test_timeout_is_1(t):
    """A peer that accepts the connection and never answers: exit 1 after
    --timeout_ms, not later."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # the kernel completes the handshake; nothing ever reads or answers
    port = srv.getsockname()[1]
    try:
        t0 = time.monotonic()
        r = health(["--url", f"http://127.0.0.1:{port}/api/health", "--timeout_ms", "300"])
        dt = time.monotonic() - t0
        expect(r, 1, "silent peer", ["Timeout"])
        h.check(0.25 <= dt < 5.0, f"gave up after {dt:.2f}s with --timeout_ms 300")
    finally:
        srv.close()


def test_usage_errors_are_64(t):
    expect(health(["--bogus"]), 64, "unknown option", ["--bogus"])
    expect(health(["--timeout_ms", "0"]), 64, "timeout out of range", ["--timeout_ms"])
    expect(health([], env={"ROSTER_PORT": "http"}), 64, "ROSTER_PORT not a port", ["ROSTER_PORT"])
    expect(health(["--url", "http://x/" + "a" * 600]), 64, "--url too long", ["--url"])
    # not http(s): the client refuses it (unhealthy, not a usage error)
    expect(health(["--url", "file:///etc/passwd"]), 1, "file:// URL", ["file:///etc/passwd"])


def test_help(t):
    r = expect(health(["--help"]), 0, "--help")
    for s in ("usage: roster health [--url URL] [--timeout_ms MS]", "--url URL", "--timeout_ms MS",
              "default: 3000", "ROSTER_PORT"):
        h.check(s in r.stdout, f"{s!r} not in --help:\n{r.stdout}")
    r = h.cli(["--help"])
    h.check("health" in r.stdout, f"roster --help lists health:\n{r.stdout}")
    r = h.cli(["help", "health"])
    h.check("usage: roster health" in r.stdout, r.stdout)


h.main(globals())
