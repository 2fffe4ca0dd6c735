"""The loop-lag probe (common/http_server.c): every role's /metrics has
roster_loop_stall_max_seconds and roster_loop_stalls_total, near zero on an
idle process, and both move when the loops cannot run: the process is
stopped (SIGSTOP) for 400 ms, so every probe timer fires that late; and
roster_loop_busy_max_seconds (the part of a lateness the loop thread spent
running) does not take the stop for the thread's own work. No
timing threshold but generous ones (the machine is shared).

And while a loop cannot run, new connections wait in the kernel's accept
queue, as deep as net.core.somaxconn allows: libevent's listener, given a
negative backlog, used to listen() again with 128, so a burst of streams
at a busy worker lost its SYNs (a second each, past the apiserver's
connect timeout: bench/scale_streams.sh).
"""
import os
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

STOP_S = 0.4


def stall_metrics(url):
    """The probe's three samples, from one scrape."""
    r = h.request("GET", url + "/metrics")
    h.eq(r.status, 200, f"{url}/metrics: {r}")
    got = {}
    for line in r.body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("roster_loop_"):
            got[name] = float(value)
    mx = got.get("roster_loop_stall_max_seconds")
    n = got.get("roster_loop_stalls_total")
    busy = got.get("roster_loop_busy_max_seconds")
    h.check(mx is not None, f"{url}: no roster_loop_stall_max_seconds")
    h.check(n is not None, f"{url}: no roster_loop_stalls_total")
    h.check(busy is not None and 0 <= busy <= mx, f"{url}: busy max {busy} (wall max {mx})")
    return mx, n, busy


def stop_for(p, secs):
    p.signal(signal.SIGSTOP)
    try:
        time.sleep(secs)  # the stall under test, not a wait for readiness
    finally:
        p.signal(signal.SIGCONT)


def check_moves(p):
    mx0, n0, _ = stall_metrics(p.url)
    h.check(0 <= mx0 < STOP_S, f"{p.url}: max {mx0} s before any stall")
    stop_for(p, STOP_S)
    # the timer fires once the process runs again; the scrape after it sees it
    h.wait_until(lambda: stall_metrics(p.url)[0] >= STOP_S / 2, timeout=10,
                 what="roster_loop_stall_max_seconds to record the stop")
    mx1, n1, busy1 = stall_metrics(p.url)
    h.check(mx1 >= STOP_S / 2, f"{p.url}: max {mx1} s after a {STOP_S} s stop")
    h.check(mx1 < 60, f"{p.url}: max {mx1} s is not a lateness")
    h.check(n1 >= n0 + 1, f"{p.url}: stalls {n0} -> {n1} after a {STOP_S} s stop")
    # a stopped thread runs nothing: the stop is not its own CPU time
    h.check(busy1 < STOP_S / 2, f"{p.url}: busy max {busy1} s counts the stop")
    # the max is since start: it stays after the process runs freely again
    time.sleep(0.05)
    h.check(stall_metrics(p.url)[0] >= mx1, "the max fell")


def test_controller(t):
    c = t.controller(args=["--threads", "2"])
    check_moves(c)


def test_apiserver(t):
    c = t.controller()
    a = t.start("api", ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url])
    check_moves(a)


def test_webserver(t):
    w = t.start("web", ["start", "webserver", "--host", "127.0.0.1", "--data_dir",
                        os.path.join(t.tmp, "data")])
    check_moves(w)


def test_accept_queue_is_deep(t):
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
    except OSError:
        somaxconn = 0
    if somaxconn < 1024:
        print(f"    skipped: net.core.somaxconn is {somaxconn} (< 1024)")
        return
    n = 600  # well past libevent's 128, well within the fd limit
    c = t.controller()
    socks = []
    c.signal(signal.SIGSTOP)  # nothing is accepted: every connection queues
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", c.port))
            socks.append(s)
        # a connection the queue holds completes its handshake at once; one
        # past the queue's end never does while nothing is accepted (its
        # SYNs are dropped): the deadline only bounds the wait
        pending, deadline = set(socks), time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            _, w, _ = select.select([], list(pending)[:500], [], 0.2)
            pending -= set(w)
        h.eq(len(pending), 0, f"connections not completed of {n} queued at a stopped server:")
        errs = [s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for s in socks]
        h.eq([e for e in errs if e], [], "connect errors:")
    finally:
        c.signal(signal.SIGCONT)
        for s in socks:
            s.close()
    h.eq(h.request("GET", c.url + "/api/health").status, 200, "the controller after the burst")


if __name__ == "__main__":
    h.main(globals())
