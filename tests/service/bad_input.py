"""The bad-input matrix, shared by test_bad_input.py (SQLite) and
test_bad_input_mysql.py (MariaDB). Not a test file itself.

Every case is sent to a controller configured with a cluster secret and no
trusted network (so the missing/wrong-secret cases can be part of it); all
other cases carry the right secret, so they reach the endpoint's own
validation. Each case must be answered with a 4xx and roster's JSON error
body, /api/health must answer 200 right after it, and at the end the table
must be exactly what it was before (the list, and the database rows).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

SECRET = "s3cret"
AUTH = {"X-Roster-Secret": SECRET}
CTL_ARGS = ["--trusted_networks", "", "--cluster_secret", SECRET]
CTL_ENV = {}

BAD_BODY = (400, 422)  # malformed (400) or well-formed but invalid (422)
LONG = 129  # one byte over the table's varchar(128)


class Case:
    def __init__(self, label, method=None, path=None, body=None, headers=None, raw=None,
                 status=None, pause=0.0, timeout=5.0, cls=None, close_ok=False):
        self.label = label
        self.cls = cls  # the bad-input class (see case_class); None: derived from the label
        self.close_ok = close_ok  # a clean close without an answer is acceptable
        self.method = method
        self.path = path
        self.body = body
        self.headers = AUTH if headers is None else headers
        self.raw = raw  # list of byte chunks, sent on a raw socket
        self.status = status  # None = any 4xx; an int or a tuple of allowed statuses
        self.pause = pause
        self.timeout = timeout


def enc(obj):
    return json.dumps(obj).encode()


def body_cases(label, path, base, required):
    """Malformed bodies and per-field type/range errors for a JSON endpoint."""
    cases = []
    good = enc(base)
    generic = [
        ("malformed", b"{bad json}"),
        ("truncated", good[: len(good) // 2]),
        ("truncated after colon", b'{"model_name":'),
        ("trailing comma", good[:-1] + b",}"),
        ("trailing garbage", good + b"xyz"),
        ("two documents", good + good),
        ("empty body", b""),
        ("whitespace body", b"  \r\n "),
        ("array", b"[]"),
        ("array of the object", b"[" + good + b"]"),
        ("string", b'"vicuna@llm"'),
        ("number", b"8001"),
        ("null", b"null"),
        ("true", b"true"),
        ("NaN", good.replace(b'"port": 8001', b'"port": NaN') if b'"port": 8001' in good
         else b'{"port": NaN}'),
        ("depth 9", b'{"model_name":"vicuna@llm","host":"127.0.0.1","port":8001,'
                    b'"x":[[[[[[[[1]]]]]]]]}'),
        ("depth 10000", b"[" * 10000 + b"]" * 10000),
        ("depth 10000 objects", b'{"a":' * 10000 + b"1" + b"}" * 10000),
        ("duplicate key", b'{"model_name":"vicuna@llm","model_name":"other@llm",'
                          b'"host":"127.0.0.1","port":8001,"weight":1}'),
        ("duplicate port", good[:-1] + b', "port": 8002}'),
        ("invalid UTF-8", good.replace(b"vicuna", b"vic\xffuna")),
        ("overlong UTF-8", good.replace(b"vicuna", b"vic\xc0\xafuna")),
        ("lone surrogate escape", good.replace(b"vicuna", b"vic\\ud800una")),
        ("\\u0000 in a string", good.replace(b"vicuna", b"vic\\u0000una")),
        ("raw NUL byte", good.replace(b"vicuna", b"vic\x00una")),
        ("raw control character", good.replace(b"vicuna", b"vic\x01una")),
        ("raw newline in a string", good.replace(b"vicuna", b"vic\nuna")),
        ("single quotes", good.replace(b'"', b"'")),
        ("comment", b"/* c */" + good),
        # (a UTF-8 byte order mark is accepted, as RFC 8259 allows and FastAPI does)
    ]
    for name, body in generic:
        cases.append(Case(f"{label}: {name}", "POST", path, body, status=BAD_BODY))
    cases.append(Case(f"{label}: form encoded", "POST", path,
                      b"model_name=vicuna%40llm&host=127.0.0.1&port=8001",
                      headers=dict(AUTH, **{"Content-Type": "application/x-www-form-urlencoded"}),
                      status=BAD_BODY))
    for f in required:
        body = dict(base)
        del body[f]
        cases.append(Case(f"{label}: missing {f}", "POST", path, enc(body), status=BAD_BODY))
        body = dict(base)
        body[f] = None
        cases.append(Case(f"{label}: {f} null", "POST", path, enc(body), status=BAD_BODY))
    cases.append(Case(f"{label}: empty object", "POST", path, b"{}", status=BAD_BODY))
    key_values = {
        "port": ["8001", 1.5, 0, 65536, -1, 1e20, True, [8001], {"p": 8001}, "", 8001.5],
        "model_name": ["vicuna", "a@b@c", "", "@llm", "vicuna@", 123, True, [], {},
                       " vicuna@llm", "vicuna@llm ", "x" * (LONG - 4) + "@llm",
                       "vic\u0001una@llm", "vic\nuna@llm", "vic\u007funa@llm"],
        "host": ["", 123, "http://127.0.0.1", "a b", "h" * LONG, "127.0.0.1/x", "user@127.0.0.1",
                 "[::1]", "-bad", ".bad", "127.0.0.1:8001", False, ["127.0.0.1"], "h\u0000"],
    }
    for f, values in key_values.items():
        for v in values:
            body = dict(base)
            body[f] = v
            cases.append(Case(f"{label}: {f}={v!r:.40}", "POST", path, enc(body), status=BAD_BODY))
    return cases


def instance_field_cases(label, path):
    base = h.instance()
    values = {
        "weight": [-1, "x", "1.0", True, [], {}, 1e7, -0.5],
        "check_healthy": ["true", "True", 1, 0, "yes", []],
        "enabled": ["true", "False", 1, 0, "no", {}],
        "healthy": ["false", 0, "x"],
        "remove_from_registry": ["False", 1, []],
        "prompt_template": ["p" * LONG, 5, True, [], {}, "a\nb", "a\u0001b", "a\x7fb"],
        "last_heartbeat": [True, {}, []],
        "heartbeat_interval_secs": ["1", 0, -1, 0.01, 1e9, True, []],
        "load": ["x", [], 1, {"in_flight": -1}, {"in_flight": "1"}, {"capacity": 1.5},
                 {"queue_length": True}, {"in_flight": 2e9}, {"capacity": None, "in_flight": []}],
    }
    cases = body_cases(label, path, base, ["model_name", "host", "port"])
    for f, vals in values.items():
        for v in vals:
            body = dict(base)
            body[f] = v
            cases.append(Case(f"{label}: {f}={v!r:.40}", "POST", path, enc(body), status=BAD_BODY))
    return cases


def admin_cases():
    path = "/api/roster/instance"
    base = {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001, "weight": 2}
    cases = body_cases("admin", path, base, ["model_name", "host", "port"])
    for v in [-1, "x", "2", True, [], {}, 1e7]:
        cases.append(Case(f"admin: weight={v!r}", "POST", path, enc(dict(base, weight=v)),
                          status=BAD_BODY))
    key = {k: base[k] for k in ("model_name", "host", "port")}
    for v in ["true", "false", 1, 0, [], {}]:
        cases.append(Case(f"admin: enabled={v!r}", "POST", path, enc(dict(key, enabled=v)),
                          status=BAD_BODY))
    cases.append(Case("admin: neither weight nor enabled", "POST", path, enc(key), status=422))
    cases.append(Case("admin: enabled null only", "POST", path, enc(dict(key, enabled=None)),
                      status=422))
    cases.append(Case("admin: unknown instance", "POST", path, enc(dict(key, port=9999, weight=1)),
                      status=404))
    return cases


DELETE_OK = "model_name=vicuna%40llm&host=127.0.0.1&port=8001"


def query_cases():
    cases = []
    bad_delete = [
        "", "host=127.0.0.1&port=8001", "model_name=vicuna%40llm&port=8001",
        "model_name=vicuna%40llm&host=127.0.0.1", "model_name=vicuna%40llm&host=127.0.0.1&port=abc",
        "model_name=vicuna%40llm&host=127.0.0.1&port=0", "model_name=vicuna%40llm&host=127.0.0.1&port=65536",
        "model_name=vicuna%40llm&host=127.0.0.1&port=-1", "model_name=vicuna%40llm&host=127.0.0.1&port=1.5",
        "model_name=vicuna%40llm&host=127.0.0.1&port=", "model_name=vicuna%40llm&host=127.0.0.1&port=8001x",
        "model_name=vicuna%40llm&host=127.0.0.1&port=%208001",
        "model_name=vicuna&host=127.0.0.1&port=8001", "model_name=a%40b%40c&host=127.0.0.1&port=8001",
        "model_name=%40llm&host=127.0.0.1&port=8001", "model_name=&host=127.0.0.1&port=8001",
        "model_name=vicuna%40llm&host=&port=8001", "model_name=vicuna%40llm&host=a%20b&port=8001",
        "model_name=vicuna%40llm&host=http%3A%2F%2Fx&port=8001",
        DELETE_OK + "&remove_from_registry=maybe", DELETE_OK + "&remove_from_registry=2",
        "model_name=vicuna%zzllm&host=127.0.0.1&port=8001", "model_name=vicuna%4&host=127.0.0.1&port=8001",
        "model_name=vicuna%&host=127.0.0.1&port=8001", "model_name=vic%00una%40llm&host=127.0.0.1&port=8001",
        "model_name=vic%FFuna%40llm&host=127.0.0.1&port=8001",
        DELETE_OK + "&model_name=vicuna%40llm", DELETE_OK + "&port=8002",
        DELETE_OK + "&remove_from_registry=true&remove_from_registry=true",
        "model_name=" + "x" * (LONG - 4) + "%40llm&host=127.0.0.1&port=8001",
        "model_name=vicuna%40llm&host=" + "h" * LONG + "&port=8001",
        "model_name=vic%01una%40llm&host=127.0.0.1&port=8001", "=x&" + DELETE_OK,
    ]
    for q in bad_delete:
        cases.append(Case(f"DELETE ?{q:.60}", "DELETE", "/api/controller/models?" + q, status=422))
    bad_list = [
        "healthy_only=maybe", "healthy_only=2", "healthy_only=truee", "view=x", "view=FULL",
        "view=", "model_name=vicuna", "model_name=a%40b%40c", "model_name=%40",
        "model_name=" + "x" * (LONG - 4) + "%40llm", "healthy_only=true&healthy_only=false",
        "model_name=vicuna%40llm&model_name=vicuna%40llm", "model_name=%zz", "model_name=%",
        "model_name=%4", "healthy_only=%00", "model_name=%FF%40llm", "wait=-1", "wait=abc",
        "wait=1.5", "wait=3601", "wait=61", "=x", "healthy_only=tr%75e%zz",
    ]
    for q in bad_list:
        exp = 422
        if q == "view=":
            exp = None  # an empty view is the default form: 200 is fine too
        cases.append(Case(f"GET ?{q:.60}", "GET", "/api/controller/models?" + q, status=exp))
    return [c for c in cases if c.status is not None]


def path_cases():
    cases = []
    for method, path, status in [
        ("GET", "/nope", 404), ("GET", "/", 404), ("GET", "/api/controller", 404),
        ("GET", "/api/controller/models/", 404), ("GET", "/API/health", 404),
        ("GET", "/api/health/", 404), ("GET", "/api/health%00", 404),
        ("GET", "/" + "a" * 8000, 404), ("POST", "/api/health", 405),
        ("PUT", "/api/controller/models", 405), ("PATCH", "/api/roster/instance", 405),
        ("GET", "/api/roster/instance", 405), ("DELETE", "/api/controller/heartbeat", 405),
        ("GET", "/api/controller/heartbeat", 405), ("OPTIONS", "/api/controller/models", 405),
        ("DELETE", "/metrics", 405), ("POST", "/nope", 404),
    ]:
        cases.append(Case(f"{method} {path:.40}", method, path,
                          b"{}" if method in ("POST", "PUT", "PATCH") else None, status=status))
    return cases


def auth_cases():
    cases = []
    writes = [("POST", "/api/controller/models", enc(h.instance(port=8009))),
              ("POST", "/api/controller/heartbeat", enc(h.instance(port=8009))),
              ("DELETE", "/api/controller/models?" + DELETE_OK + "&remove_from_registry=true", None),
              ("POST", "/api/roster/instance",
               enc({"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8001, "weight": 0}))]
    for hdrs in ({}, {"X-Roster-Secret": "wrong"}, {"X-Roster-Secret": ""},
                 {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"},
                 {"Authorization": SECRET}, {"X-Roster-Secret": SECRET + "x"}):
        for method, path, body in writes:
            cases.append(Case(f"auth {hdrs} {method} {path:.30}", method, path, body,
                              headers=hdrs, status=401))
    return cases


def req(method, path, extra=b"", body=b""):
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Roster-Secret: {SECRET}\r\n"
            .encode() + extra)
    return head + b"\r\n" + body


def raw_cases():
    inst = enc(h.instance(port=8009))
    big = enc(h.instance(port=8009, pad="x" * 70000))
    cases = [
        Case("garbage request line", raw=[b"GARBAGE\r\n\r\n"], status=400),
        Case("request line without target", raw=[b"GET\r\n\r\n"], status=400),
        Case("request line with extra words", raw=[b"GET /api/health HTTP/1.1 x\r\n\r\n"],
             status=400),
        Case("unknown method", raw=[b"FOO /api/health HTTP/1.1\r\nHost: x\r\n\r\n"], status=400),
        Case("lower-case method", raw=[b"get /api/health HTTP/1.1\r\nHost: x\r\n\r\n"], status=400),
        Case("TLS client hello", raw=[b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64],
             status=400),
        Case("binary junk", raw=[b"\x00\x01\x02\x03\r\n\r\n"], status=400),
        Case("header without colon", raw=[req("GET", "/api/health", b"BadHeader\r\n")], status=400),
        Case("NUL in a header", raw=[req("GET", "/api/health", b"X-A: a\x00b\r\n")], status=400),
        Case("Content-Length not a number",
             raw=[req("POST", "/api/controller/models", b"Content-Length: abc\r\n", inst)],
             status=400),
        Case("Content-Length negative",
             raw=[req("POST", "/api/controller/models", b"Content-Length: -5\r\n", inst)],
             status=400),
        Case("two different Content-Lengths",
             raw=[req("POST", "/api/controller/models",
                      f"Content-Length: {len(inst)}\r\nContent-Length: 3\r\n".encode(), inst)],
             status=400),
        Case("chunked and Content-Length",
             raw=[req("POST", "/api/controller/models",
                      f"Transfer-Encoding: chunked\r\nContent-Length: {len(inst)}\r\n".encode(),
                      f"{len(inst):x}\r\n".encode() + inst + b"\r\n0\r\n\r\n")],
             status=400),
        Case("bad chunk size",
             raw=[req("POST", "/api/controller/models", b"Transfer-Encoding: chunked\r\n",
                      b"zz\r\n" + inst + b"\r\n0\r\n\r\n")],
             status=400),
        Case("headers over 16 KiB",
             raw=[req("GET", "/api/health", b"X-Pad: " + b"a" * 17000 + b"\r\n")], status=431),
        Case("headers over 16 KiB in many lines",
             raw=[req("GET", "/api/health", b"".join(b"X-P%d: %s\r\n" % (i, b"b" * 500)
                                                     for i in range(40)))], status=431),
        Case("too many headers",
             raw=[req("GET", "/api/health", b"".join(b"X-H%d: 1\r\n" % i for i in range(100)))],
             status=431),
        Case("request line over 16 KiB",
             raw=[b"GET /api/controller/models?model_name=" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n"],
             status=(414, 431)),
        Case("Content-Length of 10 MB announced",
             raw=[req("POST", "/api/controller/models", b"Content-Length: 10485760\r\n")],
             status=413),
        Case("body over 64 KiB",
             raw=[req("POST", "/api/controller/models",
                      f"Content-Length: {len(big)}\r\n".encode())]
             + [big[i:i + 8192] for i in range(0, len(big), 8192)],
             status=413, pause=0.002),
        Case("chunked body over 64 KiB",
             raw=[req("POST", "/api/controller/heartbeat", b"Transfer-Encoding: chunked\r\n")]
             + [b"2000\r\n" + big[i:i + 8192].ljust(8192, b" ") + b"\r\n"
                for i in range(0, len(big), 8192)] + [b"0\r\n\r\n"],
             status=413, pause=0.002),
        Case("body over 64 KiB to the admin endpoint",
             raw=[req("POST", "/api/roster/instance", f"Content-Length: {len(big)}\r\n".encode())]
             + [big[i:i + 8192] for i in range(0, len(big), 8192)],
             status=413, pause=0.002),
        Case("body shorter than Content-Length then EOF is not a request",
             raw=[req("POST", "/api/controller/models", b"Content-Length: 5000\r\n", inst)],
             status=None, timeout=0.5),
    ]
    return cases


def all_cases():
    return (instance_field_cases("register", "/api/controller/models")
            + instance_field_cases("heartbeat", "/api/controller/heartbeat")
            + admin_cases() + query_cases() + path_cases() + auth_cases() + raw_cases())


def send(port, url, case):
    """Returns (status, body, content_type) of the answer to one case."""
    if case.raw is not None:
        data, _ = h.raw_exchange(port, case.raw, timeout=case.timeout, pause=case.pause)
        if not data:
            return None, b"", None
        status, hdrs, body = h.parse_raw_response(data)
        return status, body, hdrs.get("content-type")
    r = h.request(case.method, url + case.path, case.body, headers=case.headers)
    return r.status, r.body, r.header("Content-Type")


def setup_baseline(url):
    """A table with one of each kind of record; every case below names one
    of them (vicuna@llm 127.0.0.1:8001) or a key that is absent (8009)."""
    h.register(url, h.instance(), headers=AUTH)
    h.register(url, h.instance(port=8002, weight=2.0, prompt_template="tpl"), headers=AUTH)
    h.register(url, h.instance(model="qwen@llm", host="10.0.0.1", port=7000, check_healthy=False,
                               load={"in_flight": 1, "queue_length": 2, "capacity": 3}),
               headers=AUTH)
    h.register(url, h.instance(model="bge@text2vec", port=9000), headers=AUTH)
    r = h.request("DELETE", url + "/api/controller/models?model_name=bge%40text2vec"
                  "&host=127.0.0.1&port=9000", headers=AUTH)
    h.eq(r.status, 200)
    r = h.admin(url, {"model_name": "vicuna@llm", "host": "127.0.0.1", "port": 8002,
                      "weight": 0.5, "enabled": False}, headers=AUTH)
    h.eq(r.status, 200)


def list_state(url):
    items = h.list_models(url, view="full")
    for it in items:
        it.pop("heartbeat_age_ms")
    return items


def same_list(before, after):
    """Lists equal, last_heartbeat allowed to differ by display jitter
    (it is derived from a clock offset that each refresh re-measures)."""
    import datetime
    h.eq(len(after), len(before), "instance count after the matrix:")
    for b, a in zip(before, after):
        tb = datetime.datetime.fromisoformat(b.pop("last_heartbeat"))
        ta = datetime.datetime.fromisoformat(a.pop("last_heartbeat"))
        h.check(abs((ta - tb).total_seconds()) < 0.25,
                f"last_heartbeat of {a['model_name']} {a['port']} moved: {tb} -> {ta}")
        h.eq(a, b, "listed instance after the matrix:")


def run_matrix(port, url, table_state=None, extra_cases=()):
    """Sends every case; returns the number sent. `table_state()` returns the
    database rows (compared before/after)."""
    before = list_state(url)
    rows_before = table_state() if table_state else None
    cases = all_cases() + list(extra_cases)
    failures = []
    for case in cases:
        try:
            status, body, ctype = send(port, url, case)
            if case.status is None and status is None:
                pass  # nothing to answer (an incomplete request the client abandoned)
            else:
                h.check_error(status or 0, body, case.status, case.label, ctype)
            r = h.request("GET", url + "/api/health")
            h.eq(r.status, 200, f"{case.label}: /api/health right after:")
        except Exception as e:  # noqa: BLE001 - collect every failing case, report all
            failures.append(f"{case.label}: {e}")
    try:
        same_list(before, list_state(url))
        if table_state:
            h.eq(table_state(), rows_before, "database rows after the matrix:")
    except h.Failure as e:
        failures.append(f"THE TABLE CHANGED: {e}")
    if failures:
        raise h.Failure(f"{len(failures)} of {len(cases)} cases failed:\n  " + "\n  ".join(failures))
    return len(cases)


# ---- classes, and the worker's and the apiserver's cases (test_security.py) ----------
#
# A class is one kind of bad input ("framing: two different Content-Lengths",
# "types: port is a string"): the security suite counts the distinct classes
# it sent. Cases of the catalogue above get theirs from their label.

def case_class(case):
    """The class of a case: its own, or one derived from its label."""
    if case.cls:
        return case.cls
    label = case.label
    if case.raw is not None:
        return "framing: " + label
    if label.startswith("auth "):
        return "auth: " + label[len("auth "):].split("}", 1)[0] + "}"
    if label.startswith(("DELETE ?", "GET ?")):
        q = label.split("?", 1)[1]
        key = q.split("=", 1)[0] or "empty key"
        return "query: " + key
    if ": " in label:
        what = label.split(": ", 1)[1]
        if "=" in what:
            return "field: " + what.split("=", 1)[0]
        return "body: " + what
    return "path: " + label.split(" ", 1)[0]


def _chat(**fields):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(fields)
    return enc(body)


def inference_cases(who, chat_model="chat", emb_model="emb", headers=None):
    """Bad inputs for the OpenAI-style routes a worker and an apiserver both
    serve. `headers` go with every case (an API key, say)."""
    hd = dict(headers or {})
    path = "/v1/chat/completions"

    def c(cls, body, status=None, p=path, method="POST", hdrs=None):
        return Case(f"{who}: {cls}", method, p, body, headers=dict(hd, **(hdrs or {})),
                    status=status, cls=cls)

    def chat(**f):
        d = json.loads(_chat(**f))
        d["model"] = f.get("model", chat_model)
        return enc(d)

    deep = b'{"model":"%s","messages":' % chat_model.encode() + b"[" * 5000 + b"]" * 5000 + b"}"
    cases = [
        c("json: malformed", b"{not json"),
        c("json: truncated", chat()[:-7]),
        c("json: empty body", b""),
        c("json: top-level array", b"[" + chat() + b"]"),
        c("json: top-level string", b'"hello"'),
        c("json: trailing garbage", chat() + b"}}"),
        c("json: duplicate model key", b'{"model":"%s","model":"other","messages":[]}'
          % chat_model.encode()),
        c("nesting: 5000 arrays deep in messages", deep),
        c("nesting: 5000 objects deep", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        c("encoding: invalid UTF-8 in content", chat().replace(b'"hi"', b'"h\xffi"')),
        c("encoding: overlong UTF-8 in content", chat().replace(b'"hi"', b'"h\xc0\xafi"')),
        c("encoding: lone surrogate escape", chat().replace(b'"hi"', b'"h\\udc00i"')),
        c("encoding: UTF-16 body", chat().decode().encode("utf-16")),
        c("types: messages is a string", chat(messages="hi")),
        c("types: messages is an empty list", chat(messages=[])),
        c("types: message is a number", chat(messages=[5])),
        c("types: content is an object", chat(messages=[{"role": "user", "content": {"a": 1}}])),
        c("types: role is a number", chat(messages=[{"role": 1, "content": "hi"}])),
        c("types: model is a number", chat(model=5)),
        c("types: model missing", enc({"messages": [{"role": "user", "content": "hi"}]})),
        c("types: stream is a string", chat(stream="yes")),
        c("types: max_tokens is a string", chat(max_tokens="4")),
        c("types: stop is a number", chat(stop=5)),
        c("ranges: max_tokens negative", chat(max_tokens=-1)),
        c("ranges: max_tokens 1e12", chat(max_tokens=10 ** 12)),
        c("ranges: temperature 9", chat(temperature=9)),
        c("ranges: temperature NaN", chat().replace(b'"max_tokens": 4', b'"temperature": NaN')),
        c("ranges: top_p negative", chat(top_p=-0.5)),
        c("ranges: n 1000", chat(n=1000)),
        c("ranges: 100 stop sequences", chat(stop=[f"s{i}" for i in range(100)])),
        c("names: SQL metacharacters in model", chat(model="x' OR '1'='1'; DROP TABLE t; --"),
          status=404),
        c("names: unicode model name", chat(model="模型\u202e名"), status=404),
        c("names: NUL in model", chat(model="chat\u0000x")),
        c("names: model of 10,000 characters", chat(model="m" * 10000)),
        c("names: control characters in model", chat(model="chat\u001b[31m"), status=None),
        c("embeddings: input is a number", enc({"model": emb_model, "input": 5}),
          p="/v1/embeddings"),
        c("embeddings: input list of objects", enc({"model": emb_model, "input": [{"a": 1}]}),
          p="/v1/embeddings"),
        c("embeddings: encoding_format unknown", enc({"model": emb_model, "input": ["a"],
                                                      "encoding_format": "hex"}),
          p="/v1/embeddings"),
        c("embeddings: dimensions negative", enc({"model": emb_model, "input": ["a"],
                                                  "dimensions": -3}), p="/v1/embeddings"),
        c("embeddings: chat model", enc({"model": chat_model, "input": ["a"]}), p="/v1/embeddings"),
        c("content type: form encoded", b"model=chat&messages=hi",
          hdrs={"Content-Type": "application/x-www-form-urlencoded"}),
        c("method: GET on chat", None, method="GET", status=405),
        c("method: DELETE on models", None, p="/v1/models", method="DELETE", status=405),
        c("path: unknown", None, p="/v1/nope", method="GET", status=404),
        c("path: traversal", None, p="/v1/../../etc/passwd", method="GET", status=(400, 404)),
        c("path: percent-encoded NUL", None, p="/v1/models%00", method="GET", status=(400, 404)),
    ]
    return cases


def worker_only_cases(who, chat_model="chat"):
    """DB-GPT's routes of a worker."""
    def c(cls, p, body, status=None):
        return Case(f"{who}: {cls}", "POST", p, body, headers={}, status=status, cls=cls)
    return [
        c("dbgpt: generate without prompt or messages", "/api/worker/generate",
          enc({"model": chat_model})),
        c("dbgpt: max_new_tokens negative", "/api/worker/generate",
          enc({"model": chat_model, "prompt": "hi", "max_new_tokens": -5})),
        c("dbgpt: messages is a string", "/api/worker/generate_stream",
          enc({"model": chat_model, "messages": "hi"})),
        c("dbgpt: count_token prompt a number", "/api/worker/count_token",
          enc({"model": chat_model, "prompt": 5})),
        c("dbgpt: model_metadata unknown model", "/api/worker/model_metadata",
          enc({"model": "nope"}), status=(400, 404)),
        c("dbgpt: embeddings input a string", "/api/worker/embeddings",
          enc({"model": chat_model, "input": "x"})),
        c("apply: unknown apply_type", "/api/worker/apply",
          enc({"model": chat_model, "apply_type": "explode"})),
        c("apply: weight negative", "/api/worker/apply",
          enc({"model": chat_model, "apply_type": "update_params", "params": {"weight": -1}})),
        c("apply: params a string", "/api/worker/apply",
          enc({"model": chat_model, "apply_type": "update_params", "params": "weight=2"})),
    ]


def framing_cases(who, path="/v1/chat/completions"):
    """Raw HTTP cases that the catalogue above sends to the controller, for
    another server (same classes: they count once)."""
    def r(label, data, status=None, close_ok=False):
        return Case(f"{who}: {label}", raw=[data], status=status, cls="framing: " + label,
                    close_ok=close_ok)
    body = _chat()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return [
        r("garbage request line", b"GARBAGE\r\n\r\n", 400),
        r("Content-Length not a number", (head + "Content-Length: abc\r\n\r\n").encode() + body,
          400),
        r("two different Content-Lengths", (head + f"Content-Length: {len(body)}\r\n"
                                            "Content-Length: 3\r\n\r\n").encode() + body, 400),
        r("chunked and Content-Length", (head + "Transfer-Encoding: chunked\r\nContent-Length: "
                                         f"{len(body)}\r\n\r\n").encode()
          + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n", 400),
        r("bad chunk size", (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
          + b"zz\r\n" + body + b"\r\n0\r\n\r\n", 400),
        r("headers over 16 KiB", (head + "X-Pad: " + "a" * 17000 + "\r\n\r\n").encode(), 431),
        r("Content-Length of 10 GB announced",
          (head + "Content-Length: 10737418240\r\n\r\n").encode(), 413),
        r("NUL in a header", (head + "X-A: a\x00b\r\n\r\n").encode(), 400),
        r("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400),
    ]


def run_cases(port, url, cases, health_urls=(), table_state=None):
    """Sends every case to one server: each must get a 4xx with roster's JSON
    error (the status the case names, if any), or close cleanly when the
    case allows it; every server in health_urls must answer /api/health 200
    after each; table_state() must not change. Returns the classes sent;
    fails listing every case that went wrong."""
    before = table_state() if table_state else None
    failures = []
    for case in cases:
        try:
            status, body, ctype = send(port, url, case)
            if status is None and case.close_ok:
                pass
            else:
                h.check_error(status or 0, body, case.status, case.label, ctype)
            for hu in [url] + list(health_urls):
                r = h.request("GET", hu + "/api/health")
                h.check(r.status in (200,), f"{case.label}: {hu}/api/health right after: {r}")
        except Exception as e:  # noqa: BLE001 - collect every failing case, report all
            failures.append(f"{case.label}: {e}"[:400])
    if table_state:
        after = table_state()
        if after != before:
            failures.append(f"THE TABLE CHANGED:\n{before!r}\n->\n{after!r}"[:2000])
    if failures:
        raise h.Failure(f"{len(failures)} of {len(cases)} cases failed:\n  "
                        + "\n  ".join(failures))
    return {case_class(c) for c in cases}
