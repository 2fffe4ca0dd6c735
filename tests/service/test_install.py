"""`cmake --install` into a temporary DESTDIR, and what it put there: the
binary (which runs), the man page (renders without warnings, and has every
command, every role, every option with its help sentence as --help and
docs/configuration.md say them), the systemd units (`systemd-analyze
verify` accepts them, and they keep their sandbox), the example environment
files (every variable they name is an option of that role), the SQL
migrations (the files of sql/) and the docs.

The layout comes from the build's install-layout.txt (the configured
prefix: /usr for the package, /usr/local by default). The .deb itself is
built and installed on a clean Debian 12 by the container test.
"""
import gzip
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import harness as h  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.dirname(h.BIN)
ROLES = ("controller", "worker", "apiserver", "webserver")
MAN_SECTIONS = {"controller": "ROSTER START CONTROLLER", "worker": "ROSTER START WORKER",
                "apiserver": "ROSTER START APISERVER", "webserver": "ROSTER START WEBSERVER",
                "model": "ROSTER MODEL", "health": "ROSTER HEALTH"}
DOC_SECTIONS = {"controller": "roster start controller", "worker": "roster start worker",
                "apiserver": "roster start apiserver", "webserver": "roster start webserver",
                "model": "roster model", "health": "roster health"}
# what every unit keeps (systemd.exec(5)); a drop-in may relax it per host
HARDENING = ["DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "NoNewPrivileges=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
             "CapabilityBoundingSet=", "SystemCallFilter=@system-service", "LockPersonality=yes",
             "MemoryDenyWriteExecute=yes", "PrivateDevices=yes", "Restart=on-failure",
             "KillSignal=SIGTERM"]
DEFAULT_GRACE_S = 10  # --shutdown_grace_ms of every role


def run(cmd, env=None, timeout=120, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    if ok and r.returncode != 0:
        raise h.Failure(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def layout():
    with open(os.path.join(BUILD, "install-layout.txt")) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


def install(t):
    """Runs cmake --install into t.tmp/root; returns (root, layout)."""
    root = os.path.join(t.tmp, "root")
    run(["cmake", "--install", BUILD], env={"DESTDIR": root})
    return root, layout()


def under(root, path):
    return os.path.join(root, path.lstrip("/"))


def norm(s):
    """Text compared between the man page and the docs: no Markdown code
    marks, whitespace collapsed."""
    return " ".join(s.replace("`", "").split())


def config_doc():
    """docs/configuration.md as `roster config-doc` prints it: for each
    section title, {option: help} and the names its later groups list."""
    out = h.cli(["config-doc"]).stdout
    sections = {}
    cur = None
    for line in out.splitlines():
        if line.startswith("## "):
            cur = sections.setdefault(line[3:], {"options": {}, "grouped": []})
        elif cur is not None and line.startswith("| `--"):
            cells = line.strip().strip("|").split(" | ", 3)
            name = cells[0].strip().strip("`").split()[0][2:]
            cur["options"][name] = cells[3].strip()
        elif cur is not None and line.startswith("--"):
            cur["grouped"] += [n.strip()[2:] for n in line.split(",") if n.strip()]
    return sections


def render_man(root, lay):
    """The installed man page as text (groff, as man(1) runs it); fails on
    any groff warning."""
    path = under(root, lay["mandir"] + "/man1/roster.1.gz")
    with gzip.open(path, "rb") as f:
        roff = f.read()
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P-cbou"], input=roff,
                       capture_output=True, timeout=60)
    h.check(r.returncode == 0 and not r.stderr,
            f"groff: exit {r.returncode}, warnings:\n{r.stderr.decode()}")
    return r.stdout.decode()


def man_sections(text):
    """{".SH title": body text} of the rendered page."""
    sections = {}
    cur = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.upper() == line and "(" not in line:
            cur = sections.setdefault(line.strip(), [])
        elif cur is not None:
            cur.append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def test_files_in_place(t):
    root, lay = install(t)
    binary = under(root, lay["bindir"] + "/roster")
    h.check(os.access(binary, os.X_OK), f"{binary} is not executable")
    r = run([binary, "--version"])
    h.check(re.fullmatch(r"roster \d+\.\d+\.\d+\n", r.stdout), f"--version: {r.stdout!r}")
    h.check(os.path.getsize(under(root, lay["mandir"] + "/man1/roster.1.gz")) > 1000, "man page")
    for role in ROLES:
        h.check(os.path.isfile(under(root, f"{lay['unitdir']}/roster-{role}@.service")),
                f"unit of {role}")
        example = under(root, f"{lay['sysconfdir']}/roster/{role}.env.example")
        h.check(os.path.isfile(example), f"{example}")
        h.eq(os.stat(example).st_mode & 0o777, 0o644, f"{example} mode (an example: no secret)")
    # no real environment file: those hold the secrets and are the admin's
    envs = os.listdir(under(root, lay["sysconfdir"] + "/roster"))
    h.eq(sorted(envs), sorted(f"{r}.env.example" for r in ROLES), "files in /etc/roster")
    # the migrations are exactly sql/
    for backend in ("mysql", "sqlite"):
        src = sorted(f for f in os.listdir(os.path.join(SRC, "sql", backend)) if f.endswith(".sql"))
        dst_dir = under(root, f"{lay['datadir']}/roster/sql/{backend}")
        h.eq(sorted(os.listdir(dst_dir)), src, f"sql/{backend}")
        for f in src:
            with open(os.path.join(SRC, "sql", backend, f), "rb") as a, \
                    open(os.path.join(dst_dir, f), "rb") as b:
                h.check(a.read() == b.read(), f"sql/{backend}/{f} differs")
    doc = under(root, lay["docdir"])
    h.check(os.path.isfile(os.path.join(doc, "README.md")), "README.md")
    for f in os.listdir(os.path.join(SRC, "docs")):
        if f.endswith(".md"):
            h.check(os.path.isfile(os.path.join(doc, "docs", f)), f"docs/{f}")
    # nothing else at the top of the tree than the configured places
    installed = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            installed.add("/" + os.path.relpath(os.path.join(dirpath, f), root))
    places = [lay["bindir"], lay["mandir"], lay["unitdir"], lay["sysconfdir"] + "/roster",
              lay["datadir"] + "/roster/sql", lay["docdir"]]
    stray = [p for p in installed if not any(p.startswith(d + "/") for d in places)]
    h.eq(stray, [], "files outside the layout")


def test_man_page(t):
    root, lay = install(t)
    text = render_man(root, lay)
    secs = man_sections(text)
    for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "CONFIGURATION", "EXIT STATUS",
              "FILES", "SEE ALSO"] + list(MAN_SECTIONS.values()):
        h.check(s in secs, f"man page section {s!r} missing (have {sorted(secs)})")
    # every command of `roster --help`, every role of `roster start --help`,
    # every command of `roster model --help`
    top = h.cli(["--help"]).stdout
    cmds = re.findall(r"^  (\S+)\s", top.split("commands:")[1], re.M)
    h.check({"start", "model", "health"} <= set(cmds), f"commands of roster --help: {cmds}")
    for c in cmds:
        h.check(re.search(rf"^       {re.escape(c)}\b", secs["COMMANDS"], re.M),
                f"command {c} not in COMMANDS")
        h.check(f"roster {c}" in secs["SYNOPSIS"], f"command {c} not in SYNOPSIS")
    roles = re.findall(r"^  (\S+)\s", h.cli(["start", "--help"]).stdout.split("roles:")[1], re.M)
    h.eq(sorted(roles), sorted(ROLES), "roles")
    for role in roles:
        h.check(re.search(rf"^       {role}\b", secs["COMMANDS"], re.M), f"role {role}")
    model_help = h.cli(["model", "--help"]).stdout
    for c in re.findall(r"^  (\S+)\s", model_help.split("commands:")[1], re.M):
        h.check(re.search(rf"^       {c}\b", secs["ROSTER MODEL"], re.M), f"model {c}")
        h.check(f"roster model {c}" in secs["ROSTER MODEL"], f"usage of model {c}")
    # every option of every role and command, with the help sentence of
    # --help and docs/configuration.md
    doc = config_doc()
    for key, title in DOC_SECTIONS.items():
        body = norm(secs[MAN_SECTIONS[key]])
        opts = doc[title]["options"]
        h.check(len(opts) >= 2, f"{title}: options parsed from config-doc: {opts}")
        # --help lists the same options
        args = ["start", key, "--help"] if key in ROLES else [key, "--help"]
        if key == "model":
            args = ["model", "list", "--help"]
        helptext = h.cli(args).stdout
        for name, sentence in opts.items():
            h.check(f"--{name}" in body, f"{title}: --{name} not in the man page")
            h.check(norm(sentence) in body,
                    f"{title}: help of --{name} differs from the docs:\n  {sentence}")
            if key != "model":
                h.check(f"--{name}" in helptext, f"{title}: --{name} not in --help")
        for name in doc[title]["grouped"]:
            h.check(f"--{name}" in body, f"{title}: grouped option --{name} not in the man page")
    # man(1) itself finds and renders it, where Debian's man-db is installed
    if shutil.which("man"):
        r = run(["man", "-l", under(root, lay["mandir"] + "/man1/roster.1.gz")],
                env={"MANPAGER": "cat", "MANWIDTH": "80"})
        h.check("ROSTER START CONTROLLER" in r.stdout, "man -l renders the page")


def verify_root(t, root):
    """A copy of the install tree with the host's targets, which units
    depend on implicitly (systemd-analyze --root checks dependencies inside
    the root)."""
    vroot = os.path.join(t.tmp, "verify-root")
    shutil.copytree(root, vroot, symlinks=True)
    targets = os.path.join(vroot, "lib/systemd/system")
    os.makedirs(targets, exist_ok=True)
    for d in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if os.path.isdir(d):
            for f in os.listdir(d):
                if f.endswith(".target") and not os.path.exists(os.path.join(targets, f)):
                    shutil.copy(os.path.join(d, f), targets, follow_symlinks=True)
    return vroot


def test_units_verify(t):
    h.check(shutil.which("systemd-analyze"), "systemd-analyze is missing (scripts/deps.sh test)")
    root, lay = install(t)
    vroot = verify_root(t, root)
    env = {"MANPATH": under(vroot, lay["mandir"]), "SYSTEMD_LOG_LEVEL": "notice"}
    for role in ROLES:
        unit = f"roster-{role}@main.service"
        r = run(["systemd-analyze", "verify", f"--root={vroot}", unit], env=env, ok=False)
        h.check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
                f"systemd-analyze verify {unit}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    # and the check can fail: a unit whose binary is missing
    os.unlink(under(vroot, lay["bindir"] + "/roster"))
    r = run(["systemd-analyze", "verify", f"--root={vroot}", "roster-worker@main.service"],
            env=env, ok=False)
    h.check(r.returncode != 0 and "roster" in r.stderr, f"verify without the binary: {r.stderr}")


def test_units_content(t):
    root, lay = install(t)
    for role in ROLES:
        path = under(root, f"{lay['unitdir']}/roster-{role}@.service")
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        h.check(f"ExecStart={lay['bindir']}/roster start {role}" in lines, f"{role}: ExecStart")
        h.check(f"EnvironmentFile={lay['sysconfdir']}/roster/{role}-%i.env" in lines,
                f"{role}: EnvironmentFile")
        for want in HARDENING:
            h.check(want in lines, f"{role}: {want} missing")
        # one state directory per role and name: controller@main and
        # webserver@main run as different dynamic users
        h.check(f"StateDirectory=roster/{role}-%i" in lines, f"{role}: StateDirectory")
        h.check(f"WorkingDirectory=%S/roster/{role}-%i" in lines, f"{role}: WorkingDirectory")
        stop = [ln for ln in lines if ln.startswith("TimeoutStopSec=")]
        h.check(len(stop) == 1, f"{role}: TimeoutStopSec")
        secs = int(stop[0].split("=")[1].rstrip("s"))
        h.check(secs > DEFAULT_GRACE_S, f"{role}: TimeoutStopSec={secs} under the drain grace")
        h.check("[Install]" in lines and "WantedBy=multi-user.target" in lines, f"{role}: Install")
        h.check(not any("@CMAKE" in ln or "@ROSTER" in ln for ln in lines),
                f"{role}: unsubstituted variable")
    webserver = open(under(root, f"{lay['unitdir']}/roster-webserver@.service")).read()
    h.check("Environment=ROSTER_DATA_DIR=%S/roster/webserver-%i" in webserver, "webserver: data dir")


def test_env_examples_name_real_options(t):
    """Every ROSTER_* variable an example file sets (or shows commented out)
    is an option of that role (the webserver also takes the apiserver's and
    the controller's)."""
    root, lay = install(t)
    doc = h.cli(["config-doc"]).stdout
    envs = {}
    cur = None
    for line in doc.splitlines():
        if line.startswith("## roster start "):
            cur = envs.setdefault(line.split()[-1], set())
        elif cur is not None and line.startswith("| `--"):
            cur.update(re.findall(r"[A-Z][A-Z0-9_]+", line.split(" | ")[2]))
    envs["webserver"] |= envs["apiserver"] | envs["controller"]
    for role in ROLES:
        path = under(root, f"{lay['sysconfdir']}/roster/{role}.env.example")
        with open(path) as f:
            text = f.read()
        named = set(re.findall(r"^#?(ROSTER_[A-Z0-9_]+)=", text, re.M))
        h.check(len(named) >= 8, f"{role}: only {sorted(named)}")
        unknown = sorted(n for n in named if n not in envs[role])
        h.eq(unknown, [], f"{role}.env.example names variables that are no option of {role}")
        # assignments are KEY=VALUE lines systemd reads: no export, no spaces around =
        for line in text.splitlines():
            s = line.lstrip("#")
            if re.match(r"[A-Z_]+=", s):
                h.check(" =" not in s and not s.startswith("export"), f"{role}: {line!r}")
        h.check("0600" in text, f"{role}: the example says the real file is mode 0600")


h.main(globals())
