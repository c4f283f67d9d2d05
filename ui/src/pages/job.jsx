// One job: its fields, payload, result, progress and workflow (when the server has them), the actions that apply,
// and every try. Tries are counted as the server does: `attempts` counts toward `max_attempts` and starts again at
// a requeue, while try numbers go on; so the page says "try 1 of 3 since the requeue, 6 in all" and separates the
// tries made before the last requeue.

import { api } from "../api.js";
import { Badge, ErrorNote, Json, PageTitle, Progress, Time, lastList } from "../components.jsx";
import { duration, num } from "../format.js";
import { useData } from "../live.js";
import { ACTIONS } from "../rules.js";
import { act } from "../toast.js";

function describeList(hash) {
  const [path, query = ""] = hash.slice(1).split("?");
  const name = path.startsWith("/dead-letters") ? "Dead letters" : "Jobs";
  const p = new URLSearchParams(query);
  const parts = [];
  for (const [k, v] of p) if (!["limit", "offset", "sort", "cursor", "page"].includes(k)) parts.push(`${k.replace("_contains", "~")}: ${v}`);
  return parts.length ? `${name} (${parts.join(", ")})` : name;
}

function Attempt({ a, earlier }) {
  const kind = a.succeeded ? "completed" : a.outcome === "lost" ? "cancelled" : "failed";
  return (
    <article class={`card attempt ${earlier ? "earlier" : ""}`} data-try={a.try_number} aria-label={`Try ${a.try_number}`}>
      <div class="attempt-head">
        <strong>Try #{a.try_number}</strong>
        <span class={`badge ${kind}`}>{a.status_code} {a.outcome}</span>
        <span class="muted"><Time iso={a.started_at} compact /> · {duration(a.duration)} · {a.worker_id || "no worker"}</span>
      </div>
      {a.error ? <pre class="error-pre">{a.error}</pre> : null}
      {a.traceback ? (
        <details class="traceback">
          <summary>Traceback</summary>
          <pre>{a.traceback}</pre>
        </details>
      ) : null}
      {a.result !== null && a.result !== undefined ? <Json value={a.result} /> : null}
    </article>
  );
}

export function JobPage({ id }) {
  const { data, error, reload } = useData(async () => {
    const [job, attempts] = await Promise.all([api.job(id), api.attempts(id)]);
    return { job, attempts: attempts.items };
  }, id);
  const back = lastList();
  if (!data) {
    return (
      <div>
        <PageTitle title={`Job ${id.slice(-8)}`} />
        <ErrorNote error={error && error.status === 404 ? new Error(`No job has the id ${id}: it was deleted, pruned after its retention, or never existed.`) : error} />
      </div>
    );
  }
  const { job, attempts } = data;
  // Tries since the last requeue: the last `job.attempts` try numbers. Earlier ones belong to runs before it.
  const firstCurrent = job.try_number - job.attempts + 1;
  const current = attempts.filter((a) => a.try_number >= firstCurrent);
  const earlier = attempts.filter((a) => a.try_number < firstCurrent);
  const requeued = earlier.length > 0;
  const triesText = `${job.attempts} of ${job.max_attempts}${requeued ? " since the last requeue" : ""}${job.try_number !== job.attempts ? ` · ${num(job.try_number)} in all` : ""}`;

  const fields = [
    ["ID", <span class="mono break">{job.id}</span>],
    ["Task", job.task],
    ["Status", <><Badge job={job} />{job.cancel_requested ? <span class="muted"> cancel requested</span> : null}</>],
    ["Namespace / queue", `${job.namespace} / ${job.queue}`],
    ["User", job.user_id || "—"],
    ["Group", job.group_key || "—"],
    ["Unique key", job.unique_key || "—"],
    ["Priority", job.priority],
    ["Tries", <span data-tries>{triesText}</span>],
    ["Run at", <Time iso={job.run_at} />],
    ["Created", <Time iso={job.created} />],
    ["Started", <Time iso={job.started_at} />],
    ["Finished", <Time iso={job.finished_at} />],
    ["Lease until", <Time iso={job.lease_expires_at} />],
    ["Worker", job.worker_id || "—"],
  ];
  if (job.workflow_id) fields.push(["Workflow", <a href={`#/workflows/${encodeURIComponent(job.workflow_id)}`} data-workflow-link>{job.workflow_id}</a>]);
  if (job.depends_on && job.depends_on.length) {
    fields.push(["Depends on", job.depends_on.map((d) => <div key={d}><a class="mono" href={`#/jobs/${encodeURIComponent(d)}`}>…{d.slice(-8)}</a></div>)]);
  }

  return (
    <div data-loaded="1">
      <nav class="breadcrumb" aria-label="Breadcrumb">
        <a href={back} data-breadcrumb>{describeList(back)}</a>
        <span aria-hidden="true"> / </span>
        <span aria-current="page" class="mono">…{job.id.slice(-8)}</span>
      </nav>
      <PageTitle title={`Job …${job.id.slice(-8)} · ${job.task}`}>
        {Object.entries(ACTIONS).filter(([, a]) => a.allowed(job)).map(([key, a]) => (
          <button key={key} type="button" class={a.danger ? "danger" : ""} data-action={key} onClick={() => {
            if (a.danger && !window.confirm("Delete this job and its attempt history?")) return;
            act(() => a.call(job), `Job ${a.done}`, key === "delete" ? () => { location.hash = back; } : reload);
          }}>{a.verb}</button>
        ))}
      </PageTitle>
      <ErrorNote error={error} />
      {job.progress ? <Progress progress={job.progress} /> : null}
      <div class="grid2">
        <div class="card"><dl class="kv">{fields.map(([k, v]) => [<dt key={`t${k}`}>{k}</dt>, <dd key={`d${k}`}>{v}</dd>])}</dl></div>
        <div>
          <h2 class="first">Payload</h2>
          {job.payload_encrypted ? <p class="muted">encrypted: only workers can read it</p> : <Json value={job.payload} />}
          {job.result !== null && job.result !== undefined ? <><h2>Result</h2><Json value={job.result} /></> : null}
          {job.last_error ? <><h2>Last error</h2><pre class="error-pre">{job.last_error}</pre></> : null}
        </div>
      </div>
      <h2>Tries ({current.length}{requeued ? ` since the last requeue, ${attempts.length} in all` : ""})</h2>
      {current.length ? current.slice().reverse().map((a) => <Attempt key={`${a.try_number}-${a.started_at}`} a={a} />) : <div class="card empty">Not run {requeued ? "since the requeue" : "yet"}.</div>}
      {requeued ? (
        <>
          <h3 class="divider" data-earlier>Before the last requeue</h3>
          {earlier.slice().reverse().map((a) => <Attempt key={`${a.try_number}-${a.started_at}`} a={a} earlier />)}
        </>
      ) : null}
    </div>
  );
}
