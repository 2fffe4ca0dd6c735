"""The Kubernetes manifests of compose/k8s, without a cluster:
- yamllint (strict) over compose/k8s and tests/k8s;
- `kubectl kustomize` renders the base and the builtin overlay, also with
  no network at all;
- every rendered object validates against the Kubernetes schemas
  (kubernetes-models) with no unknown field, and follows roster's rules
  (probes on /api/health, resources, non-root, read-only root, references
  between objects), and the validator finds each kind of mistake;
- every roster container's command line and environment passes
  `roster start <role> ... --check`, and every variable given to it changes
  what roster would do (none is ignored or misspelt).

Needs: kubectl (Debian's kubernetes-client, or any with kustomize), yamllint,
node and `npm ci` in tests/k8s. ROSTER_KUBECTL names the kubectl to use, or
several separated by ':' (the first renders for every test; all of them must
render the same objects: kustomize 2.0 of kubectl 1.20 and later versions).
"""
import base64
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
K8S = os.path.join(ROOT, "compose", "k8s")
VARIANTS = {"base": os.path.join(K8S, "base"), "builtin": os.path.join(K8S, "overlays", "builtin")}
EXAMPLE = os.path.join(K8S, "overlays", "production-example")
KUBECTLS = [k for k in os.environ.get("ROSTER_KUBECTL", "").split(":") if k] or \
    [shutil.which("kubectl") or "kubectl"]
KUBECTL = KUBECTLS[0]
ROLES = {"roster-controller": "controller", "roster-worker-llm": "worker",
         "roster-worker-embedding": "worker", "roster-apiserver": "apiserver",
         "roster-webserver": "webserver"}


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def render(path, out_dir, name, kubectl=KUBECTL):
    r = run([kubectl, "kustomize", path])
    h.eq(r.returncode, 0, f"kubectl kustomize {path}: {r.stderr}")
    out = os.path.join(out_dir, name + ".yaml")
    with open(out, "w") as f:
        f.write(r.stdout)
    return out


def node(*args):
    return run(["node", os.path.join(HERE, "manifests.mjs")] + list(args))


def objects(path):
    r = node("json", path)
    h.eq(r.returncode, 0, r.stderr)
    return json.loads(r.stdout)


def commands(path):
    r = node("commands", path)
    h.eq(r.returncode, 0, r.stderr)
    return json.loads(r.stdout)


def roster_check(argv, env):
    """`roster <argv> --check` with exactly `env` (plus PATH): (code, output)."""
    h.eq(argv[0], "roster", f"the container runs {argv[0]}, not roster")
    r = subprocess.run([h.BIN] + argv[1:] + ["--check"], capture_output=True, text=True,
                       timeout=20, env=dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin")))
    return r.returncode, r.stdout + r.stderr


def by_name(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_names(c):
    return [e["name"] for e in c.get("env", [])]


def test_yamllint(t):
    r = run(["yamllint", "-s", "-c", os.path.join(HERE, "..", "yamllint.yml"), K8S, HERE])
    h.eq(r.returncode, 0, f"yamllint:\n{r.stdout}{r.stderr}")
    # and it does fail: a duplicate key and a tab-less bad indent
    bad = os.path.join(t.tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("a: 1\na: 2\nb:\n   - c\n")
    r = run(["yamllint", "-s", "-c", os.path.join(HERE, "..", "yamllint.yml"), bad])
    h.check(r.returncode != 0 and "duplication of key" in r.stdout, r.stdout)


def test_render_both_variants(t):
    base = objects(render(VARIANTS["base"], t.tmp, "base"))
    builtin = objects(render(VARIANTS["builtin"], t.tmp, "builtin"))
    for objs in (base, builtin):
        deployments = by_name(objs, "Deployment")
        h.eq(sorted(deployments), sorted(ROLES), "the Deployments")
        h.eq(deployments["roster-controller"]["spec"]["replicas"], 2, "two controllers")
        h.eq(sorted(by_name(objs, "Service")),
             ["roster-apiserver", "roster-controller", "roster-mysql", "roster-webserver"], "Services")
        h.eq(list(by_name(objs, "PodDisruptionBudget")), ["roster-controller"], "the PDB")
        h.eq(list(by_name(objs, "StatefulSet")), ["roster-mysql"], "MySQL")
        h.eq(list(by_name(objs, "ConfigMap")), ["roster-config"], "the ConfigMap")
        h.eq(sorted(by_name(objs, "Secret")), ["roster-mysql", "roster-secrets"], "the Secrets")
        for name in ROLES:
            c = container(deployments[name])
            h.eq(c["image"], "roster:local", f"{name}: the image")
            h.eq(c["args"][:2], ["start", ROLES[name]], f"{name}: the role")
    for name in ("roster-worker-llm", "roster-worker-embedding"):
        c = container(by_name(base, "Deployment")[name])
        h.check("openai" in c["args"] and "OPENAI_API_KEY" in env_names(c), f"base {name}: {c}")
        c = container(by_name(builtin, "Deployment")[name])
        h.check("builtin" in c["args"] and "openai" not in c["args"], f"builtin {name}: {c['args']}")
        h.check("OPENAI_API_KEY" not in env_names(c) and "ROSTER_UPSTREAM" not in env_names(c),
                f"builtin {name}: no upstream, no key: {env_names(c)}")
    h.eq(by_name(builtin, "ConfigMap")["roster-config"]["data"]["LLM_MODEL"], "roster-chat",
         "the builtin chat model")


def test_render_with_no_network(t):
    """kustomize reads only local files: the same output in a network
    namespace with nothing but a down loopback."""
    probe = run(["unshare", "--net", "true"])
    if probe.returncode != 0:
        print(f"SKIP: unshare --net is not permitted here ({probe.stderr.strip()})")
        return
    for name, path in VARIANTS.items():
        online = run([KUBECTL, "kustomize", path])
        offline = run(["unshare", "--net", KUBECTL, "kustomize", path])
        h.eq(offline.returncode, 0, f"{name} offline: {offline.stderr}")
        h.eq(offline.stdout, online.stdout, f"{name}: the same output offline")


def test_every_object_validates(t):
    files = [render(path, t.tmp, name) for name, path in VARIANTS.items()]
    r = node("validate", *files)
    h.eq(r.returncode, 0, f"{r.stdout}{r.stderr}")
    h.eq(r.stdout.count(" objects, 0 problems"), len(files), r.stdout)


def test_the_validator_finds_mistakes(t):
    """Each mistake in a rendered manifest is reported, by the schemas or by
    roster's rules: the validation above could fail."""
    text = open(render(VARIANTS["base"], t.tmp, "base")).read()
    mistakes = [
        # (replace, with, expected message)
        ("readinessProbe:", "readinesProbe:", "readinesProbe: no such field"),
        ("replicas: 2", "replicas: two", "/spec/replicas must be integer"),
        ("imagePullPolicy: IfNotPresent", "imagePullPolicy: Sometimes", "imagePullPolicy must be equal"),
        ("key: ROSTER_LOG_LEVEL", "key: ROSTER_LOG_LEVL", "which has no such key"),
        ("targetPort: http", "targetPort: htp", "targetPort htp is not a port"),
        ("CHANGE-ME-openai-api-key", "sk-0123456789", "is not a CHANGE-ME placeholder"),
        ("- ALL", "- NET_RAW", "capabilities.drop must include ALL"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"),
        ("runAsUser: 10001", "runAsUser: 0", "not roster's 10001"),
        ("path: /api/health", "path: /healthz", "must be an httpGet of /api/health"),
        ("enableServiceLinks: false", "enableServiceLinks: true", "enableServiceLinks must be false"),
        ("cpu: 100m", "cpuu: 100m", "resources.requests.cpu is missing"),
        ("minAvailable: 1", "minAvailable: 2", "minAvailable 2 leaves no disruption"),
        ("kind: PodDisruptionBudget", "kind: PodDisruptionBudgett", "unknown apiVersion policy/v1 or kind"),
    ]
    files = []
    for i, (old, new, _) in enumerate(mistakes):
        h.check(old in text, f"{old!r} is not in the rendered base")
        files.append(os.path.join(t.tmp, f"bad{i}.yaml"))
        with open(files[-1], "w") as f:
            f.write(text.replace(old, new, 1))
    r = node("validate", *files)
    h.eq(r.returncode, 1, f"{r.stdout}{r.stderr}")
    lines = r.stdout.splitlines()
    for f, (old, new, want) in zip(files, mistakes):
        mine = [x for x in lines if x.startswith(f + ": ")]
        h.check(any(want in x for x in mine), f"{old} -> {new}: {want!r} not reported:\n" + "\n".join(mine))
        h.check(mine[-1].endswith(" problems") and not mine[-1].endswith(" 0 problems"), mine[-1])
    with open(os.path.join(t.tmp, "bad.yaml"), "w") as f:
        f.write("a: [1\n")
    r = node("validate", os.path.join(t.tmp, "bad.yaml"))
    h.eq(r.returncode, 2, f"unparsable YAML: {r.stdout}{r.stderr}")


def check_commands(path):
    cmds = commands(path)
    h.eq(sorted(c["workload"] for c in cmds), sorted("Deployment/" + n for n in ROLES),
         "one roster container per Deployment")
    secrets = [v for c in cmds for k, v in c["env"].items()
               if k in ("ROSTER_CLUSTER_SECRET", "ROSTER_API_KEYS", "ROSTER_REGISTRY_DB_PASSWORD",
                        "OPENAI_API_KEY")]
    h.check(len(secrets) >= 5, f"the secrets reach the containers: {len(secrets)}")
    for c in cmds:
        what = f"{c['workload']}: {' '.join(c['argv'])}"
        code, out = roster_check(c["argv"], c["env"])
        h.eq(code, 0, f"{what} --check:\n{out[-3000:]}")
        h.check("OK: the " in out, f"{what}: {out[-500:]}")
        for s in secrets:
            h.check(s not in out, f"{what}: a secret is printed")
        # every variable is read: without it, roster would do something else
        for name in c["env"]:
            env = {k: v for k, v in c["env"].items() if k != name}
            code2, out2 = roster_check(c["argv"], env)
            h.check(code2 != 0 or out2 != out, f"{what}: roster ignores {name}")
    return cmds


def test_every_command_line_passes_check(t):
    base = {c["workload"]: c for c in check_commands(render(VARIANTS["base"], t.tmp, "base"))}
    builtin = {c["workload"]: c for c in check_commands(render(VARIANTS["builtin"], t.tmp, "builtin"))}
    # what --check says the roles would do
    _, out = roster_check(base["Deployment/roster-controller"]["argv"],
                          base["Deployment/roster-controller"]["env"])
    h.check("MySQL database 'roster' as 'roster' at roster-mysql:3306 with a password" in out, out)
    h.check("writes: the cluster secret" in out, out)
    _, out = roster_check(base["Deployment/roster-worker-llm"]["argv"],
                          base["Deployment/roster-worker-llm"]["env"])
    h.check("model: gpt-4o@llm" in out and "backend: openai" in out, out)
    h.check("--worker_register_host             192.0.2.10" in out, "the pod's address is registered")
    _, out = roster_check(builtin["Deployment/roster-worker-embedding"]["argv"],
                          builtin["Deployment/roster-worker-embedding"]["env"])
    h.check("model: roster-embed@text2vec" in out, out)
    _, out = roster_check(base["Deployment/roster-webserver"]["argv"],
                          base["Deployment/roster-webserver"]["env"])
    h.check("cluster mode" in out and "API keys: 1" in out, out)


def normalized(objs):
    """Objects as every kustomize version means them: the order of objects and
    of env entries aside, and without kustomize 2.0's empty annotations."""
    out = []
    for o in objs:
        o = json.loads(json.dumps(o))
        if o.get("metadata", {}).get("annotations") == {}:
            del o["metadata"]["annotations"]
        for c in (o.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []):
            c.get("env", []).sort(key=lambda e: e["name"])
        out.append(o)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


def production_copy(t):
    """overlays/production-example copied beside base/, with secrets.env made
    from the example; returns (its directory, the secrets)."""
    k = os.path.join(t.tmp, "k8s")
    if not os.path.exists(k):
        shutil.copytree(os.path.join(K8S, "base"), os.path.join(k, "base"))
        shutil.copytree(EXAMPLE, os.path.join(k, "overlays", "production-example"))
    d = os.path.join(k, "overlays", "production-example")
    values = {}
    with open(os.path.join(d, "secrets.env.example")) as f, \
            open(os.path.join(d, "secrets.env"), "w") as out:
        for line in f:
            if "=" in line and not line.startswith("#"):
                key, _, v = line.strip().partition("=")
                values[key] = v or f"{key.lower()}-{os.getpid()}"
                line = f"{key}={values[key]}\n"
            out.write(line)
    return d, values


def test_kustomize_versions_agree(t):
    if len(KUBECTLS) < 2:
        print(f"SKIP: one kubectl ({KUBECTL}); ROSTER_KUBECTL=a:b compares versions")
        return
    dirs = dict(VARIANTS, production=production_copy(t)[0])
    for k in KUBECTLS:
        r = run([k, "version", "--client"])
        print(f"    {k}: {r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stderr.strip()}")
    for name, path in dirs.items():
        first = normalized(objects(render(path, t.tmp, f"{name}-0", KUBECTLS[0])))
        for i, k in enumerate(KUBECTLS[1:], 1):
            other = normalized(objects(render(path, t.tmp, f"{name}-{i}", k)))
            h.check(other == first, f"{name}: {k} renders other objects than {KUBECTLS[0]}")


def test_production_example(t):
    """overlays/production-example as its comments say to use it: secrets.env
    from the example, filled in, replaces every placeholder; the database is
    external; the image comes from a registry; it all passes --check."""
    d, values = production_copy(t)
    h.eq(sorted(values), ["OPENAI_API_KEY", "ROSTER_API_KEYS", "ROSTER_CLUSTER_SECRET",
                          "ROSTER_REGISTRY_DB_PASSWORD"], "the example's keys")
    out = render(d, t.tmp, "production")
    r = node("validate", out, "--test-secrets")
    h.eq(r.returncode, 0, f"{r.stdout}{r.stderr}")
    objs = objects(out)
    h.check(not [o for o in objs if o.get("metadata", {}).get("name") == "roster-mysql"],
            "no MySQL of the example's own")
    h.eq(list(by_name(objs, "Secret")), ["roster-secrets"], "one Secret")
    secret = by_name(objs, "Secret")["roster-secrets"]
    h.check("stringData" not in secret, "the placeholders are gone")
    got = {key: base64.b64decode(v).decode() for key, v in secret["data"].items()}
    h.eq(got, values, "the Secret is secrets.env")
    for name in ROLES:
        h.eq(container(by_name(objs, "Deployment")[name])["image"],
             "registry.example.com/roster:0.1.0", f"{name}: the image")
    cmds = {c["workload"]: c for c in check_commands(out)}
    _, text = roster_check(cmds["Deployment/roster-controller"]["argv"],
                           cmds["Deployment/roster-controller"]["env"])
    h.check("at mysql.example.internal:3306 with a password" in text, text[-600:])


def overlay(t, name, patch):
    """Renders a kustomization over the builtin overlay with one patch."""
    d = os.path.join(t.tmp, name)
    os.makedirs(d)
    with open(os.path.join(d, "kustomization.yaml"), "w") as f:
        f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"bases:\n  - {os.path.relpath(VARIANTS['builtin'], d)}\n"
                "patchesStrategicMerge:\n  - patch.yaml\n")
    with open(os.path.join(d, "patch.yaml"), "w") as f:
        f.write(patch)
    out = render(d, t.tmp, name)
    h.eq(node("validate", out).returncode, 0, f"{name}: the schemas accept it")
    return out


def env_patch(deployment, container_name, name, value):
    return ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
            f"  name: {deployment}\nspec:\n  template:\n    spec:\n      containers:\n"
            f"        - name: {container_name}\n          env:\n            - name: {name}\n"
            f"              value: {value}\n")


def test_check_rejects_bad_overlays(t):
    """Overlays that render and validate but would not run as meant: the
    command lines extracted from them fail here."""
    # a builtin worker given an upstream: --check refuses the command line
    out = overlay(t, "upstream", env_patch("roster-worker-llm", "worker", "ROSTER_UPSTREAM",
                                           "http://engine:8000/v1"))
    bad = [c for c in commands(out) if c["workload"] == "Deployment/roster-worker-llm"][0]
    code, text = roster_check(bad["argv"], bad["env"])
    h.check(code != 0 and "--upstream" in text, f"--check: {code} {text[-800:]}")
    # a misspelt variable: roster would start, without it
    out = overlay(t, "misspelt", env_patch("roster-apiserver", "apiserver", "ROSTER_CONTROLER_ADDR",
                                           "http://elsewhere:8000"))
    try:
        check_commands(out)
    except h.Failure as e:
        h.check("roster ignores ROSTER_CONTROLER_ADDR" in str(e), str(e))
    else:
        raise h.Failure("a variable that roster does not read went unnoticed")


if __name__ == "__main__":
    h.main(globals())
