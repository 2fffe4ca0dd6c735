"""compose/k8s run for real: `podman kube play` of the rendered manifests.

For each variant (the base, whose workers proxy an OpenAI-compatible engine,
and the builtin overlay), the test:
1. renders it with a test overlay (tests/k8s/podman/patch.yaml.in): every pod
   on the host's network, listening on 127.0.0.1 only, on free loopback
   ports; the registry in a private MariaDB (the "external database" of
   docs/deployment.md: podman plays no StatefulSet); the engine of the base
   variant a roster webserver on the host holding the builtin models under
   OpenAI's names and requiring OPENAI_API_KEY; secrets of its own. The
   result must still validate (tests/k8s/manifests.mjs);
2. adapts what podman 4.3 cannot play: the two controller replicas become two
   pods on two ports (replicas on one host network would share a port); the
   Secret becomes a podman secret (its kube play stores Secrets in a form its
   secretKeyRef cannot read); ports and named probe ports become numbers
   (podman refuses port mappings on the host's network); Services, the
   PodDisruptionBudget and the StatefulSet are left out;
3. `podman kube play`, then every pod ready (its readiness probe, asked by the
   test: podman 4.3 turns httpGet probes into curl health checks inside the
   container, which roster's image has no curl for, and runs them only with
   systemd), no restarts;
4. chat completions (plain and streamed) and embeddings through the apiserver
   and through the webserver, with the API key from the Secret (and 401
   without); `roster model list` through both controllers (and inside the
   apiserver's container) shows every instance healthy; (builtin variant)
   one controller's pod stopped: no request fails, the other lists every
   instance healthy, and it comes back when started; every container runs as
   the pod's securityContext says (read from /proc);
5. `podman kube down`, and nothing of it left (pods, containers, secret).
Every step is timed.

Needs root, podman, runc, catatonit, kubectl, node with `npm ci` in
tests/k8s, MariaDB (tests/lib/mariadb.sh; or ROSTER_TEST_MARIADB_ENV from the
ctest fixture), and roster's image (ROSTER_K8S_IMAGE, default roster:local:
see ensure_image() for where it comes from).
"""
import atexit
import base64
import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VARIANTS = {"base": os.path.join(ROOT, "compose", "k8s", "base"),
            "builtin": os.path.join(ROOT, "compose", "k8s", "overlays", "builtin")}
KUBECTL = os.environ.get("ROSTER_KUBECTL") or shutil.which("kubectl") or "kubectl"
IMAGE = os.environ.get("ROSTER_K8S_IMAGE", "roster:local")
PLAYABLE = ("ConfigMap", "Deployment")  # what this test gives podman 4.3
ROLE_PORTS = {"roster-controller": "CONTROLLER_PORT", "roster-worker-llm": "LLM_PORT",
              "roster-worker-embedding": "EMBEDDING_PORT", "roster-apiserver": "APISERVER_PORT",
              "roster-webserver": "WEBSERVER_PORT"}
READY_S = 90  # every pod ready, on a busy 2-core machine

_setup = {}
TIMES = []


def timed(what, fn, *a, **kw):
    t0 = time.monotonic()
    try:
        return fn(*a, **kw)
    finally:
        dt = time.monotonic() - t0
        TIMES.append((what, dt))
        print(f"    [{dt:6.1f}s] {what}", flush=True)


def run(cmd, timeout=120, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise h.Failure(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return r


# ---- podman ----------------------------------------------------------------------

def podman_env():
    """podman's settings for this machine, in a containers.conf of the test's
    own: runc, cgroupfs, and ulimits within the hard limits of this process
    (podman's defaults ask for more than these machines allow)."""
    if "env" not in _setup:
        d = tempfile.mkdtemp(prefix="roster-podman-conf-")
        atexit.register(shutil.rmtree, d, True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nofile = 20000 if nofile == resource.RLIM_INFINITY else min(nofile, 20000)
        # runc could not set more than 32768 processes here (hard limit 96367)
        nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
        conf = os.path.join(d, "containers.conf")
        with open(conf, "w") as f:
            f.write("[containers]\n"
                    f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    "[engine]\n"
                    'cgroup_manager = "cgroupfs"\n'
                    'runtime = "runc"\n'
                    'events_logger = "file"\n')
        _setup["env"] = dict(os.environ, CONTAINERS_CONF=conf)
    return _setup["env"]


def podman(*args, timeout=120, check=True):
    return run(["podman"] + list(args), timeout=timeout, check=check, env=podman_env())


def ensure_image():
    """The image in podman's storage, as fresh as can be had: a `docker save`
    archive (ROSTER_K8S_IMAGE_ARCHIVE), else Docker's copy (when a Docker
    daemon answers), else podman's own, else built by podman from
    compose/Dockerfile (debian:12 from the Docker test's cached debootstrap,
    $ROSTER_DOCKER_CACHE/debian-12-minbase.tar)."""
    if "image" in _setup:
        return _setup["image"]
    archive = os.environ.get("ROSTER_K8S_IMAGE_ARCHIVE")
    docker = shutil.which("docker")
    if archive:
        timed(f"podman load -i {archive}", podman, "load", "-i", archive, timeout=300)
    elif docker and run([docker, "image", "inspect", IMAGE], check=False).returncode == 0:
        def load():
            save = subprocess.Popen([docker, "save", IMAGE], stdout=subprocess.PIPE)
            r = subprocess.run(["podman", "load"], stdin=save.stdout, capture_output=True,
                               text=True, timeout=300, env=podman_env())
            save.stdout.close()
            h.eq(save.wait(300), 0, "docker save")
            h.eq(r.returncode, 0, f"podman load: {r.stderr}")
        timed(f"docker save {IMAGE} | podman load", load)
    elif podman("image", "exists", IMAGE, check=False).returncode != 0:
        if podman("image", "exists", "debian:12", check=False).returncode != 0:
            tar = os.path.join(os.environ.get("ROSTER_DOCKER_CACHE", "/var/cache/roster-test"),
                               "debian-12-minbase.tar")
            if not os.path.exists(tar):
                raise h.Failure(f"no image {IMAGE} (in podman or Docker), no debian:12 and no {tar}: "
                                "run tests/docker/run.sh first, or build the image")
            timed("podman import debian:12", podman, "import", "--change",
                  "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "--change", 'CMD ["bash"]', tar, "debian:12", timeout=300)
        timed(f"podman build -f compose/Dockerfile -t {IMAGE}", podman, "build", "--network", "host",
              "-f", os.path.join(ROOT, "compose", "Dockerfile"), "-t", IMAGE, ROOT, timeout=1800)
    r = podman("image", "inspect", IMAGE, "--format", "{{.Id}} created {{.Created}} size {{.Size}}")
    print(f"    image {IMAGE}: {r.stdout.strip()}")
    _setup["image"] = IMAGE
    return IMAGE


def ensure_mariadb():
    """The MariaDB of the ctest fixture, or one of the test's own."""
    if not os.environ.get("ROSTER_TEST_MARIADB_ENV"):
        d = tempfile.mkdtemp(prefix="roster-k8s-mariadb-")
        script = os.path.join(ROOT, "tests", "lib", "mariadb.sh")
        timed("MariaDB started", run, [script, "start", d], timeout=120)

        def stop():
            run([script, "stop", d], check=False)
            shutil.rmtree(d, ignore_errors=True)
        atexit.register(stop)
        os.environ["ROSTER_TEST_MARIADB_ENV"] = os.path.join(d, "env")
    return h.mariadb()


# ---- the manifests ---------------------------------------------------------------

def node(*args):
    return run(["node", os.path.join(HERE, "manifests.mjs")] + list(args))


def render(t, variant, values):
    d = os.path.join(t.tmp, "overlay")
    os.makedirs(d)
    with open(os.path.join(HERE, "podman", "patch.yaml.in")) as f:
        patch = f.read()
    for k, v in values.items():
        patch = patch.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", patch)
    h.check(not left, f"unfilled in the test overlay: {left}")
    name, _, tag = ensure_image().rpartition(":")
    with open(os.path.join(d, "patch.yaml"), "w") as f:
        f.write(patch)
    with open(os.path.join(d, "kustomization.yaml"), "w") as f:
        f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"bases:\n  - {os.path.relpath(VARIANTS[variant], d)}\n"
                f"images:\n  - name: roster\n    newName: {name}\n    newTag: \"{tag}\"\n"
                "patchesStrategicMerge:\n  - patch.yaml\n")
    r = run([KUBECTL, "kustomize", d])
    out = os.path.join(t.tmp, "rendered.yaml")
    with open(out, "w") as f:
        f.write(r.stdout)
    v = node("validate", out, "--test-secrets")
    h.check(" 0 problems" in v.stdout, f"the test overlay is not valid Kubernetes:\n{v.stdout}")
    return json.loads(node("json", out).stdout)


def numeric_probe_ports(c):
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = (c.get(probe) or {}).get("httpGet")
        if get and isinstance(get.get("port"), str):
            h.check(get["port"] in ports, f"{c['name']}: {probe} names port {get['port']}")
            get["port"] = ports[get["port"]]


def set_port(deployment, port):
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    for e in c["env"]:
        if e["name"] == "ROSTER_PORT":
            e["value"] = str(port)
    for p in c["ports"]:
        p["containerPort"] = port


def for_podman(objs, b_ports):
    """(objects podman 4.3 plays, {Secret name: its values}, what was left out)."""
    out, secrets_, left_out = [], {}, []
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        if kind == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
            values.update(o.get("stringData") or {})
            secrets_[name] = values
            continue
        if kind not in PLAYABLE:
            left_out.append(f"{kind}/{name}")
            continue
        out.append(o)
        if kind == "Deployment" and o["spec"].get("replicas", 1) > 1:
            n = o["spec"]["replicas"]
            h.check(n - 1 <= len(b_ports), f"{name}: {n} replicas, ports for {len(b_ports) + 1}")
            o["spec"]["replicas"] = 1
            for i in range(1, n):
                twin = json.loads(json.dumps(o))
                twin["metadata"]["name"] = f"{name}-{chr(ord('a') + i)}"
                set_port(twin, b_ports[i - 1])
                out.append(twin)
    for o in out:
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                numeric_probe_ports(c)
                c.pop("ports", None)
    return out, secrets_, left_out


def readiness_url(deployment):
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    get = c["readinessProbe"]["httpGet"]
    return f"http://127.0.0.1:{get['port']}{get['path']}"


# ---- the checks ------------------------------------------------------------------

def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def wait_models(url, key, want):
    def listed():
        r = h.request("GET", url + "/v1/models", headers=bearer(key))
        return r.status == 200 and set(want) <= {m["id"] for m in r.json()["data"]}
    h.wait_until(listed, 30, 0.2, what=f"{url} to list {want}")


def chat_and_embed(url, key, llm, embedding):
    msgs = [{"role": "user", "content": "How does a worker register?"}]
    r = h.request("POST", url + "/v1/chat/completions", {"model": llm, "messages": msgs},
                  headers=bearer(key), timeout=30)
    h.eq(r.status, 200, f"{url} chat: {r}")
    text = r.json()["choices"][0]["message"]["content"]
    h.check(text.strip(), f"{url}: an empty answer")
    r = h.request("POST", url + "/v1/chat/completions",
                  {"model": llm, "messages": msgs, "stream": True}, headers=bearer(key), timeout=30)
    h.eq(r.status, 200, f"{url} stream: {r}")
    events = [ln[6:] for ln in r.body.decode().splitlines() if ln.startswith("data: ")]
    h.check(events and events[-1] == "[DONE]", f"{url} stream ends with [DONE]: {events[-3:]}")
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    h.check(len(chunks) > 1 and streamed.strip(), f"{url}: streamed {len(chunks)} chunks")
    r = h.request("POST", url + "/v1/embeddings", {"model": embedding, "input": ["a", "b"]},
                  headers=bearer(key), timeout=30)
    h.eq(r.status, 200, f"{url} embeddings: {r}")
    vecs = [d["embedding"] for d in r.json()["data"]]
    h.check(len(vecs) == 2 and len(vecs[0]) > 0, f"{url}: {len(vecs)} vectors")
    r = h.request("POST", url + "/v1/chat/completions", {"model": llm, "messages": msgs})
    h.eq(r.status, 401, f"{url} without the API key")


def model_list(controllers, secret):
    r = h.cli(["model", "list", "--json"],
              env={"CONTROLLER_ADDRESS": controllers, "ROSTER_CLUSTER_SECRET": secret})
    h.eq(r.returncode, 0, f"roster model list: {r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def controller_outage(p, values, api, llm):
    """The first controller's pod stopped (SIGTERM: it drains): requests keep
    succeeding, the second controller lists every instance healthy (the
    workers' heartbeats fail over along CONTROLLER_ADDRESS); started again,
    it answers again."""
    a = f"http://127.0.0.1:{p['CONTROLLER_PORT']}"
    b = f"http://127.0.0.1:{p['CONTROLLER_B_PORT']}"
    podman("pod", "stop", "-t", "15", "roster-controller-pod-0", timeout=60)
    failed = 0
    msgs = [{"role": "user", "content": "hello"}]
    for _ in range(20):
        r = h.request("POST", api + "/v1/chat/completions", {"model": llm, "messages": msgs},
                      headers=bearer(values["API_KEY"]), timeout=30)
        failed += r.status != 200
    h.eq(failed, 0, "requests failed while a controller was down")
    items = model_list(b, values["CLUSTER_SECRET"])
    h.check(len(items) == 4 and all(i["healthy"] for i in items), f"through {b}: {items}")
    podman("pod", "start", "roster-controller-pod-0", timeout=60)
    h.wait_until(lambda: h.request("GET", a + "/api/health", timeout=3).status == 200, 30, 0.25,
                 what="the restarted controller's health")
    h.eq(len(model_list(a, values["CLUSTER_SECRET"])), 4, f"through {a} again")


def containers_state(names):
    states = {}
    for n in names:
        r = podman("inspect", n, "--format", "{{.State.Status}} {{.RestartCount}}", check=False)
        states[n] = r.stdout.strip() if r.returncode == 0 else "missing"
    return states


def security(name):
    """What the kernel says about a container's main process: uid, effective
    capabilities, no_new_privs, and whether its root file system is read-only."""
    pid = podman("inspect", name, "--format", "{{.State.Pid}}").stdout.strip()
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    with open(f"/proc/{pid}/mountinfo") as f:
        root = [ln.split() for ln in f if ln.split()[4] == "/"]
    return {"uid": status["Uid"].split()[0], "CapEff": status["CapEff"],
            "NoNewPrivs": status.get("NoNewPrivs"), "root": root[-1][5].split(",")[0] if root else "?"}


def ours(listing):
    return [x for x in listing.split() if x.startswith("roster-")]


def run_variant(t, variant):
    ensure_image()
    m = ensure_mariadb()
    db = t.mysql_database()
    p = dict(zip(["CONTROLLER_PORT", "CONTROLLER_B_PORT", "LLM_PORT", "EMBEDDING_PORT",
                  "APISERVER_PORT", "WEBSERVER_PORT"], h.free_ports(6)))
    values = dict(p, DB_USER=m["user"], DB_PORT=m["port"], DB_NAME=db, DB_PASSWORD=m["password"],
                  CLUSTER_SECRET=secrets.token_hex(16), API_KEY="sk-" + secrets.token_hex(12),
                  OPENAI_API_KEY="sk-engine-" + secrets.token_hex(12), UPSTREAM_PORT=1)
    llm, embedding = ("gpt-4o", "text-embedding-3-small") if variant == "base" else \
        ("roster-chat", "roster-embed")
    if variant == "base":
        # the engine: OpenAI's model names, and OPENAI_API_KEY required
        up = timed("engine (a roster webserver) started", t.start, "engine", [
            "start", "webserver", "--host", "127.0.0.1", "--data_dir", os.path.join(t.tmp, "engine"),
            "--model_name", llm, "--embedding_model", embedding,
            "--api_keys", values["OPENAI_API_KEY"]])
        values["UPSTREAM_PORT"] = up.port
    objs = timed(f"{variant}: kustomize + validate", render, t, variant, values)
    objs, podman_secrets, left_out = for_podman(objs, [p["CONTROLLER_B_PORT"]])
    print(f"    left out for podman: {', '.join(left_out)}")
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    h.eq(sorted(d["metadata"]["name"] for d in deployments),
         sorted(list(ROLE_PORTS) + ["roster-controller-b"]), "the pods to play")
    play = os.path.join(t.tmp, "play.yaml")
    with open(play, "w") as f:
        f.write("\n---\n".join(json.dumps(o, indent=1) for o in objs) + "\n")
    names = [f"{d['metadata']['name']}-pod-0-{d['spec']['template']['spec']['containers'][0]['name']}"
             for d in deployments]
    podman("kube", "down", play, check=False)  # what a failed run may have left
    for s in podman_secrets:
        podman("secret", "rm", s, check=False)
    try:
        for s, kv in podman_secrets.items():
            # podman 4.3's secretKeyRef reads a JSON object of base64 values
            f = os.path.join(t.tmp, "secret.json")
            with open(f, "w") as out:
                json.dump({k: base64.b64encode(v.encode()).decode() for k, v in kv.items()}, out)
            podman("secret", "create", s, f)
            os.unlink(f)
        timed(f"{variant}: podman kube play", podman, "kube", "play", "--replace", play, timeout=180)

        def all_ready():
            for d in deployments:
                try:
                    if h.request("GET", readiness_url(d), timeout=3).status != 200:
                        return False
                except OSError:
                    return False
            return True
        try:
            timed(f"{variant}: every pod ready", h.wait_until, all_ready, READY_S, 0.25,
                  "every pod's readiness probe")
        except h.Failure:
            raise h.Failure(f"not ready: {containers_state(names)}")
        ctl = f"http://127.0.0.1:{p['CONTROLLER_PORT']},http://127.0.0.1:{p['CONTROLLER_B_PORT']}"
        api = f"http://127.0.0.1:{p['APISERVER_PORT']}"
        web = f"http://127.0.0.1:{p['WEBSERVER_PORT']}"

        def checks():
            for url in (api, web):
                wait_models(url, values["API_KEY"], [llm, embedding])
                chat_and_embed(url, values["API_KEY"], llm, embedding)
        timed(f"{variant}: chat, stream and embeddings through the apiserver and the webserver",
              checks)
        for one in ctl.split(","):
            items = model_list(one, values["CLUSTER_SECRET"])
            got = sorted((i["model_name"], i["port"], i["healthy"]) for i in items)
            want = sorted([(f"{llm}@llm", p["LLM_PORT"], True),
                           (f"{embedding}@text2vec", p["EMBEDDING_PORT"], True),
                           ("WorkerManager@service", p["LLM_PORT"], True),
                           ("WorkerManager@service", p["EMBEDDING_PORT"], True)])
            h.eq(got, want, f"roster model list through {one}")
            h.check(all(i["host"] == "127.0.0.1" for i in items), f"registered hosts: {items}")
        # as docs/deployment.md says: `kubectl exec deploy/roster-apiserver -- roster model
        # list` needs nothing more than the container's environment
        r = podman("exec", "roster-apiserver-pod-0-apiserver", "roster", "model", "list", "--json")
        h.eq(sorted((i["model_name"], i["healthy"]) for i in json.loads(r.stdout)),
             sorted((m, True) for m, _, _ in want), "roster model list in the apiserver's container")
        if variant == "builtin":
            timed("a controller stopped: zero failed requests, then back", controller_outage,
                  p, values, api, llm)
        for n in names:
            sec = security(n)
            h.eq(sec, {"uid": "10001", "CapEff": "0000000000000000", "NoNewPrivs": "1", "root": "ro"},
                 f"{n}: the pod's securityContext, applied")
        states = containers_state(names)
        h.check(all(s == "running 0" for s in states.values()), f"running, never restarted: {states}")
    finally:
        for n in names:
            with open(os.path.join(t.tmp, f"{n}.log"), "w") as f:
                r = podman("logs", n, check=False)
                f.write(r.stdout + r.stderr)
        down = timed(f"{variant}: podman kube down", podman, "kube", "down", play, check=False,
                     timeout=180)
        for s in podman_secrets:
            podman("secret", "rm", s, check=False)
    h.eq(down.returncode, 0, f"podman kube down: {down.stderr}")
    left = (ours(podman("pod", "ps", "--format", "{{.Name}}").stdout)
            + ours(podman("ps", "-a", "--format", "{{.Names}}").stdout)
            + [s for s in podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
               if s in podman_secrets])
    h.eq(left, [], "left behind by podman kube down")
    if variant == "base":
        r = h.request("GET", f"http://127.0.0.1:{values['UPSTREAM_PORT']}/metrics")
        served = re.findall(r'roster_api_model_requests_total\{model="([^"]+)"\} (\d+)', r.body.decode())
        h.check(any(int(n) > 0 for _, n in served), f"the engine was asked: {served}")


def test_builtin_overlay(t):
    run_variant(t, "builtin")


def test_base_with_an_engine(t):
    run_variant(t, "base")


if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        h.main(globals())
    finally:
        print(f"timings (total {time.monotonic() - t0:.1f}s):")
        for what, dt in TIMES:
            print(f"  {dt:6.1f}s  {what}")
