"""Slow and idle clients cannot take a server (issue 11, defect 1).

Against the controller, the apiserver and the worker, each started with
small limits and deadlines through the flags every role shares
(common/http_limits.h):

- 600 connections from 127.0.0.2 that send a request's headers with
  `Content-Length: 60000` and then one body byte a second: no more than
  --max_connections_per_client of them are served, the rest get 429;
- 200 such connections from 127.0.0.8 and 1,000 idle ones (127.0.0.3-7):
  admitted, and closed by the deadlines: the slow bodies get 408 at
  --client_request_timeout_ms after their first byte, however the bytes
  drip; the idle ones close silently at --client_idle_timeout_ms;
- 200 from 127.0.0.9 fill the server up to its reserve and no further
  (503 beyond), so the reserve is left for addresses holding few;
- meanwhile, new connections from 127.0.0.1 (a health check, a fresh
  client) each get their answer, with p99 under 10 ms.

The flood is driven from this process with one epoll loop; the normal
client runs in a child process so that neither waits on the other's GIL.
Counts stay bounded (2,000 sockets per role) so the whole test takes
well under a minute on two shared cores.
"""
import multiprocessing
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

MAX_CONN = 1800
PER_CLIENT = 400
RESERVE = 64
IDLE_MS = 8000
REQUEST_MS = 9000
DRIP_STEP = 0.1  # seconds between drip rounds (a tenth of the sockets each)
LIMIT_ARGS = ["--max_connections", str(MAX_CONN), "--max_connections_per_client", str(PER_CLIENT),
              "--connection_reserve", str(RESERVE), "--client_header_timeout_ms", "3000",
              "--client_request_timeout_ms", str(REQUEST_MS),
              "--client_idle_timeout_ms", str(IDLE_MS)]
# p99 of a fresh connection's health check while the flood holds. 10 ms is
# the bound, on a machine with a core to spare. The test machines
# are shared (two cores, often a load average of 6-8): a runnable process
# then waits about load/ncpu time slices for a core, whatever the server
# does, so the bound scales by that factor (the server's own share is the
# p50, printed, well under a millisecond). Under a wrapper (valgrind) every
# request is many times slower: ROSTER_TEST_SLOWDOWN (default 20 there).
SLOWDOWN = float(os.environ.get("ROSTER_TEST_SLOWDOWN",
                                "20" if os.environ.get("ROSTER_TEST_WRAPPER") else "1"))


def p99_bound_ms():
    return 10.0 * SLOWDOWN * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


class Sock:
    def __init__(self, group, src, port, payload):
        self.group = group
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.bind((src, 0))
        self.s.connect(("127.0.0.1", port))
        self.s.setblocking(False)
        self.t0 = time.monotonic()
        self.got = b""
        self.closed_at = None
        if payload:
            self.s.send(payload)


def probe(port, n, gap, q):
    """The normal client: n health checks, each on a new connection."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
        except OSError as e:
            status = str(e)
        out.append((status, (time.monotonic() - t0) * 1000.0))
        time.sleep(gap)
    q.put(out)


def flood(server, path):
    port = server.port
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 60000\r\n\r\n").encode()
    socks = []
    sel = selectors.DefaultSelector()

    def open_group(group, srcs, n, payload):
        for i in range(n):
            k = Sock(group, srcs[i % len(srcs)], port, payload)
            socks.append(k)
            sel.register(k.s, selectors.EVENT_READ, k)

    drip = {"next": time.monotonic() + DRIP_STEP, "i": 0}

    def pump(until):
        """Reads what arrives until `until`; drips a byte a second on each
        open slow one, a tenth of them every 100 ms (as independent clients
        would: not all in one burst)."""
        while True:
            now = time.monotonic()
            if now >= until:
                return
            for key, _ in sel.select(max(0.0, min(until, drip["next"]) - now)):
                k = key.data
                try:
                    chunk = k.s.recv(65536)
                except (ConnectionResetError, BlockingIOError) as e:
                    chunk = b"" if isinstance(e, ConnectionResetError) else None
                if chunk is None:
                    continue
                if chunk:
                    k.got += chunk
                    continue
                k.closed_at = time.monotonic()
                sel.unregister(k.s)
                k.s.close()
            if time.monotonic() >= drip["next"]:
                drip["next"] += DRIP_STEP
                step = int(1.0 / DRIP_STEP)
                for k in socks[drip["i"] % step::step]:
                    if k.closed_at is None and k.group in ("flood", "slow", "fill"):
                        try:
                            k.s.send(b" ")
                        except OSError:
                            pass
                drip["i"] += 1

    t_start = time.monotonic()
    open_group("flood", ["127.0.0.2"], 600, head)
    open_group("slow", ["127.0.0.8"], 200, head)
    open_group("idle", [f"127.0.0.{i}" for i in range(3, 8)], 1000, b"")
    open_group("fill", ["127.0.0.9"], 200, head)
    t_open = time.monotonic() - t_start
    # the counts below hold while no deadline has fired yet (on a machine
    # so loaded that connecting takes longer, the test cannot tell)
    h.check(t_open < min(IDLE_MS, REQUEST_MS) / 1000.0 - 1.5,
            f"opening the connections took {t_open:.1f}s: too slow for the deadlines")
    print(f"    opened {len(socks)} connections in {t_open:.1f}s")
    # rejections are immediate: what is still open after a moment was admitted
    pump(time.monotonic() + 0.7)

    def count(group, still_open):
        return sum(1 for k in socks if k.group == group and (k.closed_at is None) == still_open)

    admitted = {g: count(g, True) for g in ("flood", "slow", "idle", "fill")}
    refused = {g: [k.got[:12] for k in socks if k.group == g and k.closed_at is not None]
               for g in admitted}
    # the normal client, while the flood holds its slots
    q = multiprocessing.get_context("fork").Queue()
    p = multiprocessing.get_context("fork").Process(target=probe, args=(port, 150, 0.005, q))
    p.start()
    pump(time.monotonic() + 1.0)
    probe_out = None
    while probe_out is None:
        try:
            probe_out = q.get(timeout=0.05)
        except Exception:  # noqa: BLE001 - queue.Empty: keep dripping meanwhile
            h.check(p.is_alive() or not q.empty(), "the probe process died")
            pump(time.monotonic() + 0.2)
    p.join(5)
    # now the deadlines: everything left must be closed by them
    pump(max(k.t0 for k in socks) + max(IDLE_MS, REQUEST_MS) / 1000.0 + 2.5)
    still = [k for k in socks if k.closed_at is None]
    for k in still:
        sel.unregister(k.s)
        k.s.close()
    return socks, admitted, refused, probe_out, len(still)


def check_server(name, server, path):
    socks, admitted, refused, probe_out, still = flood(server, path)
    print(f"    {name}: admitted {admitted}; left open past the deadlines: {still}")
    # the per-client cap and the reserve
    h.eq(admitted["flood"], PER_CLIENT, f"{name}: connections served from one address:")
    h.check(all(r.startswith(b"HTTP/1.1 429") or r == b"" for r in refused["flood"]),
            f"{name}: refused flood connections: {set(refused['flood'])}")
    h.check(any(r.startswith(b"HTTP/1.1 429") for r in refused["flood"]),
            f"{name}: no 429 among the refused: {set(refused['flood'])}")
    h.eq(admitted["slow"], 200, f"{name}: slow connections (under the cap) served:")
    h.eq(admitted["idle"], 1000, f"{name}: idle connections served:")
    total = admitted["flood"] + admitted["slow"] + admitted["idle"] + admitted["fill"]
    h.eq(total, MAX_CONN - RESERVE, f"{name}: open connections when full (the reserve kept):")
    h.check(all(r.startswith(b"HTTP/1.1 503") or r == b"" for r in refused["fill"]),
            f"{name}: refused fill connections: {set(refused['fill'])}")
    # the normal client got in every time, fast
    bad = [s for s, _ in probe_out if s != 200]
    h.check(not bad, f"{name}: normal requests failed during the flood: {bad[:10]} "
            f"({len(bad)} of {len(probe_out)})")
    lat = sorted(ms for _, ms in probe_out)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"    {name}: normal requests {len(lat)}, p50 {lat[len(lat) // 2]:.2f} ms, "
          f"p99 {p99:.2f} ms, max {lat[-1]:.2f} ms (bound {p99_bound_ms():.1f} ms, load "
          f"average {os.getloadavg()[0]:.1f})")
    bound = p99_bound_ms()
    h.check(p99 < bound, f"{name}: p99 {p99:.1f} ms >= {bound:.1f} ms during the flood "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    # the deadlines closed every admitted connection, each at its own time
    h.eq(still, 0, f"{name}: connections still open after the deadlines:")
    for k in socks:
        if k.group == "idle":
            dt = k.closed_at - k.t0
            h.check(IDLE_MS / 1000.0 - 0.3 <= dt <= IDLE_MS / 1000.0 + 2.0,
                    f"{name}: an idle connection closed after {dt:.1f}s (idle timeout "
                    f"{IDLE_MS} ms)")
            h.eq(k.got, b"", f"{name}: an idle connection got bytes:")
        elif k.got.startswith(b"HTTP/1.1 408"):
            dt = k.closed_at - k.t0
            h.check(REQUEST_MS / 1000.0 - 0.3 <= dt <= REQUEST_MS / 1000.0 + 2.0,
                    f"{name}: a dripping request got its 408 after {dt:.1f}s (request "
                    f"deadline {REQUEST_MS} ms)")
            h.check(b"request_timeout" in k.got, f"{name}: 408 body: {k.got[:300]!r}")
    n408 = sum(1 for k in socks if k.got.startswith(b"HTTP/1.1 408"))
    h.eq(n408, admitted["flood"] + admitted["slow"] + admitted["fill"],
         f"{name}: dripping requests answered 408:")
    # and the server is fine afterwards
    h.eq(h.request("GET", server.url + "/api/health").status, 200)


def test_controller(t):
    c = t.controller(args=LIMIT_ARGS)
    check_server("controller", c, "/api/controller/models")


def test_apiserver(t):
    c = t.controller()
    a = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url]
                + LIMIT_ARGS)
    check_server("apiserver", a, "/v1/chat/completions")


def test_worker(t):
    w = t.start("wrk", ["start", "worker", "--model_name", "tiny", "--worker_type", "llm",
                        "--host", "127.0.0.1", "--controller_addr", "http://127.0.0.1:1",
                        "--embed_dim", "16"] + LIMIT_ARGS)
    check_server("worker", w, "/api/worker/generate")


def test_ipv6_client_cap(t):
    """An IPv6 client is counted by its /64: ::1's connections share a cap."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        print("    no IPv6 loopback here: skipped")
        return
    c = t.start("ctl6", ["start", "controller", "--host", "::1", "--registry_db_name",
                         t.sqlite_path, "--max_connections", "100",
                         "--max_connections_per_client", "5"])
    socks = [socket.create_connection(("::1", c.port), timeout=3.0) for _ in range(8)]
    got = []
    for s in socks:
        s.settimeout(0.5)
        try:
            got.append(s.recv(100)[:12])
        except socket.timeout:
            got.append(b"open")
    h.eq(got.count(b"open"), 5, f"served from ::1: {got}")
    h.eq(got.count(b"HTTP/1.1 429"), 3, f"refused from ::1: {got}")
    for s in socks:
        s.close()
    # closing gives the slots back
    h.wait_until(lambda: h.raw(c.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n"
                                       b"Connection: close\r\n\r\n", host="::1")
                 .startswith(b"HTTP/1.1 200"), 5.0, what="a slot back")


def test_limit_flags_are_checked(t):
    for bad in (["--max_connections", "1"], ["--client_request_timeout_ms", "0"],
                ["--max_connections_per_client", "-1"]):
        for role in (["start", "controller"], ["start", "apiserver"], ["start", "worker"],
                     ["start", "webserver"]):
            r = h.cli(role + bad + ["--check"])
            h.check(r.returncode != 0, f"{role} {bad}: accepted ({r.returncode})")


if __name__ == "__main__":
    h.main(globals())
