// The dashboard in a real browser (Debian's Chromium, driven by
// playwright-core): what a user sees and does, against a running webserver.
// Driven by tests/service/test_dashboard.py, which starts the processes,
// passes what to look for in the environment and asserts on the one JSON
// object this prints. It asserts nothing itself beyond "the step could be
// done": every wait has a deadline and a failed step ends the run with
// {"error": ...} (exit code 1), so Python sees how far it got.
//
// env:
//   ROSTER_DASHBOARD_URL   the page (http://127.0.0.1:PORT/)
//   ROSTER_SCENARIO        acceptance (default) | scale | keys (the Keys view: create a key,
//                          use it on /v1/models, revoke it, an alias set and removed)
//   ROSTER_API_KEY         enter this key when the page asks (a wrong one first)
//   ROSTER_CLUSTER_SECRET  enter this secret when an action asks (a wrong one first)
//   ROSTER_EXPECT          JSON [{"model":"m@llm","instance":"host:port"}]: rows to find
//   ROSTER_DRAIN           JSON {"model","instance"}: drain it through the UI
//   ROSTER_KILL            JSON {"model","instance","pid"} (SIGKILL) or {"model","instance","url"}
//                          (GET the URL instead: fixtures): time until the row says unhealthy
//   ROSTER_KILL_CONTROLLER JSON {"pid"}: SIGKILL it last; the page must say the table is stale
//   ROSTER_CHAT_MODEL      the playground's model
//   ROSTER_SCALE           JSON for the scale scenario: {"model": "m@llm" (one big model to
//                          page through), "search": "text", "search_hits": n, "change":
//                          {"url", "body", "instance"} (POST body to url, then wait for the
//                          instance's row on the big model's first page to show weight 0)}
//   ROSTER_SCREENSHOT_DIR  save screenshots there when set (ROSTER_SCREENSHOT_TAG prefixes them)
//   ROSTER_CHROMIUM        the browser (default /usr/bin/chromium)
//   ROSTER_BROWSER_TIMEOUT seconds per wait (default 20)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

// playwright-core lives in tests/node (one package.json, one lock file)
const require = createRequire(new URL("../node/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const env = process.env;
const url = env.ROSTER_DASHBOARD_URL;
const scenario = env.ROSTER_SCENARIO || "acceptance";
const json = (name) => (env[name] ? JSON.parse(env[name]) : null);
const waitMs = Number(env.ROSTER_BROWSER_TIMEOUT || 20) * 1000;
const shotDir = env.ROSTER_SCREENSHOT_DIR || "";
const shotTag = env.ROSTER_SCREENSHOT_TAG ? env.ROSTER_SCREENSHOT_TAG + "-" : "";

const out = {
  scenario,
  steps: [],
  console: [],
  page_errors: [],
  failed_requests: [],
  http_errors: [],
  expected_401: 0,
  loads: 0,
  screenshots: [],
  error: null,
};
const step = (name, extra) =>
  out.steps.push(Object.assign({ step: name, t_ms: Math.round(performance.now()) }, extra || {}));

const browser = await chromium.launch({
  executablePath: env.ROSTER_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(waitMs);

// Everything that went wrong on the page, whatever the step.
let authPhase = Boolean(env.ROSTER_API_KEY); // 401s are expected until the key is in
// Chromium logs every 4xx as a console error: the 401s the run provokes on
// purpose (no key yet, a wrong key, a wrong secret) are counted apart.
out.console_401 = 0;
out.console_409 = 0; // the keys scenario provokes one (a name taken)
out.expected_409 = 0;
let expected409 = 0;
page.on("console", (m) => {
  if (m.type() !== "error" && m.type() !== "warning") return;
  if (/status of 401/.test(m.text())) out.console_401++;
  else if (/status of 409/.test(m.text())) out.console_409++;
  else out.console.push(m.type() + ": " + m.text());
});
page.on("pageerror", (e) => out.page_errors.push(String(e.message || e)));
page.on("load", () => out.loads++);
page.on("requestfailed", (r) => {
  const why = r.failure() ? r.failure().errorText : "?";
  // aborting our own stream (Stop, or page close) is not a failure
  if (
    why === "net::ERR_ABORTED" &&
    (r.url().includes("/v1/chat/completions") || r.url().includes("/stream"))
  )
    return;
  out.failed_requests.push(r.method() + " " + r.url() + " " + why);
});
const apiRequests = [];
page.on("request", (r) => {
  const u = new URL(r.url());
  if (u.pathname.startsWith("/api/dashboard/instances"))
    apiRequests.push({ t: performance.now(), url: u.pathname + u.search });
});
let expectedSecret401 = 0;
page.on("response", (r) => {
  if (r.status() < 400) return;
  const u = new URL(r.url());
  if (r.status() === 401 && authPhase) {
    out.expected_401++;
    return;
  }
  if (r.status() === 409 && expected409 > 0 && u.pathname.startsWith("/api/dashboard/")) {
    expected409--;
    out.expected_409++;
    return;
  }
  if (r.status() === 401 && expectedSecret401 > 0 && u.pathname.startsWith("/api/dashboard/")) {
    expectedSecret401--;
    out.expected_401++;
    return;
  }
  out.http_errors.push(r.status() + " " + r.request().method() + " " + u.pathname + u.search);
});

async function shot(name) {
  if (!shotDir) return;
  fs.mkdirSync(shotDir, { recursive: true });
  const file = path.join(shotDir, shotTag + name + ".png");
  await page.screenshot({ path: file });
  out.screenshots.push(file);
}

const groupSel = (model) => `[data-testid=model-group][data-model="${model}"]`;
const rowSel = (model, inst) =>
  `${groupSel(model)} [data-testid=instance-row][data-instance="${inst}"]`;

async function expandGroup(model) {
  const g = page.locator(groupSel(model));
  await g.waitFor();
  const toggle = g.locator("[data-testid=model-toggle]");
  if ((await toggle.getAttribute("aria-expanded")) !== "true") await toggle.click();
  await page.waitForFunction(
    (sel) => document.querySelector(sel).getAttribute("aria-expanded") === "true",
    groupSel(model) + " [data-testid=model-toggle]",
  );
  return g;
}

async function findRow(model, inst) {
  await expandGroup(model);
  let row = page.locator(rowSel(model, inst));
  if ((await row.count()) === 0) {
    // not on the first page: filter the group by host:port
    await page.locator(groupSel(model) + " [data-testid=instance-filter]").fill(inst);
  }
  row = page.locator(rowSel(model, inst));
  await row.waitFor();
  return row;
}

async function enterKey() {
  // a wrong key first: the page must ask again, saying why
  await page.locator("#key-dialog[open]").waitFor();
  step("key dialog shown");
  await page.fill("[data-testid=key-input]", "wrong-" + env.ROSTER_API_KEY);
  await page.click("[data-testid=key-submit]");
  await page.locator("#key-dialog[open] #key-error:not([hidden])").waitFor();
  out.key_error_text = await page.textContent("#key-error");
  step("wrong key refused", { text: out.key_error_text });
  await page.fill("[data-testid=key-input]", env.ROSTER_API_KEY);
  authPhase = false;
  await page.click("[data-testid=key-submit]");
}

async function load() {
  const t0 = performance.now();
  await page.goto(url);
  if (env.ROSTER_API_KEY) await enterKey();
  await page.locator("body[data-loaded='1']").waitFor();
  out.first_state_ms = Math.round(performance.now() - t0);
  out.mode = await page.textContent("[data-testid=mode]");
  out.base_url = await page.inputValue("[data-testid=base-url]");
  step("loaded", { ms: out.first_state_ms });
}

async function acceptance() {
  await load();
  await page.waitForTimeout(300); // let the events of the first connect render
  await shot("overview");

  const expect = json("ROSTER_EXPECT") || [];
  out.listed = {};
  for (const e of expect) {
    const row = await findRow(e.model, e.instance);
    out.listed[e.model + " " + e.instance] = await row
      .locator("[data-testid=health]")
      .textContent();
  }
  step("listed", { n: expect.length });
  if (expect.length) {
    await page.locator(groupSel(expect[0].model)).scrollIntoViewIfNeeded();
    await shot("expanded");
  }

  const drain = json("ROSTER_DRAIN");
  if (drain) {
    const row = await findRow(drain.model, drain.instance);
    out.drain = { weight_before: await row.getAttribute("data-weight") };
    await row.locator("[data-testid=drain]").click();
    await page.locator("#confirm-dialog[open]").waitFor();
    out.drain.dialog_text = (await page.textContent("#confirm-dialog")).replace(/\s+/g, " ").trim();
    await shot("dialog");
    await page.click("[data-testid=confirm-ok]");
    if (env.ROSTER_CLUSTER_SECRET) {
      await page.locator("#secret-dialog[open]").waitFor();
      step("secret dialog shown");
      expectedSecret401 = 1;
      await page.fill("[data-testid=secret-input]", "wrong-" + env.ROSTER_CLUSTER_SECRET);
      await page.click("[data-testid=secret-submit]");
      await page.locator("#secret-dialog[open] #secret-error:not([hidden])").waitFor();
      out.drain.secret_error_text = await page.textContent("#secret-error");
      await page.fill("[data-testid=secret-input]", env.ROSTER_CLUSTER_SECRET);
      await page.click("[data-testid=secret-submit]");
    }
    const result = page.locator("[data-testid=action-result]:is([data-kind=ok],[data-kind=error])");
    await result.waitFor();
    out.drain.result_kind = await result.getAttribute("data-kind");
    out.drain.result_text = await result.locator(".msg").textContent();
    // the row changes when the server's table has the change, not before
    await page.waitForFunction(
      (sel) => {
        const r = document.querySelector(sel);
        return r && r.dataset.weight === "0";
      },
      rowSel(drain.model, drain.instance),
    );
    out.drain.weight_after = await row.getAttribute("data-weight");
    out.drain.button_after = await row.locator("[data-testid=undrain]").count();
    step("drained", { result: out.drain.result_kind });
  }

  const chat = env.ROSTER_CHAT_MODEL;
  if (chat) {
    await page.locator("#playground").scrollIntoViewIfNeeded();
    await page.waitForFunction(
      (m) =>
        [...document.querySelectorAll("[data-testid=pg-model] option")].some((o) => o.value === m),
      chat,
    );
    await page.selectOption("[data-testid=pg-model]", chat);
    await page.fill("[data-testid=pg-system]", "Answer briefly.");
    await page.fill("[data-testid=pg-input]", "How does a worker register?");
    await page.fill("[data-testid=pg-max]", "40");
    await page.click("[data-testid=pg-send]");
    await page.waitForFunction(() => {
      const s = document.querySelector("[data-testid=pg-output]").dataset.state;
      return s && s !== "running";
    });
    out.playground = {
      state: await page.getAttribute("[data-testid=pg-output]", "data-state"),
      chunks: Number(await page.getAttribute("[data-testid=pg-output]", "data-chunks")),
      text: await page.textContent("[data-testid=pg-output]"),
      ttft: await page.textContent("[data-testid=pg-ttft]"),
      total: await page.textContent("[data-testid=pg-total]"),
      tokens: await page.textContent("[data-testid=pg-tokens]"),
      tps: await page.textContent("[data-testid=pg-tps]"),
      error: (await page.isVisible("[data-testid=pg-error]"))
        ? await page.textContent("[data-testid=pg-error]")
        : null,
    };
    await shot("playground");
    step("playground", { state: out.playground.state });
  }

  const kill = json("ROSTER_KILL");
  if (kill) {
    const row = await findRow(kill.model, kill.instance);
    await page.locator(groupSel(kill.model)).scrollIntoViewIfNeeded();
    out.kill = { before: await row.locator("[data-testid=health]").textContent() };
    const loadsBefore = out.loads;
    const t0 = performance.now();
    if (kill.pid) process.kill(kill.pid, "SIGKILL");
    else await fetch(kill.url);
    await page.waitForFunction(
      (sel) => {
        const h = document.querySelector(sel);
        return h && h.textContent === "unhealthy";
      },
      rowSel(kill.model, kill.instance) + " [data-testid=health]",
      { polling: 50 },
    );
    out.kill.unhealthy_after_ms = Math.round(performance.now() - t0);
    out.kill.reloads = out.loads - loadsBefore;
    // and the feed says so
    await page.locator(`[data-testid=event][data-kind=unhealthy]`).first().waitFor();
    await shot("unhealthy");
    step("killed", { ms: out.kill.unhealthy_after_ms });
  }

  const ctl = json("ROSTER_KILL_CONTROLLER");
  if (ctl) {
    // every controller gone: the page says the table is stale and which
    // controller is down, and keeps showing the last state
    const t0 = performance.now();
    process.kill(ctl.pid, "SIGKILL");
    await page.locator("[data-testid=table-banner]:not([hidden])").waitFor();
    await page.locator("[data-testid=controller][data-ok='0']").waitFor();
    out.controller_down = {
      ms: Math.round(performance.now() - t0),
      banner: await page.textContent("[data-testid=table-banner]"),
      rows: await page.locator("[data-testid=instance-row]").count(),
    };
    await page.locator("[data-testid=event][data-kind=controller_down]").first().waitFor();
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot("controller-down");
    step("controller down", { ms: out.controller_down.ms });
  }

  out.event_kinds = [
    ...new Set(
      await page
        .locator("[data-testid=event]")
        .evaluateAll((els) => els.map((e) => e.dataset.kind)),
    ),
  ].sort();
  out.banner_visible = await page.isVisible("[data-testid=conn-banner]");
  out.conn = await page.textContent("[data-testid=conn-state]");
}

// Thousands of instances: what is in the DOM, how many requests a tick
// costs, how long the main thread is blocked.
async function scale() {
  const sc = json("ROSTER_SCALE") || {};
  await page.addInitScript(() => {
    window.__longtasks = [];
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) window.__longtasks.push(e.duration);
    }).observe({ type: "longtask", buffered: true });
  });
  await load();
  await page.waitForTimeout(500);
  await shot("scale-overview");
  out.groups_in_dom = await page.locator("[data-testid=model-group]").count();
  out.groups_page_info = (await page.isVisible("#groups-pager"))
    ? await page.textContent("#groups-page-info")
    : null;

  // open every shown group, then count requests over 5 s
  await page.click("#expand-all");
  await page.waitForTimeout(1500);
  const t0 = performance.now();
  const n0 = apiRequests.length;
  await page.waitForTimeout(5000);
  out.instances_requests_per_s = (apiRequests.length - n0) / ((performance.now() - t0) / 1000);
  // open groups on screen (the page's IntersectionObserver has a 200 px margin)
  out.expanded_on_screen = await page.evaluate(
    () =>
      [...document.querySelectorAll("[data-testid=model-group][data-expanded='1']")].filter((g) => {
        const r = g.getBoundingClientRect();
        return r.bottom > -200 && r.top < innerHeight + 200;
      }).length,
  );
  out.rows_in_dom = await page.locator("[data-testid=instance-row]").count();
  out.max_rows_per_group = Math.max(
    0,
    ...(await page
      .locator("[data-testid=model-group]")
      .evaluateAll((gs) => gs.map((g) => g.querySelectorAll("[data-testid=instance-row]").length))),
  );
  out.expanded_groups = await page.locator("[data-testid=model-group][data-expanded='1']").count();
  await shot("scale-expanded");
  await page.click("#collapse-all");

  if (sc.search) {
    await page.fill("[data-testid=filter-text]", sc.search);
    await page.waitForFunction(
      (n) => document.querySelectorAll("[data-testid=model-group]").length === n,
      sc.search_hits,
    );
    out.search_groups = await page.locator("[data-testid=model-group]").count();
    await page.fill("[data-testid=filter-text]", "");
  }
  if (sc.model) {
    const t1 = performance.now();
    const g = await expandGroup(sc.model);
    await g.locator("[data-testid=instance-row]").first().waitFor();
    out.big_first_rows_ms = Math.round(performance.now() - t1);
    out.big_page_info = await g.locator("[data-testid=page-info]").textContent();
    if (sc.change) {
      // a change made elsewhere shows on the open page, no reload
      const t2 = performance.now();
      const r = await fetch(sc.change.url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(sc.change.body),
      });
      if (!r.ok) throw new Error("the change was refused: " + r.status + " " + (await r.text()));
      await page.waitForFunction(
        (sel) => {
          const row = document.querySelector(sel);
          return row && row.dataset.weight === "0";
        },
        rowSel(sc.model, sc.change.instance),
      );
      out.change_shown_ms = Math.round(performance.now() - t2);
    }
    await g.locator("[data-testid=page-last]").click();
    await page.waitForFunction(
      (sel) => !/^1–/.test(document.querySelector(sel).textContent),
      groupSel(sc.model) + " [data-testid=page-info]",
    );
    out.big_last_page_info = await g.locator("[data-testid=page-info]").textContent();
    out.big_rows = await g.locator("[data-testid=instance-row]").count();
    await g.scrollIntoViewIfNeeded();
    await shot("scale-big-model");
  }
  out.longtasks_ms = (await page.evaluate(() => window.__longtasks)).map(Math.round);
  out.max_longtask_ms = Math.max(0, ...out.longtasks_ms);
}

// ---- the Keys view --------------------------------------------------------------------

/** GET /v1/models of the same webserver with `key` until it answers `want`
 *  (settings reach the node within a second). Returns the last status. */
async function modelsWith(key, want) {
  const deadline = performance.now() + waitMs;
  let status = 0;
  while (performance.now() < deadline) {
    const r = await fetch(new URL("/v1/models", url), {
      headers: { Authorization: "Bearer " + key },
    });
    status = r.status;
    await r.arrayBuffer();
    if (status === want) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  return status;
}

const keyRow = (name) => `[data-testid=key-row][data-name="${name}"]`;
const aliasRow = (name) => `[data-testid=alias-row][data-name="${name}"]`;

async function keysResult() {
  const r = page.locator("[data-testid=keys-result]:is([data-kind=ok],[data-kind=error])");
  await r.waitFor();
  const kind = await r.getAttribute("data-kind");
  const text = await r.locator(".msg").textContent();
  await r.locator("button").click(); // dismiss: the next wait sees the next answer
  return { kind, text };
}

async function keys() {
  await load();
  const k = (out.keys = {});
  await page.locator("#keys").scrollIntoViewIfNeeded();
  await page.click("[data-testid=keys-load]");
  if (env.ROSTER_CLUSTER_SECRET) {
    // a wrong secret first: refused (401), asked again
    await page.locator("#secret-dialog[open]").waitFor();
    expectedSecret401 = 1;
    await page.fill("[data-testid=secret-input]", "wrong-" + env.ROSTER_CLUSTER_SECRET);
    await page.click("[data-testid=secret-submit]");
    await page.locator("#secret-dialog[open] #secret-error:not([hidden])").waitFor();
    k.secret_error_text = await page.textContent("#secret-error");
    await page.fill("[data-testid=secret-input]", env.ROSTER_CLUSTER_SECRET);
    await page.click("[data-testid=secret-submit]");
  }
  await page.locator("#keys-body:not([hidden])").waitFor();
  step("keys shown");

  // create: shown once
  await page.fill("[data-testid=kc-name]", "ui-key");
  await page.fill("[data-testid=kc-models]", "roster-chat");
  await page.fill("[data-testid=kc-priority]", "2");
  await page.click("[data-testid=kc-submit]");
  await page.locator("[data-testid=new-key]:not([hidden])").waitFor();
  k.created_key = await page.inputValue("[data-testid=new-key-value]");
  k.warning = (await page.textContent("[data-testid=new-key]")).replace(/\s+/g, " ");
  await page.locator(keyRow("ui-key")).waitFor();
  k.row_status_before = await page.getAttribute(keyRow("ui-key"), "data-status");
  k.row_models = await page.textContent(keyRow("ui-key") + " [data-testid=key-models]");
  k.storage_has_key = await page.evaluate(
    (key) =>
      JSON.stringify(Object.entries(sessionStorage)).includes(key) ||
      JSON.stringify(Object.entries(localStorage)).includes(key),
    k.created_key,
  );
  k.create_result = await keysResult();
  step("key created");

  // it works against this webserver
  k.works_status = await modelsWith(k.created_key, 200);
  step("key works", { status: k.works_status });

  // an alias, set through the page (then the screenshot of the whole view)
  await page.fill("[data-testid=as-name]", "fast");
  await page.fill("[data-testid=as-models]", "roster-chat, roster-embed");
  await page.click("[data-testid=as-submit]");
  await page.locator(aliasRow("fast")).waitFor();
  k.alias_models = await page.textContent(aliasRow("fast") + " [data-testid=alias-models]");
  await keysResult();
  await page.locator("#keys").scrollIntoViewIfNeeded();
  await shot("keys");

  // closing the box forgets the key
  await page.click("[data-testid=new-key-done]");
  k.box_after_done = await page.inputValue("[data-testid=new-key-value]");
  await page.locator("[data-testid=new-key]").waitFor({ state: "hidden" });

  // its use shows (this webserver's counters), after a refresh
  const deadline = performance.now() + waitMs;
  for (;;) {
    await page.click("[data-testid=keys-load]");
    await page.waitForTimeout(100);
    k.requests_shown = await page.textContent(keyRow("ui-key") + " [data-testid=key-requests]");
    if (k.requests_shown !== "0" || performance.now() > deadline) break;
  }

  // a name taken: the controller's message
  expected409 = 1;
  await page.fill("[data-testid=kc-name]", "ui-key");
  await page.click("[data-testid=kc-submit]");
  const dup = await keysResult();
  k.dup_error = dup.kind === "error" ? dup.text : "not an error: " + dup.text;
  k.new_key_hidden_after_dup = await page.locator("[data-testid=new-key]").isHidden();

  // revoke, confirmed
  await page.click(keyRow("ui-key") + " [data-testid=key-revoke]");
  await page.locator("#confirm-dialog[open]").waitFor();
  k.confirm_text = (await page.textContent("#confirm-dialog")).replace(/\s+/g, " ").trim();
  await page.click("[data-testid=confirm-ok]");
  k.revoke_result = await keysResult();
  await page.locator(keyRow("ui-key") + "[data-status=revoked]").waitFor();
  k.row_status_after = await page.getAttribute(keyRow("ui-key"), "data-status");
  k.refused_status = await modelsWith(k.created_key, 401);
  step("key revoked", { status: k.refused_status });

  // the alias removed, confirmed
  await page.click(aliasRow("fast") + " [data-testid=alias-remove]");
  await page.locator("#confirm-dialog[open]").waitFor();
  await page.click("[data-testid=confirm-ok]");
  await keysResult();
  await page.locator(aliasRow("fast")).waitFor({ state: "detached" });
  k.alias_removed = (await page.locator(aliasRow("fast")).count()) === 0;
  step("alias removed");
}

let code = 0;
try {
  if (!url) throw new Error("ROSTER_DASHBOARD_URL is not set");
  if (scenario === "scale") await scale();
  else if (scenario === "keys") await keys();
  else await acceptance();
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
  code = 1;
  try {
    await shot("failure");
  } catch (x) {
    /* the page may be gone */
  }
}
await browser.close();
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(code);
