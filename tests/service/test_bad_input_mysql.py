"""The bad-input matrix against a MariaDB-backed controller (see
bad_input.py); the database rows are compared before and after."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import bad_input  # noqa: E402
import harness as h  # noqa: E402


def test_bad_input_matrix_mysql(t):
    db = t.mysql_database()
    c = t.controller(db=db, args=bad_input.CTL_ARGS)
    bad_input.setup_baseline(c.url)
    t0 = time.monotonic()
    n = bad_input.run_matrix(
        c.port, c.url,
        table_state=lambda: h.sql("SELECT * FROM dbgpt_cluster_registry_instance ORDER BY id", db))
    print(f"    {n} bad-input cases in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    h.main(globals())
