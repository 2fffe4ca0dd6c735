#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every roster command line of the Compose files, through `--check`.

  compose_commands.py [--roster BIN | --image IMAGE] [--env K=V]... [--expect-fail SVC]...
                      FILE [FILE...]
  compose_commands.py [--roster BIN | --image IMAGE] --all

Resolves FILE... (later files override earlier ones) with `docker-compose
config`, which needs no Docker daemon, so interpolation, merge keys and
overrides are Compose's own. Placeholder secrets are set unless given with
--env (K= unsets). Every service that runs roster's image gets its command
line and its environment (only that: env -i) run with --check, by the roster
binary BIN (default build/roster) or in a container of IMAGE. Prints one line
per service; exits 0 when every service passes except those named with
--expect-fail, which must be refused; 1 otherwise. --all checks the
combinations in COMBOS (what the repository ships) and ends with
"N passed, N failed".

tests/docker/test_compose.py runs the same checks in the image; ctest can
run this one on the build's binary where docker-compose and python3-yaml are
installed.
"""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# values for the variables the files require (never real secrets)
PLACEHOLDERS = {
    "ROSTER_CLUSTER_SECRET": "check-secret",
    "ROSTER_REGISTRY_DB_PASSWORD": "check-password",
    "OPENAI_API_KEY": "check-key",
}
COMPOSE = os.path.join(ROOT, "compose")
# (files, environment changes (None: unset), the services --check must refuse)
COMBOS = [
    (["ha-cluster.yml"], {}, set()),
    # the builtin variant needs no API key at all
    (["ha-cluster.yml", "ha-builtin.yml"], {"OPENAI_API_KEY": None}, set()),
    # without the key, the HA file's workers refuse to start
    (["ha-cluster.yml"], {"OPENAI_API_KEY": None}, {"llm-worker", "embedding-worker"}),
]

# the caller's variables that would change what is checked
_STRIP_PREFIXES = ("ROSTER_", "COMPOSE_")
_STRIP = ("OPENAI_API_KEY", "OPENAI_API_BASE", "LLM_MODEL", "EMBEDDING_MODEL")


def compose_env(changes=None):
    """The environment for docker-compose: the caller's, without variables
    the files read, plus the placeholders, plus changes (None: unset)."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(_STRIP_PREFIXES) or k in _STRIP)}
    env.update(PLACEHOLDERS)
    for k, v in (changes or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def resolve(files, env):
    """The merged configuration of files, as Compose resolves it (a dict)."""
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        cmd = ["docker-compose", "--env-file", empty.name]
        for f in files:
            cmd += ["-f", f]
        p = subprocess.run(cmd + ["config"], env=env, text=True, capture_output=True,
                           timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"docker-compose config {' '.join(files)}: {p.stderr.strip()}")
    return yaml.safe_load(p.stdout)


def roster_services(cfg, image=None):
    """[(service, argv after `roster`, environment)] of the services that run
    roster: image `image`, or (unset) any image built from compose/Dockerfile."""
    out = []
    for name, svc in cfg["services"].items():
        build = svc.get("build") or {}
        is_roster = (svc.get("image") == image if image else
                     str(build.get("dockerfile", "")).endswith("compose/Dockerfile"))
        if not is_roster:
            continue
        env = {k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()}
        out.append((name, [str(a) for a in svc["command"]], env))
    return out


def check_on_host(roster, services):
    """{service: (passed, last line of its error)} with the host's binary."""
    res = {}
    for name, argv, env in services:
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        e.update(env)
        p = subprocess.run([roster] + argv + ["--check"], env=e, text=True,
                           capture_output=True, timeout=60)
        err = (p.stderr.strip().splitlines() or [""])[-1]
        res[name] = (p.returncode == 0, err)
    return res


def check_in_image(image, services):
    """{service: (passed, last line of its error)}, in one container of image."""
    lines = []
    for name, argv, env in services:
        cmd = (["env", "-i", "PATH=/usr/bin:/bin"] + [f"{k}={v}" for k, v in env.items()]
               + ["roster"] + argv + ["--check"])
        lines.append(" ".join(shlex.quote(a) for a in cmd) +
                     f" >/dev/null 2>/tmp/err && echo 'PASS {name}' || "
                     f"echo \"FAIL {name} $(tail -n 1 /tmp/err)\"")
    p = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh",
                        image, "-c", "\n".join(lines)], text=True, capture_output=True,
                       timeout=120)
    res = {}
    for ln in p.stdout.splitlines():
        word, _, rest = ln.partition(" ")
        name, _, err = rest.partition(" ")
        if word in ("PASS", "FAIL"):
            res[name] = (word == "PASS", err)
    if len(res) != len(services):
        raise RuntimeError(f"docker run {image}: {p.stdout}{p.stderr}")
    return res


def check_combo(files, changes, expect_fail, roster=None, image=None, env=None):
    """Checks one combination; returns (ok, one line saying what happened).
    env: the environment for Compose (default: compose_env(changes))."""
    if env is None:
        env = compose_env(changes)
    cfg = resolve(files, env)
    services = roster_services(cfg, image)
    res = check_in_image(image, services) if image else check_on_host(roster, services)
    refused = {name: err for name, (ok, err) in res.items() if not ok}
    short = " + ".join(os.path.relpath(f, ROOT) for f in files)
    how = ", ".join(f"{k} unset" if v is None else f"{k} set" for k, v in changes.items())
    ok = len(services) >= 6 and set(refused) == set(expect_fail)
    line = (f"--check of the {len(services)} roster command lines of {short}"
            + (f" ({how})" if how else "") + f": {len(res) - len(refused)} pass"
            + (f", {len(refused)} refused: " + "; ".join(f"{k}: {v}" for k, v in
                                                        sorted(refused.items()))
               if refused else ""))
    return ok, line


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--all", action="store_true")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--roster", default=os.path.join(ROOT, "build", "roster"))
    g.add_argument("--image")
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--expect-fail", action="append", default=[], metavar="SERVICE")
    args = ap.parse_args()
    if args.all == bool(args.files):
        ap.error("give FILE... or --all")
    if args.all:
        passed = failed = 0
        for files, changes, expect_fail in COMBOS:
            ok, line = check_combo([os.path.join(COMPOSE, f) for f in files], changes,
                                   expect_fail, roster=args.roster, image=args.image)
            print(f"{'ok  ' if ok else 'FAIL'} {line}")
            passed += ok
            failed += not ok
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0

    changes = {}
    for kv in args.env:
        k, _, v = kv.partition("=")
        changes[k] = v if v else None
    cfg = resolve(args.files, compose_env(changes))
    services = roster_services(cfg, args.image)
    if not services:
        print("no roster service found", file=sys.stderr)
        return 1
    res = (check_in_image(args.image, services) if args.image
           else check_on_host(args.roster, services))
    bad = 0
    for name, _, _ in services:
        ok, err = res[name]
        want = name not in args.expect_fail
        good = ok == want
        bad += not good
        print(f"{'ok  ' if good else 'FAIL'} {name}: --check "
              f"{'passes' if ok else 'refuses: ' + err}"
              + ("" if good else f" (expected to {'pass' if want else 'be refused'})"))
    for name in args.expect_fail:
        if name not in res:
            print(f"FAIL {name}: no such roster service")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
