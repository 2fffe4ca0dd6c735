"""Smoke: a controller on SQLite registers, lists and deregisters."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402


def test_register_list_deregister(t):
    c = t.controller()
    r = h.request("POST", c.url + "/api/controller/models", h.instance())
    h.eq(r.status, 200)
    h.eq(r.body, b"true")
    items = h.list_models(c.url)
    h.eq(h.keys(items), [("vicuna@llm", "127.0.0.1", 8001)])
    h.eq(sorted(items[0].keys()), sorted(h.instance().keys()), "DB-GPT's ten fields exactly:")
    h.check(items[0]["healthy"] is True)
    r = h.request("DELETE", c.url + "/api/controller/models?model_name=vicuna%40llm&host=127.0.0.1"
                  "&port=8001&weight=1.0&check_healthy=True&healthy=False&enabled=True"
                  "&prompt_template=&last_heartbeat=&remove_from_registry=False")
    h.eq((r.status, r.body), (200, b"true"))
    h.check(h.list_models(c.url)[0]["healthy"] is False)
    h.eq(h.list_models(c.url, healthy_only="true"), [])


if __name__ == "__main__":
    h.main(globals())
