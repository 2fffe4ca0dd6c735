"""--registry_db_url on real controllers, on SQLite and on the test MariaDB.

Covers: sqlite:///relative (to the working directory), sqlite:////absolute
and sqlite:///:memory: start a controller on that file (or none); the
MySQL forms mysql://, mariadb+pymysql:// (a password percent-encoded in
the URL), and ?unix_socket= reach the same table, so a registration through
one controller is listed by the others; the password, from the
environment or from the URL, never appears in a log (debug level), and a
password given in a URL on the command line is warned about and scrubbed
from /proc/PID/cmdline; a URL with a wrong password exits 78 without
printing it. A URL with several servers (a Galera cluster) skips a dead
one and works on the next, as does --registry_db_host with a list.
"""
import os
import subprocess
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402


def ctl_url(t, name, url, env=None, args=()):
    return t.controller(name, db=None, env=env,
                        args=["--registry_db_url", url, "--log_level", "debug"] + list(args))


def root_sql(statement):
    """SQL as the private server's root (over its socket: the test user may
    not grant)."""
    m = h.mariadb()
    r = subprocess.run(["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot",
                        "--batch", "-e", statement], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise h.Failure(f"SQL failed: {statement}: {r.stderr.strip()}")


def registered_everywhere(ctls, port):
    return all(h.find(h.list_models(c.url), port=port) is not None for c in ctls)


def test_sqlite_urls(t):
    # relative to the working directory (the harness runs in t.tmp)
    rel = ctl_url(t, "rel", "sqlite:///rel.db")
    h.register(rel.url, h.instance(port=8001))
    h.check(os.path.exists(os.path.join(t.tmp, "rel.db")), "sqlite:///rel.db is ./rel.db")
    # four slashes: an absolute path; a second controller on it shares the table
    absolute = os.path.join(t.tmp, "abs", "reg.db")
    os.mkdir(os.path.dirname(absolute))
    a1 = ctl_url(t, "abs1", "sqlite:///" + absolute)
    h.eq(absolute[0], "/", "the test's path is absolute")
    a2 = ctl_url(t, "abs2", f"sqlite+pysqlite:///{absolute}")
    h.register(a1.url, h.instance(port=8002))
    h.wait_until(lambda: registered_everywhere([a1, a2], 8002), 5,
                 what="a registration through one controller listed by the other")
    h.check(h.find(h.list_models(a1.url), port=8001) is None, "a different file than rel.db")
    # in memory: no file at all
    before = set(os.listdir(t.tmp))
    mem = ctl_url(t, "mem", "sqlite:///:memory:")
    h.register(mem.url, h.instance(port=8003))
    h.eq(len(h.list_models(mem.url)), 1)
    created = {f for f in set(os.listdir(t.tmp)) - before if not f.startswith("mem.")}
    h.eq(created, set(), "files created by the in-memory controller")
    for c in (rel, a1, a2, mem):
        c.stop_clean()
        h.check("registry sqlite:" in c.logs(), c.logs()[-2000:])


def test_mysql_urls_share_one_table(t):
    m = h.mariadb()
    db = t.mysql_database()
    pw = m["password"]
    # the password from the environment (DB-GPT's variable), host:port in the URL
    c1 = ctl_url(t, "c1", f"mysql://{m['user']}@{m['host']}:{m['port']}/{db}",
                 env={"CONTROLLER_REGISTRY_DB_PASSWORD": pw})
    # SQLAlchemy's driver suffix, password in the URL (warned about)
    c2 = ctl_url(t, "c2", f"mariadb+pymysql://{m['user']}:{pw}@{m['host']}:{m['port']}/{db}"
                          "?charset=utf8mb4")
    # the Unix socket, password from roster's variable
    c3 = ctl_url(t, "c3", f"mysql://{m['user']}@localhost/{db}?unix_socket={m['socket']}",
                 env={"ROSTER_REGISTRY_DB_PASSWORD": pw})
    ctls = [c1, c2, c3]
    for i, via in enumerate(ctls):
        h.register(via.url, h.instance(port=8001 + i))
        h.wait_until(lambda p=8001 + i: registered_everywhere(ctls, p), 5,
                     what=f"registration through {via.name} listed by every controller")
    rows = h.sql("SELECT COUNT(*) FROM dbgpt_cluster_registry_instance", database=db)
    h.eq(rows, [["3"]], "one table")
    # the URL's password is not left in the process's command line (under
    # a wrapper such as valgrind, /proc shows the wrapper's own arguments)
    if not os.environ.get("ROSTER_TEST_WRAPPER"):
        with open(f"/proc/{c2.p.pid}/cmdline", "rb") as f:
            cmdline = f.read().decode("utf-8", "replace")
        h.check(pw not in cmdline, "password still in /proc/PID/cmdline")
        h.check(f"{m['user']}:xxx" in cmdline, f"scrubbed URL in cmdline: {cmdline!r}")
    for c in ctls:
        c.stop_clean()
        logs = c.logs()
        h.check(pw not in logs, f"{c.name}: the password is in the log")
        h.check(f"mysql:{m['user']}@" in logs, f"{c.name}: the log names the database")
    h.check("carries a password" in c2.logs(), "a password in a URL on argv is warned about")
    h.check("carries a password" not in c1.logs() + c3.logs(), "no warning without one")


def test_several_servers(t):
    m = h.mariadb()
    db = t.mysql_database()
    env = {"ROSTER_REGISTRY_DB_PASSWORD": m["password"]}
    dead_sock, dead = h.dead_port()
    try:
        live = f"{m['host']}:{m['port']}"
        c1 = ctl_url(t, "list-url", f"mysql://{m['user']}@127.0.0.1:{dead},{live}/{db}", env=env)
        c2 = t.controller("list-flag", db=None, env=env, args=[
            "--registry_db_type", "mysql", "--registry_db_name", db, "--registry_db_user",
            m["user"], "--registry_db_host", f"127.0.0.1:{dead},[::1]:{dead},{live}"])
        h.register(c1.url, h.instance(port=8301))
        h.register(c2.url, h.instance(port=8302))
        h.wait_until(lambda: registered_everywhere([c1, c2], 8301)
                     and registered_everywhere([c1, c2], 8302), 5, what="both rows everywhere")
        h.eq(h.sql("SELECT COUNT(*) FROM dbgpt_cluster_registry_instance", db), [["2"]])
    finally:
        dead_sock.close()
    # a bad entry in the list is refused at start-up (exit 64), naming the URL option
    r = h.cli(["start", "controller", "--registry_db_url",
               f"mysql://{m['user']}@127.0.0.1:70000,{live}/{db}", "--check"])
    h.eq(r.returncode, 64, f"bad host list: {r.stderr}")
    h.check("--registry_db_url" in r.stderr, r.stderr)


def test_percent_encoded_credentials(t):
    """A user and a password with URL-special characters, percent-encoded."""
    m = h.mariadb()
    db = t.mysql_database()
    user = f"rt@{uuid.uuid4().hex[:6]}"
    pw = "p@ss/w:rd?#%x"
    enc = {"@": "%40", "/": "%2F", ":": "%3A", "?": "%3F", "#": "%23", "%": "%25"}
    quote = lambda s: "".join(enc.get(ch, ch) for ch in s)  # noqa: E731
    root_sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}'")
    try:
        root_sql(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'127.0.0.1'")
        c = ctl_url(t, "enc", f"mysql://{quote(user)}:{quote(pw)}@{m['host']}:{m['port']}/{db}")
        h.register(c.url, h.instance(port=8001))
        h.eq(len(h.list_models(c.url)), 1)
        c.stop_clean()
        h.check(pw not in c.logs() and quote(pw) not in c.logs(), "password in the log")
        # a wrong password: exit 78 (a configuration error the database
        # reports), promptly, without printing either password
        bad = t.controller("bad", db=None, wait=False, args=[
            "--registry_db_url",
            f"mysql://{quote(user)}@{m['host']}:{m['port']}/{db}"],
            env={"ROSTER_REGISTRY_DB_PASSWORD": "Wrong-Pass-77"})
        h.eq(bad.wait_exit(15), 78, f"wrong password: {bad.logs()[-2000:]}")
        bad.expect_kill = True  # exited non-zero on purpose
        h.check("1045" in bad.logs() or "Access denied" in bad.logs(), bad.logs()[-2000:])
        h.check("Wrong-Pass-77" not in bad.logs() and pw not in bad.logs(), "password printed")
    finally:
        root_sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


h.main(globals())
