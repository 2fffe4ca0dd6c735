// roster's dashboard: everything the page does.
//
// DESIGN
// One live connection: GET /api/dashboard/stream, read with fetch() and a
// stream reader (EventSource cannot send Authorization), parsed here as SSE.
// It brings a `state` event every tick (server, routing table, controllers,
// totals, one summary line per model) and `events` batches. The state drives
// every part of the page but the instance rows, which come one page (50) at a
// time from GET /api/dashboard/instances, and only for a model group that is
// expanded AND on screen: a tick fetches such a page when the model's
// `version` changed (any of its rows changed), when its traffic changed (at
// most every 3 s), or every 15 s to refresh ages, and never while a fetch for
// that group is still running. So 10,000 instances cost 50 rows in the DOM per
// open group, and a tick costs at most one request per visible open group.
//
// Between updates the page ticks ages itself (heartbeat age, lease, table
// age, event times) once a second from the last answer.
//
// Rendering is keyed: a model group and an instance row are created once
// and updated in place (only text that changed is written), so focus stays
// on a button across updates and keyboard users are not thrown around.
//
// Actions (drain, weight, enable/disable, stop/start) are POSTs the server
// forwards to a controller or a worker; the page shows the server's answer,
// never a guess. Keys and aliases (the Keys section) are read and changed
// the same way, through a controller. The cluster secret (X-Roster-Secret) and the API key
// (Authorization: Bearer) are asked for in dialogs when needed and kept in
// sessionStorage (this tab only).
//
// The API it reads is described in the docs' "Dashboard" section; the
// browser test is tests/browser/dashboard.mjs (run by
// tests/service/test_dashboard.py). No framework, no build step, nothing
// fetched from outside.
//
// Formatted with prettier --print-width 100 (by hand, when editing; the
// file is served exactly as it is here).

const PAGE_SIZE = 50; // instance rows per page
const GROUP_PAGE_SIZE = 50; // model groups per page
const AUTO_EXPAND = 10; // groups needing attention opened by default
const EVENTS_KEPT = 1000; // in memory
const EVENTS_SHOWN = 200; // in the DOM
const REFRESH_TRAFFIC_MS = 3000;
const REFRESH_AGES_MS = 15000;
const SSE_BUFFER_CAP = 64 * 1024 * 1024;
const KEY_STORE = "roster.apiKey";
const SECRET_STORE = "roster.clusterSecret";

const $ = (id) => document.getElementById(id);

// ---- small helpers -----------------------------------------------------------

/** h("div", {class: "x", dataset: {a: 1}}, child, "text") */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Writes text only when it changed (cheap on every tick). */
function setText(el, text) {
  if (el._t !== text) {
    el._t = text;
    el.textContent = text;
  }
}

function setAttr(el, name, value) {
  if (value == null) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else if (el.getAttribute(name) !== String(value)) {
    el.setAttribute(name, value);
  }
}

function setClass(el, cls) {
  if (el.className !== cls) el.className = cls;
}

const nf = new Intl.NumberFormat("en-US");
const fmtInt = (n) => (n == null ? "—" : nf.format(n));

function fmtMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return "—";
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}

/** A duration for ages: 0.4 s, 12 s, 3 min, 2 h 5 min, 3 d. */
function fmtAge(ms) {
  if (ms == null || !Number.isFinite(ms)) return "—";
  if (ms < 0) ms = 0;
  const s = ms / 1000;
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 60) return Math.floor(s) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min";
  const hr = Math.floor(m / 60);
  if (hr < 48) return hr + " h " + (m % 60) + " min";
  return Math.floor(hr / 24) + " d";
}

/** p50 and p99 in one unit: "1.8 / 2.5 ms", "0.9 / 1.2 s". */
function fmtLatency(p50, p99) {
  if (p50 == null && p99 == null) return "—";
  const s = Math.max(p50 || 0, p99 || 0) >= 1000;
  const one = (v) =>
    v == null ? "—" : s ? (v / 1000).toFixed(2) : v < 10 ? v.toFixed(1) : String(Math.round(v));
  return one(p50) + " / " + one(p99) + (s ? " s" : " ms");
}

function fmtRps(v) {
  if (v == null || !Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  if (v < 10) return v.toFixed(1);
  return nf.format(Math.round(v));
}

function fmtPct(v) {
  if (v == null || !Number.isFinite(v)) return "—";
  if (v === 0) return "0 %";
  if (v < 0.001) return "<0.1 %";
  return (v * 100).toFixed(v < 0.1 ? 1 : 0) + " %";
}

function fmtWeight(w) {
  if (w == null || !Number.isFinite(w)) return "—";
  return Number.isInteger(w) ? w.toFixed(1) : String(Math.round(w * 1000) / 1000);
}

function fmtClock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function errorOfBody(body, status) {
  const e = body && typeof body === "object" && body.error;
  if (e && typeof e === "object") {
    return { message: String(e.message || "error"), code: e.code ?? null, status };
  }
  if (typeof e === "string") return { message: e, code: null, status };
  return { message: status ? "HTTP " + status : "no answer", code: null, status };
}

function describeError(err) {
  let s = err.status ? "HTTP " + err.status : "";
  if (err.code) s += (s ? " " : "") + err.code;
  return (s ? s + ": " : "") + err.message;
}

// ---- page state --------------------------------------------------------------

const S = {
  state: null, // the last state object
  stateAt: 0, // performance.now() when it came
  clockOffset: 0, // server clock minus ours (ms)
  lastMsgAt: 0, // performance.now() of the last byte on the stream
  conn: "connecting", // connecting | live | reconnecting | disconnected | auth
  streamCtl: null,
  retryNow: null, // resolves the reconnect wait early
  nextRetryAt: 0,
  lastError: "",
  needCatchUp: false,
  events: new Map(), // seq -> event
  lastSeq: 0,
  filter: { text: "", status: "all", type: "all" },
  groupPage: 0,
  userExpanded: new Map(), // model -> bool (what the user chose)
  groups: new Map(), // model -> Group (the ones in the DOM)
  observer: null,
  playModels: "",
};

const serverNow = () => Date.now() + S.clockOffset;
const tickMs = () => (S.state && S.state.server && S.state.server.tick_ms) || 1000;

// ---- credentials ---------------------------------------------------------------

function store(name, value) {
  try {
    if (value) sessionStorage.setItem(name, value);
    else sessionStorage.removeItem(name);
  } catch (e) {
    /* storage off: memory only */
  }
  memoryCreds[name] = value || "";
}

const memoryCreds = {};
function load(name) {
  if (memoryCreds[name]) return memoryCreds[name];
  try {
    return sessionStorage.getItem(name) || "";
  } catch (e) {
    return "";
  }
}

function authHeaders(extra) {
  const hd = Object.assign({}, extra || {});
  const key = load(KEY_STORE);
  if (key) hd["Authorization"] = "Bearer " + key;
  return hd;
}

/** Shows a dialog (showModal) and resolves with its returnValue on close. */
function runDialog(dlg, focusEl) {
  return new Promise((resolve) => {
    dlg.returnValue = "";
    dlg.addEventListener("close", () => resolve(dlg.returnValue), { once: true });
    dlg.showModal();
    if (focusEl) focusEl.focus();
  });
}

let keyPrompt = null;
/** Asks for the API key (once, however many calls need it). Resolves true
 *  when a key was entered. */
function askKey(message) {
  if (keyPrompt) return keyPrompt;
  const err = $("key-error");
  err.hidden = !message;
  err.textContent = message ? "The server said: " + message : "";
  const input = $("key-input");
  input.value = "";
  keyPrompt = runDialog($("key-dialog"), input).then((rv) => {
    keyPrompt = null;
    const v = input.value.trim();
    input.value = "";
    if (rv === "ok" && v) {
      store(KEY_STORE, v);
      return true;
    }
    return false;
  });
  return keyPrompt;
}

let secretPrompt = null;
function askSecret(message) {
  if (secretPrompt) return secretPrompt;
  const err = $("secret-error");
  err.hidden = !message;
  err.textContent = message ? "The server said: " + message : "";
  const input = $("secret-input");
  input.value = "";
  secretPrompt = runDialog($("secret-dialog"), input).then((rv) => {
    secretPrompt = null;
    const v = input.value;
    input.value = "";
    if (rv === "ok" && v) {
      store(SECRET_STORE, v);
      return true;
    }
    return false;
  });
  return secretPrompt;
}

// ---- HTTP ----------------------------------------------------------------------

/** A JSON call with the API key; asks for a key on 401 invalid_api_key and
 *  retries. Resolves {ok, status, body, error}; never throws. */
async function api(path, opts) {
  opts = opts || {};
  for (let attempt = 0; attempt < 4; attempt++) {
    const headers = authHeaders(opts.headers);
    if (opts.secret) {
      const secret = load(SECRET_STORE);
      if (secret) headers["X-Roster-Secret"] = secret;
    }
    let r;
    try {
      r = await fetch(path, {
        method: opts.method || "GET",
        headers,
        body: opts.body,
        cache: "no-store",
        signal: opts.signal,
      });
    } catch (e) {
      return {
        ok: false,
        status: 0,
        body: null,
        error: {
          message: "could not reach the webserver (" + e.message + ")",
          code: null,
          status: 0,
        },
      };
    }
    let body = null;
    let text = "";
    try {
      text = await r.text();
      body = text ? JSON.parse(text) : null;
    } catch (e) {
      body = null;
    }
    if (r.ok) return { ok: true, status: r.status, body, error: null };
    const error = errorOfBody(body, r.status);
    if (!body && text) error.message = text.slice(0, 300);
    if (r.status === 401 && error.code === "invalid_api_key") {
      if (await askKey(error.message)) continue;
    } else if (
      r.status === 401 &&
      opts.secret &&
      (error.code === "cluster_secret_required" || error.code === "bad_cluster_secret")
    ) {
      store(SECRET_STORE, "");
      if (await askSecret(error.message)) continue;
    }
    return { ok: false, status: r.status, body, error };
  }
  return {
    ok: false,
    status: 401,
    body: null,
    error: { message: "not authorised", code: null, status: 401 },
  };
}

// ---- SSE -------------------------------------------------------------------------

/** The text/event-stream format, fed with decoded text in any pieces. Calls
 *  onEvent(type, data) per event; comments (": ping") are skipped. Lines end
 *  in \n or \r\n. */
class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = "";
    this.type = "";
    this.data = [];
  }

  push(text) {
    // look for line ends in the new text only (a state line can be MBs)
    let from = this.buf.length;
    this.buf += text;
    let start = 0;
    for (;;) {
      const nl = this.buf.indexOf("\n", from);
      if (nl < 0) break;
      from = nl + 1;
      let line = this.buf.slice(start, nl);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      start = nl + 1;
      this.line(line);
    }
    this.buf = this.buf.slice(start);
    if (this.buf.length > SSE_BUFFER_CAP) throw new Error("an SSE line over the cap");
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"));
      this.type = "";
      this.data = [];
      return;
    }
    if (line[0] === ":") return;
    const c = line.indexOf(":");
    const field = c < 0 ? line : line.slice(0, c);
    let value = c < 0 ? "" : line.slice(c + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
  }
}

// ---- the live stream ---------------------------------------------------------------

function setConn(conn, detail) {
  S.conn = conn;
  const dot = $("conn-dot");
  const text = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    disconnected: "disconnected",
    auth: "API key needed",
  }[conn];
  setText($("conn-text"), text);
  setClass(dot, "dot " + conn);
  document.body.dataset.conn = conn;
  if (detail != null) S.lastError = detail;
  updateBanner();
}

function updateBanner() {
  const banner = $("banner");
  const retry = $("banner-retry");
  let text = "";
  let showRetry = false;
  const now = performance.now();
  if (S.conn === "disconnected" || S.conn === "reconnecting") {
    const wait = Math.max(0, S.nextRetryAt - now);
    text =
      "Disconnected from the webserver" +
      (S.lastError ? " (" + S.lastError + ")" : "") +
      (S.nextRetryAt > now ? "; retrying in " + Math.ceil(wait / 1000) + " s" : "; retrying…");
    if (S.state) text += ". What you see is " + fmtAge(now - S.stateAt) + " old.";
    showRetry = S.nextRetryAt > now;
  } else if (S.conn === "auth") {
    text = "This webserver needs an API key.";
    showRetry = true;
  } else if (S.conn === "live" && S.state) {
    const quiet = now - S.lastMsgAt;
    if (quiet > Math.max(3000, 3 * tickMs())) {
      text = "Stale: no update from the webserver for " + fmtAge(quiet) + ".";
    }
  }
  banner.hidden = !text;
  setText($("banner-text"), text);
  retry.hidden = !showRetry;
  retry.textContent = S.conn === "auth" ? "Enter API key" : "Reconnect now";
  banner.dataset.state = text ? S.conn : "";
}

async function streamLoop() {
  let failures = 0;
  for (;;) {
    const ctl = new AbortController();
    S.streamCtl = ctl;
    setConn(failures ? "reconnecting" : S.state ? "reconnecting" : "connecting");
    try {
      const r = await fetch("/api/dashboard/stream", {
        headers: authHeaders({ Accept: "text/event-stream" }),
        cache: "no-store",
        signal: ctl.signal,
      });
      if (r.status === 401) {
        let body = null;
        try {
          body = await r.json();
        } catch (e) {
          /* not JSON */
        }
        const err = errorOfBody(body, 401);
        setConn("auth", err.message);
        if (!(await askKey(err.message))) await waitForRetry(0, true);
        continue;
      }
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      S.needCatchUp = S.lastSeq > 0;
      S.lastMsgAt = performance.now();
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SSEParser((type, data) => {
        failures = 0;
        onStreamEvent(type, data);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        S.lastMsgAt = performance.now();
        parser.push(value);
      }
      throw new Error("the stream ended");
    } catch (e) {
      const why = ctl.signal.aborted ? "no update for too long" : e.message || String(e);
      failures++;
      const delay =
        Math.min(15000, 500 * 2 ** Math.min(failures - 1, 5)) * (0.75 + Math.random() * 0.5);
      setConn("disconnected", why);
      await waitForRetry(delay, false);
    }
  }
}

/** Waits `ms` (or for the user's "Reconnect now"); forever when `untilClick`. */
function waitForRetry(ms, untilClick) {
  return new Promise((resolve) => {
    let timer = null;
    S.nextRetryAt = untilClick ? Infinity : performance.now() + ms;
    S.retryNow = () => {
      if (timer) clearTimeout(timer);
      S.retryNow = null;
      S.nextRetryAt = 0;
      resolve();
    };
    if (!untilClick) timer = setTimeout(S.retryNow, ms);
    updateBanner();
  });
}

function onStreamEvent(type, data) {
  let doc;
  try {
    doc = JSON.parse(data);
  } catch (e) {
    console.warn("dashboard: bad JSON in a " + type + " event");
    return;
  }
  try {
    if (type === "state") applyState(doc);
    else if (type === "events" && Array.isArray(doc)) addEvents(doc);
  } catch (e) {
    // a bug here must not look like a network failure (and tests see it)
    console.error("dashboard: cannot show a " + type + " event:", e);
  }
}

// ---- state -> page -------------------------------------------------------------------

function applyState(st) {
  if (!st || !st.server || !Array.isArray(st.models)) return;
  const first = !S.state;
  S.state = st;
  S.stateAt = performance.now();
  S.clockOffset = (st.server.now_ms || Date.now()) - Date.now();
  if (S.conn !== "live") setConn("live", "");
  if (typeof st.events_seq === "number") {
    if (st.events_seq < S.lastSeq) {
      // the server restarted: its events are new ones
      S.events.clear();
      S.lastSeq = 0;
      renderEvents(true);
    } else if (S.needCatchUp && st.events_seq > S.lastSeq) {
      catchUpEvents(S.lastSeq);
    }
    S.needCatchUp = false;
  }
  renderHeader(st);
  renderSummary(st);
  renderControllers(st);
  renderGroups();
  renderPlaygroundModels(st);
  if (first) document.body.dataset.loaded = "1";
}

async function catchUpEvents(after) {
  const r = await api("/api/dashboard/events?after=" + encodeURIComponent(after));
  if (r.ok && r.body && Array.isArray(r.body.events)) addEvents(r.body.events);
}

function renderHeader(st) {
  const sv = st.server;
  setText($("mode"), sv.mode || "?");
  setClass($("mode"), "badge mode-" + (sv.mode || "unknown"));
  setText($("version"), "v" + (sv.version || "?"));
  const base = sv.base_url || location.origin + "/v1";
  const input = $("base-url");
  if (input.value !== base) input.value = base;
  $("keys-note").hidden = !sv.api_keys;
}

function renderSummary(st) {
  const t = st.table || {};
  setText($("sum-instances"), fmtInt(t.instances));
  setText(
    $("sum-instances-detail"),
    fmtInt(t.alive) +
      " alive · " +
      fmtInt(t.routable) +
      " routable" +
      (t.instances > t.alive ? " · " + fmtInt(t.instances - t.alive) + " unhealthy" : ""),
  );
  setText($("sum-models"), fmtInt(t.models));
  const attention = st.models.filter(needsAttention).length;
  setText($("sum-models-detail"), attention ? attention + " need attention" : "all healthy");
  const tot = st.totals || {};
  setText($("sum-rps"), fmtRps(tot.rps) + " rps");
  setText(
    $("sum-traffic-detail"),
    "errors " +
      fmtPct(tot.error_rate) +
      " · p50 " +
      fmtMs(tot.p50_ms) +
      " · p99 " +
      fmtMs(tot.p99_ms) +
      " · in flight " +
      fmtInt(tot.in_flight),
  );
  renderTableAge();
  const tb = $("table-banner");
  let warn = "";
  if (!t.loaded) warn = "The routing table is not loaded yet: no controller has answered.";
  else if (t.stale)
    warn =
      "The routing table is stale (" +
      fmtAge(tableAge()) +
      " old): the controllers are not answering, so health shown here may be out of date" +
      (t.error ? " (" + t.error + ")." : ".");
  tb.hidden = !warn;
  setText(tb, warn);
}

function tableAge() {
  const t = S.state && S.state.table;
  if (!t || t.age_ms == null) return null;
  return t.age_ms + (performance.now() - S.stateAt);
}

function renderTableAge() {
  const t = S.state.table || {};
  setText($("sum-table"), t.loaded ? "v" + fmtInt(t.version) : "not loaded");
  setText(
    $("sum-table-detail"),
    (t.loaded ? "age " + fmtAge(tableAge()) : "waiting for a controller") +
      (t.stale ? " · STALE" : ""),
  );
  $("sum-table").parentElement.dataset.state = !t.loaded || t.stale ? "bad" : "ok";
  const sv = S.state.server;
  setText(
    $("server-line"),
    "Webserver " +
      (sv.version || "") +
      " · up " +
      fmtAge((sv.uptime_ms || 0) + performance.now() - S.stateAt) +
      " · API keys " +
      (sv.api_keys ? "on" : "off") +
      " · cluster secret " +
      (sv.secret_required ? "required" : "not set"),
  );
}

function renderControllers(st) {
  const body = $("ctl-body");
  const list = Array.isArray(st.controllers) ? st.controllers : [];
  const rows = body.rows;
  if (!list.length) {
    if (!(rows.length === 1 && rows[0].dataset.empty)) {
      body.textContent = "";
      body.append(
        h(
          "tr",
          { dataset: { empty: "1" } },
          h("td", { colspan: "2", class: "muted" }, "none reported"),
        ),
      );
    }
    return;
  }
  if (rows.length && rows[0].dataset.empty) body.textContent = "";
  while (rows.length > list.length) body.deleteRow(-1);
  list.forEach((c, i) => {
    let tr = rows[i];
    if (!tr) {
      tr = h(
        "tr",
        { "data-testid": "controller" },
        h("td", { class: "url" }, h("code", {}), h("span", { class: "small" })),
        h("td", { class: "num" }),
      );
      body.append(tr);
    }
    const [uc, l] = tr.cells;
    const [u, s] = uc.children;
    setText(u, c.url);
    const status =
      (c.ok ? "answers" : "down") +
      (c.current ? " · current" : "") +
      (c.error ? " · " + c.error : "");
    setText(s, status);
    setClass(s, "small " + (c.ok ? "ok-text" : "bad-text"));
    setAttr(
      uc,
      "title",
      c.current ? "current: the routing table is watched from this controller" : null,
    );
    setText(l, c.ok ? fmtMs(c.latency_ms) : "—");
    tr.dataset.ok = c.ok ? "1" : "0";
  });
}

// ---- model groups ------------------------------------------------------------------

function needsAttention(m) {
  return m.alive < m.instances || m.ejected > 0 || (m.instances > 0 && m.routable === 0);
}

function groupState(m) {
  if (m.instances === 0) return "idle";
  if (m.alive === 0 || m.routable === 0) return "bad";
  if (needsAttention(m)) return "warn";
  if (m.drained > 0 || m.disabled > 0) return "note";
  return "ok";
}

function matches(m, f) {
  if (f.type !== "all" && m.type !== f.type) return false;
  if (f.text && !m.model.toLowerCase().includes(f.text)) return false;
  switch (f.status) {
    case "problems":
      return needsAttention(m) || m.drained > 0 || m.disabled > 0;
    case "unhealthy":
      return m.alive < m.instances;
    case "ejected":
      return m.ejected > 0;
    case "drained":
      return m.drained > 0;
    case "healthy":
      return m.alive > 0;
    default:
      return true;
  }
}

/** The instances API's status for the current filter. */
function rowStatus() {
  const s = S.filter.status;
  return s === "unhealthy" || s === "ejected" || s === "drained" || s === "healthy" ? s : "all";
}

function renderGroups() {
  if (!S.state) return;
  const all = S.state.models.filter((m) => matches(m, S.filter));
  const pages = Math.max(1, Math.ceil(all.length / GROUP_PAGE_SIZE));
  if (S.groupPage >= pages) S.groupPage = pages - 1;
  const start = S.groupPage * GROUP_PAGE_SIZE;
  const shown = all.slice(start, start + GROUP_PAGE_SIZE);

  // which groups open by default: the first AUTO_EXPAND needing attention
  // (all shown ones when a status filter is on)
  const auto = new Set();
  let n = 0;
  for (const m of all) {
    if (S.filter.status !== "all" || (needsAttention(m) && n++ < AUTO_EXPAND)) auto.add(m.model);
  }

  const container = $("groups");
  const keep = new Set(shown.map((m) => m.model));
  for (const [model, g] of S.groups) {
    if (!keep.has(model)) {
      S.observer.unobserve(g.el);
      g.el.remove();
      S.groups.delete(model);
    }
  }
  let prev = null;
  for (const m of shown) {
    let g = S.groups.get(m.model);
    if (!g) {
      g = createGroup(m);
      S.groups.set(m.model, g);
      S.observer.observe(g.el);
    }
    g.m = m;
    const expanded = S.userExpanded.has(m.model) ? S.userExpanded.get(m.model) : auto.has(m.model);
    updateGroup(g, expanded);
    // keep DOM order = sorted order, moving only what is out of place
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== g.el) container.insertBefore(g.el, want);
    prev = g.el;
    maybeFetch(g);
  }
  $("groups-empty").hidden = shown.length > 0;
  const pager = $("groups-pager");
  pager.hidden = pages <= 1;
  setText(
    $("groups-page-info"),
    "models " +
      fmtInt(all.length ? start + 1 : 0) +
      "–" +
      fmtInt(start + shown.length) +
      " of " +
      fmtInt(all.length),
  );
  $("groups-prev").disabled = S.groupPage === 0;
  $("groups-next").disabled = S.groupPage >= pages - 1;
}

let groupSeq = 0;
function createGroup(m) {
  const id = "g" + ++groupSeq;
  const g = {
    model: m.model,
    m,
    expanded: false,
    visible: false,
    offset: 0,
    q: "",
    data: null,
    fetchedAt: 0,
    fetchedVersion: null,
    fetchedRequests: null,
    fetchedKey: "",
    pending: false,
    error: null,
    rows: new Map(),
  };
  g.toggle = h("button", {
    type: "button",
    class: "group-toggle",
    "aria-expanded": "false",
    "aria-controls": id + "-body",
    "data-testid": "model-toggle",
  });
  g.chev = h("span", { class: "chev", "aria-hidden": "true" });
  g.name = h("span", { class: "g-name" }, m.name || m.model);
  g.type = h("span", { class: "badge type" }, m.type || "?");
  g.health = h("span", { class: "g-health", "data-testid": "group-health" });
  g.toggle.append(g.chev, g.name, g.type, g.health);
  g.stats = h("div", { class: "g-stats small" });
  const head = h("div", { class: "group-head" }, h("h3", { class: "group-h" }, g.toggle), g.stats);
  head.addEventListener("click", (e) => {
    if (!g.toggle.contains(e.target)) g.toggle.click();
  });
  g.toggle.addEventListener("click", () => {
    S.userExpanded.set(g.model, !g.expanded);
    updateGroup(g, !g.expanded);
    maybeFetch(g, true);
  });

  // body: toolbar (host filter, pager, status) and the table
  g.q_input = h("input", {
    type: "search",
    class: "q",
    placeholder: "host:port",
    "aria-label": "Filter instances of " + m.model + " by host:port",
    "data-testid": "instance-filter",
    autocomplete: "off",
    spellcheck: "false",
  });
  let qTimer = null;
  g.q_input.addEventListener("input", () => {
    clearTimeout(qTimer);
    qTimer = setTimeout(() => {
      g.q = g.q_input.value.trim();
      g.offset = 0;
      maybeFetch(g, true);
    }, 250);
  });
  const pbtn = (label, testid, fn) =>
    h(
      "button",
      { type: "button", class: "btn small-btn", "data-testid": testid, onclick: fn },
      label,
    );
  g.first = pbtn("« First", "page-first", () => goPage(g, 0));
  g.prev = pbtn("‹ Prev", "page-prev", () => goPage(g, g.offset - PAGE_SIZE));
  g.next = pbtn("Next ›", "page-next", () => goPage(g, g.offset + PAGE_SIZE));
  g.last = pbtn("Last »", "page-last", () => goPage(g, Infinity));
  g.pageInfo = h("span", { class: "small muted page-info", "data-testid": "page-info" });
  g.status = h("span", { class: "small g-status", role: "status" });
  const toolbar = h(
    "div",
    { class: "g-toolbar" },
    g.q_input,
    h("div", { class: "pager" }, g.first, g.prev, g.pageInfo, g.next, g.last),
    g.status,
  );
  g.tbody = h("tbody");
  const table = h(
    "table",
    { class: "grid instances", "data-testid": "instance-table" },
    h("caption", { class: "visually-hidden" }, "Instances of " + m.model),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Instance"),
        h("th", { scope: "col" }, "Health"),
        h(
          "th",
          {
            scope: "col",
            title: "effective weight; the worker's declared one; the operator's override",
          },
          "Weight",
        ),
        h("th", { scope: "col", title: "time since the last heartbeat; the lease" }, "Heartbeat"),
        h(
          "th",
          { scope: "col", title: "the worker's last load report: in flight / capacity, queue" },
          "Load",
        ),
        h(
          "th",
          {
            scope: "col",
            title: "this webserver's traffic to it over the last ~10 s: rps · errors, p50 / p99",
          },
          "Traffic here",
        ),
        h("th", { scope: "col" }, "Actions"),
      ),
    ),
    g.tbody,
  );
  g.body = h(
    "div",
    { class: "group-body", id: id + "-body", hidden: true },
    toolbar,
    h("div", { class: "table-wrap" }, table),
  );
  g.el = h(
    "section",
    {
      class: "group",
      "data-testid": "model-group",
      dataset: { model: m.model },
      "aria-label": m.model,
    },
    head,
    g.body,
  );
  g.el._group = g;
  return g;
}

function updateGroup(g, expanded) {
  const m = g.m;
  const state = groupState(m);
  g.el.dataset.state = state;
  g.el.dataset.expanded = expanded ? "1" : "0";
  setText(g.type, m.type || "?");
  setText(g.health, fmtInt(m.alive) + "/" + fmtInt(m.instances) + " alive");
  setClass(g.health, "g-health " + state);
  const bits = [fmtInt(m.routable) + " routable"];
  if (m.ejected) bits.push(fmtInt(m.ejected) + " ejected");
  if (m.drained) bits.push(fmtInt(m.drained) + " drained");
  if (m.disabled) bits.push(fmtInt(m.disabled) + " disabled");
  bits.push(
    "load " +
      fmtInt(m.in_flight) +
      "/" +
      fmtInt(m.capacity) +
      (m.queue ? " q" + fmtInt(m.queue) : ""),
  );
  if (!m.rps) bits.push("idle here");
  else
    bits.push(
      fmtRps(m.rps) + " rps",
      "err " + fmtPct(m.error_rate),
      "p50/p99 " + fmtMs(m.p50_ms) + " / " + fmtMs(m.p99_ms),
    );
  setText(g.stats, bits.join(" · "));
  if (g.expanded !== expanded) {
    g.expanded = expanded;
    g.toggle.setAttribute("aria-expanded", expanded ? "true" : "false");
    g.body.hidden = !expanded;
    if (!expanded) {
      // drop the rows: a closed group holds nothing
      g.rows.clear();
      g.tbody.textContent = "";
      g.data = null;
      g.fetchedKey = "";
    } else if (!g.data) {
      setText(g.status, "loading…");
    }
  }
}

function goPage(g, offset) {
  const total = g.data ? g.data.total : 0;
  const lastOffset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
  g.offset = Math.max(0, Math.min(offset, lastOffset));
  maybeFetch(g, true);
}

function pageKey(g) {
  return g.model + "|" + g.offset + "|" + rowStatus() + "|" + g.q;
}

/** Fetches the group's page when it is open, on screen, idle, and
 *  something changed (see DESIGN). `now` = the user asked for it. */
function maybeFetch(g, now) {
  if (!g.expanded || g.pending) return;
  if (!g.visible && !now) return;
  const key = pageKey(g);
  const since = performance.now() - g.fetchedAt;
  let want = now || key !== g.fetchedKey || !g.data || g.m.version !== g.fetchedVersion;
  if (!want && g.m.requests !== g.fetchedRequests && since >= REFRESH_TRAFFIC_MS) want = true;
  if (!want && since >= REFRESH_AGES_MS) want = true;
  if (want) fetchPage(g);
}

async function fetchPage(g) {
  g.pending = true;
  const key = pageKey(g);
  const version = g.m.version;
  const requests = g.m.requests;
  const url =
    "/api/dashboard/instances?model=" +
    encodeURIComponent(g.model) +
    "&offset=" +
    g.offset +
    "&limit=" +
    PAGE_SIZE +
    "&status=" +
    rowStatus() +
    "&q=" +
    encodeURIComponent(g.q);
  const r = await api(url);
  g.pending = false;
  if (S.groups.get(g.model) !== g || !g.expanded) return;
  if (pageKey(g) !== key) {
    maybeFetch(g, true); // the user moved on while we waited
    return;
  }
  g.fetchedAt = performance.now();
  g.fetchedKey = key;
  g.fetchedVersion = version;
  g.fetchedRequests = requests;
  if (!r.ok) {
    g.error = describeError(r.error);
    setText(
      g.status,
      (r.status === 404 ? "this model is gone: " : "could not load instances: ") + g.error,
    );
    g.status.className = "small g-status bad-text";
    return;
  }
  const d = r.body || {};
  const total = d.total || 0;
  if (g.offset > 0 && g.offset >= total) {
    g.offset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
    maybeFetch(g, true);
    return;
  }
  g.error = null;
  g.data = d;
  g.status.className = "small g-status";
  setText(g.status, "");
  renderRows(g);
}

function renderRows(g) {
  const d = g.data;
  const items = Array.isArray(d.items) ? d.items : [];
  const total = d.total || 0;
  setText(
    g.pageInfo,
    total
      ? fmtInt(g.offset + 1) + "–" + fmtInt(g.offset + items.length) + " of " + fmtInt(total)
      : "none",
  );
  g.first.disabled = g.prev.disabled = g.offset === 0;
  g.next.disabled = g.last.disabled = g.offset + items.length >= total;
  const pagerNeeded = total > PAGE_SIZE || g.offset > 0;
  g.first.hidden = g.prev.hidden = g.next.hidden = g.last.hidden = !pagerNeeded;
  if (!items.length)
    setText(g.status, g.q || rowStatus() !== "all" ? "no instance matches" : "no instances");

  const seen = new Set();
  let prev = null;
  for (const it of items) {
    const key = it.host + ":" + it.port;
    seen.add(key);
    let row = g.rows.get(key);
    if (!row) {
      row = createRow(g, it);
      g.rows.set(key, row);
    }
    row.it = it;
    row.at = performance.now();
    updateRow(g, row);
    const want = prev ? prev.nextSibling : g.tbody.firstChild;
    if (want !== row.tr) g.tbody.insertBefore(row.tr, want);
    prev = row.tr;
  }
  for (const [key, row] of g.rows) {
    if (!seen.has(key)) {
      row.tr.remove();
      g.rows.delete(key);
    }
  }
}

function createRow(g, it) {
  const key = it.host + ":" + it.port;
  const row = { key, busy: false };
  row.health = h("span", { class: "health", "data-testid": "health" });
  row.healthNote = h("span");
  row.enabled = h("span", { class: "small", "data-testid": "enabled" });
  row.healthLine = h("span", { class: "small" }, row.healthNote, row.enabled);
  row.weight = h("span", { "data-testid": "weight" });
  row.weightNote = h("span", { class: "note small" });
  row.hb = h("span", { "data-testid": "heartbeat" });
  row.hbNote = h("span", { class: "note small" });
  row.load = h("span", { "data-testid": "load" });
  row.loadNote = h("span", { class: "note small" });
  row.rps = h("span", { "data-testid": "rps" });
  row.lat = h("span", { class: "note small", "data-testid": "latency" });
  const btn = (fn) =>
    h("button", { type: "button", class: "btn small-btn", onclick: () => fn(row) });
  row.bDrain = btn((r) => runAction(g, r, r.bDrain.dataset.action));
  row.bWeight = btn((r) => runAction(g, r, "weight"));
  row.bWeight.textContent = "Weight…";
  row.bWeight.dataset.testid = "set-weight";
  row.bEnable = btn((r) => runAction(g, r, r.bEnable.dataset.action));
  row.bStop = btn((r) => runAction(g, r, "stop"));
  row.bStop.textContent = "Stop";
  row.bStop.dataset.testid = "stop";
  row.bStart = btn((r) => runAction(g, r, "start"));
  row.bStart.textContent = "Start";
  row.bStart.dataset.testid = "start";
  row.buttons = [row.bDrain, row.bWeight, row.bEnable, row.bStop, row.bStart];
  const isService = g.m.type === "service";
  const actions = h(
    "td",
    { class: "actions" },
    row.bDrain,
    row.bWeight,
    row.bEnable,
    isService ? null : row.bStop,
    isService ? null : row.bStart,
  );
  row.tr = h(
    "tr",
    { "data-testid": "instance-row", dataset: { instance: key, model: g.model } },
    h("th", { scope: "row", class: "inst" }, h("code", {}, key)),
    h("td", { class: "health-cell" }, row.health, row.healthLine),
    h("td", {}, row.weight, row.weightNote),
    h("td", {}, row.hb, row.hbNote),
    h("td", {}, row.load, row.loadNote),
    h("td", {}, row.rps, row.lat),
    actions,
  );
  return row;
}

function updateRow(g, row) {
  const it = row.it;
  const who = row.key + " (" + g.model + ")";
  setText(row.health, it.healthy ? "healthy" : "unhealthy");
  setClass(row.health, "health " + (it.healthy ? (it.routable ? "ok" : "note") : "bad"));
  let note = "";
  if (it.ejected) {
    note =
      "ejected" +
      (it.ejected_ms_left ? ", retry in " + fmtAge(it.ejected_ms_left) : "") +
      (it.last_error ? ": " + it.last_error : "");
  } else if (it.healthy) {
    // why not: the operator's doing (drained, disabled) or the weight
    const why = [];
    if (it.weight === 0) why.push(it.weight_override === 0 ? "drained" : "weight 0");
    if (!it.enabled) why.push("disabled");
    if (it.excluded) why.push(it.excluded);
    note = it.routable ? "routable" : "not routable" + (why.length ? ": " + why.join(", ") : "");
  }
  if (!it.ejected && it.last_error) note += (note ? " · " : "") + "last error: " + it.last_error;
  const showDisabled = !it.enabled && !note.includes("disabled");
  setText(row.healthNote, note && showDisabled ? note + " · " : note);
  setClass(row.healthNote, it.ejected ? "bad-text" : "muted");
  row.tr.dataset.health = it.healthy ? "healthy" : "unhealthy";
  row.tr.dataset.routable = it.routable ? "1" : "0";
  row.tr.dataset.ejected = it.ejected ? "1" : "0";

  // "enabled" is implied; said for screen readers and tests, shown when not
  setText(row.enabled, it.enabled ? " (enabled)" : "disabled");
  setClass(row.enabled, showDisabled ? "warn-text" : "visually-hidden");

  setText(row.weight, fmtWeight(it.weight));
  setClass(row.weight, it.weight === 0 ? "warn-text" : "");
  setText(
    row.weightNote,
    "decl. " +
      fmtWeight(it.weight_declared) +
      (it.weight_override != null ? "\noverride " + fmtWeight(it.weight_override) : ""),
  );
  row.tr.dataset.weight = String(it.weight);

  updateRowAges(row);

  const load = it.load;
  if (load) {
    setText(row.load, fmtInt(load.in_flight) + "/" + fmtInt(load.capacity));
    setText(row.loadNote, "queue " + fmtInt(load.queue_length));
  } else {
    setText(row.load, "—");
    setText(row.loadNote, "no report");
  }
  setAttr(
    row.load.parentElement,
    "title",
    "the worker's report: in flight / capacity, queue; this webserver has " +
      fmtInt(it.in_flight) +
      " in flight to it",
  );
  if (!it.rps && !it.in_flight) {
    setText(row.rps, "idle");
    setClass(row.rps, "muted");
    setText(row.lat, it.requests ? fmtInt(it.requests) + " req. so far" : "");
  } else {
    setText(row.rps, fmtRps(it.rps) + " rps · " + fmtPct(it.error_rate));
    setClass(row.rps, it.error_rate ? "warn-text" : "");
    setText(row.lat, fmtLatency(it.p50_ms, it.p99_ms));
  }
  setAttr(
    row.rps.parentElement,
    "title",
    it.requests != null
      ? fmtInt(it.errors) + " errors in " + fmtInt(it.requests) + " requests since start"
      : null,
  );

  // buttons: labels follow the row; the server's answer decides, not us
  const override0 = it.weight_override === 0;
  const drained = it.weight === 0;
  setBtn(
    row.bDrain,
    override0 ? "Undrain" : "Drain",
    override0 ? "undrain" : "drain",
    (override0 ? "Undrain " : "Drain ") + who,
  );
  row.bDrain.dataset.action = override0 ? "undrain" : "drain";
  row.bDrain.disabled = row.busy || (drained && it.weight_override == null);
  setAttr(
    row.bDrain,
    "title",
    drained && it.weight_override == null ? "its declared weight is 0" : null,
  );
  setBtn(
    row.bEnable,
    it.enabled ? "Disable" : "Enable",
    it.enabled ? "disable" : "enable",
    (it.enabled ? "Disable " : "Enable ") + who,
  );
  row.bEnable.dataset.action = it.enabled ? "disable" : "enable";
  setAttr(row.bWeight, "aria-label", "Set the weight of " + who);
  setAttr(row.bStop, "aria-label", "Stop the model on the worker of " + who);
  setAttr(row.bStart, "aria-label", "Start the model on the worker of " + who);
  for (const b of row.buttons) if (b !== row.bDrain) b.disabled = row.busy;
}

function setBtn(b, label, testid, aria) {
  setText(b, label);
  if (b.dataset.testid !== testid) b.dataset.testid = testid;
  setAttr(b, "aria-label", aria);
}

/** Heartbeat age and lease: ticked between answers. */
function updateRowAges(row) {
  const it = row.it;
  const since = performance.now() - row.at;
  if (it.heartbeat_age_ms == null) {
    setText(row.hb, "never");
    setText(row.hbNote, it.lease_ms ? "lease " + fmtAge(it.lease_ms) : "");
    setClass(row.hb, "muted");
    return;
  }
  const age = it.heartbeat_age_ms + since;
  setText(row.hb, fmtAge(age) + " ago");
  const lease = it.lease_ms;
  if (lease) {
    const left = lease - age;
    setText(
      row.hbNote,
      left > 0 ? fmtAge(left) + " left of " + fmtAge(lease) : "overdue · lease " + fmtAge(lease),
    );
    setClass(row.hb, left > 0 ? "" : "bad-text");
  } else {
    setText(row.hbNote, "no lease (never expires)");
    setClass(row.hb, "");
  }
}

// ---- actions ------------------------------------------------------------------------

function confirmDialog(title, text, okLabel) {
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  const ok = $("confirm-ok");
  ok.textContent = okLabel;
  // focus Cancel first: Enter on a fresh dialog must not drain anything
  return runDialog($("confirm-dialog"), $("confirm-dialog").querySelector("[value=cancel]")).then(
    (rv) => rv === "ok",
  );
}

function weightDialog(g, it) {
  const who = it.host + ":" + it.port + " (" + g.model + ")";
  $("weight-text").textContent =
    "Instance " +
    who +
    ": effective weight " +
    fmtWeight(it.weight) +
    ", declared " +
    fmtWeight(it.weight_declared) +
    (it.weight_override != null
      ? ", operator override " + fmtWeight(it.weight_override)
      : ", no override") +
    ".";
  const input = $("weight-input");
  input.value = String(it.weight_override != null ? it.weight_override : (it.weight_declared ?? 1));
  $("weight-clear").disabled = it.weight_override == null;
  return runDialog($("weight-dialog"), input).then((rv) => {
    if (rv === "clear") return { weight: null };
    if (rv !== "ok") return undefined;
    const v = Number(input.value);
    if (!Number.isFinite(v) || v < 0 || v > 1000000) return undefined;
    return { weight: v };
  });
}

const ACTIONS = {
  drain: {
    verb: "Drain",
    done: "Drained",
    confirm: (who) => [
      "Drain " + who + "?",
      "Sets an operator weight of 0: it gets no new requests; requests in flight finish. Undrain drops the override.",
    ],
  },
  undrain: { verb: "Undrain", done: "Undrained" },
  weight: { verb: "Set weight of", done: "Set the weight of" },
  disable: {
    verb: "Disable",
    done: "Disabled",
    confirm: (who) => [
      "Disable " + who + "?",
      "Takes it out of rotation until it is enabled again (the registry keeps it).",
    ],
  },
  enable: { verb: "Enable", done: "Enabled" },
  stop: {
    verb: "Stop",
    done: "Stopped",
    confirm: (who) => [
      "Stop the model on " + who + "?",
      "Asks its worker to stop the model: it deregisters and serves nothing until started again.",
    ],
  },
  start: { verb: "Start", done: "Started" },
};

async function runAction(g, row, kind) {
  const it = row.it;
  const a = ACTIONS[kind];
  if (!a || row.busy) return;
  const who = it.host + ":" + it.port + " of " + g.model;
  const body = { model_name: g.model, host: it.host, port: it.port };
  let path = "/api/dashboard/instance";
  if (kind === "drain") body.weight = 0;
  else if (kind === "undrain") body.weight = null;
  else if (kind === "disable") body.enabled = false;
  else if (kind === "enable") body.enabled = true;
  else if (kind === "stop" || kind === "start") {
    path = "/api/dashboard/apply";
    body.apply_type = kind;
  } else if (kind === "weight") {
    const w = await weightDialog(g, it);
    if (w === undefined) return;
    body.weight = w.weight;
  }
  if (a.confirm) {
    const [title, text] = a.confirm(who);
    if (!(await confirmDialog(title, text, a.verb))) return;
  }
  const sv = (S.state && S.state.server) || {};
  if (sv.secret_required && !load(SECRET_STORE)) {
    if (!(await askSecret(""))) {
      showResult("cancelled", a.verb + " " + who + ": cancelled (no cluster secret).");
      return;
    }
  }
  const label =
    kind === "weight"
      ? (body.weight == null ? "Drop the weight override of " : "Set the weight of ") +
        who +
        (body.weight == null ? "" : " to " + fmtWeight(body.weight))
      : a.verb + " " + who;
  row.busy = true;
  updateRow(g, row);
  showResult("pending", label + "…");
  const r = await api(path, {
    method: "POST",
    body: JSON.stringify(body),
    secret: true,
    headers: { "Content-Type": "application/json" },
  });
  row.busy = false;
  if (row.tr.isConnected) updateRow(g, row);
  if (r.ok && r.body && r.body.ok !== false) {
    let said = "";
    if (path.endsWith("/apply")) {
      const res = r.body.result || {};
      said =
        "the worker " +
        (r.body.worker ? r.body.worker + " " : "") +
        "said: " +
        (res.message || JSON.stringify(res));
    } else {
      said =
        "controller " + (r.body.controller || "?") + " answered " + describeRecord(r.body.result);
    }
    showResult("ok", label + ": done; " + said + ".");
  } else if (r.ok && r.body) {
    const res = r.body.result || {};
    showResult(
      "error",
      label +
        ": refused; the worker " +
        (r.body.worker ? r.body.worker + " " : "") +
        "said: " +
        (res.message || JSON.stringify(r.body)),
    );
  } else {
    showResult("error", label + ": failed; " + describeError(r.error));
  }
  // the change shows when the server's table has it: fetch now
  if (S.groups.get(g.model) === g) maybeFetch(g, true);
}

/** The controller's answer to an admin change: the instance's record. */
function describeRecord(rec) {
  if (!rec || typeof rec !== "object") return JSON.stringify(rec);
  const bits = [];
  if (typeof rec.weight === "number") bits.push("weight " + fmtWeight(rec.weight));
  if ("weight_override" in rec)
    bits.push(
      rec.weight_override == null ? "no override" : "override " + fmtWeight(rec.weight_override),
    );
  if (typeof rec.enabled === "boolean") bits.push(rec.enabled ? "enabled" : "disabled");
  if (typeof rec.healthy === "boolean") bits.push(rec.healthy ? "alive" : "not alive");
  return bits.length ? bits.join(", ") : JSON.stringify(rec).slice(0, 200);
}

let resultTimer = null;
// A result line under a form (id), with a dismiss button; returns it.
function showBanner(id, kind, text) {
  const el = $(id);
  el.hidden = false;
  el.dataset.kind = kind;
  el.className = "action-result " + kind;
  el.textContent = "";
  el.append(
    h("span", { class: "msg" }, text),
    h(
      "button",
      {
        type: "button",
        class: "btn small-btn",
        "aria-label": "Dismiss",
        onclick: () => {
          el.hidden = true;
        },
      },
      "×",
    ),
  );
  return el;
}

function showResult(kind, text) {
  const el = showBanner("action-result", kind, text);
  clearTimeout(resultTimer);
  if (kind === "ok")
    resultTimer = setTimeout(() => {
      el.hidden = true;
    }, 30000);
}

// ---- events -------------------------------------------------------------------------------

const EVENT_WORDS = {
  joined: "joined",
  left: "left",
  unhealthy: "became unhealthy",
  healthy: "came back",
  drained: "drained",
  undrained: "undrained",
  disabled: "disabled",
  enabled: "enabled",
  ejected: "ejected",
  probe_failed: "failed a probe: ejected",
  readmitted: "readmitted",
  controller_down: "controller down",
  controller_up: "controller up",
  loaded: "table loaded",
  changes: "more changes",
};
const EVENT_CLASS = {
  unhealthy: "bad",
  ejected: "bad",
  probe_failed: "bad",
  left: "bad",
  controller_down: "bad",
  drained: "warn",
  disabled: "warn",
};
const PROBLEMS = new Set([
  "unhealthy",
  "ejected",
  "probe_failed",
  "left",
  "controller_down",
  "drained",
  "disabled",
  "excluded",
]);

function addEvents(list) {
  let added = 0;
  let older = false;
  const top = S.lastSeq;
  for (const ev of list) {
    if (!ev || typeof ev.seq !== "number" || S.events.has(ev.seq)) continue;
    S.events.set(ev.seq, ev);
    added++;
    if (ev.seq < top) older = true;
    if (ev.seq > S.lastSeq) S.lastSeq = ev.seq;
  }
  if (!added) return;
  if (S.events.size > EVENTS_KEPT) {
    const seqs = [...S.events.keys()].sort((a, b) => a - b);
    for (let i = 0; i < seqs.length - EVENTS_KEPT; i++) S.events.delete(seqs[i]);
  }
  renderEvents(older, top);
}

function eventShown(ev) {
  return $("ev-filter").value !== "problems" || PROBLEMS.has(ev.kind);
}

/** Newest first, at most EVENTS_SHOWN items. Appends the new ones at the
 *  top when they are all newer than what is shown; else redraws. */
function renderEvents(full, top) {
  const ol = $("event-list");
  const sorted = [...S.events.values()].filter(eventShown).sort((a, b) => b.seq - a.seq);
  if (full || top == null) {
    ol.textContent = "";
    for (const ev of sorted.slice(0, EVENTS_SHOWN)) ol.append(eventItem(ev));
  } else {
    const fresh = sorted.filter((ev) => ev.seq > top).reverse(); // oldest first
    for (const ev of fresh) ol.prepend(eventItem(ev));
    while (ol.children.length > EVENTS_SHOWN) ol.lastElementChild.remove();
  }
  $("events-empty").hidden = ol.children.length > 0;
}

function eventItem(ev) {
  const when = new Date(ev.t_ms);
  const time = h("time", { datetime: when.toISOString(), title: when.toString(), class: "rel" });
  time._ms = ev.t_ms;
  setText(time, fmtAge(serverNow() - ev.t_ms) + " ago");
  const target = ev.model
    ? h(
        "button",
        {
          type: "button",
          class: "linklike",
          title: "Show " + ev.model,
          onclick: () => focusModel(ev.model),
        },
        ev.model,
      )
    : null;
  const where = ev.host ? h("code", {}, ev.host + (ev.port != null ? ":" + ev.port : "")) : null;
  return h(
    "li",
    {
      class: "event " + (EVENT_CLASS[ev.kind] || "ok"),
      "data-testid": "event",
      dataset: { kind: ev.kind, seq: ev.seq },
    },
    h(
      "div",
      { class: "ev-line" },
      h("span", { class: "ev-kind" }, EVENT_WORDS[ev.kind] || ev.kind),
      h("span", { class: "ev-time small muted" }, time, " · ", fmtClock(ev.t_ms)),
    ),
    target || where
      ? h("div", { class: "ev-what small" }, target, target && where ? " " : null, where)
      : null,
    ev.detail ? h("div", { class: "ev-detail small muted" }, ev.detail) : null,
  );
}

function focusModel(model) {
  const f = $("f-text");
  const name = model.split("@")[0];
  f.value = name;
  S.filter.text = name.toLowerCase();
  S.groupPage = 0;
  S.userExpanded.set(model, true);
  renderGroups();
  const g = S.groups.get(model);
  if (g) {
    g.el.scrollIntoView({ block: "start" });
    g.toggle.focus();
    maybeFetch(g, true);
  }
}

// ---- playground ---------------------------------------------------------------------------------

function renderPlaygroundModels(st) {
  const names = st.models
    .filter((m) => m.type === "llm" && m.routable > 0)
    .map((m) => m.name)
    .sort();
  const key = names.join("\n");
  if (key === S.playModels) return;
  S.playModels = key;
  const sel = $("pg-model");
  const cur = sel.value;
  sel.textContent = "";
  if (!names.length) {
    sel.append(h("option", { value: "" }, "no routable chat model"));
  } else {
    for (const n of names) sel.append(h("option", { value: n }, n));
    if (names.includes(cur)) sel.value = cur;
    else if (st.server.llm_model && names.includes(st.server.llm_model))
      sel.value = st.server.llm_model;
  }
  if (!PG.running) $("pg-send").disabled = !names.length;
}

const PG = { running: false, ctl: null };

function pgSet(id, text) {
  setText($(id), text);
}

async function playgroundSend(e) {
  if (e) e.preventDefault();
  if (PG.running) return;
  const model = $("pg-model").value;
  const text = $("pg-input").value.trim();
  if (!model || !text) {
    pgSet("pg-status", !model ? "choose a model" : "type a message");
    return;
  }
  const messages = [];
  const sys = $("pg-system").value.trim();
  if (sys) messages.push({ role: "system", content: sys });
  messages.push({ role: "user", content: text });
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const maxTok = parseInt($("pg-max").value, 10);
  if (maxTok > 0) body.max_tokens = maxTok;
  const temp = Number($("pg-temp").value);
  if ($("pg-temp").value !== "" && Number.isFinite(temp)) body.temperature = temp;

  const out = $("pg-output");
  out.textContent = "";
  const textNode = document.createTextNode("");
  out.append(textNode);
  out.dataset.chunks = "0";
  out.dataset.state = "running";
  const errEl = $("pg-error");
  errEl.hidden = true;
  errEl.textContent = "";
  for (const id of ["pg-ttft", "pg-total", "pg-tokens", "pg-tps"]) pgSet(id, "—");
  PG.running = true;
  PG.ctl = new AbortController();
  $("pg-send").disabled = true;
  $("pg-stop").disabled = false;
  pgSet("pg-status", "sending…");

  const t0 = performance.now();
  let tFirst = null;
  let chunks = 0;
  let usage = null;
  let done = false;
  let failure = null;
  let outcome = "";
  const stats = () => {
    const now = performance.now();
    pgSet("pg-total", fmtMs(now - t0));
    if (usage && usage.completion_tokens != null) {
      pgSet(
        "pg-tokens",
        fmtInt(usage.completion_tokens) +
          (usage.prompt_tokens != null ? " (prompt " + fmtInt(usage.prompt_tokens) + ")" : ""),
      );
    } else {
      pgSet("pg-tokens", chunks ? "≈" + fmtInt(chunks) + " chunks" : "—");
    }
    const n = usage && usage.completion_tokens != null ? usage.completion_tokens : chunks;
    if (tFirst != null && n > 0) pgSet("pg-tps", fmtRps(n / (Math.max(1, now - t0) / 1000)));
  };
  try {
    let r;
    for (let attempt = 0; ; attempt++) {
      r = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal: PG.ctl.signal,
        cache: "no-store",
      });
      if (r.status === 401 && attempt < 3) {
        let b = null;
        try {
          b = await r.json();
        } catch (x) {
          /* not JSON */
        }
        const err = errorOfBody(b, 401);
        if (err.code === "invalid_api_key" && (await askKey(err.message))) continue;
        failure = err;
        break;
      }
      break;
    }
    if (!failure && !r.ok) {
      let b = null;
      let raw = "";
      try {
        raw = await r.text();
        b = JSON.parse(raw);
      } catch (x) {
        /* not JSON */
      }
      failure = errorOfBody(b, r.status);
      if (!b && raw) failure.message = raw.slice(0, 300);
    }
    if (!failure) {
      pgSet("pg-status", "streaming…");
      const ctype = r.headers.get("Content-Type") || "";
      if (!ctype.includes("text/event-stream")) {
        // a server that ignored stream:true: show its whole answer
        const b = await r.json();
        tFirst = performance.now();
        const msg = b.choices && b.choices[0] && b.choices[0].message;
        textNode.appendData((msg && msg.content) || "");
        chunks = 1;
        usage = b.usage || null;
        done = true;
      } else {
        const parser = new SSEParser((type, data) => {
          if (done || failure) return;
          if (data === "[DONE]") {
            done = true;
            return;
          }
          let obj;
          try {
            obj = JSON.parse(data);
          } catch (x) {
            failure = {
              message: "a chunk that is not JSON: " + data.slice(0, 200),
              code: null,
              status: 0,
            };
            return;
          }
          if (obj.error) {
            failure = errorOfBody(obj, 0);
            return;
          }
          if (obj.usage) usage = obj.usage;
          const ch = obj.choices && obj.choices[0];
          const piece =
            ch && ch.delta && typeof ch.delta.content === "string" ? ch.delta.content : "";
          if (piece) {
            if (tFirst == null) {
              tFirst = performance.now();
              pgSet("pg-ttft", fmtMs(tFirst - t0));
            }
            textNode.appendData(piece);
            chunks++;
            out.dataset.chunks = String(chunks);
          }
        });
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let lastStats = 0;
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          parser.push(value);
          if (performance.now() - lastStats > 100) {
            lastStats = performance.now();
            stats();
          }
          if (failure) {
            PG.ctl.abort();
            break;
          }
        }
        if (!done && !failure)
          failure = { message: "the stream ended without [DONE]", code: null, status: 0 };
      }
    }
  } catch (x) {
    if (PG.ctl.signal.aborted && !failure) outcome = "stopped";
    else if (!failure) failure = { message: x.message || String(x), code: null, status: 0 };
  }
  if (tFirst != null) pgSet("pg-ttft", fmtMs(tFirst - t0));
  stats();
  if (failure) {
    errEl.hidden = false;
    errEl.textContent = (chunks ? "The stream broke off: " : "Failed: ") + describeError(failure);
    outcome = "error";
  } else if (!outcome) {
    outcome = "done";
  }
  out.dataset.state = outcome;
  pgSet("pg-status", outcome === "done" ? "done" : outcome === "stopped" ? "stopped" : "error");
  PG.running = false;
  PG.ctl = null;
  $("pg-send").disabled = !$("pg-model").value;
  $("pg-stop").disabled = true;
}

// ---- keys and aliases (cluster settings) ---------------------------------------------
//
// Read and changed through the webserver (/api/dashboard/keys, /aliases),
// which forwards to a controller with its own secret; the page sends the
// cluster secret like an action. A created key is shown once, in the
// "new key" box, and lives nowhere else in the page: not in S, not in
// sessionStorage; closing the box (or creating another) blanks it.

const K = { loaded: false, busy: false, nkeys: 0 };

function fmtDate(ms) {
  if (!ms) return "never";
  const d = new Date(ms);
  return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function splitModels(text) {
  return text
    .split(",")
    .map((m) => m.trim())
    .filter((m) => m);
}

function showKeysResult(kind, text) {
  showBanner("keys-result", kind, text);
}

/** Makes sure the page holds a cluster secret when the server wants one. */
async function haveSecret(what) {
  const sv = (S.state && S.state.server) || {};
  if (!sv.secret_required || load(SECRET_STORE)) return true;
  if (await askSecret("")) return true;
  showKeysResult("cancelled", what + ": cancelled (no cluster secret).");
  return false;
}

async function settingsCall(path, method, body) {
  const opts = { method, secret: true };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers = { "Content-Type": "application/json" };
  }
  return api(path, opts);
}

function forgetNewKey() {
  $("new-key-value").value = "";
  $("new-key").hidden = true;
}

async function loadKeys() {
  if (K.busy || !(await haveSecret("Show keys"))) return;
  K.busy = true;
  $("keys-load").disabled = true;
  const r = await settingsCall("/api/dashboard/keys", "GET");
  K.busy = false;
  $("keys-load").disabled = false;
  if (!r.ok || !r.body) {
    showKeysResult("error", "Reading the keys failed: " + describeError(r.error));
    return;
  }
  K.loaded = true;
  $("keys-load").textContent = "Refresh";
  $("keys-body").hidden = false;
  $("keys-body").dataset.controller = r.body.controller || "";
  renderKeys(r.body.keys || []);
  K.nkeys = (r.body.keys || []).length;
  renderAliases(r.body.aliases || []);
}

function refusals(u) {
  const rej = (u && u.rejected) || {};
  const bits = Object.entries(rej)
    .filter(([, n]) => n > 0)
    .map(([why, n]) => why + " " + fmtInt(n));
  return bits.length ? bits.join(", ") : "0";
}

function keyStatus(k) {
  if (k.revoked_ms) return "revoked";
  if (k.expires_ms && k.expires_ms <= serverNow()) return "expired";
  return "active";
}

function renderKeys(keys) {
  const body = $("keys-rows");
  body.textContent = "";
  keys.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const k of keys) {
    const u = k.usage || {};
    const st = keyStatus(k);
    const acts = h("td", { class: "acts" });
    if (st !== "revoked")
      acts.append(
        h(
          "button",
          {
            type: "button",
            class: "btn small-btn",
            "data-testid": "key-revoke",
            onclick: () => keyAction(k.name, false),
          },
          "Revoke",
        ),
      );
    acts.append(
      h(
        "button",
        {
          type: "button",
          class: "btn small-btn",
          "data-testid": "key-purge",
          onclick: () => keyAction(k.name, true),
        },
        "Delete",
      ),
    );
    body.append(
      h(
        "tr",
        { "data-testid": "key-row", dataset: { name: k.name, status: st } },
        h("td", null, h("code", null, k.name)),
        h("td", null, h("code", null, (k.prefix || "") + "…")),
        h(
          "td",
          { "data-testid": "key-models" },
          k.models && k.models.length ? k.models.join(", ") : "all",
        ),
        h("td", { class: "num" }, k.rpm ? fmtInt(k.rpm) : "—"),
        h("td", { class: "num" }, k.tpm ? fmtInt(k.tpm) : "—"),
        h("td", { class: "num" }, String(k.priority ?? 0)),
        h("td", null, fmtDate(k.expires_ms)),
        h(
          "td",
          { "data-testid": "key-status" },
          h(
            "span",
            { class: st === "active" ? "ok-text" : "bad-text" },
            st + (k.revoked_ms ? " " + fmtDate(k.revoked_ms) : ""),
          ),
        ),
        h("td", { class: "num", "data-testid": "key-requests" }, fmtInt(u.requests ?? 0)),
        h("td", { "data-testid": "key-refused" }, refusals(u)),
        h(
          "td",
          { class: "num", "data-testid": "key-tokens" },
          fmtInt(u.prompt_tokens ?? 0) + " / " + fmtInt(u.completion_tokens ?? 0),
        ),
        acts,
      ),
    );
  }
  $("keys-empty").hidden = keys.length > 0;
}

function renderAliases(aliases) {
  const body = $("alias-rows");
  body.textContent = "";
  aliases.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const a of aliases) {
    body.append(
      h(
        "tr",
        { "data-testid": "alias-row", dataset: { name: a.name } },
        h("td", null, h("code", null, a.name)),
        h("td", { "data-testid": "alias-models" }, (a.models || []).join(" → ")),
        h("td", null, a.updated_ms ? fmtDate(a.updated_ms) : "—"),
        h(
          "td",
          { class: "acts" },
          h(
            "button",
            {
              type: "button",
              class: "btn small-btn",
              "data-testid": "alias-remove",
              onclick: () => aliasRemove(a.name),
            },
            "Remove",
          ),
        ),
      ),
    );
  }
  $("aliases-empty").hidden = aliases.length > 0;
}

async function createKey(e) {
  e.preventDefault();
  const name = $("kc-name").value.trim();
  const body = { name };
  const models = splitModels($("kc-models").value);
  if (models.length) body.models = models;
  for (const f of ["rpm", "tpm", "priority"]) {
    const v = Number($("kc-" + f).value || 0);
    if (v) body[f] = v;
  }
  const exp = $("kc-expires").value;
  if (exp) body.expires_at = Math.floor(new Date(exp).getTime() / 1000);
  if (!(await haveSecret("Create key " + name))) return;
  forgetNewKey();
  showKeysResult("pending", "Create key " + name + "…");
  const r = await settingsCall("/api/dashboard/keys", "POST", body);
  const res = r.ok && r.body && r.body.result;
  if (!res || !res.key) {
    showKeysResult("error", "Create key " + name + ": failed; " + describeError(r.error || {}));
    return;
  }
  $("new-key-value").value = res.key;
  $("new-key").hidden = false;
  $("new-key-value").focus();
  $("new-key-value").select();
  $("key-create").reset();
  const sv = (S.state && S.state.server) || {};
  const closing = K.nkeys === 0 && !sv.api_keys && !load(KEY_STORE);
  showKeysResult(
    "ok",
    "Created key " +
      name +
      " (" +
      res.prefix +
      "…) through controller " +
      r.body.controller +
      "." +
      (closing
        ? " It is the first key: the API, this page's data included, now needs a key " +
          "(this one works); the page will ask for one."
        : ""),
  );
  if (closing) {
    // reading the list now would ask for an API key over the new key's
    // box: show the row from the answer (without the key) instead
    const row = Object.assign({}, res, { key: undefined });
    renderKeys([row]);
    K.nkeys = 1;
  } else {
    await loadKeys();
  }
}

async function keyAction(name, purge) {
  const verb = purge ? "Delete" : "Revoke";
  const ok = await confirmDialog(
    verb + " key " + name + "?",
    purge
      ? "Deletes the key: it is refused on every node within a second and its name is free again."
      : "Refused on every node within a second (requests in flight finish). The key stays listed as revoked.",
    verb,
  );
  if (!ok || !(await haveSecret(verb + " key " + name))) return;
  showKeysResult("pending", verb + " key " + name + "…");
  const r = await settingsCall("/api/dashboard/keys/revoke", "POST", { name, purge });
  if (r.ok) {
    showKeysResult(
      "ok",
      verb +
        " key " +
        name +
        ": done (controller " +
        r.body.controller +
        ", settings version " +
        ((r.body.result && r.body.result.version) ?? "?") +
        ").",
    );
  } else {
    showKeysResult("error", verb + " key " + name + ": failed; " + describeError(r.error));
  }
  await loadKeys();
}

async function setAlias(e) {
  e.preventDefault();
  const name = $("as-name").value.trim();
  const models = splitModels($("as-models").value);
  if (!(await haveSecret("Set alias " + name))) return;
  showKeysResult("pending", "Set alias " + name + "…");
  const r = await settingsCall("/api/dashboard/aliases", "POST", { name, models });
  if (r.ok) {
    showKeysResult("ok", "Set alias " + name + " → " + models.join(", ") + ".");
    $("alias-set").reset();
  } else {
    showKeysResult("error", "Set alias " + name + ": failed; " + describeError(r.error));
  }
  await loadKeys();
}

async function aliasRemove(name) {
  if (!(await confirmDialog("Remove alias " + name + "?", "Requests for it fail.", "Remove")))
    return;
  if (!(await haveSecret("Remove alias " + name))) return;
  const r = await settingsCall("/api/dashboard/aliases/remove", "POST", { name });
  if (r.ok) showKeysResult("ok", "Removed alias " + name + ".");
  else showKeysResult("error", "Remove alias " + name + ": failed; " + describeError(r.error));
  await loadKeys();
}

// Copies the text field `inputId` to the clipboard (or selects it for a
// manual copy when the page may not write there); button `buttonId` says which.
async function copyField(inputId, buttonId) {
  const input = $(inputId);
  let ok = false;
  try {
    await navigator.clipboard.writeText(input.value);
    ok = true;
  } catch (e) {
    input.select();
    try {
      ok = document.execCommand("copy");
    } catch (x) {
      ok = false;
    }
  }
  $(buttonId).textContent = ok ? "Copied" : "Select and copy";
  setTimeout(() => {
    $(buttonId).textContent = "Copy";
  }, 2000);
}

// ---- the 1 s tick ------------------------------------------------------------------------

function tick() {
  updateBanner();
  if (!S.state) return;
  renderTableAge();
  for (const g of S.groups.values()) {
    if (!g.expanded) continue;
    for (const row of g.rows.values()) updateRowAges(row);
  }
  const now = serverNow();
  for (const t of $("event-list").querySelectorAll("time.rel"))
    setText(t, fmtAge(now - t._ms) + " ago");
  // watchdog: a live stream says something every tick; silence = dead
  if (
    S.conn === "live" &&
    S.streamCtl &&
    performance.now() - S.lastMsgAt > Math.max(10000, 10 * tickMs())
  ) {
    S.streamCtl.abort();
  }
}

// ---- wiring ----------------------------------------------------------------------------------

function init() {
  S.observer = new IntersectionObserver(
    (entries) => {
      for (const e of entries) {
        const g = e.target._group;
        if (!g) continue;
        g.visible = e.isIntersecting;
        if (g.visible) maybeFetch(g);
      }
    },
    { rootMargin: "200px 0px" },
  );

  $("filters").addEventListener("submit", (e) => e.preventDefault());
  let ft = null;
  $("f-text").addEventListener("input", () => {
    clearTimeout(ft);
    ft = setTimeout(() => {
      S.filter.text = $("f-text").value.trim().toLowerCase();
      S.groupPage = 0;
      renderGroups();
    }, 150);
  });
  $("f-status").addEventListener("change", () => {
    S.filter.status = $("f-status").value;
    S.groupPage = 0;
    for (const g of S.groups.values()) g.offset = 0;
    renderGroups();
  });
  $("f-type").addEventListener("change", () => {
    S.filter.type = $("f-type").value;
    S.groupPage = 0;
    renderGroups();
  });
  $("expand-all").addEventListener("click", () => {
    for (const g of S.groups.values()) S.userExpanded.set(g.model, true);
    renderGroups();
  });
  $("collapse-all").addEventListener("click", () => {
    if (S.state) for (const m of S.state.models) S.userExpanded.set(m.model, false);
    renderGroups();
  });
  $("groups-prev").addEventListener("click", () => {
    S.groupPage = Math.max(0, S.groupPage - 1);
    renderGroups();
    $("models").scrollIntoView({ block: "start" });
  });
  $("groups-next").addEventListener("click", () => {
    S.groupPage++;
    renderGroups();
    $("models").scrollIntoView({ block: "start" });
  });
  $("ev-filter").addEventListener("change", () => renderEvents(true));
  $("banner-retry").addEventListener("click", async () => {
    if (S.conn === "auth" && !(await askKey(""))) return;
    if (S.retryNow) S.retryNow();
  });
  $("copy-url").addEventListener("click", () => copyField("base-url", "copy-url"));
  $("pg-form").addEventListener("submit", playgroundSend);
  $("keys-load").addEventListener("click", loadKeys);
  $("key-create").addEventListener("submit", createKey);
  $("alias-set").addEventListener("submit", setAlias);
  $("new-key-copy").addEventListener("click", () => copyField("new-key-value", "new-key-copy"));
  $("new-key-done").addEventListener("click", forgetNewKey);
  $("pg-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) playgroundSend(e);
  });
  $("pg-stop").addEventListener("click", () => {
    if (PG.ctl) PG.ctl.abort();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (document.querySelector("dialog[open]")) return;
    e.preventDefault();
    $("f-text").focus();
  });
  // Enter in a dialog's field means its OK button (the form's first
  // submit button, which implicit submission would use, is Cancel)
  for (const dlg of document.querySelectorAll("dialog")) {
    const form = dlg.querySelector("form");
    const ok = form && form.querySelector("button[value=ok]");
    if (!ok) continue;
    form.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target.tagName === "INPUT") {
        e.preventDefault();
        form.requestSubmit(ok);
      }
    });
  }
  $("pg-send").disabled = true;
  setInterval(tick, 1000);
  streamLoop();
}

init();
