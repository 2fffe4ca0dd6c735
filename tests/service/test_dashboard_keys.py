"""The dashboard's Keys view: API keys and aliases (cluster settings) read
and changed through the webserver, which forwards to a controller with its
own cluster secret.

test_dashboard_keys_routes (cluster mode: a controller that trusts no network, so only
the forwarded secret authorises): the routes need the cluster secret (401
without, 401 with a wrong one, nothing changed); a created key is in the
answer once and works on /v1/models; the list holds no hash and no key,
with this webserver's usage per key; revoke refuses it, purge deletes it;
aliases set and removed; the controller's errors come back as its message;
an unknown route name or a bad body is refused before any controller call.

test_dashboard_keys_browser (embedded mode: the controller in the process): the page
creates a key, shows it once; the key works against the same webserver's
/v1/models; the page revokes it (with confirmation) and it is refused; an
alias is set and removed through the page. No process log holds a key.

test_dashboard_keys_no_secret: without a secret, loopback only, and no
other site's page.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402
from test_dashboard import browser, check_clean_page, routable, webserver  # noqa: E402

SECRET = "dash-keys-secret"
FLAG_KEY = "sk-flag-dash-keys"  # --api_keys: the API is closed from the start
AUTH = {"Authorization": f"Bearer {FLAG_KEY}"}
OP = dict(AUTH, **{"X-Roster-Secret": SECRET})
IN_FORCE_S = 3.0  # settings reach every node within 1 s; margin for a loaded machine


def dash(ws, method, path, body=None, headers=OP):
    return h.request(method, ws.url + "/api/dashboard/" + path, body, headers=headers)


def models_status(ws, key):
    return h.request("GET", ws.url + "/v1/models",
                     headers={"Authorization": f"Bearer {key}"}).status


def listing(ws):
    r = dash(ws, "GET", "keys")
    h.eq(r.status, 200, f"list: {r}")
    h.check(b"hash" not in r.body, f"the list holds no hash: {r.body[:400]!r}")
    h.check(b"sk-roster-" not in r.body.replace(b'"prefix":"sk-roster-', b""),
            "the list holds no key (prefixes only)")
    out = r.json()
    return {k["name"]: k for k in out["keys"]}, {a["name"]: a for a in out["aliases"]}, out


def test_dashboard_keys_routes(t):
    c = t.controller(args=["--trusted_networks", "", "--cluster_secret", SECRET])
    ws = webserver(t, ["--controller_addr", c.url, "--cluster_secret", SECRET,
                       "--api_keys", FLAG_KEY])

    # the cluster secret, for reads too; the API key first
    dash(ws, "GET", "keys", headers={}).error(401, "no API key")
    err = dash(ws, "GET", "keys", headers=AUTH).error(401, "no secret")
    h.eq(err["code"], "cluster_secret_required")
    err = dash(ws, "GET", "keys", headers=dict(AUTH, **{"X-Roster-Secret": "nope"})).error(401)
    h.eq(err["code"], "bad_cluster_secret")
    for path, body in (("keys", {"name": "sneaky"}), ("aliases", {"name": "a", "models": ["m"]}),
                       ("keys/revoke", {"name": "sneaky"}), ("aliases/remove", {"name": "a"})):
        err = dash(ws, "POST", path, body, headers=AUTH).error(401, f"{path} without a secret")
        h.eq(err["code"], "cluster_secret_required")
    # a JSON body, as for every action (no form post from another site)
    r = h.request("POST", ws.url + "/api/dashboard/keys", "name=x",
                  headers=dict(OP, **{"Content-Type": "application/x-www-form-urlencoded"}))
    r.error(415, "a form post")
    keys, aliases, out = listing(ws)
    h.eq((keys, aliases), ({}, {}), "refused calls changed nothing:")
    h.eq(out["controller"], c.url, "the controller that answered:")

    # create: the key once, in the answer
    r = dash(ws, "POST", "keys", {"name": "alpha", "models": ["m1", "m2"], "rpm": 100, "tpm": 5000,
                                  "priority": 3, "hash": "injected", "junk": 1})
    h.eq(r.status, 200, f"create: {r}")
    res = r.json()["result"]
    key = res["key"]
    h.check(key.startswith("sk-roster-") and len(key) == 50, f"a key: {key!r}")
    h.eq(res["prefix"], key[:16])
    h.check("hash" not in res and "junk" not in res, f"only the key's fields: {res}")
    h.eq((res["models"], res["rpm"], res["tpm"], res["priority"]), (["m1", "m2"], 100, 5000, 3))

    # the controller's own errors, as it said them
    err = dash(ws, "POST", "keys", {"name": "alpha"}).error(409, "the name is taken")
    h.eq(err["code"], "already_exists")
    h.check("alpha" in err["message"] and "controller" in err["message"], err["message"])
    err = dash(ws, "POST", "keys", {"name": "beta", "rpm": -1}).error(422, "a negative rpm")
    h.check("rpm" in err["message"], err["message"])
    err = dash(ws, "POST", "keys", {"name": "bad name"}).error(422, "a bad name")
    h.check("name" in err["message"], err["message"])
    dash(ws, "POST", "keys", "[1]").error(400, "not an object")

    keys, _, _ = listing(ws)
    a = keys["alpha"]
    h.eq((a["prefix"], a["models"], a["rpm"], a["tpm"], a["priority"], a["revoked_ms"]),
         (key[:16], ["m1", "m2"], 100, 5000, 3, 0), "listed as created:")
    h.eq(a["usage"], {"requests": 0, "rejected": {"revoked": 0, "expired": 0, "model": 0,
                                                  "rate_limited": 0},
                      "prompt_tokens": 0, "completion_tokens": 0}, "no usage yet:")

    # the key works here, and its use is counted
    h.wait_until(lambda: models_status(ws, key) == 200, IN_FORCE_S, what="the new key to work")
    keys, _, _ = listing(ws)
    h.check(keys["alpha"]["usage"]["requests"] >= 1, f"usage: {keys['alpha']['usage']}")

    # revoke: refused, listed as revoked, the refusal counted
    r = dash(ws, "POST", "keys/revoke", {"name": "alpha"})
    h.eq(r.status, 200, f"revoke: {r}")
    h.check(r.json()["result"].get("revoked") is True, f"{r.json()}")
    h.wait_until(lambda: models_status(ws, key) == 401, IN_FORCE_S, what="the key to be refused")
    keys, _, _ = listing(ws)
    h.check(keys["alpha"]["revoked_ms"] > 0, f"{keys['alpha']}")
    h.check(keys["alpha"]["usage"]["rejected"]["revoked"] >= 1, f"{keys['alpha']['usage']}")
    err = dash(ws, "POST", "keys/revoke", {"name": "nobody"}).error(404, "an unknown key")
    h.check("nobody" in err["message"], err["message"])
    dash(ws, "POST", "keys/revoke", {"name": "alpha", "purge": "yes"}).error(422, "purge: bool")
    dash(ws, "POST", "keys/revoke", {"name": "a&purge=true"}).error(422, "a name with a query")
    h.eq(dash(ws, "POST", "keys/revoke", {"name": "alpha", "purge": True}).status, 200, "purge")
    keys, _, _ = listing(ws)
    h.check("alpha" not in keys, f"purged: {keys}")

    # aliases
    r = dash(ws, "POST", "aliases", {"name": "gpt-4o", "models": ["glm-4-9b-chat", "qwen2-7b"]})
    h.eq(r.status, 200, f"alias set: {r}")
    _, aliases, _ = listing(ws)
    h.eq(aliases["gpt-4o"]["models"], ["glm-4-9b-chat", "qwen2-7b"], "the alias, in order:")
    err = dash(ws, "POST", "aliases", {"name": "x", "models": []}).error(422, "no models")
    h.check("models" in err["message"], err["message"])
    h.eq(dash(ws, "POST", "aliases/remove", {"name": "gpt-4o"}).status, 200, "alias remove")
    _, aliases, _ = listing(ws)
    h.eq(aliases, {}, "removed:")
    dash(ws, "POST", "aliases/remove", {"name": "gpt-4o"}).error(404, "removed twice")

    # no controller: the page is told so
    c.stop()
    r = dash(ws, "GET", "keys")
    h.eq(r.status, 502, f"no controller: {r}")
    h.check(r.json()["error"]["code"] == "unreachable", f"{r}")
    for p in (ws, c):
        h.check(key not in p.logs() and key[16:] not in p.logs(), f"{p.name}: no key in its log")


def test_dashboard_keys_no_secret(t):
    """Without --cluster_secret: from the webserver's machine only, and not
    from another site's page (the list is an operator's read too)."""
    c = t.controller()
    ws = webserver(t, ["--controller_addr", c.url])
    r = dash(ws, "POST", "aliases", {"name": "local", "models": ["m"]}, headers={})
    h.eq(r.status, 200, f"from loopback: {r}")
    h.eq(dash(ws, "GET", "keys", headers={}).json()["aliases"][0]["models"], ["m"])
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    for method, path, body in (("GET", "keys", None), ("POST", "keys", {"name": "x"}),
                               ("POST", "aliases/remove", {"name": "local"})):
        err = dash(ws, method, path, body, headers=evil).error(403, f"{method} {path} cross-site")
        h.eq(err["code"], "cross_site_request")
    _, aliases, _ = listing(ws)
    h.eq(list(aliases), ["local"], "the cross-site calls changed nothing:")


def test_dashboard_keys_browser(t):
    ws = webserver(t, ["--data_dir", os.path.join(t.tmp, "data"), "--cluster_secret", SECRET,
                       "--api_keys", FLAG_KEY])
    h.wait_until(lambda: routable(ws, "roster-chat", AUTH) == 1, 20, what="the builtin chat model")
    out = browser(t, scenario="keys", dashboard_url=ws.url + "/", api_key=FLAG_KEY,
                  cluster_secret=SECRET, timeout=120)
    # the key dialog (a wrong key first), the secret dialog (a wrong secret first)
    check_clean_page(out, expected_401=3)
    h.eq((out["expected_409"], out["console_409"]), (1, 1), "the one 409 provoked (a name taken):")
    k = out["keys"]
    key = k["created_key"]
    h.check(key.startswith("sk-roster-") and len(key) == 50, f"the page showed a key: {key!r}")
    h.check("not shown again" in k["warning"], f"the warning: {k['warning']!r}")
    h.eq(k["row_status_before"], "active")
    h.eq(k["row_models"], "roster-chat")
    h.eq(k["storage_has_key"], False, "the key is in no storage of the page:")
    h.eq(k["box_after_done"], "", "closing the box blanks the key:")
    h.check(k["works_status"] == 200, f"the new key on /v1/models: {k['works_status']}")
    h.check(int(k["requests_shown"].replace(",", "")) >= 1,
            f"the page shows its use: {k['requests_shown']!r}")
    h.check("Revoke key" in k["confirm_text"], f"confirmation: {k['confirm_text']!r}")
    h.eq(k["row_status_after"], "revoked")
    h.eq(k["refused_status"], 401, "the revoked key is refused:")
    h.eq(k["alias_models"], "roster-chat → roster-embed", "the alias, as shown:")
    h.eq(k["alias_removed"], True)
    h.eq(k["create_result"]["kind"], "ok", f"{k['create_result']}")
    h.check("secret" in k["secret_error_text"].lower(), f"{k['secret_error_text']!r}")
    h.check(k["new_key_hidden_after_dup"], "a failed create shows no key")
    h.eq(k["revoke_result"]["kind"], "ok", f"{k['revoke_result']}")
    h.check("taken" in k["dup_error"] or "exists" in k["dup_error"],
            f"a taken name shows the controller's message: {k['dup_error']!r}")
    # what the page did is what the server holds
    r = dash(ws, "GET", "keys")
    h.eq(r.status, 200)
    got = {x["name"]: x for x in r.json()["keys"]}
    h.check(got["ui-key"]["revoked_ms"] > 0, f"{got}")
    h.eq(r.json()["aliases"], [], "no alias left:")
    h.eq(models_status(ws, key), 401)
    h.check(key not in ws.logs() and key[16:] not in ws.logs(), "no key in the log")


if __name__ == "__main__":
    h.main(globals())
