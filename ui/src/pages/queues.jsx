// Queues: counts, latency (the oldest due job's age), pause/resume, clear, and settings (concurrency caps, rate
// limit with its burst and key) with what the limits are doing now (GET /api/v1/queues/{queue}: flow) when the
// server offers them.

import { Fragment } from "preact";
import { useState } from "preact/hooks";
import { api, bulk, needs, updateQueue } from "../api.js";
import { Confirm, Empty, ErrorNote, NeedsServer, PageTitle, TableWrap } from "../components.jsx";
import { duration, num, plural } from "../format.js";
import { useData } from "../live.js";
import { act, toast } from "../toast.js";

const COUNTS = ["pending", "scheduled", "processing", "completed", "failed", "cancelled"];
const has = (q, field) => q[field] !== undefined;

function listLink(q, status) {
  const base = status === "failed" ? "#/dead-letters" : "#/jobs";
  const p = new URLSearchParams({ namespace: q.namespace, queue: q.name });
  if (status && status !== "failed") p.set("status", status);
  return `${base}?${p}`;
}

export function QueueTable({ queues, actions = true, reload, onSettings, onClear }) {
  const latencyKnown = queues.some((q) => has(q, "oldest_due_age"));
  return (
    <TableWrap label="Queues">
      <table class="queues">
        <thead>
          <tr>
            <th scope="col">Queue</th>
            <th scope="col">State</th>
            {COUNTS.map((c) => <th scope="col" class={`num ${c === "completed" || c === "cancelled" ? "opt" : ""}`} key={c}>{c}</th>)}
            <th scope="col" class="num" title="How long the oldest due job has waited: what an autoscaler watches">Latency</th>
            <th scope="col" class="opt">Limits</th>
            {actions ? <th scope="col"><span class="sr-only">Actions</span></th> : null}
          </tr>
        </thead>
        <tbody>
          {queues.length ? queues.map((q) => (
            <tr key={`${q.namespace}/${q.name}`} data-queue={`${q.namespace}/${q.name}`}>
              <td class="nowrap">
                <a href={listLink(q)}>{q.name}</a>
                {q.namespace !== "default" ? <div class="muted small">{q.namespace}</div> : null}
              </td>
              <td>{q.paused ? <span class="badge paused">paused</span> : <span class="badge running">running</span>}</td>
              {COUNTS.map((c) => (
                <td class={`num ${c === "completed" || c === "cancelled" ? "opt" : ""}`} key={c}>
                  {q.counts[c] ? <a href={listLink(q, c)}>{num(q.counts[c])}</a> : <span class="muted">0</span>}
                </td>
              ))}
              <td class="num nowrap" data-latency>
                {has(q, "oldest_due_age") ? (q.oldest_due_age === null ? <span class="muted">none due</span> : duration(q.oldest_due_age))
                  : <span class="muted" title="needs the queue's oldest due age from the server (GET /api/v1/queues: oldest_due_age)">n/a</span>}
              </td>
              <td class="opt small" data-limits>
                {q.concurrency ? `at most ${num(q.concurrency)} at once` : "no cap"}
                {q.key_concurrency !== null && q.key_concurrency !== undefined ? <div>{`at most ${num(q.key_concurrency)} per key`}</div> : null}
                {q.rate_limit ? <div>{rateText(q.rate_limit)}{q.rate_limit.burst ? ` (burst ${num(q.rate_limit.burst)})` : ""}{q.rate_key ? ` per ${q.rate_key}` : ""}</div> : null}
              </td>
              {actions ? (
                <td class="actions">
                  <div class="row-actions">
                    <button type="button" class="small" data-toggle-pause
                      aria-label={`${q.paused ? "Resume" : "Pause"} queue ${q.namespace} / ${q.name}`}
                      onClick={() => act(() => (q.paused ? api.resumeQueue(q) : api.pauseQueue(q)),
                        q.paused ? `Queue ${q.name} resumed` : `Queue ${q.name} paused: workers take no new job from it`, reload)}>
                      {q.paused ? "Resume" : "Pause"}
                    </button>
                    <button type="button" class="small" onClick={() => onSettings(q)} aria-label={`Settings of queue ${q.name}`}>Settings</button>
                    <button type="button" class="small danger" data-clear onClick={() => onClear(q)} aria-label={`Clear queue ${q.name}`}>Clear</button>
                  </div>
                </td>
              ) : null}
            </tr>
          )) : <Empty colSpan={11}>No queues yet: a queue appears with its first job.</Empty>}
        </tbody>
      </table>
      {latencyKnown ? null : <p class="muted small table-note" data-needs="latency">Latency needs the oldest due job's age per queue from the server (GET /api/v1/queues: oldest_due_age).</p>}
    </TableWrap>
  );
}

// The server answers a rate limit as {limit, period (seconds), burst}; the form and the table speak "100/s".
function rateText(r) {
  if (!r) return "";
  if (typeof r === "string") return r;
  const unit = r.period === 1 ? "s" : r.period === 60 ? "m" : r.period === 3600 ? "h" : `${r.period}s`;
  return `${r.limit}/${unit}`;
}

const RATE_KEYS = ["user_id", "group_key", "concurrency_key", "payload."];

function bucketText(b) {
  return b.tokens > 0 ? `${num(b.tokens)} left` : `none left, next in ${duration(b.next_in)}`;
}

// What the limits are doing now: GET /api/v1/queues/{queue} answers it as `flow`.
function Flow({ q }) {
  const { data, error } = useData(() => api.queue(q), `queue-flow-${q.namespace}/${q.name}`);
  if (error) return <ErrorNote error={error} />;
  if (!data) return null;
  const f = data.flow;
  return (
    <dl class="facts" data-flow>
      <dt>Processing</dt><dd data-flow-processing>{num(f.processing)}</dd>
      {f.processing_per_key.length ? (<><dt>Busiest keys</dt><dd>{f.processing_per_key.map((k) => `${k.key}: ${num(k.processing)}`).join(", ")}</dd></>) : null}
      {f.rate ? (<><dt>Rate tokens</dt><dd data-flow-tokens>{bucketText(f.rate)}</dd></>) : null}
      {data.rate_key && data.rate_limit ? (<><dt>Keys holding state</dt><dd data-flow-keys>{num(f.rate_keys_limited)}</dd></>) : null}
      {f.rate_keys.map((b) => (<Fragment key={b.key}><dt class="muted">{b.key || "(no key)"}</dt><dd>{bucketText(b)}</dd></Fragment>))}
      <dt>Due now</dt><dd data-flow-due>{num(f.due)}{f.rate_limited ? " (held by the rate limit)" : ""}</dd>
      <dt>Oldest due</dt><dd>{f.oldest_due_age === null ? "none due" : duration(f.oldest_due_age)}</dd>
    </dl>
  );
}

function Settings({ q, reload, onClose }) {
  const editable = needs.queueSettings();
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const number = (name) => (f.get(name) ? Number(f.get(name)) : null);
    const body = {
      concurrency: number("concurrency"),
      key_concurrency: number("key_concurrency"),
      rate_limit: f.get("rate_limit") || null,
      rate_key: f.get("rate_key") || null,
    };
    if (body.rate_limit && f.get("rate_burst")) body.rate_burst = number("rate_burst");
    act(() => updateQueue(q, body), `Queue ${q.name} saved`, () => { reload(); onClose(); });
  };
  return (
    <form class="card" id="queue-settings" onSubmit={submit} aria-labelledby="queue-settings-title">
      <h2 id="queue-settings-title" class="first">Settings of {q.namespace} / {q.name}</h2>
      {editable ? null : (
        <NeedsServer what="queue settings (PATCH /api/v1/queues/{queue})">changing the concurrency cap and rate limit needs the server's queue settings endpoint; shown read-only</NeedsServer>
      )}
      <fieldset disabled={!editable}>
        <div class="form-grid">
          <label>Concurrency cap (jobs at once, empty: none)<input name="concurrency" type="number" min="1" defaultValue={q.concurrency ?? ""} /></label>
          <label>Per key (jobs at once with the same concurrency key; empty: none)<input name="key_concurrency" type="number" min="0" defaultValue={q.key_concurrency ?? ""} /></label>
          <label>Rate limit (e.g. 100/s, 10/m, 3/10s; empty: none)<input name="rate_limit" pattern="\d+/\d*(s|m|h)" defaultValue={rateText(q.rate_limit)} /></label>
          <label>Burst (claims at once after an idle spell; empty: the limit)<input name="rate_burst" type="number" min="1" defaultValue={q.rate_limit?.burst ?? ""} /></label>
          <label>Rate key (one bucket per user_id, group_key, concurrency_key or payload.&lt;field&gt;; empty: one for the queue)
            <input name="rate_key" list="rate-keys" pattern="(user_id|group_key|concurrency_key|payload\.[A-Za-z_][A-Za-z0-9_]{0,63})" defaultValue={q.rate_key ?? ""} />
            <datalist id="rate-keys">{RATE_KEYS.map((k) => <option value={k} key={k} />)}</datalist>
          </label>
        </div>
      </fieldset>
      {needs.queueFlow() ? <Flow q={q} /> : null}
      <div class="form-buttons">
        {editable ? <button class="primary" type="submit">Save</button> : null}
        <button type="button" onClick={onClose}>Close</button>
      </div>
    </form>
  );
}

export function QueuesPage() {
  const { data, error, reload } = useData(() => api.queues(), "queues");
  const [editing, setEditing] = useState(null);
  const [clearing, setClearing] = useState(null);
  const ask = async (q) => {
    if (!needs.bulk()) {
      toast("Clearing a queue needs the server's bulk endpoint (POST /api/v1/jobs/bulk), which this server does not have.", "error");
      return;
    }
    try {
      const counts = await bulk("delete", { namespace: q.namespace, queue: q.name, status: "pending" }, { dryRun: true });
      setClearing({ q, counts });
    } catch (err) {
      toast(err.message, "error");
    }
  };
  return (
    <div data-loaded={data ? "1" : undefined}>
      <PageTitle title="Queues" />
      <p class="muted">Pause stops workers from taking jobs from a queue (Run still consumes it). Clear deletes its waiting jobs.</p>
      <ErrorNote error={error} />
      {needs.bulk() ? null : <NeedsServer what="bulk actions by filter (POST /api/v1/jobs/bulk)">“Clear” needs the server's bulk endpoint</NeedsServer>}
      {editing ? <Settings key={`${editing.namespace}/${editing.name}`} q={editing} reload={reload} onClose={() => setEditing(null)} /> : null}
      {data ? <QueueTable queues={data.items} reload={reload} onSettings={setEditing} onClear={ask} /> : null}
      {clearing ? (
        <Confirm open danger title={`Clear ${clearing.q.name}: delete ${plural(clearing.counts.applied, "waiting job")}?`}
          confirmLabel={`Delete ${plural(clearing.counts.applied, "job")}`} onClose={() => setClearing(null)}
          onConfirm={() => act(() => bulk("delete", { namespace: clearing.q.namespace, queue: clearing.q.name, status: "pending" }, { expected: clearing.counts.applied }),
            (r) => `${plural(r.applied, "job")} deleted from ${clearing.q.name}`, reload)}>
          <p>The pending and scheduled jobs of {clearing.q.namespace} / {clearing.q.name} go, with their history. Running jobs finish.</p>
        </Confirm>
      ) : null}
    </div>
  );
}
