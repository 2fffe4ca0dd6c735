#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every roster command line of the Compose files, through `--check`.

  compose_commands.py [--roster BIN | --image IMAGE] [--env K=V]... [--expect-fail SVC]...
                      FILE [FILE...]

Resolves FILE... (later files override earlier ones) with `docker-compose
config`, which needs no Docker daemon, so interpolation, merge keys and
overrides are Compose's own. Placeholder secrets are set unless given with
--env (K= unsets). Every service that runs roster's image gets its command
line and its environment (only that: env -i) run with --check, by the roster
binary BIN (default build/roster) or in a container of IMAGE. Prints one line
per service; exits 0 when every service passes except those named with
--expect-fail, which must be refused; 1 otherwise.

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--roster", default=os.path.join(ROOT, "build", "roster"))
    g.add_argument("--image")
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--expect-fail", action="append", default=[], metavar="SERVICE")
    args = ap.parse_args()

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
