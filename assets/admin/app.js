// usersync admin dashboard. No framework, no build step, no third-party requests: it talks to
// this service's own API with the secret key the admin typed in, which stays in this tab's
// session storage.
"use strict";

const KEY = "usersync.secretKey";
const KINDS = ["missing", "stale", "mismatched", "orphaned", "deleted"];
const COLORS = {
  missing: "#0b5cad",
  stale: "#9a4f00",
  mismatched: "#6a3d9a",
  orphaned: "#a4161a",
  deleted: "#3d3d3d",
};
const SVG = "http://www.w3.org/2000/svg";
const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.code = problem && problem.code ? problem.code : "http_" + status;
    this.problem = problem || {};
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { apikey: sessionStorage.getItem(KEY) || "", "content-type": "application/json" },
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function showError(error) {
  const box = $("#error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const code = error.code ? ` (${error.code})` : "";
  box.textContent = `${error.message}${code}`;
  box.hidden = false;
}

function el(tag, attrs = {}, children = []) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

const number = (n) => Number(n).toLocaleString("en");

// Charts are drawn at their on-screen width, so that their text stays readable on a phone.
function chartWidth(svg) {
  return Math.max(280, Math.round(svg.parentElement.clientWidth) || 640);
}

// ---- drift by kind: a labelled horizontal bar chart --------------------------------------

function drawDrift(drift) {
  const svg = $("#drift-chart");
  svg.replaceChildren();
  const rowHeight = 34;
  const width = chartWidth(svg);
  const labelWidth = 110;
  const max = Math.max(1, ...KINDS.map((k) => drift[k] || 0));
  svg.setAttribute("viewBox", `0 0 ${width} ${KINDS.length * rowHeight + 8}`);
  KINDS.forEach((kind, i) => {
    const count = drift[kind] || 0;
    const y = i * rowHeight + 4;
    const barWidth = ((width - labelWidth - 90) * count) / max;
    const group = el("svg:g", { "data-kind": kind, "data-count": String(count) }, [
      el("svg:text", { x: 0, y: y + 20, class: "bar-label", text: kind }),
      el("svg:rect", {
        x: labelWidth, y: y + 4, width: Math.max(count > 0 ? 2 : 0, barWidth), height: 22,
        fill: COLORS[kind], rx: 3,
      }),
      el("svg:text", {
        x: labelWidth + barWidth + 8, y: y + 20, class: "bar-label", text: number(count),
      }),
    ]);
    group.append(el("svg:title", { text: `${kind}: ${number(count)}` }));
    group.setAttribute("tabindex", "0");
    group.setAttribute("role", "button");
    group.setAttribute("aria-label", `${kind}: ${number(count)}; list the rows`);
    const openKind = guarded(() => openRows(kind));
    group.addEventListener("click", openKind);
    group.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openKind();
      }
    });
    svg.append(group);
  });
}

// ---- drift over time: one line per kind, from past runs' plans ----------------------------

function drawHistory(runs) {
  const svg = $("#history-chart");
  const legend = $("#history-caption");
  svg.replaceChildren();
  legend.replaceChildren();
  const points = runs
    .filter((r) => r.plan)
    .map((r) => ({ at: new Date(r.started_at).getTime(), plan: r.plan }))
    .sort((a, b) => a.at - b.at);
  const width = chartWidth(svg);
  const height = 200;
  const pad = { left: 48, right: 12, top: 10, bottom: 28 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (points.length === 0) {
    svg.append(el("svg:text", { x: 12, y: 40, class: "axis", text: "No runs yet: a dry run records the first point." }));
    return;
  }
  const value = (p, kind) => (p.plan.kinds[kind] ? p.plan.kinds[kind].count : 0);
  const max = Math.max(1, ...points.flatMap((p) => KINDS.map((k) => value(p, k))));
  const t0 = points[0].at;
  const span = Math.max(1, points[points.length - 1].at - t0);
  const x = (at) => pad.left + ((width - pad.left - pad.right) * (at - t0)) / span;
  const y = (v) => height - pad.bottom - ((height - pad.top - pad.bottom) * v) / max;
  svg.append(
    el("svg:line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), stroke: "#767676" }),
    el("svg:text", { x: 4, y: y(max) + 4, class: "axis", text: number(max) }),
    el("svg:text", { x: 4, y: y(0), class: "axis", text: "0" }),
    el("svg:text", { x: pad.left, y: height - 6, class: "axis", text: new Date(t0).toLocaleString() }),
  );
  for (const kind of KINDS) {
    const coords = points.map((p) => `${x(p.at).toFixed(1)},${y(value(p, kind)).toFixed(1)}`);
    const line = el("svg:polyline", {
      points: coords.join(" "), fill: "none", stroke: COLORS[kind], "stroke-width": 2.5,
      "data-kind": kind,
    });
    svg.append(line);
    for (const p of points) {
      svg.append(el("svg:circle", { cx: x(p.at), cy: y(value(p, kind)), r: 3, fill: COLORS[kind] }));
    }
    // A class, not a style attribute: the page's CSP allows no inline styles.
    legend.append(el("span", {}, [el("span", { class: `swatch swatch-${kind}` }), kind]));
  }
}

// ---- runs, dead letters, summary ------------------------------------------------------------

function progressOf(run) {
  const total = run.plan ? run.plan.source_total : 0;
  const walked = run.progress ? run.progress.walked : 0;
  if (run.state === "succeeded") return { value: 1, max: 1, text: "done" };
  if (!total) return { value: 0, max: 1, text: run.state };
  return { value: Math.min(walked, total), max: total, text: `${number(walked)} / ${number(total)}` };
}

function plannedText(run) {
  if (!run.plan) return "–";
  return Object.entries(run.plan.kinds)
    .filter(([, p]) => p.count > 0)
    .map(([kind, p]) => `${kind}: ${number(p.count)} (${p.action})`)
    .join(", ") || "nothing to do";
}

function drawRuns(runs) {
  const body = $("#runs tbody");
  body.replaceChildren();
  if (runs.length === 0) {
    body.append(el("tr", {}, [el("td", { colspan: 6, text: "No runs yet." })]));
    return;
  }
  for (const run of runs) {
    const p = progressOf(run);
    const bar = el("progress", { value: p.value, max: p.max, "aria-label": `progress of run ${run.id}` });
    body.append(
      el("tr", { "data-run-id": run.id, "data-state": run.state }, [
        el("td", { text: new Date(run.started_at).toLocaleString() }),
        el("td", { text: run.options && run.options.dry_run ? "dry run" : "apply" }),
        el("td", {}, [el("span", { class: `state state-${run.state}`, text: run.state.replace("_", " ") })]),
        el("td", {}, [bar, " ", p.text]),
        el("td", { text: run.error ? `${plannedText(run)} — ${run.error}` : plannedText(run) }),
        el("td", {}, [button("Details", () => openRun(run.id), { "aria-label": `details of run ${run.id}`, class: "small" })]),
      ]),
    );
  }
}

function drawDeadLetters(letters) {
  const body = $("#dead-letters tbody");
  body.replaceChildren();
  if (letters.length === 0) {
    body.append(el("tr", {}, [el("td", { colspan: 6, text: "None: every trigger sync went through." })]));
    return;
  }
  for (const d of letters) {
    body.append(
      el("tr", { "data-user": d.user_id }, [
        el("td", {}, [userLink(d.user_id)]),
        el("td", { text: d.op }),
        el("td", { text: d.sqlstate ? `${d.error} [${d.sqlstate}]` : d.error }),
        el("td", { class: "num", text: String(d.attempts) }),
        el("td", { text: new Date(d.next_attempt_at).toLocaleString() }),
        el("td", {}, [button("Retry", () => retryLetter(d.user_id), { "aria-label": `retry the dead letter of ${d.user_id}`, class: "small retry" })]),
      ]),
    );
  }
}

// ---- one user: find, both sides, audit trail, sync now, retry -------------------------------

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EVENTS_SHOWN = 10;
let shownUser = null;
let olderEvents = null;

function button(text, action, attrs = {}) {
  const node = el("button", { type: "button", ...attrs, text });
  node.addEventListener("click", guarded(action));
  return node;
}

function userLink(id, label) {
  return button(label || id, () => openUser(id), { class: "row-link", "data-user": id });
}

function shown(value) {
  if (value === null || value === undefined) return "–";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function reveal(section) {
  section.hidden = false;
  section.focus();
}

async function find(query) {
  const list = $("#matches");
  list.replaceChildren();
  if (UUID.test(query)) return openUser(query);
  const { users } = await api(`/v1/users?email=${encodeURIComponent(query)}`);
  if (users.length === 1) return openUser(users[0].id);
  if (users.length === 0) list.append(el("li", { text: `No auth user or profile holds ${query}.` }));
  for (const user of users) {
    const where = user.auth && user.profile ? "auth user and profile" : user.auth ? "auth user only" : "profile only";
    list.append(el("li", {}, [userLink(user.id), ` (${where})`]));
  }
}

function drawSides(user) {
  const body = $("#user-sides tbody");
  body.replaceChildren();
  const mapped = user.auth ? user.auth.mapped : {};
  const profile = user.profile || {};
  const columns = [...new Set([...Object.keys(mapped), ...Object.keys(profile)])];
  for (const column of columns) {
    const compared = column in mapped;
    const differs = compared && user.auth && user.profile
      ? JSON.stringify(mapped[column]) !== JSON.stringify(profile[column])
      : false;
    body.append(el("tr", { "data-column": column, class: differs ? "differs" : "" }, [
      el("td", { text: column }),
      el("td", { text: !user.auth ? "no auth user" : compared ? shown(mapped[column]) : "(not compared)" }),
      el("td", { text: user.profile ? shown(profile[column]) : "no profile" }),
    ]));
  }
  const facts = $("#user-auth");
  facts.replaceChildren();
  for (const [name, value] of Object.entries(user.auth || {})) {
    if (name !== "mapped") facts.append(el("dt", { text: name }), el("dd", { text: shown(value) }));
  }
}

function drawEvents(events, append) {
  const body = $("#user-events tbody");
  if (!append) body.replaceChildren();
  if (!append && events.length === 0) {
    body.append(el("tr", {}, [el("td", { colspan: 5, text: "Nothing recorded for this user yet." })]));
  }
  for (const e of events) {
    body.append(el("tr", { "data-event": String(e.event_id) }, [
      el("td", { text: new Date(e.at).toLocaleString() }),
      el("td", { text: e.path }),
      el("td", { text: e.kind }),
      el("td", { text: e.action }),
      el("td", { text: e.caller }),
    ]));
  }
}

async function openUser(id) {
  const user = await api(`/v1/users/${encodeURIComponent(id)}`);
  shownUser = user;
  $("#user-title").textContent = `User ${user.id}`;
  $("#user-drift").textContent = user.in_sync ? "In step: no drift." : `Drift: ${user.drift.join(", ")}.`;
  drawSides(user);
  const letter = user.dead_letter;
  $("#user-letter").textContent = letter
    ? `Dead letter: ${letter.error} (${letter.attempts} attempts; next ${new Date(letter.next_attempt_at).toLocaleString()})`
    : "";
  $("#retry-letter").hidden = !letter;
  $("#sync-now").hidden = !user.auth;
  drawEvents(user.repairs, false);
  olderEvents = user.repairs.length === EVENTS_SHOWN ? user.repairs[EVENTS_SHOWN - 1].event_id : null;
  $("#more-events").hidden = olderEvents === null;
  reveal($("#user-panel"));
}

async function moreEvents() {
  const page = await api(`/v1/users/${shownUser.id}/events?limit=50&before=${olderEvents}`);
  drawEvents(page.events, true);
  olderEvents = page.next;
  $("#more-events").hidden = olderEvents === null;
}

async function syncNow() {
  const id = shownUser.id;
  const outcome = await api(`/v1/users/${id}/sync`, { method: "POST" });
  await Promise.all([openUser(id), refresh()]);
  $("#user-note").textContent = `Synced: ${outcome.action}.`;
}

async function retryLetter(id) {
  const outcome = await api(`/v1/dead-letters/${id}/retry`, { method: "POST" });
  // The note comes last, once the panel shows the user: it is what says the retry is done.
  await Promise.all([openUser(id), refresh()]);
  $("#user-note").textContent = outcome.healed
    ? `Dead letter healed: ${outcome.action}.`
    : `Still failing: ${outcome.dead_letter ? outcome.dead_letter.error : "see the dead letter"}.`;
}

// ---- the rows of one drift kind ----------------------------------------------------------

let rowsKind = null;
let rowsNext = null;

async function openRows(kind, after) {
  const query = `kind=${kind}&limit=50${after ? `&after=${after}` : ""}`;
  const page = await api(`/v1/drift?${query}`);
  const body = $("#rows tbody");
  if (!after) body.replaceChildren();
  if (!after && page.items.length === 0) {
    body.append(el("tr", {}, [el("td", { colspan: 3, text: `No ${kind} rows.` })]));
  }
  for (const item of page.items) {
    const detail = item.columns ? `differs: ${item.columns.join(", ")}`
      : item.target_ids ? `profile under ${item.target_ids.join(", ")}` : "";
    body.append(el("tr", { "data-user": item.id }, [
      el("td", {}, [userLink(item.id)]),
      el("td", { text: item.email || "–" }),
      el("td", { text: detail }),
    ]));
  }
  rowsKind = kind;
  rowsNext = page.next;
  $("#rows-title").textContent = `Drifted rows: ${kind}`;
  $("#more-rows").hidden = !rowsNext;
  if (!after) reveal($("#drift-rows"));
}

// ---- one run in detail ---------------------------------------------------------------------

async function openRun(id) {
  const run = await api(`/v1/reconciliations/${id}`);
  $("#run-title").textContent = `Run ${run.id}`;
  const facts = $("#run-facts");
  facts.replaceChildren();
  const rows = [
    ["state", run.state.replace("_", " ")],
    ["kind of run", run.options && run.options.dry_run ? "dry run" : "apply"],
    ["started", new Date(run.started_at).toLocaleString()],
    ["finished", run.finished_at ? new Date(run.finished_at).toLocaleString() : "–"],
    ["progress", progressOf(run).text],
    ["deletes planned", run.plan ? number(run.plan.deletes) : "–"],
  ];
  if (run.error) rows.push(["error", run.error]);
  for (const [name, value] of rows) facts.append(el("dt", { text: name }), el("dd", { text: value }));
  const kinds = $("#run-kinds tbody");
  kinds.replaceChildren();
  const progress = run.progress || {};
  for (const [kind, planned] of Object.entries(run.plan ? run.plan.kinds : {})) {
    kinds.append(el("tr", { "data-kind": kind }, [
      el("td", { text: kind }),
      el("td", { text: planned.action }),
      el("td", { class: "num", text: number(planned.count) }),
      el("td", { class: "num", text: number((progress.repaired || {})[kind] || 0) }),
      el("td", { class: "num", text: number((progress.failed || {})[kind] || 0) }),
    ]));
  }
  const failures = $("#run-failures tbody");
  failures.replaceChildren();
  if (!(progress.failures || []).length) {
    failures.append(el("tr", {}, [el("td", { colspan: 3, text: "None." })]));
  }
  for (const f of progress.failures || []) {
    failures.append(el("tr", {}, [el("td", { text: f.kind }), el("td", {}, [userLink(f.id)]), el("td", { text: f.reason })]));
  }
  reveal($("#run-detail"));
}

let pollTimer = null;
let lastDrawn = null;

window.addEventListener("resize", () => {
  if (!lastDrawn) return;
  drawDrift(lastDrawn.drift);
  drawHistory(lastDrawn.runs);
});

async function refresh() {
  const [status, runList, dead] = await Promise.all([
    api("/v1/status"),
    api("/v1/reconciliations?limit=50"),
    api("/v1/dead-letters").catch((e) => (e.status === 404 ? { dead_letters: [] } : Promise.reject(e))),
  ]);
  $("#source-total").textContent = number(status.source_total);
  $("#target-total").textContent = number(status.target_total);
  $("#dead-letters-pending").textContent = number(status.dead_letters_pending);
  const runs = runList.runs;
  const lastSuccess = runs.find((r) => r.state === "succeeded" && !(r.options && r.options.dry_run));
  $("#last-success").textContent = lastSuccess ? ago(lastSuccess.finished_at) : "never";
  drawDrift(status.drift);
  drawHistory(runs);
  drawRuns(runs);
  drawDeadLetters(dead.dead_letters);
  lastDrawn = { drift: status.drift, runs };
  document.body.dataset.loaded = "true";
  const active = runs.some((r) => r.state === "planning" || r.state === "running");
  clearTimeout(pollTimer);
  pollTimer = setTimeout(() => refresh().catch(showError), active ? 1000 : 15000);
}

// ---- reconcile --------------------------------------------------------------------------

function chosenOptions() {
  const kinds = KINDS.filter((k) => $(`#kind-${k}`).checked);
  const limit = $("#limit").value ? Number($("#limit").value) : undefined;
  return { kinds, limit };
}

async function waitFor(runId) {
  for (;;) {
    const run = await api(`/v1/reconciliations/${runId}`);
    if (!["planning", "running"].includes(run.state)) return run;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function startRun(dryRun, options) {
  const body = { dry_run: dryRun, kinds: options.kinds };
  if (options.limit) body.limit = options.limit;
  return api("/v1/reconciliations", { method: "POST", body: JSON.stringify(body) });
}

function setBusy(busy, note) {
  $("#dry-run").disabled = busy;
  $("#apply").disabled = busy;
  $("#run-note").textContent = note || "";
}

async function dryRun() {
  const options = chosenOptions();
  if (options.kinds.length === 0) throw new ApiError(400, { detail: "choose at least one kind", code: "no_kinds" });
  setBusy(true, "Dry run: planning…");
  try {
    const run = await waitFor((await startRun(true, options)).id);
    // The note comes last, once the page shows the run: it is what tells the admin it is done.
    await refresh();
    $("#run-note").textContent = `Dry run ${run.state}: ${plannedText(run)}.`;
    return run;
  } finally {
    setBusy(false, $("#run-note").textContent);
  }
}

async function apply() {
  const plan = await dryRun();
  if (plan.state !== "succeeded") return;
  const body = $("#plan tbody");
  body.replaceChildren();
  for (const [kind, p] of Object.entries(plan.plan.kinds)) {
    body.append(el("tr", { "data-kind": kind }, [
      el("td", { text: kind }), el("td", { text: p.action }), el("td", { class: "num", text: number(p.count) }),
    ]));
  }
  $("#plan-deletes").textContent = plan.plan.deletes
    ? `${number(plan.plan.deletes)} target rows would be deleted.`
    : "No target row would be deleted.";
  const dialog = $("#confirm");
  dialog.returnValue = "";
  dialog.showModal();
  $("#confirm-apply").focus();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.returnValue !== "apply") {
    $("#run-note").textContent = "Apply cancelled; nothing was written.";
    return;
  }
  const options = chosenOptions();
  setBusy(true, "Applying…");
  try {
    const run = await waitFor((await startRun(false, options)).id);
    const repaired = Object.entries(run.progress.repaired || {})
      .map(([k, n]) => `${k}: ${number(n)}`).join(", ") || "nothing";
    await refresh();
    $("#run-note").textContent = run.state === "succeeded"
      ? `Applied. Repaired ${repaired}.`
      : `Run ${run.state.replace("_", " ")}: ${run.error || ""}`;
  } finally {
    setBusy(false, $("#run-note").textContent);
  }
}

// ---- start ----------------------------------------------------------------------------------

function showDashboard(on) {
  $("#login").hidden = on;
  $("#dashboard").hidden = !on;
  $("#forget").hidden = !on;
}

async function open() {
  showError(null);
  try {
    await refresh();
    showDashboard(true);
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem(KEY);
      showDashboard(false);
      $("#key").focus();
    }
    showError(error);
  }
}

function guarded(action) {
  return () => {
    showError(null);
    action().catch(showError);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const filters = $("#kind-filters");
  for (const kind of KINDS) {
    const input = el("input", { type: "checkbox", id: `kind-${kind}`, checked: "" });
    filters.append(el("label", { for: `kind-${kind}` }, [input, kind]));
  }
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#key").value = "";
    open();
  });
  $("#forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    clearTimeout(pollTimer);
    showDashboard(false);
    $("#key").focus();
  });
  $("#find-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => find($("#find").value.trim()))();
  });
  $("#sync-now").addEventListener("click", guarded(syncNow));
  $("#retry-letter").addEventListener("click", guarded(() => retryLetter(shownUser.id)));
  $("#more-events").addEventListener("click", guarded(moreEvents));
  $("#more-rows").addEventListener("click", guarded(() => openRows(rowsKind, rowsNext)));
  $("#close-user").addEventListener("click", () => {
    $("#user-panel").hidden = true;
    $("#find").focus();
  });
  $("#dry-run").addEventListener("click", guarded(dryRun));
  $("#apply").addEventListener("click", guarded(apply));
  if (sessionStorage.getItem(KEY)) {
    open();
  } else {
    showDashboard(false);
  }
});
