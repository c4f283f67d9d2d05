// Schedules: every cron schedule — declared in the app's code (read-only here) and made at runtime (kept in the
// store) — with its time zone, last and next run and history, "Trigger now", and, when the server manages schedules
// at runtime, a form to create or change one, pause/resume and delete (docs/cron.md).

import { useState } from "preact/hooks";
import { api, needs, scheduleRuns, schedules, triggerSchedule } from "../api.js";
import { Badge, Confirm, Empty, ErrorNote, JobLink, NeedsServer, PageTitle, TableWrap, Time } from "../components.jsx";
import { useData } from "../live.js";
import { act, toast } from "../toast.js";

const BACKFILL = [
  ["none", "none: skip occurrences missed while nothing ran"],
  ["latest", "latest: run the most recent missed one"],
  ["all", "all: run each missed one (within the window)"],
];

function History({ name }) {
  const { data, error } = useData(() => scheduleRuns(name), `runs:${name}`);
  return (
    <div class="schedule-history" data-history={name}>
      <ErrorNote error={error} />
      {data ? (
        data.items.length ? (
          <ul class="plain">
            {data.items.map((r) => (
              <li key={r.job_id || r.occurrence} data-run={r.manual ? "manual" : "cron"}>
                <Time iso={r.occurrence} compact /> {r.manual ? <span class="muted small">(manual)</span> : null} →{" "}
                {r.job ? <><JobLink id={r.job.id} from="#/schedules" /> <Badge job={r.job} /></> : <span class="muted">{r.note || (r.job_id ? "job no longer kept" : "no job (skipped)")}</span>}
              </li>
            ))}
          </ul>
        ) : <p class="muted">No run yet.</p>
      ) : null}
    </div>
  );
}

/** The server's error in the words of this form (the API's names the field). */
function formMessage(err, name) {
  if (err.code === "schedule_exists") return err.message.includes("declared in code")
    ? `“${name}” is the name of a schedule declared in the app's code: choose another name.`
    : `A schedule named “${name}” exists already: change it in the list below.`;
  const labels = { spec: "When", timezone: "Time zone", task: "Task", payload: "Payload", name: "Name", queue: "Queue", backfill_window: "Back-fill window" };
  const field = err.field && labels[String(err.field).split(".").pop()];
  return field ? `${field}: ${err.message}` : err.message;
}

function Editor({ schedule, onDone, onClose }) {
  const creating = schedule === null;
  const s = schedule || { name: "", spec: "", task: "", payload: null, timezone: "UTC", queue: "", backfill: "none", backfill_window: 86400 };
  const [error, setError] = useState("");
  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const name = creating ? String(f.get("name")).trim() : s.name;
    let payload = null;
    const text = String(f.get("payload") || "").trim();
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch {
        setError("Payload: not valid JSON (e.g. {\"days\": 7}).");
        return;
      }
    }
    const body = {
      spec: String(f.get("spec")).trim(),
      task: String(f.get("task")).trim(),
      payload,
      timezone: String(f.get("timezone")).trim() || "UTC",
      queue: String(f.get("queue") || "").trim() || null,
      backfill: f.get("backfill"),
      backfill_window: Number(f.get("backfill_hours")) * 3600,
    };
    try {
      if (creating) await schedules.create({ name, ...body });
      else await schedules.update(name, body);
      toast(creating ? `Schedule ${name} created` : `Schedule ${name} saved`);
      onDone();
    } catch (err) {
      if (err.code !== "unauthorized") setError(formMessage(err, name));
    }
  };
  return (
    <form class="card" id="schedule-form" onSubmit={submit} aria-labelledby="schedule-form-title">
      <h2 id="schedule-form-title" class="first">{creating ? "New schedule" : `Edit ${s.name}`}</h2>
      <div class="form-grid">
        {creating ? <label>Name<input name="name" required maxLength={200} pattern="[^\/]+" title="1 to 200 characters, no “/”" /></label> : null}
        <label>When (cron: minute hour day month weekday, @daily, @every 10m)<input name="spec" required defaultValue={s.spec} class="mono" /></label>
        <label>Time zone (IANA, e.g. Europe/Berlin)<input name="timezone" defaultValue={s.timezone} list="schedule-zones" /></label>
        <label>Task<input name="task" required defaultValue={s.task} /></label>
        <label>Queue (empty: the task's)<input name="queue" defaultValue={s.queue || ""} /></label>
        <label>Payload (JSON, empty: null)<textarea name="payload" rows={2} class="mono" defaultValue={s.payload === null || s.payload === undefined ? "" : JSON.stringify(s.payload)} /></label>
        <label>Missed occurrences<select name="backfill" defaultValue={s.backfill}>{BACKFILL.map(([v, t]) => <option key={v} value={v}>{t}</option>)}</select></label>
        <label>Back-fill window (hours)<input name="backfill_hours" type="number" min="0" max="8784" step="any" required defaultValue={s.backfill_window / 3600} /></label>
      </div>
      <datalist id="schedule-zones">
        {["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney"].map((z) => <option key={z} value={z} />)}
      </datalist>
      <div id="schedule-error" class="error-text" role="alert">{error}</div>
      <div class="form-buttons">
        <button class="primary" type="submit">{creating ? "Create" : "Save"}</button>
        <button type="button" onClick={onClose}>Close</button>
      </div>
    </form>
  );
}

export function SchedulesPage() {
  const { data, error, reload } = useData(() => api.schedules(), "schedules");
  const [open, setOpen] = useState(null);
  const [trigger, setTrigger] = useState(null);
  const [editing, setEditing] = useState(undefined); // undefined: closed; null: new; a schedule: edit
  const [deleting, setDeleting] = useState(null);
  const canTrigger = needs.scheduleTrigger();
  const canManage = needs.scheduleManage();
  const hasLast = data && data.items.some((s) => s.last_run_at !== undefined);

  const run = (s) => {
    if (canTrigger) return act(() => triggerSchedule(s.name), `${s.name} triggered`, reload);
    // The server has no trigger: enqueue the same job the schedule would, as an ordinary job.
    const body = { task: s.task, payload: s.payload ?? null, namespace: s.namespace };
    if (s.queue) body.queue = s.queue;
    return act(() => api.enqueue(body), (job) => `Enqueued ${s.task} now (job …${job.id.slice(-8)})`, reload);
  };
  const togglePause = (s) => act(
    () => (s.paused ? schedules.resume(s.name) : schedules.pause(s.name)),
    `${s.name} ${s.paused ? "resumed" : "paused"}`,
    reload,
  );

  return (
    <div data-loaded={data ? "1" : undefined}>
      <PageTitle title="Schedules">
        {canManage ? <button type="button" class="primary" onClick={() => setEditing(null)}>New schedule</button> : null}
      </PageTitle>
      <p class="muted">Cron schedules declared in the app's code (app.cron) and made here at runtime. Each occurrence is enqueued once across all processes.</p>
      <ErrorNote error={error} />
      {!needs.scheduleRuns() || !canManage ? (
        <NeedsServer what="schedule history and runtime management (GET /api/v1/schedules/{name}/runs, POST /api/v1/schedules)">
          last runs, the jobs each schedule created, and creating, pausing or deleting schedules at runtime need the server's schedule endpoints
        </NeedsServer>
      ) : null}
      {editing !== undefined ? (
        <Editor key={editing ? editing.name : "new"} schedule={editing} onClose={() => setEditing(undefined)} onDone={() => { setEditing(undefined); reload(); }} />
      ) : null}
      {data ? (
        <TableWrap label="Schedules">
          <table class="schedules">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">When</th>
                <th scope="col">Task</th>
                <th scope="col" class="opt">Queue</th>
                {hasLast ? <th scope="col">Last run</th> : null}
                <th scope="col">Next run</th>
                <th scope="col" class="opt2">Payload</th>
                <th scope="col"><span class="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {data.items.length ? data.items.flatMap((s) => [
                <tr key={s.name} data-schedule={s.name} data-source={s.source || "code"}>
                  <td>{s.name}{s.paused ? <span class="badge paused"> paused</span> : null}
                    {s.source ? <div class="muted small">{s.source === "code" ? "in code" : "runtime"}</div> : null}</td>
                  <td class="mono nowrap">{s.spec}{s.timezone ? <div class="muted small">{s.timezone}</div> : null}</td>
                  <td>{s.task}</td>
                  <td class="opt nowrap">{s.namespace || "default"} / {s.queue || "default"}</td>
                  {hasLast ? <td class="nowrap"><Time iso={s.last_run_at} /></td> : null}
                  <td class="nowrap">{s.paused ? <span class="muted">paused</span> : <Time iso={s.next_run_at} />}</td>
                  <td class="opt2 mono small">{JSON.stringify(s.payload ?? null)}</td>
                  <td class="actions">
                    <div class="row-actions">
                      <button type="button" class="small" data-trigger={s.name} onClick={() => setTrigger(s)}>Trigger now</button>
                      {needs.scheduleRuns() ? (
                        <button type="button" class="small" aria-expanded={open === s.name ? "true" : "false"} onClick={() => setOpen(open === s.name ? null : s.name)}>History</button>
                      ) : null}
                      {canManage && s.source === "runtime" ? (
                        <>
                          <button type="button" class="small" data-pause={s.name} onClick={() => togglePause(s)} aria-label={`${s.paused ? "Resume" : "Pause"} schedule ${s.name}`}>{s.paused ? "Resume" : "Pause"}</button>
                          <button type="button" class="small" data-edit={s.name} onClick={() => setEditing(s)} aria-label={`Edit schedule ${s.name}`}>Edit</button>
                          <button type="button" class="small danger" data-delete={s.name} onClick={() => setDeleting(s)} aria-label={`Delete schedule ${s.name}`}>Delete</button>
                        </>
                      ) : null}
                    </div>
                  </td>
                </tr>,
                open === s.name ? <tr key={`${s.name}-history`}><td colSpan={8}><History name={s.name} /></td></tr> : null,
              ]) : <Empty colSpan={8}>No schedules: declare them with app.cron("*/5 * * * *", "task"){canManage ? " or create one here" : ""}.</Empty>}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      {trigger ? (
        <Confirm open title={`Run ${trigger.name} now?`} confirmLabel="Run now" onClose={() => setTrigger(null)} onConfirm={() => run(trigger)}>
          {canTrigger
            ? <p>One job of {trigger.task} is enqueued now, recorded in the schedule's history. The next regular run stays as planned.</p>
            : <p>This server cannot trigger a schedule, so one job of <code>{trigger.task}</code> with the schedule's payload is enqueued now as an ordinary job (not recorded in the schedule's history). The next regular run stays as planned.</p>}
        </Confirm>
      ) : null}
      {deleting ? (
        <Confirm open danger title={`Delete schedule ${deleting.name}?`} confirmLabel="Delete" onClose={() => setDeleting(null)}
          onConfirm={() => act(() => schedules.remove(deleting.name), `Schedule ${deleting.name} deleted`, reload)}>
          <p>No further occurrence is enqueued and its history is removed. Jobs it already created stay.</p>
        </Confirm>
      ) : null}
    </div>
  );
}
