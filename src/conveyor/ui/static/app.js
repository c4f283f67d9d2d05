// Conveyor admin UI. Talks only to the REST API with the admin token the user signs in with.
// Every value from the server goes into the page through textContent (the h() helper), never innerHTML:
// payloads, errors and tracebacks are user data. The server's Content-Security-Policy allows no inline script
// or style, so styles are set through the CSSOM (el.style), never a style attribute.
//
// The token: kept in sessionStorage (this tab only, gone when it closes; never localStorage), sent only in the
// Authorization header — never in a URL, so it reaches no log, history entry or Referer. The event stream is
// read with fetch() for that reason (EventSource cannot set headers). No cookie is used, so there is no ambient
// credential for another site to ride on (no CSRF). See docs/choices.md.

const TOKEN_KEY = "conveyor.adminToken";
const tokenStore = window.sessionStorage;
const STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];
const REFRESH_MS = 2000;

const state = { token: null, timer: null, events: null, history: [], lastStats: null, selected: new Set() };

// ---- tiny DOM helpers ----------------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;  // CSSOM: allowed by the CSP, unlike a style attribute
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);
const main = () => $("#main");

function toast(message, kind = "ok") {
  const el = h("div", { class: `toast ${kind}`, role: "status" }, message);
  $("#toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

function badge(status, job) {
  const shown = job && job.status === "pending" && job.scheduled ? "scheduled" : status;
  const b = h("span", { class: `badge ${shown}`, "data-status": shown }, shown);
  if (job && job.overrunning)  // a sync handler past its timeout whose thread has not ended: the retry waits for it
    return h("span", {}, b, h("span", { class: "badge failed", "data-overrun": "1", title: `timed out at ${job.timed_out_at}` }, "timed out, still running"));
  return b;
}

function ago(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  const future = seconds < 0;
  const s = Math.abs(seconds);
  const text = s < 60 ? `${Math.round(s)}s` : s < 3600 ? `${Math.round(s / 60)}m` : s < 86400 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`;
  return future ? `in ${text}` : `${text} ago`;
}

function time(iso) {
  return iso ? h("span", { title: iso }, ago(iso)) : "—";
}

function shortId(id) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono", title: id }, `${id.slice(0, 8)}…${id.slice(-4)}`);
}

function json(value) {
  return h("pre", {}, JSON.stringify(value, null, 2));
}

// ---- API ----------------------------------------------------------------------------------------------------

class ApiError extends Error {}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${state.token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    setLive(false, "server unreachable");
    throw new ApiError("The server cannot be reached");
  }
  if (response.status === 401) {
    signOut("The token was not accepted; sign in again.");
    throw new ApiError("unauthorized");
  }
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError((data && data.message) || `${response.status} ${response.statusText}`);
  return data;
}

async function act(label, fn) {
  try {
    await fn();
    toast(label);
    await render();
  } catch (err) {
    if (err.message !== "unauthorized") toast(err.message, "error");
  }
}

// ---- live updates -------------------------------------------------------------------------------------------

function setLive(on, text) {
  const dot = $("#live-dot");
  dot.className = `dot ${on ? "on" : "off"}`;
  $("#live-text").textContent = text;
}

async function connectEvents() {
  if (state.events) state.events.abort();
  const controller = new AbortController();
  state.events = controller;
  let pending = false;
  const bump = () => {
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; render({ quiet: true }); }, 300);
  };
  let delay = 1000;
  while (!controller.signal.aborted && state.token) {
    try {
      const response = await fetch("/api/events?types=push,run", {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401) { signOut("The token was not accepted; sign in again."); return; }
      if (!response.ok || !response.body) throw new Error(`event stream: ${response.status}`);
      setLive(true, "live");
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const line = block.split("\n").find((l) => l.startsWith("event:"));
          const type = line ? line.slice(6).trim() : "";
          if (type === "push" || type === "run") bump();
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    setLive(false, "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = setInterval(() => render({ quiet: true }), REFRESH_MS);
}

// ---- routing ------------------------------------------------------------------------------------------------

const routes = [
  [/^#\/overview$/, overviewPage],
  [/^#\/jobs\/([^/?]+)$/, jobPage],
  [/^#\/jobs(\?.*)?$/, jobsPage],
  [/^#\/dead-letters(\?.*)?$/, (m) => jobsPage(m, { dead: true })],
  [/^#\/queues$/, queuesPage],
  [/^#\/workers$/, workersPage],
  [/^#\/schedules$/, schedulesPage],
  [/^#\/namespaces$/, namespacesPage],
];

let rendering = false;
async function render({ quiet = false } = {}) {
  if (!state.token || rendering) return;
  // Don't redraw under the user's fingers: skip background refreshes while a form field has focus.
  if (quiet && document.activeElement && ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  rendering = true;
  try {
    const hash = location.hash || "#/overview";
    const page = hash.split("?")[0].split("/")[1];
    for (const a of document.querySelectorAll(".sidebar a")) a.classList.toggle("active", a.dataset.page === page);
    for (const [pattern, fn] of routes) {
      const match = hash.match(pattern);
      if (match) {
        const content = await fn(match);
        if (content) {
          const scrollY = window.scrollY;
          main().replaceChildren(content);
          if (quiet) window.scrollTo(0, scrollY);
        }
        return;
      }
    }
    location.hash = "#/overview";
  } catch (err) {
    if (err.message !== "unauthorized" && !quiet) main().replaceChildren(h("div", { class: "card error-text" }, err.message));
  } finally {
    rendering = false;
  }
}

function params() {
  const query = (location.hash.split("?")[1] || "");
  return new URLSearchParams(query);
}

function setParams(base, values) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  const qs = p.toString();
  location.hash = qs ? `${base}?${qs}` : base;
}

// ---- pages --------------------------------------------------------------------------------------------------

async function overviewPage() {
  const stats = await api("GET", "/api/v1/stats");
  const now = Date.now();
  if (state.lastStats) {
    const dt = (now - state.lastStats.at) / 1000;
    const done = (stats.completed + stats.failed) - (state.lastStats.completed + state.lastStats.failed);
    if (dt > 0) state.history.push({ at: now, rate: Math.max(0, done / dt) });
    if (state.history.length > 150) state.history.shift();
  }
  state.lastStats = { at: now, completed: stats.completed, failed: stats.failed };
  const cards = [
    ["Pending", stats.pending], ["Scheduled", stats.scheduled], ["Processing", stats.processing],
    ["Completed", stats.completed], ["Failed", stats.failed], ["Cancelled", stats.cancelled],
    ["Total", stats.total], ["Success rate", `${(stats.success_rate * 100).toFixed(1)}%`],
  ];
  const queues = await api("GET", "/api/v1/queues");
  return h("div", {},
    h("h1", {}, "Overview"),
    h("div", { class: "cards" }, cards.map(([label, value]) =>
      h("div", { class: "card stat", "data-stat": label.toLowerCase().replace(" ", "_") },
        h("div", { class: "label" }, label), h("div", { class: "value" }, value)))),
    h("div", { class: "card" },
      h("div", { class: "muted" }, "Throughput: jobs finished per second, sampled while this page is open",
        ` (peak ${Math.max(0, ...state.history.map((p) => p.rate)).toFixed(1)}/s)`),
      chart(state.history)),
    h("h2", {}, "Queues"),
    queueTable(queues.items, false));
}

function chart(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 180");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...points.map((p) => p.rate));
  if (points.length > 1) {
    const step = 600 / Math.max(1, points.length - 1);
    const coords = points.map((p, i) => `${(i * step).toFixed(1)},${(170 - (p.rate / max) * 150).toFixed(1)}`);
    const area = document.createElementNS(ns, "polygon");
    area.setAttribute("points", `0,170 ${coords.join(" ")} ${((points.length - 1) * step).toFixed(1)},170`);
    area.setAttribute("fill", "rgba(79,70,229,.12)");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#4f46e5"); line.setAttribute("stroke-width", "2");
    svg.append(area, line);
  }
  return svg;
}

async function jobsPage(_match, { dead = false } = {}) {
  const p = params();
  const limit = Number(p.get("limit") || 20);
  const offset = Number(p.get("offset") || 0);
  const query = new URLSearchParams();
  for (const key of ["namespace", "queue", "task", "status", "user_id"]) if (p.get(key)) query.set(key, p.get(key));
  if (dead) query.delete("status");
  query.set("limit", limit); query.set("offset", offset);
  const page = await api("GET", `${dead ? "/api/v1/dead-letters" : "/api/v1/jobs"}?${query}`);
  const base = dead ? "#/dead-letters" : "#/jobs";

  const field = (name, label, attrs = {}) => h("label", {}, label, h("input", { name, value: p.get(name) || "", ...attrs }));
  const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "All"),
    STATUSES.map((s) => h("option", { value: s, selected: p.get("status") === s }, s)));
  const sizeSelect = h("select", { name: "limit" }, [10, 20, 50, 100].map((n) => h("option", { value: n, selected: n === limit }, n)));
  const form = h("form", { class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(e.target));
    setParams(base, { ...data, offset: 0 });
  } },
    field("namespace", "Namespace"), field("queue", "Queue"), field("task", "Task"), field("user_id", "User"),
    dead ? null : h("label", {}, "Status", statusSelect), h("label", {}, "Page size", sizeSelect),
    h("button", { class: "primary", type: "submit" }, "Filter"),
    h("button", { type: "button", onclick: () => { location.hash = base; } }, "Clear"));

  state.selected = new Set([...state.selected].filter((id) => page.items.some((j) => j.id === id)));
  const bulkButtons = h("div", { class: "bulk" },
    h("span", { class: "muted", id: "selected-count" }, `${state.selected.size} selected`),
    h("button", { class: "small", onclick: () => bulk("requeue") }, "Requeue"),
    h("button", { class: "small", onclick: () => bulk("cancel") }, "Cancel"),
    h("button", { class: "small danger", onclick: () => bulk("delete") }, "Delete"));

  const allBox = h("input", { type: "checkbox", "aria-label": "select all", onchange: (e) => {
    for (const box of document.querySelectorAll("input[data-job]")) { box.checked = e.target.checked; toggle(box.dataset.job, box.checked); }
  } });
  const rows = page.items.map((job) => h("tr", { "data-job-row": job.id },
    h("td", {}, h("input", { type: "checkbox", dataset: { job: job.id }, checked: state.selected.has(job.id),
      onchange: (e) => toggle(job.id, e.target.checked) })),
    h("td", {}, shortId(job.id)),
    h("td", {}, job.task),
    h("td", {}, badge(job.status, job), job.cancel_requested ? h("span", { class: "muted" }, " cancelling") : null),
    h("td", {}, `${job.namespace} / ${job.queue}`),
    h("td", {}, job.user_id || "—"),
    h("td", {}, `${job.attempts}/${job.max_attempts}`),
    h("td", {}, time(job.run_at)),
    h("td", {}, time(job.created)),
    h("td", { class: "error-text", title: job.last_error || "" }, job.last_error ? job.last_error.slice(0, 60) : ""),
    h("td", { class: "actions" }, rowActions(job))));
  const first = page.total ? offset + 1 : 0;
  const last = Math.min(offset + page.items.length, page.total);
  return h("div", {},
    h("h1", {}, dead ? "Dead letters" : "Jobs", h("button", { class: "small", onclick: () => render() }, "Refresh")),
    dead ? h("p", { class: "muted" }, "Jobs that failed for good: attempts exhausted or a permanent failure. Requeue runs them again from attempt 1.") : null,
    form, bulkButtons,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, allBox), ["ID", "Task", "Status", "Namespace / queue", "User", "Tries", "Run at", "Created", "Last error", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 11, class: "empty" }, "No jobs match.")))),
    h("div", { class: "pager" }, h("span", {}, `Showing ${first} – ${last} of ${page.total}`),
      h("div", { class: "buttons" },
        h("button", { disabled: offset === 0, onclick: () => setParams(base, { ...Object.fromEntries(p), offset: Math.max(0, offset - limit) }) }, "Previous"),
        h("button", { disabled: offset + limit >= page.total, onclick: () => setParams(base, { ...Object.fromEntries(p), offset: offset + limit }) }, "Next"))));
}

function toggle(id, on) {
  if (on) state.selected.add(id); else state.selected.delete(id);
  const counter = $("#selected-count");
  if (counter) counter.textContent = `${state.selected.size} selected`;
}

async function bulk(action) {
  const ids = [...state.selected];
  if (!ids.length) { toast("Select jobs first", "error"); return; }
  if (action === "delete" && !confirm(`Delete ${ids.length} job(s)? Only pending and failed jobs can be deleted.`)) return;
  let ok = 0; const errors = [];
  for (const id of ids) {
    try {
      if (action === "delete") await api("DELETE", `/api/v1/jobs/${id}`);
      else await api("POST", `/api/v1/jobs/${id}/${action}`);
      ok += 1;
    } catch (err) { errors.push(err.message); }
  }
  state.selected.clear();
  toast(`${action}: ${ok} done${errors.length ? `, ${errors.length} refused (${errors[0]})` : ""}`, errors.length ? "error" : "ok");
  await render();
}

function rowActions(job) {
  const buttons = [];
  if (job.status === "failed" || job.status === "cancelled")
    buttons.push(h("button", { class: "small", onclick: () => act("Requeued", () => api("POST", `/api/v1/jobs/${job.id}/requeue`)) }, "Requeue"));
  if (job.status === "pending")
    buttons.push(h("button", { class: "small", onclick: () => act("Will run now", () => api("POST", `/api/v1/jobs/${job.id}/run-now`)) }, "Run now"));
  if (job.status === "pending" || (job.status === "processing" && !job.cancel_requested))
    buttons.push(h("button", { class: "small", onclick: () => act("Cancel requested", () => api("POST", `/api/v1/jobs/${job.id}/cancel`)) }, "Cancel"));
  if (job.status === "pending" || job.status === "failed")
    buttons.push(h("button", { class: "small danger", onclick: () => {
      if (confirm("Delete this job and its attempt history?")) act("Deleted", () => api("DELETE", `/api/v1/jobs/${job.id}`));
    } }, "Delete"));
  return buttons;
}

async function jobPage(match) {
  const id = decodeURIComponent(match[1]);
  const job = await api("GET", `/api/v1/jobs/${encodeURIComponent(id)}`);
  const attempts = (await api("GET", `/api/v1/jobs/${encodeURIComponent(id)}/attempts`)).items;
  const fields = [
    ["ID", h("span", { class: "mono" }, job.id)], ["Task", job.task], ["Status", badge(job.status, job)],
    ["Namespace", job.namespace], ["Queue", job.queue], ["User", job.user_id || "—"], ["Group", job.group_key || "—"],
    ["Unique key", job.unique_key || "—"], ["Priority", job.priority], ["Tries", `${job.attempts}/${job.max_attempts}`],
    ["Run at", job.run_at], ["Created", job.created], ["Started", job.started_at || "—"], ["Finished", job.finished_at || "—"],
    ["Lease until", job.lease_expires_at || "—"], ["Worker", job.worker_id || "—"],
  ];
  return h("div", {},
    h("h1", {}, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, job.id.slice(0, 8)), badge(job.status, job)),
    h("div", { class: "toolbar" }, rowActions(job).map((b) => { b.classList.remove("small"); return b; })),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("dl", { class: "kv" }, fields.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
      h("div", {}, h("h2", { style: "margin-top:0" }, "Payload"), json(job.payload),
        job.result !== null && job.result !== undefined ? [h("h2", {}, "Result"), json(job.result)] : null,
        job.last_error ? [h("h2", {}, "Last error"), h("pre", {}, job.last_error)] : null)),
    h("h2", {}, `Attempts (${attempts.length})`),
    attempts.length ? attempts.slice().reverse().map(attemptCard) : h("div", { class: "card empty" }, "Not run yet."));
}

function attemptCard(a) {
  const kind = a.succeeded ? "completed" : a.outcome === "lost" ? "cancelled" : "failed";
  return h("div", { class: "card attempt", "data-try": a.try_number },
    h("div", { class: "attempt-head" },
      h("strong", {}, `Try #${a.try_number}`), h("span", { class: `badge ${kind}` }, `${a.status_code} ${a.outcome}`),
      h("span", { class: "muted" }, `${a.started_at} · ${a.duration.toFixed(3)} s · ${a.worker_id || "no worker"}`)),
    a.error ? h("pre", {}, a.error) : null,
    a.traceback ? h("details", {}, h("summary", {}, "Traceback"), h("pre", {}, a.traceback)) : null,
    a.result !== null && a.result !== undefined ? json(a.result) : null);
}

function queueTable(items, withActions = true) {
  const cols = ["pending", "scheduled", "processing", "completed", "failed", "cancelled"];
  const rows = items.map((q) => h("tr", { "data-queue": `${q.namespace}/${q.name}` },
    h("td", {}, q.namespace), h("td", {}, h("a", { href: `#/jobs?namespace=${encodeURIComponent(q.namespace)}&queue=${encodeURIComponent(q.name)}` }, q.name)),
    h("td", {}, q.paused ? h("span", { class: "badge paused" }, "paused") : h("span", { class: "badge running" }, "running")),
    cols.map((c) => h("td", {}, q.counts[c] ?? 0)),
    h("td", {}, q.concurrency ?? "∞"),
    withActions ? h("td", { class: "actions" }, h("button", { class: "small", onclick: () => {
      const verb = q.paused ? "resume" : "pause";
      act(q.paused ? "Queue resumed" : "Queue paused", () => api("POST", `/api/v1/queues/${encodeURIComponent(q.name)}/${verb}?namespace=${encodeURIComponent(q.namespace)}`));
    } }, q.paused ? "Resume" : "Pause")) : null));
  return h("table", {}, h("thead", {}, h("tr", {}, ["Namespace", "Queue", "State", ...cols, "Concurrency", withActions ? "" : null].filter((x) => x !== null).map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 11, class: "empty" }, "No queues yet: enqueue a job."))));
}

async function queuesPage() {
  const queues = await api("GET", "/api/v1/queues");
  return h("div", {}, h("h1", {}, "Queues"), queueTable(queues.items, true));
}

async function workersPage() {
  const workers = (await api("GET", "/api/v1/workers")).items;
  const rows = workers.map((w) => h("tr", { "data-worker": w.id },
    h("td", { class: "mono" }, w.id), h("td", {}, `${w.hostname} (pid ${w.pid})`), h("td", {}, w.queues.join(", ")),
    h("td", {}, `${w.running.length}/${w.concurrency}`), h("td", {}, time(w.started_at)), h("td", {}, time(w.heartbeat_at)),
    h("td", {}, w.running.map((id) => h("div", {}, shortId(id)))),
    h("td", { "data-leads": (w.leader_of || []).join(",") }, (w.leader_of || []).map((r) => h("span", { class: "badge running" }, r))),
    h("td", {}, w.version)));
  return h("div", {}, h("h1", {}, "Workers"),
    h("p", { class: "muted" }, "Live registrations only: a worker that stops heartbeating disappears by itself and its jobs are rescued. One worker, elected through the store, leads each maintenance role (the rescuer and pruner: maintenance; cron: scheduler)."),
    h("table", {}, h("thead", {}, h("tr", {}, ["ID", "Host", "Queues", "Busy", "Started", "Heartbeat", "Running", "Leads", "Version"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No live workers.")))));
}

async function schedulesPage() {
  const schedules = (await api("GET", "/api/v1/schedules")).items;
  const rows = schedules.map((s) => h("tr", { "data-schedule": s.name },
    h("td", {}, s.name), h("td", { class: "mono" }, s.spec), h("td", {}, s.task), h("td", {}, `${s.namespace || "default"} / ${s.queue || "default"}`),
    h("td", {}, s.next_run_at ? time(s.next_run_at) : "—"), h("td", { class: "mono" }, JSON.stringify(s.payload ?? null))));
  return h("div", {}, h("h1", {}, "Schedules"),
    h("p", { class: "muted" }, "Cron entries registered by the app (app.cron). Each occurrence is enqueued once across all processes."),
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Spec", "Task", "Namespace / queue", "Next run", "Payload"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No schedules registered.")))));
}

async function namespacesPage() {
  const items = (await api("GET", "/api/v1/namespaces")).items;
  const rows = items.map((ns) => h("tr", { "data-namespace": ns.name },
    h("td", {}, h("strong", {}, ns.name), h("div", { class: "muted" }, ns.description || "")),
    h("td", {}, ns.auto_run ? h("span", { class: "badge running" }, "auto-run") : h("span", { class: "badge pending" }, "Run only")),
    h("td", {}, ns.max_attempts),
    h("td", {}, `${Math.round(ns.completed_retention / 86400)} d / ${Math.round(ns.failed_retention / 86400)} d`),
    h("td", {}, [ns.push_notification ? "push" : null, ns.run_notification ? "run" : null].filter(Boolean).join(", ") || "—"),
    h("td", {}, ns.webhook_url || "—"),
    h("td", { class: "actions" },
      h("button", { class: "small", onclick: () => editNamespace(ns) }, "Edit"),
      ns.name === "default" ? null : h("button", { class: "small danger", onclick: () => {
        if (confirm(`Delete namespace ${ns.name}? Its jobs stay.`)) act("Namespace deleted", () => api("DELETE", `/api/v1/namespaces/${encodeURIComponent(ns.name)}`));
      } }, "Delete"))));
  return h("div", {}, h("h1", {}, "Namespaces", h("button", { class: "small primary", onclick: () => editNamespace(null) }, "New namespace")),
    h("div", { id: "ns-editor" }),
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Execution", "Max attempts", "Retention (done / failed)", "Notifications", "Webhook", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
}

function editNamespace(ns) {
  const creating = ns === null;
  const v = ns || { name: "", description: "", auto_run: true, max_attempts: 3, completed_retention: 604800, failed_retention: 2592000, push_notification: false, run_notification: false, webhook_url: "" };
  const form = h("form", { class: "card", id: "ns-form", onsubmit: (e) => {
    e.preventDefault();
    const d = new FormData(e.target);
    const body = {
      description: d.get("description"), auto_run: d.get("auto_run") === "on", max_attempts: Number(d.get("max_attempts")),
      completed_retention: Number(d.get("completed_days")) * 86400, failed_retention: Number(d.get("failed_days")) * 86400,
      push_notification: d.get("push_notification") === "on", run_notification: d.get("run_notification") === "on",
      webhook_url: d.get("webhook_url") || "",
    };
    if (d.get("webhook_secret")) body.webhook_secret = d.get("webhook_secret");
    if (creating) act("Namespace created", () => api("POST", "/api/v1/namespaces", { name: d.get("name"), ...body }));
    else act("Namespace saved", () => api("PATCH", `/api/v1/namespaces/${encodeURIComponent(v.name)}`, body));
  } },
    h("h2", { style: "margin-top:0" }, creating ? "New namespace" : `Edit ${v.name}`),
    h("div", { class: "form-grid" },
      creating ? h("label", {}, "Name", h("input", { name: "name", required: true, pattern: "[A-Za-z0-9\\-_.]{1,128}" })) : null,
      h("label", {}, "Description", h("input", { name: "description", value: v.description || "" })),
      h("label", {}, "Max attempts", h("input", { name: "max_attempts", type: "number", min: 1, max: 100, value: v.max_attempts })),
      h("label", {}, "Keep completed (days)", h("input", { name: "completed_days", type: "number", min: 0, step: "any", value: v.completed_retention / 86400 })),
      h("label", {}, "Keep failed (days)", h("input", { name: "failed_days", type: "number", min: 0, step: "any", value: v.failed_retention / 86400 })),
      h("label", {}, "Webhook URL", h("input", { name: "webhook_url", type: "url", value: v.webhook_url || "" })),
      h("label", {}, "Webhook secret (leave empty to keep)", h("input", { name: "webhook_secret", type: "password" })),
      h("label", { class: "check" }, h("input", { name: "auto_run", type: "checkbox", checked: v.auto_run }), "Workers run jobs (auto-run)"),
      h("label", { class: "check" }, h("input", { name: "push_notification", type: "checkbox", checked: v.push_notification }), "Push notifications"),
      h("label", { class: "check" }, h("input", { name: "run_notification", type: "checkbox", checked: v.run_notification }), "Run notifications")),
    h("div", { class: "toolbar", style: "margin-top:12px" }, h("button", { class: "primary", type: "submit" }, "Save"),
      h("button", { type: "button", onclick: () => $("#ns-editor").replaceChildren() }, "Close")));
  $("#ns-editor").replaceChildren(form);
  clearInterval(state.timer); // keep the form while it is being edited
  form.addEventListener("submit", () => schedule());
}

// ---- sign in / out ------------------------------------------------------------------------------------------

function signOut(message = "") {
  tokenStore.removeItem(TOKEN_KEY);
  state.token = null;
  clearInterval(state.timer);
  if (state.events) state.events.abort();
  state.events = null;
  $("#shell").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
}

async function signIn(token) {
  state.token = token;
  try {
    await api("GET", "/api/v1/stats");
  } catch (err) {
    if (err.message !== "unauthorized") signOut(err.message);
    return;
  }
  tokenStore.setItem(TOKEN_KEY, token);
  $("#login").hidden = true;
  $("#shell").hidden = false;
  connectEvents();
  schedule();
  await render();
}

$("#login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#token-input").value.trim()); });
$("#logout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => { schedule(); render(); });

localStorage.removeItem(TOKEN_KEY);  // older versions kept it there, where it outlived the session
const saved = tokenStore.getItem(TOKEN_KEY);
if (saved) signIn(saved); else signOut();
