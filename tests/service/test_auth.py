"""Control-plane security: the cluster secret (X-Roster-Secret or Bearer),
trusted networks, --protect_reads, and --instance_networks (SSRF guard).
"""
import datetime
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

SECRET = "s3cret"
KEY = {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001}


def writes(url, headers):
    """One of each write, with `headers`; returns the responses."""
    return [
        h.request("POST", url + "/api/controller/models", h.instance(port=8002), headers=headers),
        h.request("POST", url + "/api/controller/heartbeat", h.instance(port=8003), headers=headers),
        h.request("POST", url + "/api/roster/instance", dict(KEY, weight=0), headers=headers),
        h.request("DELETE", url + "/api/controller/models?model_name=vicuna%40llm&host=127.0.0.1"
                  "&port=8001&remove_from_registry=true", headers=headers),
    ]


def test_cluster_secret(t):
    c = t.controller(args=["--trusted_networks", ""], env={"ROSTER_CLUSTER_SECRET": SECRET})
    good = {"X-Roster-Secret": SECRET}
    h.register(c.url, h.instance(), headers=good)
    before = h.list_models(c.url, view="full")
    for hdrs in ({}, {"X-Roster-Secret": "wrong"}, {"X-Roster-Secret": ""},
                 {"X-Roster-Secret": SECRET + " "}, {"X-Roster-Secret": SECRET[:-1]},
                 {"Authorization": "Bearer wrong"}, {"Authorization": SECRET},
                 {"Authorization": "Basic czNjcmV0"}, {"X-Roster-Secret": SECRET.upper()}):
        for r in writes(c.url, hdrs):
            r.error(401, f"write with {hdrs}")
    after = h.list_models(c.url, view="full")
    for b, a in zip(before, after):
        b.pop("heartbeat_age_ms"), a.pop("heartbeat_age_ms")
        # right after a write the view shows its own estimate of the commit
        # time; a full read replaces it with the database's value (~1 ms off)
        tb, ta = (datetime.datetime.fromisoformat(x.pop("last_heartbeat")) for x in (b, a))
        h.check(abs((ta - tb).total_seconds()) < 0.05, f"last_heartbeat moved: {tb} -> {ta}")
    h.eq(after, before, "rejected writes change nothing:")
    h.check(h.metric(c.url, "roster_auth_rejected_total") >= 36, "rejections are counted")
    # reads stay open
    h.eq(len(h.list_models(c.url)), 1)
    h.eq(h.request("GET", c.url + "/api/health").status, 200)
    h.eq(h.request("GET", c.url + "/metrics").status, 200)
    # the right secret, in either header
    for hdrs in (good, {"Authorization": f"Bearer {SECRET}"}, {"authorization": f"bearer {SECRET}"}):
        for r in writes(c.url, hdrs):
            h.eq(r.status, 200, f"write with {hdrs}: {r}")
        h.register(c.url, h.instance(), headers=hdrs)
    h.eq(h.keys(h.list_models(c.url)), [("vicuna@llm", "127.0.0.1", p) for p in (8001, 8002, 8003)])
    # the CLI passes the secret
    base = ["model", "set", "--controller_addr", c.url, "--model_name", "vicuna@llm", "--host",
            "127.0.0.1", "--port", "8001", "--weight", "5"]
    r = h.cli(base)
    h.check(r.returncode != 0 and "401" in r.stderr, f"set without the secret: {r.stderr!r}")
    r = h.cli(base, env={"ROSTER_CLUSTER_SECRET": SECRET})
    h.eq(r.returncode, 0, r.stderr)
    h.eq(h.find(h.list_models(c.url))["weight"], 5.0)


def test_protect_reads(t):
    c = t.controller(args=["--trusted_networks", "", "--protect_reads"],
                     env={"ROSTER_CLUSTER_SECRET": SECRET})
    good = {"X-Roster-Secret": SECRET}
    h.register(c.url, h.instance(), headers=good)
    for path in ("/api/controller/models", "/api/controller/models?view=full", "/metrics"):
        h.request("GET", c.url + path).error(401, f"GET {path} without the secret")
        h.request("GET", c.url + path, headers={"X-Roster-Secret": "x"}).error(401, path)
        h.eq(h.request("GET", c.url + path, headers=good).status, 200, path)
        h.eq(h.request("GET", c.url + path, headers={"Authorization": "Bearer " + SECRET}).status,
             200, path)
    r = h.request("GET", c.url + "/api/health")
    h.eq(r.status, 200, "/api/health stays open:")
    h.eq(r.json()["status"], "ok")
    # the CLI with and without the secret
    r = h.cli(["model", "list", "--controller_addr", c.url])
    h.check(r.returncode != 0 and "401" in r.stderr, r.stderr)
    r = h.cli(["model", "list", "--json", "--controller_addr", c.url, "--cluster_secret", SECRET])
    h.eq(r.returncode, 0, r.stderr)


def non_loopback_ip():
    """An IPv4 address of this machine outside 127/8, or None."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        ip = s.getsockname()[0]
        s.close()
        return None if ip.startswith("127.") else ip
    except OSError:
        return None


def test_default_trusts_loopback_only(t):
    c = t.controller(args=["--host", "0.0.0.0"])
    h.register(c.url, h.instance())  # from 127.0.0.1, no secret: trusted
    ip = non_loopback_ip()
    if ip is None:
        print("    (no non-loopback address on this machine: that half is skipped)")
        return
    url = f"http://{ip}:{c.port}"
    h.eq(len(h.list_models(url)), 1, "reads from another network are open:")
    for r in writes(url, {}):
        r.error(401, f"write from {ip} without a secret")
    h.eq(h.keys(h.list_models(c.url)), [("vicuna@llm", "127.0.0.1", 8001)])


def test_instance_networks(t):
    c = t.controller(args=["--instance_networks", "10.0.0.0/8,fd00::/8"])
    for host in ("127.0.0.1", "localhost", "192.168.1.1", "11.0.0.1", "::1", "example.com"):
        for path in ("/api/controller/models", "/api/controller/heartbeat"):
            r = h.request("POST", c.url + path, h.instance(host=host))
            r.error(403, f"{path} with host {host}")
    h.eq(h.list_models(c.url), [], "nothing registered outside --instance_networks:")
    h.register(c.url, h.instance(host="10.1.2.3"))
    h.heartbeat(c.url, h.instance(host="10.255.0.1"))
    h.register(c.url, h.instance(host="fd00::5"))
    h.eq(sorted(i["host"] for i in h.list_models(c.url)), ["10.1.2.3", "10.255.0.1", "fd00::5"])


if __name__ == "__main__":
    h.main(globals())
