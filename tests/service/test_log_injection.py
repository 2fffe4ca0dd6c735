"""Unicode line breaks in names (N4): U+2028/U+2029 and C1 controls
(U+0080-U+009F, NEL among them) are line breaks to some log viewers.

- the controller refuses model names (and hosts) with them at registration,
  with the same 4xx the C0 controls get, and writes no row; ordinary
  non-ASCII names still register;
- a row that holds one anyway (written by a DB-GPT controller, or before
  this check) is logged by the apiserver escaped (\\u2028, \\u0085), so no log
  line starts with attacker text."""
import os
import re
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

FORGED = "FORGED-LOG-LINE"
BREAKS = ["\u2028", "\u2029", "\u0085", "\u0080", "\u009f"]


def rows(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT model_name, host FROM dbgpt_cluster_registry_instance "
                           "ORDER BY id").fetchall()
    finally:
        con.close()


def test_registration_refuses_unicode_breaks(t):
    c = t.controller()
    base = h.request("POST", c.url + "/api/controller/models", h.instance(model=f"x\n{FORGED}@llm"))
    h.check(base.status in (400, 422), f"C0 control: {base}")
    want_code = base.json()["error"]["code"]
    for b in BREAKS:
        for body in (h.instance(model=f"x{b}{FORGED}@llm"), h.instance(host=f"x{b}{FORGED}")):
            for path in ("/api/controller/models", "/api/controller/heartbeat"):
                r = h.request("POST", c.url + path, body)
                h.eq(r.status, base.status, f"{path} {body['model_name']!r} {body['host']!r}: {r}")
                h.eq(r.json()["error"]["code"], want_code, f"{path} {b!r}:")
    h.eq(rows(t.sqlite_path), [], "no row written:")
    # other non-ASCII names are fine: U+00A0 and U+00E9 follow C1, U+2027 and U+202A neighbour
    for name in ("mod\u00e8le-\u65e5\u672c@llm", "a\u00a0b@llm", "a\u2027b@llm"):
        r = h.register(c.url, model=name)
        h.eq(r.status, 200, f"{name!r}: {r}")
    h.eq(len(rows(t.sqlite_path)), 3)
    h.check(c.alive())


def test_apiserver_logs_escape_unicode_breaks(t):
    c = t.controller(args=["--log_level", "debug"])
    h.eq(h.register(c.url, model="good@llm", heartbeat=True).status, 200)
    api = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url,
                          "--log_level", "debug"])
    h.wait_until(lambda: "table version 1:" in api.logs(), 10, what="the apiserver's first table")
    # rows the controller would refuse, written behind its back
    con = sqlite3.connect(t.sqlite_path, timeout=5)
    try:
        for i, b in enumerate(BREAKS):
            con.execute("INSERT INTO dbgpt_cluster_registry_instance (model_name, host, port, "
                        "healthy, last_heartbeat) SELECT ?, host, ?, healthy, last_heartbeat "
                        "FROM dbgpt_cluster_registry_instance WHERE model_name = 'good@llm'",
                        (f"x{b}{FORGED} {i}@llm", 9000 + i))
        con.commit()
    finally:
        con.close()
    h.wait_until(lambda: all(f"{FORGED} {i}" in api.logs() for i in range(len(BREAKS))), 15,
                 what="the apiserver to log the new instances")
    text = api.logs()
    for b in BREAKS:
        h.check(b not in text, f"U+{ord(b):04X} is in the apiserver's log raw")
    h.check("\\u2028" in text and "\\u0085" in text, "shown escaped")
    forged = [ln for ln in re.split(r"\r\n|\r|\n|\u2028|\u2029|\u0085", text)
              if ln.lstrip().startswith(FORGED)]
    h.eq(forged, [], "log lines that start with attacker text:")


if __name__ == "__main__":
    h.main(globals())
