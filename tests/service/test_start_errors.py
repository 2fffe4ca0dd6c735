"""Start-up errors a newcomer hits, on real processes.

Covers: an SQLite file that cannot be used (its directory does not exist,
it is a directory, it is not a database, this user may not write it or
create it) makes `roster start controller` exit 78 promptly with a message
naming the file and the reason, instead of answering 503 forever; a locked
SQLite file is not fatal (503 until the lock goes, then 200); usage errors
of the registry options exit 64 with a clear message and never echo a
password: a URL together with the separate options (from argv or the
environment), a URL or host:port in --registry_db_host, two passwords, bad
URLs.
"""
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

EXIT_DEADLINE_S = 10.0  # generous on a shared machine; the exit takes milliseconds
NOBODY = 65534


def start_controller(t, args, env=None, as_nobody=False, timeout=EXIT_DEADLINE_S):
    """Runs `roster start controller ARGS` to its exit (it must exit by itself
    within `timeout`); returns (CompletedProcess, seconds)."""
    binary = h.BIN
    if as_nobody:
        # nobody must reach the binary: a wrapper such as valgrind checks the
        # whole path as that user, and the build tree may sit in a private
        # (0700) directory; a copy in the test's own directory is reachable
        os.chmod(t.tmp, 0o755)
        binary = os.path.join(t.tmp, "roster")
        if not os.path.exists(binary):
            shutil.copy2(h.BIN, binary)
    cmd = [binary, "start", "controller", "--host", "127.0.0.1", "--port", "0"] + list(args)
    if os.environ.get("ROSTER_TEST_WRAPPER"):
        cmd = shlex.split(os.environ["ROSTER_TEST_WRAPPER"]) + cmd
        timeout *= 3
    if as_nobody:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] + cmd
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=h.clean_env(env), cwd=t.tmp)
    except subprocess.TimeoutExpired as e:
        raise h.Failure(f"roster start controller {args} still running after {timeout}s "
                        f"(stderr: {e.stderr!r})") from None
    dt = time.monotonic() - t0
    if h.sanitizer_report(r.stdout + r.stderr):
        raise h.Failure(f"sanitizer report:\n{r.stderr[-6000:]}")
    return r, dt


def expect_exit(t, args, code, texts, env=None, as_nobody=False, absent=()):
    r, dt = start_controller(t, args, env=env, as_nobody=as_nobody)
    what = f"roster start controller {' '.join(args)}"
    h.eq(r.returncode, code, f"{what}: exit code (stderr {r.stderr[-2000:]!r})")
    for text in texts:
        h.check(text in r.stderr, f"{what}: {text!r} not in stderr:\n{r.stderr[-2000:]}")
    for text in absent:
        h.check(text not in r.stderr + r.stdout, f"{what}: {text!r} must not be printed")
    return r, dt


def test_sqlite_file_unusable_exits_78(t):
    missing = os.path.join(t.tmp, "no", "such", "dir", "reg.db")
    a_dir = os.path.join(t.tmp, "a-directory")
    os.mkdir(a_dir)
    not_db = os.path.join(t.tmp, "notes.txt")
    with open(not_db, "w") as f:
        f.write("these are my notes, not an SQLite database\n" * 100)
    cases = [(missing, ["does not exist", os.path.dirname(missing)]),
             (a_dir, ["is a directory"]),
             (not_db, ["not a database"]),
             # relative to the working directory, as a newcomer writes it
             ("nodir/reg.db", ["does not exist", "'nodir'"])]
    for path, reasons in cases:
        _, dt = expect_exit(t, ["--registry_db_name", path], 78, [path] + reasons)
        h.check(dt < EXIT_DEADLINE_S, f"{path}: exit after {dt:.1f}s")
        h.check(not os.path.exists(missing), "nothing was created")
    # the same through the URL form
    expect_exit(t, ["--registry_db_url", "sqlite:///nodir/reg.db"], 78,
                ["nodir/reg.db", "does not exist"])
    expect_exit(t, ["--registry_db_url", f"sqlite:///{a_dir}"], 78, [a_dir, "is a directory"])


def test_sqlite_no_permission_exits_78(t):
    """A file this user may not write, and a directory it may not create a
    file in. Root may write anything: as root the controller runs as
    nobody (setpriv)."""
    root = os.geteuid() == 0
    os.chmod(t.tmp, 0o755)
    ro_file = os.path.join(t.tmp, "readonly.db")
    con = sqlite3.connect(ro_file)  # a valid database, created by this user
    con.execute("CREATE TABLE x (y INTEGER)")
    con.commit()
    con.close()
    ro_dir = os.path.join(t.tmp, "readonly-dir")
    os.mkdir(ro_dir)
    if not root:
        os.chmod(ro_file, 0o444)
        os.chmod(ro_dir, 0o555)
    try:
        expect_exit(t, ["--registry_db_name", ro_file], 78, [ro_file, "read-only"],
                    as_nobody=root)
        new = os.path.join(ro_dir, "new.db")
        expect_exit(t, ["--registry_db_name", new], 78,
                    [new, f"no permission to write in '{ro_dir}'"], as_nobody=root)
        # an existing, writable file in a directory where SQLite cannot create
        # its -wal and -shm files
        inner = os.path.join(ro_dir, "inner.db")
        if not root:
            os.chmod(ro_dir, 0o755)
        con = sqlite3.connect(inner)
        con.execute("CREATE TABLE x (y INTEGER)")
        con.commit()
        con.close()
        os.chmod(inner, 0o666)
        if not root:
            os.chmod(ro_dir, 0o555)
        expect_exit(t, ["--registry_db_name", inner], 78, [inner, f"'{ro_dir}' must be writable"],
                    as_nobody=root)
        h.check(not os.path.exists(new), f"{new} must not exist")
    finally:
        os.chmod(ro_dir, 0o755)


def test_sqlite_locked_is_not_fatal(t):
    """Another process holds the file's lock at start-up: 503 until it lets
    go, then 200 (never exit 78)."""
    path = os.path.join(t.tmp, "locked.db")
    con = sqlite3.connect(path, isolation_level=None, timeout=0)
    con.execute("CREATE TABLE other (x INTEGER)")
    con.execute("BEGIN EXCLUSIVE")
    con.execute("INSERT INTO other VALUES (1)")
    try:
        c = t.controller("ctl", db=None, args=["--registry_db_name", path,
                                               "--registry_db_timeout_ms", "300"])
        r = h.request("GET", c.url + "/api/health")
        h.eq(r.status, 503, f"health while locked: {r}")
        h.check(r.json()["view"]["loaded"] is False, f"{r.json()}")
        h.check(c.alive(), "a locked database is not fatal")
    finally:
        con.execute("COMMIT")
        con.close()
    h.wait_until(lambda: h.request("GET", c.url + "/api/health").status == 200, 15,
                 what="health 200 once the lock is gone")
    h.register(c.url, h.instance(port=8001))
    h.check(h.find(h.list_models(c.url)) is not None, "registered after the lock")
    c.stop_clean()
    h.check("unreachable" in c.logs(), "the start-up log says why it answers 503")


def test_url_conflicts_exit_64(t):
    url = "mysql://roster@db.internal:3306/roster"
    for opt, value in [("--registry_db_type", "mysql"), ("--registry_db_host", "10.0.0.9"),
                       ("--registry_db_port", "3307"), ("--registry_db_user", "root"),
                       ("--registry_db_name", "dbgpt"), ("--registry_db_socket", "/tmp/s")]:
        expect_exit(t, ["--registry_db_url", url, opt, value], 64,
                    ["--registry_db_url", opt, "not both"])
    # DB-GPT's dashes work, and the message names the option canonically
    expect_exit(t, ["--registry-db-url", url, "--registry-db-host", "h"], 64,
                ["--registry_db_host", "--registry_db_url"])
    # one side from the environment: said so
    expect_exit(t, ["--registry_db_host", "h"], 64,
                ["ROSTER_REGISTRY_DB_URL", "--registry_db_host"],
                env={"ROSTER_REGISTRY_DB_URL": url})
    expect_exit(t, ["--registry_db_url", "sqlite:///x.db"], 64,
                ["ROSTER_REGISTRY_DB_NAME", "--registry_db_url"],
                env={"ROSTER_REGISTRY_DB_NAME": "other.db"})
    expect_exit(t, ["--registry_type", "embedded", "--registry_db_url", url], 64, ["embedded"])
    # two passwords (never printed)
    expect_exit(t, ["--registry_db_url", "mysql://u:Pw-in-URL-1@h/d"], 64,
                ["password", "CONTROLLER_REGISTRY_DB_PASSWORD"],
                env={"CONTROLLER_REGISTRY_DB_PASSWORD": "Pw-in-env-2"},
                absent=["Pw-in-URL-1", "Pw-in-env-2"])
    h.check(not os.path.exists(os.path.join(t.tmp, "x.db")), "nothing was opened")


def test_url_in_host_and_bad_urls_exit_64(t):
    secret = "Hunter2-not-for-logs"
    # DB-GPT users put the SQLAlchemy URL where the host goes
    expect_exit(t, ["--registry_db_type", "mysql", "--registry_db_host",
                    f"mysql+pymysql://root:{secret}@db:3306/dbgpt"], 64,
                ["--registry_db_host", "not a URL", "--registry_db_url"], absent=[secret])
    expect_exit(t, ["--registry_db_host", "db.internal:3306"], 64, ["--registry_db_port"])
    expect_exit(t, ["--registry_db_name", "sqlite:///x.db"], 64, ["--registry_db_url"])
    for url, text in [("postgresql://u@h/d", "unknown scheme 'postgresql'"),
                      ("mysql://u@h:99999/d", "port"),
                      ("mysql://u@h:port/d", "port"),
                      ("mysql://u@h", "no database name"),
                      ("mysql://u@h/d?sslmode=on", "unknown query parameter 'sslmode'"),
                      ("sqlite:///", "no file name"),
                      ("sqlite://host/x.db", "no host"),
                      ("roster.db", "not a URL"),
                      (f"mysql://u:{secret}@h:bad/d", "port"),
                      (f"mysql://u:{secret[:6]}/{secret[7:]}@h/d", "percent-encode"),
                      (f"mysql://u:{secret}#@h/d", "'#'")]:
        expect_exit(t, ["--registry_db_url", url], 64, ["--registry_db_url", text],
                    absent=[secret, secret[:6], secret[7:]])
    expect_exit(t, ["--registry_db_type", "postgres"], 64, ["--registry_db_type"])
    expect_exit(t, ["--registry_type", "etcd"], 64, ["--registry_type"])


h.main(globals())
