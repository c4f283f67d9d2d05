// Schedules: each cron entry with its next run (and last run and history when the server keeps them), "Trigger
// now", and — when the server manages schedules at runtime — pause and delete.

import { useState } from "preact/hooks";
import { api, needs, scheduleRuns, triggerSchedule } from "../api.js";
import { Badge, Confirm, Empty, ErrorNote, JobLink, NeedsServer, PageTitle, TableWrap, Time } from "../components.jsx";
import { useData } from "../live.js";
import { act } from "../toast.js";

function History({ name }) {
  const { data, error } = useData(() => scheduleRuns(name), `runs:${name}`);
  return (
    <div class="schedule-history" data-history={name}>
      <ErrorNote error={error} />
      {data ? (
        data.items.length ? (
          <ul class="plain">
            {data.items.map((r) => (
              <li key={r.job_id || r.occurrence}>
                <Time iso={r.occurrence} compact /> → {r.job ? <><JobLink id={r.job.id} from="#/schedules" /> <Badge job={r.job} /></> : <span class="muted">{r.note || "no job (skipped)"}</span>}
              </li>
            ))}
          </ul>
        ) : <p class="muted">No run yet.</p>
      ) : null}
    </div>
  );
}

export function SchedulesPage() {
  const { data, error, reload } = useData(() => api.schedules(), "schedules");
  const [open, setOpen] = useState(null);
  const [trigger, setTrigger] = useState(null);
  const canTrigger = needs.scheduleTrigger();
  const hasLast = data && data.items.some((s) => s.last_run_at !== undefined);

  const run = (s) => {
    if (canTrigger) return act(() => triggerSchedule(s.name), `${s.name} triggered`, reload);
    // The server has no trigger: enqueue the same job the schedule would, as an ordinary job.
    const body = { task: s.task, payload: s.payload ?? null, namespace: s.namespace };
    if (s.queue) body.queue = s.queue;
    return act(() => api.enqueue(body), (job) => `Enqueued ${s.task} now (job …${job.id.slice(-8)})`, reload);
  };

  return (
    <div data-loaded={data ? "1" : undefined}>
      <PageTitle title="Schedules" />
      <p class="muted">Cron entries registered by the app (app.cron). Each occurrence is enqueued once across all processes.</p>
      <ErrorNote error={error} />
      {!needs.scheduleRuns() || !needs.scheduleManage() ? (
        <NeedsServer what="schedule history and runtime management (GET /api/v1/schedules/{name}/runs, POST /api/v1/schedules)">
          last runs, the jobs each schedule created, and creating, pausing or deleting schedules at runtime need the server's schedule endpoints
        </NeedsServer>
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
                <tr key={s.name} data-schedule={s.name}>
                  <td>{s.name}{s.paused ? <span class="badge paused"> paused</span> : null}</td>
                  <td class="mono nowrap">{s.spec}{s.timezone ? <div class="muted small">{s.timezone}</div> : null}</td>
                  <td>{s.task}</td>
                  <td class="opt nowrap">{s.namespace || "default"} / {s.queue || "default"}</td>
                  {hasLast ? <td class="nowrap"><Time iso={s.last_run_at} /></td> : null}
                  <td class="nowrap"><Time iso={s.next_run_at} /></td>
                  <td class="opt2 mono small">{JSON.stringify(s.payload ?? null)}</td>
                  <td class="actions">
                    <div class="row-actions">
                      <button type="button" class="small" data-trigger={s.name} onClick={() => setTrigger(s)}>Trigger now</button>
                      {needs.scheduleRuns() ? (
                        <button type="button" class="small" aria-expanded={open === s.name ? "true" : "false"} onClick={() => setOpen(open === s.name ? null : s.name)}>History</button>
                      ) : null}
                    </div>
                  </td>
                </tr>,
                open === s.name ? <tr key={`${s.name}-history`}><td colSpan={8}><History name={s.name} /></td></tr> : null,
              ]) : <Empty colSpan={8}>No schedules registered: declare them with app.cron("*/5 * * * *", "task").</Empty>}
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
    </div>
  );
}
