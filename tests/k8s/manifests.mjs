// Checks rendered Kubernetes manifests (the output of `kubectl kustomize`)
// and extracts what the other tests need from them.
//
//   node manifests.mjs validate FILE... [--test-secrets]
//       every object against the Kubernetes schemas of the kubernetes-models
//       package (its .validate()), plus what those schemas let through:
//       fields that do not exist (a misspelt `readinesProbe` is not an error
//       to .validate(); here it is, from the package's type declarations),
//       and roster's rules for its manifests (probes, resources, security
//       context, references between objects). Secrets must hold
//       placeholders (CHANGE-ME...) unless --test-secrets.
//       Prints one line per problem (after "FILE: " when there are several
//       files); exit 1 if any.
//   node manifests.mjs commands FILE
//       JSON: for every container running the roster image, its argv
//       (ENTRYPOINT roster + args) and its environment as the kubelet would
//       build it (ConfigMap and Secret references resolved; status.podIP is
//       192.0.2.10, a documentation address nothing is sent to).
//   node manifests.mjs json FILE
//       JSON: the objects, in order.
//
// Exit status: 0 ok, 1 problems found, 2 usage or unreadable input.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const POD_IP = "192.0.2.10";
// The packages' files are read as well as imported (their type declarations),
// from the node_modules that `npm ci` made next to this file or above it
// (found by hand: import.meta.resolve needs Node 20).
const NODE_MODULES = (() => {
    for (let d = dirname(fileURLToPath(import.meta.url)); ; d = dirname(d)) {
        if (existsSync(join(d, "node_modules", "kubernetes-models", "package.json"))) {
            return join(d, "node_modules");
        }
        if (dirname(d) === d) {
            console.error("manifests.mjs: kubernetes-models is not installed (npm ci in tests/k8s)");
            process.exit(2);
        }
    }
})();
const ROSTER_UID = 10001;

function die(msg) {
    console.error(`manifests.mjs: ${msg}`);
    process.exit(2);
}

function loadObjects(file) {
    let text;
    try {
        text = readFileSync(file, "utf8");
    } catch (e) {
        die(`${file}: ${e.message}`);
    }
    const objects = [];
    for (const doc of parseAllDocuments(text, { uniqueKeys: true })) {
        if (doc.errors.length) {
            die(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
        }
        const obj = doc.toJS();
        if (obj !== null && obj !== undefined) {
            objects.push(obj);
        }
    }
    return objects;
}

const idOf = (o) => `${o?.kind ?? "?"}/${o?.metadata?.name ?? "?"}`;

// ---- the kubernetes-models classes --------------------------------------------

// "apps/v1" -> the module kubernetes-models/apps/v1 (core "v1": kubernetes-models/v1)
async function modelModule(apiVersion) {
    if (typeof apiVersion !== "string" || !/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)) {
        return null;
    }
    const spec = `kubernetes-models/${apiVersion}`;
    try {
        return { mod: await import(spec), dir: join(NODE_MODULES, spec) };
    } catch {
        return null;
    }
}

// ---- unknown fields, from the package's type declarations ----------------------
//
// Every model has a generated .d.ts: `export interface IName { "field"?: TYPE; ... }`
// whose TYPEs are string, number, boolean, string literals, Array<T>,
// `{ [key: string]: T; }` or interfaces imported from other .d.ts files (or
// type aliases such as Quantity = number | string). That is enough to list
// the fields each object may have.

const dtsCache = new Map();

function resolveImport(fromFile, spec) {
    if (spec.startsWith(".")) {
        return resolve(dirname(fromFile), spec.replace(/\.js$/, "") + ".d.ts");
    }
    return join(NODE_MODULES, spec) + ".d.ts";
}

function parseDts(file) {
    if (dtsCache.has(file)) {
        return dtsCache.get(file);
    }
    const text = readFileSync(file, "utf8");
    const imports = new Map();
    for (const m of text.matchAll(/^import \{([^}]+)\} from "([^"]+)";$/gm)) {
        for (const part of m[1].split(",")) {
            const names = part.trim().split(/\s+as\s+/);
            const local = names[names.length - 1];
            if (local && !m[2].startsWith("@kubernetes-models/base")) {
                imports.set(local, resolveImport(file, m[2]));
            }
        }
    }
    let props = null;
    const lines = text.split("\n");
    const start = lines.findIndex((l) => /^export interface \w+( extends [^{]+)? \{$/.test(l));
    if (start >= 0) {
        props = new Map();
        for (let i = start + 1; i < lines.length && lines[i] !== "}"; i++) {
            const m = /^ {4}"([^"]+)"\??: (.*)$/.exec(lines[i]);
            if (!m) {
                continue;
            }
            let type = m[2];
            if (type === "{") { // a map type spans lines up to "    };"
                while (i + 1 < lines.length && lines[i] !== "    };") {
                    type += " " + lines[++i].trim();
                }
            }
            props.set(m[1], type.replace(/;$/, "").trim());
        }
    }
    const parsed = { file, imports, props };
    dtsCache.set(file, parsed);
    return parsed;
}

function unknownFields(value, type, dts, path, out) {
    if (value === null || value === undefined) {
        return;
    }
    let m;
    if ((m = /^Array<(.+)>$/.exec(type))) {
        if (Array.isArray(value)) {
            value.forEach((v, i) => unknownFields(v, m[1], dts, `${path}[${i}]`, out));
        }
        return;
    }
    if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
        if (typeof value === "object" && !Array.isArray(value)) {
            for (const [k, v] of Object.entries(value)) {
                unknownFields(v, m[1], dts, `${path}.${k}`, out);
            }
        }
        return;
    }
    if (!/^\w+$/.test(type) || !dts.imports.has(type)) {
        return; // scalars, literal unions, aliases of scalars: .validate() checks them
    }
    const target = parseDts(dts.imports.get(type));
    checkFields(value, target, path, out);
}

function checkFields(value, dts, path, out) {
    if (!dts.props || typeof value !== "object" || Array.isArray(value)) {
        return;
    }
    for (const [k, v] of Object.entries(value)) {
        const type = dts.props.get(k);
        if (type === undefined) {
            out.push(`${path}.${k}: no such field`);
        } else {
            unknownFields(v, type, dts, `${path}.${k}`, out);
        }
    }
}

// ---- roster's rules ------------------------------------------------------------

const isRosterImage = (image) =>
    typeof image === "string" && /(^|\/)roster(:[^/]*)?$/.test(image.replace(/@sha256:.*$/, ""));

function podTemplate(o) {
    return ["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind) ? o.spec?.template : null;
}

function labelsMatch(selector, labels) {
    return !!selector && Object.keys(selector).length > 0 &&
        Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function secretValues(secret) {
    const out = {};
    for (const [k, v] of Object.entries(secret.data ?? {})) {
        out[k] = Buffer.from(String(v), "base64").toString("utf8");
    }
    return Object.assign(out, secret.stringData ?? {});
}

function rosterRules(objects, opts, out) {
    const configMaps = new Map();
    const secrets = new Map();
    for (const o of objects) {
        if (o.kind === "ConfigMap") {
            configMaps.set(o.metadata?.name, o.data ?? {});
        } else if (o.kind === "Secret") {
            secrets.set(o.metadata?.name, secretValues(o));
            if (!opts.testSecrets) {
                for (const [k, v] of Object.entries(secretValues(o))) {
                    if (!String(v).startsWith("CHANGE-ME")) {
                        out.push(`${idOf(o)}: ${k} is not a CHANGE-ME placeholder (no real secret in a manifest)`);
                    }
                }
            }
        }
    }
    const workloads = objects.filter(podTemplate);
    for (const o of workloads) {
        const id = idOf(o);
        const tpl = podTemplate(o);
        const spec = tpl?.spec ?? {};
        if (!labelsMatch(o.spec?.selector?.matchLabels, tpl?.metadata?.labels)) {
            out.push(`${id}: spec.selector.matchLabels does not select the pod template's labels`);
        }
        if (spec.enableServiceLinks !== false) {
            out.push(`${id}: enableServiceLinks must be false (a Service named roster would set ROSTER_PORT)`);
        }
        if (spec.securityContext?.runAsNonRoot !== true) {
            out.push(`${id}: securityContext.runAsNonRoot must be true`);
        }
        for (const c of spec.containers ?? []) {
            const cid = `${id} container ${c.name}`;
            const roster = isRosterImage(c.image);
            const sc = c.securityContext ?? {};
            if (sc.allowPrivilegeEscalation !== false) {
                out.push(`${cid}: securityContext.allowPrivilegeEscalation must be false`);
            }
            if (!(sc.capabilities?.drop ?? []).includes("ALL")) {
                out.push(`${cid}: securityContext.capabilities.drop must include ALL`);
            }
            for (const kind of ["requests", "limits"]) {
                for (const r of ["cpu", "memory"]) {
                    if (c.resources?.[kind]?.[r] === undefined) {
                        out.push(`${cid}: resources.${kind}.${r} is missing`);
                    }
                }
            }
            for (const e of c.env ?? []) {
                const cm = e.valueFrom?.configMapKeyRef;
                const sk = e.valueFrom?.secretKeyRef;
                const ref = cm ?? sk;
                if (ref && !ref.optional) {
                    const store = (cm ? configMaps : secrets).get(ref.name);
                    if (!store) {
                        out.push(`${cid}: env ${e.name} names ${cm ? "ConfigMap" : "Secret"} ${ref.name}, which is not in the manifests`);
                    } else if (!(ref.key in store)) {
                        out.push(`${cid}: env ${e.name} names key ${ref.key} of ${ref.name}, which has no such key`);
                    }
                }
            }
            if (!roster) {
                continue;
            }
            const uid = sc.runAsUser ?? spec.securityContext?.runAsUser;
            if (uid !== ROSTER_UID) {
                out.push(`${cid}: runs as uid ${uid}, not roster's ${ROSTER_UID}`);
            }
            if (sc.readOnlyRootFilesystem !== true) {
                out.push(`${cid}: securityContext.readOnlyRootFilesystem must be true`);
            }
            const ports = c.ports ?? [];
            for (const p of ["readinessProbe", "livenessProbe"]) {
                const get = c[p]?.httpGet;
                if (!get || get.path !== "/api/health") {
                    out.push(`${cid}: ${p} must be an httpGet of /api/health`);
                    continue;
                }
                const known = ports.some((q) => q.name === get.port || q.containerPort === get.port);
                if (!known) {
                    out.push(`${cid}: ${p} port ${get.port} is not a port of the container`);
                }
            }
        }
    }
    for (const o of objects) {
        const id = idOf(o);
        if (o.kind === "Service") {
            const targets = workloads.filter((w) => labelsMatch(o.spec?.selector, podTemplate(w).metadata?.labels));
            if (targets.length === 0) {
                out.push(`${id}: its selector matches no workload`);
            }
            for (const p of o.spec?.ports ?? []) {
                const tp = p.targetPort ?? p.port;
                for (const w of targets) {
                    const ok = (podTemplate(w).spec?.containers ?? []).some((c) =>
                        (c.ports ?? []).some((q) => q.name === tp || q.containerPort === tp));
                    if (!ok) {
                        out.push(`${id}: targetPort ${tp} is not a port of ${idOf(w)}`);
                    }
                }
            }
        } else if (o.kind === "PodDisruptionBudget") {
            const targets = workloads.filter((w) =>
                labelsMatch(o.spec?.selector?.matchLabels, podTemplate(w).metadata?.labels));
            if (targets.length === 0) {
                out.push(`${id}: its selector matches no workload`);
            }
            for (const w of targets) {
                const min = o.spec?.minAvailable;
                if (typeof min === "number" && (w.spec?.replicas ?? 1) <= min) {
                    out.push(`${id}: minAvailable ${min} leaves no disruption to ${idOf(w)} (replicas ${w.spec?.replicas ?? 1})`);
                }
            }
        }
    }
}

async function validate(objects, opts) {
    const out = [];
    for (const o of objects) {
        const id = idOf(o);
        const found = await modelModule(o?.apiVersion);
        const Model = found?.mod?.[o?.kind];
        if (!Model) {
            out.push(`${id}: unknown apiVersion ${o?.apiVersion} or kind ${o?.kind}`);
            continue;
        }
        try {
            new Model(o).validate();
        } catch (e) {
            const details = (e.errors ?? []).map((x) => `${x.instancePath || "/"} ${x.message}`);
            out.push(`${id}: ${details.length ? details.join("; ") : e.message}`);
        }
        checkFields(o, parseDts(resolve(found.dir, `${o.kind}.d.ts`)), id, out);
    }
    rosterRules(objects, opts, out);
    return out;
}

// ---- command lines -------------------------------------------------------------

function commands(objects) {
    const configMaps = new Map();
    const secrets = new Map();
    for (const o of objects) {
        if (o.kind === "ConfigMap") {
            configMaps.set(o.metadata.name, o.data ?? {});
        } else if (o.kind === "Secret") {
            secrets.set(o.metadata.name, secretValues(o));
        }
    }
    const result = [];
    for (const o of objects.filter(podTemplate)) {
        for (const c of podTemplate(o).spec?.containers ?? []) {
            if (!isRosterImage(c.image)) {
                continue;
            }
            const env = {};
            for (const e of c.env ?? []) {
                let v = e.value ?? "";
                const from = e.valueFrom;
                if (from?.configMapKeyRef || from?.secretKeyRef) {
                    const ref = from.configMapKeyRef ?? from.secretKeyRef;
                    const store = (from.configMapKeyRef ? configMaps : secrets).get(ref.name) ?? {};
                    if (!(ref.key in store)) {
                        if (ref.optional) {
                            continue;
                        }
                        die(`${idOf(o)} ${c.name}: ${e.name}: ${ref.name} has no key ${ref.key}`);
                    }
                    v = store[ref.key];
                } else if (from?.fieldRef) {
                    const f = from.fieldRef.fieldPath;
                    if (f === "status.podIP") {
                        v = POD_IP;
                    } else if (f === "metadata.name") {
                        v = `${o.metadata.name}-0`;
                    } else {
                        die(`${idOf(o)} ${c.name}: ${e.name}: fieldRef ${f} is not resolved here`);
                    }
                } else if (from) {
                    die(`${idOf(o)} ${c.name}: ${e.name}: unsupported valueFrom`);
                }
                // $(NAME) refers to a variable defined earlier, as the kubelet expands it
                env[e.name] = String(v).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
                    (all, n) => (n in env ? env[n] : all));
            }
            const expand = (a) => String(a).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
                (all, n) => (n in env ? env[n] : all));
            const argv = c.command ? c.command.map(expand) : ["roster", ...(c.args ?? []).map(expand)];
            result.push({ workload: idOf(o), container: c.name, argv, env });
        }
    }
    return result;
}

// ---- main ------------------------------------------------------------------------

const [cmd, ...rest] = process.argv.slice(2);
const files = rest.filter((a) => !a.startsWith("--"));
if (!cmd || files.length === 0 || (cmd !== "validate" && files.length !== 1)) {
    die("usage: manifests.mjs validate FILE... [--test-secrets] | commands FILE | json FILE");
}
if (cmd === "validate") {
    let total = 0;
    for (const file of files) {
        const objects = loadObjects(file);
        const problems = await validate(objects, { testSecrets: rest.includes("--test-secrets") });
        const prefix = files.length > 1 ? `${file}: ` : "";
        for (const p of problems) {
            console.log(prefix + p);
        }
        console.log(`${prefix}${objects.length} objects, ${problems.length} problems`);
        total += problems.length;
    }
    process.exit(total ? 1 : 0);
} else if (cmd === "commands") {
    console.log(JSON.stringify(commands(loadObjects(files[0])), null, 1));
} else if (cmd === "json") {
    console.log(JSON.stringify(loadObjects(files[0])));
} else {
    die(`unknown command ${cmd}`);
}
