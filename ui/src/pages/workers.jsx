// Workers: each live worker with its queues, load, heartbeat, the roles it leads, and each running job with its
// task and how long it has run. The worker list gives only the running jobs' ids; when the server does not add
// their task and start time (docs/ui-api-needs.md §5), the page reads each running job (at most 100).

import { api } from "../api.js";
import { Empty, ErrorNote, JobLink, PageTitle, TableWrap, Time } from "../components.jsx";
import { duration, num } from "../format.js";
import { useClock, useData } from "../live.js";

const MAX_LOOKUPS = 100;

async function load() {
  const workers = (await api.workers()).items;
  const ids = [];
  for (const w of workers) for (const r of w.running) if (typeof r === "string") ids.push(r);
  const jobs = new Map();
  await Promise.all(ids.slice(0, MAX_LOOKUPS).map(async (id) => {
    try {
      jobs.set(id, await api.job(id));
    } catch {
      /* finished and pruned meanwhile */
    }
  }));
  return { workers, jobs, truncated: ids.length > MAX_LOOKUPS };
}

function Running({ entry, jobs, now }) {
  const id = typeof entry === "string" ? entry : entry.id;
  const job = typeof entry === "string" ? jobs.get(id) : entry;
  const started = job && job.started_at;
  return (
    <li class="running-job" data-running={id}>
      <JobLink id={id} from="#/workers" />{" "}
      <span class="task">{job ? job.task : "…"}</span>{" "}
      <span class="muted nowrap" data-runtime>{started ? duration((now - Date.parse(started)) / 1000) : ""}</span>
    </li>
  );
}

export function WorkersPage() {
  const { data, error } = useData(load, "workers");
  const now = useClock(1000);
  return (
    <div data-loaded={data ? "1" : undefined}>
      <PageTitle title="Workers" />
      <p class="muted">
        Live registrations only: a worker that stops heartbeating disappears by itself and its jobs are rescued. One worker,
        elected through the store, leads each maintenance role (the rescuer and pruner: maintenance; cron: scheduler).
      </p>
      <ErrorNote error={error} />
      {data ? (
        <TableWrap label="Workers">
          <table class="workers">
            <thead>
              <tr>
                <th scope="col">Worker</th>
                <th scope="col">Busy</th>
                <th scope="col">Running jobs</th>
                <th scope="col" class="opt">Queues</th>
                <th scope="col" class="opt2">Started</th>
                <th scope="col">Heartbeat</th>
                <th scope="col" class="opt2">Leads</th>
              </tr>
            </thead>
            <tbody>
              {data.workers.length ? data.workers.map((w) => (
                <tr key={w.id} data-worker={w.id}>
                  <td>
                    <div class="mono small break">{w.id}</div>
                    <div class="muted small">{w.hostname} · pid {w.pid} · {w.version}</div>
                  </td>
                  <td class="nowrap num">{num(w.running.length)} / {num(w.concurrency)}</td>
                  <td>
                    {w.running.length
                      ? <ul class="plain">{w.running.map((r) => <Running key={typeof r === "string" ? r : r.id} entry={r} jobs={data.jobs} now={now} />)}</ul>
                      : <span class="muted">idle</span>}
                  </td>
                  <td class="opt small">{w.queues.join(", ")}</td>
                  <td class="opt2 nowrap"><Time iso={w.started_at} now={now} /></td>
                  <td class="nowrap"><Time iso={w.heartbeat_at} compact now={now} /></td>
                  <td class="opt2" data-leads={(w.leader_of || []).join(",")}>{(w.leader_of || []).map((r) => <span key={r} class="badge running">{r}</span>)}</td>
                </tr>
              )) : <Empty colSpan={7}>No live workers: start one with conveyor worker (or conveyor serve).</Empty>}
            </tbody>
          </table>
          {data.truncated ? <p class="muted small table-note">Showing the task of the first {MAX_LOOKUPS} running jobs.</p> : null}
        </TableWrap>
      ) : null}
    </div>
  );
}
