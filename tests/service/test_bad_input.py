"""The bad-input matrix against a SQLite controller (see bad_input.py), plus
one slow client that never finishes its headers (408 at the header
deadline, while the matrix runs on the same event loop)."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import bad_input  # noqa: E402
import harness as h  # noqa: E402

HEADER_DEADLINE_S = 10.0  # the HTTP server's default


def sqlite_rows(path):
    def rows():
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT * FROM dbgpt_cluster_registry_instance ORDER BY id").fetchall()
        finally:
            con.close()
    return rows


def test_bad_input_matrix_sqlite(t):
    c = t.controller(args=bad_input.CTL_ARGS)
    bad_input.setup_baseline(c.url)
    # a client that trickles header lines forever: answered 408 at the deadline
    slow = h.Background(lambda: h.raw_exchange(
        c.port, [b"GET /api/health HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 30, timeout=25, pause=1.0))
    t0 = time.monotonic()
    n = bad_input.run_matrix(c.port, c.url, table_state=sqlite_rows(t.sqlite_path))
    print(f"    {n} bad-input cases in {time.monotonic() - t0:.1f}s")
    data, dt = slow.result(30)
    status, hdrs, body = h.parse_raw_response(data)
    h.check_error(status, body, 408, "slow headers", hdrs.get("content-type"))
    h.check(HEADER_DEADLINE_S - 0.5 <= dt <= HEADER_DEADLINE_S + 2.5,
            f"408 after {dt:.1f}s (header deadline {HEADER_DEADLINE_S}s)")
    h.eq(h.request("GET", c.url + "/api/health").status, 200)


if __name__ == "__main__":
    h.main(globals())
