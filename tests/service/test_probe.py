"""Active probes (issue 13): an engine that hangs while its worker keeps
heartbeating is caught by the apiserver's probes and ejected within the
probe interval + timeout, requests meanwhile go to the healthy instance
with zero failures, and the instance is readmitted about one interval after
the engine recovers. A second apiserver with probes disabled (the control)
ejects nothing. A probe that gets an answer of the wrong shape ejects too;
a 429 (at capacity) is alive, not a failure.

The engine is tests/lib/stub_engine.py in a process of its own (so that
SIGSTOP freezes it and nothing else), behind a worker with the openai
backend."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")
INTERVAL_MS, TIMEOUT_MS = 1000, 500
MARGIN_S = 1.5  # a tick (0.1 s), a table refresh, a loaded 2-core machine
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

# The stub engine as a process: answers every POST with `mode`'s answer and
# writes its URL to argv[1] once listening.
ENGINE = r"""
import json, os, sys, threading
sys.path.insert(0, sys.argv[3])
from stub_engine import StubEngine, completion
mode = sys.argv[2]
def answer(ex):
    if mode == "busy":
        ex.send_json(429, {"error": {"message": "at capacity", "type": "rate_limit"}})
    elif mode == "picky" and ex.body.get("max_tokens") != 1:
        ex.send_json(500, {"error": {"message": "only probes succeed here", "type": "x"}})
    elif mode == "nonsense":
        ex.send_body(200, "application/json", b'{"object":"chat.completion"}')
    else:
        ex.send_json(200, dict(completion("pong"),
                               usage={"prompt_tokens": 1, "completion_tokens": 1,
                                      "total_tokens": 2}))
e = StubEngine(answer)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(e.url)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
threading.Event().wait()
"""


class Engine:
    def __init__(self, t, name, mode="ok"):
        path = os.path.join(t.tmp, name + ".url")
        self.log = open(os.path.join(t.tmp, name + ".log"), "ab")
        self.p = subprocess.Popen([sys.executable, "-c", ENGINE, path, mode, LIB],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        self.url = h.wait_until(lambda: os.path.exists(path) and open(path).read(), 10,
                                what=f"stub engine {name}")

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def close(self):
        self.signal(signal.SIGCONT)
        self.p.kill()
        self.p.wait(10)
        self.log.close()


def worker(t, c, name, upstream=None):
    args = ["start", "worker", "--model_name", "tiny", "--worker_type", "llm", "--host",
            "127.0.0.1", "--controller_addr", c.url, "--heartbeat_interval", "0.5"]
    if upstream:
        args += ["--backend", "openai", "--upstream", upstream]
    return t.start(name, args)


def apiserver(t, c, name, probe_ms, args=()):
    return t.start(name, ["start", "apiserver", "--host", "127.0.0.1", "--controller_addr", c.url,
                          "--probe_interval_ms", str(probe_ms),
                          "--probe_timeout_ms", str(TIMEOUT_MS)] + list(args))


def inst_metric(a, name, w):
    return h.metric_sample(a.url, name, {"model": "tiny@llm", "instance": f"127.0.0.1:{w.port}"})


def ejected(a, w):
    return inst_metric(a, "roster_api_instance_ejected", w)


def probes(a, result):
    return h.metric_sample(a.url, "roster_api_probes_total", {"result": result}) or 0


def routable(a, model="tiny"):
    r = h.request("GET", a.url + "/v1/models")
    return {m["id"]: m["instances"] for m in r.json()["data"]}.get(model, 0) if r.status == 200 \
        else 0


def healthy_at_controller(c, w):
    for i in h.list_models(c.url, model="tiny@llm"):
        if (i["host"], i["port"]) == ("127.0.0.1", w.port):
            return i["healthy"]
    return False


def test_hung_engine_is_ejected_and_readmitted(t):
    eng = Engine(t, "engine")
    try:
        c = t.controller()
        w1 = worker(t, c, "w_engine", eng.url)
        w2 = worker(t, c, "w_builtin")
        a = apiserver(t, c, "api", INTERVAL_MS, ["--first_byte_timeout_ms", "3000"])
        ctl = apiserver(t, c, "api_control", 0)
        for x in (a, ctl):
            h.wait_until(lambda: routable(x) == 2, 10, what=f"2 routable instances at {x.name}")
        # probes succeed on both instances: nothing ejected
        h.wait_until(lambda: probes(a, "ok") >= 2, 5, what="the first probes")
        h.eq((ejected(a, w1), ejected(a, w2)), (0.0, 0.0), "nothing ejected while healthy:")
        h.eq(inst_metric(a, "roster_api_instance_requests_total", w1), 0.0,
             "probes are not counted as requests")
        h.eq(h.metric_sample(a.url, "roster_api_model_requests_total", {"model": "tiny@llm"}),
             0.0, "nor as the model's requests")

        eng.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        bound = (INTERVAL_MS + TIMEOUT_MS) / 1000 + MARGIN_S
        h.wait_until(lambda: ejected(a, w1) == 1.0, bound,
                     what="the hung engine's instance ejected by a probe")
        took = time.monotonic() - stopped
        print(f"ejected {took:.2f}s after SIGSTOP (interval {INTERVAL_MS} ms + timeout "
              f"{TIMEOUT_MS} ms)")
        h.check(healthy_at_controller(c, w1),
                "the worker keeps heartbeating: the controller still lists it healthy")
        h.eq(h.metric(a.url, "roster_api_probe_ejections_total"), 1.0)
        h.check(probes(a, "timeout") >= 1, "the failed probe is counted as a timeout")
        h.check("event probe_failed: tiny@llm at 127.0.0.1:%d" % w1.port in a.logs(),
                "a probe_failed event")
        # requests meanwhile: all to the healthy instance, none failed
        before = inst_metric(a, "roster_api_instance_requests_total", w2)
        statuses = [h.request("POST", a.url + "/v1/chat/completions", CHAT).status
                    for _ in range(12)]
        h.eq(statuses, [200] * 12, "requests while the engine hangs:")
        h.eq(inst_metric(a, "roster_api_instance_requests_total", w2) - before, 12.0,
             "all of them to the healthy instance")
        h.eq(inst_metric(a, "roster_api_instance_requests_total", w1), 0.0,
             "none to the hung one (no half-open trial while probes fail)")
        errs = [h.metric_sample(a.url, "roster_api_model_errors_total",
                                {"model": "tiny@llm", "class": k}) for k in ("timeout", "connect")]
        h.eq(errs, [0.0, 0.0], "probes' failures are not the model's errors:")
        # the control apiserver, without probes, has had the same interval +
        # timeout and ejected nothing
        time.sleep(max(0.0, stopped + bound - MARGIN_S - time.monotonic()))
        h.eq(ejected(ctl, w1), 0.0, "the control (no probes) ejected nothing")
        h.eq(sum(probes(ctl, r) for r in ("ok", "timeout", "connect", "malformed")), 0,
             "the control sent no probe")
        # still out after another interval: failed re-probes extend the hold
        time.sleep(INTERVAL_MS / 1000)
        h.eq(ejected(a, w1), 1.0, "still ejected while the engine hangs")

        eng.signal(signal.SIGCONT)
        resumed = time.monotonic()
        h.wait_until(lambda: ejected(a, w1) == 0.0, (INTERVAL_MS + TIMEOUT_MS) / 1000 + MARGIN_S,
                     what="readmission after the engine recovered")
        print(f"readmitted {time.monotonic() - resumed:.2f}s after SIGCONT")
        h.eq(h.metric(a.url, "roster_api_probe_readmissions_total"), 1.0)
        h.check("event readmitted: tiny@llm at 127.0.0.1:%d" % w1.port in a.logs(),
                "a readmitted event")
        statuses = [h.request("POST", a.url + "/v1/chat/completions", CHAT).status
                    for _ in range(20)]
        h.eq(statuses, [200] * 20)
        h.check(inst_metric(a, "roster_api_instance_requests_total", w1) > 0,
                "the readmitted instance serves again")
        for x in (a, ctl):
            x.stop_clean()
    finally:
        eng.close()


def test_wrong_answers_eject_and_429_does_not(t):
    nonsense, busy = Engine(t, "nonsense", "nonsense"), Engine(t, "busy", "busy")
    try:
        c = t.controller()
        w1 = worker(t, c, "w_nonsense", nonsense.url)
        w2 = worker(t, c, "w_busy", busy.url)
        a = apiserver(t, c, "api", 300)
        h.wait_until(lambda: ejected(a, w1) == 1.0, 5,
                     what="the instance answering without 'choices' ejected")
        h.wait_until(lambda: probes(a, "busy") >= 3, 5, what="probes answered 429")
        h.eq(ejected(a, w2), 0.0, "at capacity is alive: not ejected")
        h.check(probes(a, "malformed") >= 1)
        h.eq(h.metric(a.url, "roster_api_probe_ejections_total"), 1.0)
        a.stop_clean()
    finally:
        nonsense.close()
        busy.close()


def test_an_ejection_by_a_request_is_decided_by_a_probe(t):
    """Suspicion: an instance a request ejected is probed at once, and the
    probe's success readmits it long before --eject_ms (and the interval)."""
    picky = Engine(t, "picky", "picky")
    try:
        c = t.controller()
        w1 = worker(t, c, "w_picky", picky.url)
        w2 = worker(t, c, "w_builtin")
        a = apiserver(t, c, "api", 60000, ["--eject_ms", "60000"])
        h.wait_until(lambda: routable(a) == 2, 10, what="2 routable instances")
        statuses = []
        for _ in range(40):
            statuses.append(h.request("POST", a.url + "/v1/chat/completions", CHAT).status)
            if inst_metric(a, "roster_api_instance_ejections_total", w1):
                break
        ejected_at = time.monotonic()
        h.eq(inst_metric(a, "roster_api_instance_ejections_total", w1), 1.0,
             "a 5xx to a request ejected the picky instance")
        h.eq(set(statuses), {200}, "the client saw none of it (retried elsewhere)")
        h.wait_until(lambda: ejected(a, w1) == 0.0, 2.0,
                     what="readmission by the probe sent on suspicion")
        print(f"readmitted {time.monotonic() - ejected_at:.2f}s after the ejection "
              "(--eject_ms 60000, --probe_interval_ms 60000)")
        h.eq(h.metric(a.url, "roster_api_probe_readmissions_total"), 1.0)
        h.eq(h.metric(a.url, "roster_api_probe_ejections_total"), 0.0)
        h.check("event readmitted: tiny@llm at 127.0.0.1:%d" % w1.port in a.logs())
        a.stop_clean()
    finally:
        picky.close()


class Fleet:
    """n minimal OpenAI-style servers, one port each, on one asyncio thread,
    recording when each got a request: (monotonic time, port)."""

    ANSWER = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                         "choices": [{"index": 0, "finish_reason": "length",
                                      "message": {"role": "assistant", "content": "p"}}]}).encode()

    def __init__(self, n):
        self.hits, self.ports, self.servers = [], [], []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(n, ready), daemon=True).start()
        h.check(ready.wait(10), "the fleet listens")

    def _run(self, n, ready):
        asyncio.set_event_loop(self.loop)

        async def start():
            for _ in range(n):
                srv = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.servers.append(srv)
                self.ports.append(srv.sockets[0].getsockname()[1])
        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader, writer):
        port = writer.get_extra_info("sockname")[1]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.hits.append((time.monotonic(), port))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(self.ANSWER) + self.ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_probes_spread_over_the_interval(t):
    """Many instances appearing at once are probed over the interval, not in
    a burst, each about once per interval."""
    n, interval = 200, 1.0
    fleet = Fleet(n)
    try:
        c = t.controller()
        for port in fleet.ports:
            h.register(c.url, model="spread@llm", port=port)
        a = apiserver(t, c, "api", int(interval * 1000))
        h.wait_until(lambda: routable(a, "spread") == n, 10, what=f"{n} routable instances")
        h.wait_until(lambda: fleet.hits, 5, what="a first probe")
        first = fleet.hits[0][0]
        time.sleep(max(0.0, first + 2.5 * interval - time.monotonic()))
        hits = [(tm - first, port) for tm, port in list(fleet.hits) if tm - first < 2.5 * interval]
        per_port = {p: 0 for p in fleet.ports}
        for _, port in hits:
            per_port[port] += 1
        counts = sorted(per_port.values())
        print(f"{len(hits)} probes in {2.5 * interval:.1f}s; "
              f"per instance {counts[0]}..{counts[-1]}")
        h.check(counts[0] >= 2 and counts[-1] <= 4,
                f"each instance probed about once per interval: {counts[0]}..{counts[-1]}")
        buckets = [0] * 10
        for tm, _ in hits:
            if tm < interval:
                buckets[int(tm / interval * 10)] += 1
        print(f"first interval, per tenth: {buckets}")
        h.check(sum(buckets) >= n * 0.7, f"most first probes within the first interval: {buckets}")
        # (a tick the loaded machine ran late bunches two or three ticks' worth;
        # a burst would put nearly all n in one tenth)
        h.check(max(buckets) <= n / 2 and sum(b > 0 for b in buckets) >= 7,
                f"no burst: {buckets}")
        h.eq(h.metric(a.url, "roster_api_probe_ejections_total"), 0.0)
        a.stop_clean()
    finally:
        fleet.close()


if __name__ == "__main__":
    h.main(globals())
