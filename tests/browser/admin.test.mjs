// The admin dashboard in a real browser: Debian's Chromium driven by playwright-core (never a
// downloaded browser), against the real service on a seeded database (`usersync dev`).
//
//   cargo build && cd tests/browser && npm ci && npm test
//
// Screenshots land in tests/browser/screenshots/.
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream, mkdirSync } from "node:fs";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const binary =
  process.env.USERSYNC_BIN ?? fileURLToPath(new URL("../../target/debug/usersync", import.meta.url));
const shots = fileURLToPath(new URL("./screenshots/", import.meta.url));
const KINDS = ["missing", "stale", "mismatched", "orphaned", "deleted"];

let service;
let browser;
let page;
const env = {};

async function status() {
  const response = await fetch(`${env.USERSYNC_URL}/v1/status`, {
    headers: { apikey: env.SECRET_KEY },
  });
  assert.equal(response.status, 200);
  return response.json();
}

/** Runs SQL in the throwaway database as its superuser: what Supabase Auth or a bad migration would do. */
function sql(statement) {
  execFileSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", env.DATABASE_URL, "-c", statement]);
}

async function deadLetters() {
  const response = await fetch(`${env.USERSYNC_URL}/v1/dead-letters`, { headers: { apikey: env.SECRET_KEY } });
  assert.equal(response.status, 200);
  return (await response.json()).dead_letters;
}

async function chartCounts() {
  return page.$$eval("#drift-chart g[data-kind]", (groups) =>
    Object.fromEntries(groups.map((g) => [g.dataset.kind, Number(g.dataset.count)])),
  );
}

/** Starts `usersync dev` and waits until it answers; its stderr goes to screenshots/dev-N.log. */
async function startService(attempt) {
  const child = spawn(binary, ["dev", "--listen", "127.0.0.1:0"], {
    env: { PATH: process.env.PATH, USERSYNC_LOG_FORMAT: "json" },
  });
  child.stderr.pipe(createWriteStream(`${shots}dev-${attempt}.log`));
  let out = "";
  for await (const chunk of child.stdout) {
    out += chunk;
    if (out.includes("Ctrl-C stops")) break;
  }
  const banner = {};
  for (const m of out.matchAll(/^export (\w+)=(\S+)/gm)) banner[m[1]] = m[2];
  banner.DATABASE_URL = out.match(/database \(throwaway\): (\S+)/)?.[1];
  for (let i = 0; i < 50 && banner.USERSYNC_URL; i++) {
    try {
      if ((await fetch(`${banner.USERSYNC_URL}/healthz`)).ok) return { child, banner };
    } catch (_) {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill("SIGKILL");
  return null;
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  let started = null;
  for (let attempt = 1; attempt <= 3 && !started; attempt++) started = await startService(attempt);
  assert.ok(started, "usersync dev did not answer; see tests/browser/screenshots/dev-*.log");
  service = started.child;
  Object.assign(env, started.banner);
  assert.ok(env.USERSYNC_URL && env.SECRET_KEY, "no banner");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // Nothing but the service may be asked for anything: the page must work offline.
  await page.route("**/*", (route) =>
    route.request().url().startsWith(env.USERSYNC_URL) ? route.continue() : route.abort(),
  );
});

after(async () => {
  await browser?.close();
  if (service) {
    service.kill("SIGTERM");
    await once(service, "exit");
  }
});

test("a wrong key is refused with a readable message and is not kept", async () => {
  await page.goto(`${env.USERSYNC_URL}/admin`);
  await page.fill("#key", "sb_secret_wrong_wrong_wrong_wrong");
  await page.press("#key", "Enter");
  await page.waitForSelector("#error:not([hidden])");
  const message = await page.textContent("#error");
  assert.match(message, /invalid_token/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("usersync.secretKey")), null);
  assert.equal(await page.isVisible("#login"), true);
});

test("with the key, the chart and the counts match GET /v1/status", async () => {
  await page.fill("#key", env.SECRET_KEY);
  await page.press("#key", "Enter");
  await page.waitForSelector("body[data-loaded=true]");
  assert.equal(await page.isVisible("#dashboard"), true);
  // The key lives in this tab's session storage only.
  assert.equal(await page.evaluate(() => sessionStorage.getItem("usersync.secretKey")), env.SECRET_KEY);
  assert.equal(await page.evaluate(() => localStorage.length), 0);

  const expected = await status();
  assert.deepEqual(await chartCounts(), Object.fromEntries(KINDS.map((k) => [k, expected.drift[k]])));
  assert.equal(await page.textContent("#source-total"), String(expected.source_total));
  assert.equal(await page.textContent("#target-total"), String(expected.target_total));
  assert.equal(await page.textContent("#dead-letters-pending"), String(expected.dead_letters_pending));
  assert.ok(expected.drift.missing > 0, "the demo data has missing users");
  await page.screenshot({ path: `${shots}dashboard.png`, fullPage: true });
});

test("a dry run from the page plans and writes nothing", async () => {
  const before = await status();
  await page.click("#dry-run");
  await page.waitForFunction(() => /Dry run succeeded/.test(document.querySelector("#run-note").textContent));
  const after = await status();
  assert.equal(after.target_total, before.target_total);
  assert.deepEqual(after.drift, before.drift);
  const row = page.locator("#runs tbody tr").first();
  assert.equal(await row.getAttribute("data-state"), "succeeded");
  assert.match(await row.textContent(), /dry run/);
  assert.match(await row.textContent(), new RegExp(`missing: ${before.drift.missing}`));
  // The run is a point of the drift-over-time chart, with a coloured legend entry per kind.
  assert.equal(await page.locator("#history-chart polyline").count(), KINDS.length);
  const swatches = await page.$$eval("#history-caption .swatch", (els) =>
    els.map((e) => getComputedStyle(e).backgroundColor),
  );
  assert.equal(new Set(swatches).size, KINDS.length, `legend colours: ${swatches}`);
});

test("apply shows the plan's counts first, then repairs", async () => {
  const before = await status();
  await page.click("#apply");
  await page.waitForSelector("#confirm[open]");
  const planned = await page.$$eval("#plan tbody tr", (rows) =>
    Object.fromEntries(rows.map((r) => [r.dataset.kind, Number(r.cells[2].textContent.replace(/,/g, ""))])),
  );
  assert.equal(planned.missing, before.drift.missing);
  await page.screenshot({ path: `${shots}confirm.png` });
  await page.click("#confirm-apply");
  await page.waitForFunction(() => /Applied\./.test(document.querySelector("#run-note").textContent));
  const after = await status();
  assert.equal(after.drift.missing, 0);
  assert.equal(after.target_total, before.target_total + before.drift.missing);
  await page.waitForFunction(
    (missing) => document.querySelector('#drift-chart g[data-kind="missing"]')?.dataset.count === String(missing),
    after.drift.missing,
  );
  assert.notEqual(await page.textContent("#last-success"), "never");
  await page.screenshot({ path: `${shots}applied.png`, fullPage: true });
});

test("cancelling an apply writes nothing", async () => {
  const before = await status();
  await page.click("#apply");
  await page.waitForSelector("#confirm[open]");
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => /cancelled/.test(document.querySelector("#run-note").textContent));
  assert.deepEqual((await status()).drift, before.drift);
});

test("usable by keyboard, readable, and fits a phone", async () => {
  // Every control has an accessible name, and Tab reaches the run buttons.
  const unnamed = await page.$$eval("button, input", (els) =>
    els.filter((e) => !e.hidden && !(e.labels?.length || e.textContent.trim() || e.getAttribute("aria-label"))).length,
  );
  assert.equal(unnamed, 0);
  await page.focus("#limit");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "dry-run");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "apply");

  // WCAG AA contrast (4.5:1) for body text, labels and buttons.
  const ratios = await page.evaluate(() => {
    const lum = (rgb) => {
      const [r, g, b] = rgb.match(/\d+/g).slice(0, 3).map(Number).map((c) => {
        const s = c / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const bg = getComputedStyle(e).backgroundColor;
        if (bg && !bg.endsWith(", 0)") && bg !== "transparent") return bg;
      }
      return "rgb(255, 255, 255)";
    };
    return ["h1", "h2", ".card dt", ".card dd", "#dry-run", "#apply", "td", ".note", "legend"].map((sel) => {
      const el = document.querySelector(sel);
      const [a, b] = [lum(getComputedStyle(el).color), lum(background(el))];
      return [sel, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
    });
  });
  for (const [selector, ratio] of ratios) assert.ok(ratio >= 4.5, `${selector}: contrast ${ratio.toFixed(2)}`);

  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  const wide = await page.evaluate(() =>
    [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth && !e.closest(".scroll"))
      .map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className}`)
      .slice(0, 8),
  );
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone: ${wide.join(" ")}`);
  await page.screenshot({ path: `${shots}phone.png`, fullPage: true });
});

const ADA = "00000000-0000-4000-8000-000000000001";
const LETTER = "00000000-0000-4000-8000-0000000000d1";

test("search by email opens the user panel with the differing column marked, and sync now heals it", async () => {
  await page.setViewportSize({ width: 1280, height: 900 });
  // Ada's email changes with the triggers off (as if they had been dropped): her profile is stale.
  sql(`set session_replication_role = replica;
       update auth.users set email = 'ada.lovelace@example.com' where id = '${ADA}'`);
  await page.fill("#find", "ADA.Lovelace@example.com");
  await page.press("#find", "Enter");
  await page.waitForSelector("#user-panel:not([hidden])");
  assert.match(await page.textContent("#user-title"), new RegExp(ADA));
  assert.match(await page.textContent("#user-drift"), /stale/);
  const differing = await page.$$eval("#user-sides tr.differs", (rows) => rows.map((r) => r.dataset.column));
  assert.deepEqual(differing, ["email"]);
  assert.match(await page.textContent('#user-sides tr[data-column="email"]'), /ada\.lovelace@example\.com.*ada@example\.com/);
  // No secret reaches the page.
  assert.doesNotMatch(await page.textContent("#user-panel"), /encrypted_password|\$2a\$/);
  await page.screenshot({ path: `${shots}user-panel.png`, fullPage: true });

  await page.click("#sync-now");
  await page.waitForFunction(() => /Synced: updated/.test(document.querySelector("#user-note").textContent));
  assert.match(await page.textContent("#user-drift"), /In step/);
  assert.equal(await page.locator("#user-sides tr.differs").count(), 0);
  assert.match(await page.textContent("#user-events tbody tr:first-child"), /call.*stale.*updated.*service/s);
});

test("a drift bar opens its rows, and a row opens the user panel", async () => {
  const expected = await status();
  assert.equal(expected.drift.orphaned, 1, "the demo data has one orphaned profile");
  // By keyboard: the bar takes focus and Enter opens it.
  await page.focus('#drift-chart g[data-kind="orphaned"]');
  await page.keyboard.press("Enter");
  await page.waitForSelector("#drift-rows:not([hidden])");
  assert.match(await page.textContent("#rows-title"), /orphaned/);
  const rows = page.locator("#rows tbody tr[data-user]");
  assert.equal(await rows.count(), 1);
  const id = await rows.first().getAttribute("data-user");
  await page.screenshot({ path: `${shots}drift-rows.png`, fullPage: true });
  await rows.first().locator("button.row-link").click();
  await page.waitForFunction((wanted) => document.querySelector("#user-title").textContent.includes(wanted), id);
  assert.match(await page.textContent("#user-drift"), /orphaned/);
  assert.match(await page.textContent("#user-sides tbody"), /no auth user/);
  assert.equal(await page.isVisible("#sync-now"), false);
});

test("a run opens its detail: plan, progress per kind and failures", async () => {
  await page.locator("#runs tbody tr").first().locator("button").click();
  await page.waitForSelector("#run-detail:not([hidden])");
  assert.match(await page.textContent("#run-facts"), /succeeded/);
  assert.ok((await page.locator("#run-kinds tbody tr[data-kind]").count()) > 0);
  assert.match(await page.textContent("#run-failures tbody"), /None\./);
});

test("a dead letter is retried from the page and heals once the table is fixed", async () => {
  // A migration breaks the profile table; a sign-up commits anyway and leaves a dead letter.
  sql(`alter table public.users add column plan text,
       add constraint users_plan_required check (plan is not null) not valid`);
  sql(`insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
         created_at, updated_at, confirmation_token, recovery_token, email_change_token_new, email_change)
       values ('00000000-0000-0000-0000-000000000000', '${LETTER}', 'authenticated', 'authenticated',
         'letter@example.com', '{"provider": "email", "providers": ["email"]}', '{}', now(), now(), '', '', '', '')`);
  // Let the healing loop fail twice (at once, then after 5 s), so that its next attempt is 30 s
  // off, then fix the table and retry by hand.
  for (let i = 0; ; i++) {
    const letter = (await deadLetters()).find((d) => d.user_id === LETTER);
    if (letter && letter.attempts >= 2) break;
    assert.ok(i < 400, "the healing loop did not attempt the letter twice");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await page.reload();
  await page.waitForSelector(`#dead-letters tr[data-user="${LETTER}"]`);
  sql("alter table public.users drop column plan");
  await page.screenshot({ path: `${shots}dead-letter.png`, fullPage: true });
  await page.click(`#dead-letters tr[data-user="${LETTER}"] button.retry`);
  await page.waitForFunction(() => /Dead letter healed: created/.test(document.querySelector("#user-note").textContent));
  assert.match(await page.textContent("#user-title"), new RegExp(LETTER));
  assert.match(await page.textContent("#user-drift"), /In step/);
  assert.equal((await deadLetters()).length, 0);
  await page.waitForSelector("#dead-letters tbody tr:not([data-user])");
});
