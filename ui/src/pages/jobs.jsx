// Jobs and dead letters: search, filters with drop-downs, sorting, paging, row actions where they apply, and bulk
// actions — on the selected rows, or (when the server offers it) on every job matching the filter, done by the
// server. Rows update in place; while the pointer is over the table (or focus is in it) the row order is frozen,
// so a button never moves under the cursor.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, bulk, caps, needs } from "../api.js";
import { Badge, Confirm, Empty, ErrorNote, JobLink, NeedsServer, PageTitle, TableWrap, Time, rememberList } from "../components.jsx";
import { errorClass, isFullId, num, plural } from "../format.js";
import { useData } from "../live.js";
import { ACTIONS, applyToSelection } from "../rules.js";
import { act, toast } from "../toast.js";

const STATUSES = ["pending", "scheduled", "retrying", "processing", "completed", "failed", "cancelled"];
const FILTER_KEYS = ["namespace", "queue", "queue_contains", "task", "task_contains", "status", "user_id", "id", "q", "path", "value", "sort"];
const JOBS = "/api/v1/jobs";

function filterFrom(params, dead) {
  const filter = {};
  for (const key of FILTER_KEYS) if (params.get(key)) filter[key] = params.get(key);
  if (dead) filter.status = "failed";
  return filter;
}

function setParams(base, values) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  const qs = p.toString();
  location.hash = qs ? `${base}?${qs}` : base;
}

/** The choices for the drop-downs: namespaces and queues from the server, tasks from live workers and schedules. */
function useOptions() {
  const { data } = useData(async () => {
    const [queues, namespaces, workers, schedules] = await Promise.all([
      api.queues(), api.namespaces(), api.workers(), api.schedules(),
    ]);
    const tasks = new Set();
    for (const w of workers.items) for (const t of w.tasks || []) if (!t.startsWith("conveyor:")) tasks.add(t);
    for (const s of schedules.items) tasks.add(s.task);
    const nsNames = new Set(namespaces.items.map((n) => n.name));
    for (const q of queues.items) nsNames.add(q.namespace);
    return {
      namespaces: [...nsNames].sort(),
      queues: [...new Set(queues.items.map((q) => q.name))].sort(),
      tasks: [...tasks].sort(),
    };
  }, "options", { live: false });
  return data || { namespaces: [], queues: [], tasks: [] };
}

function Filters({ base, params, dead, options }) {
  const searchMode = params.get("path") ? "path" : params.get("q") ? "q" : "id";
  const [mode, setMode] = useState(searchMode);
  const canPartial = Boolean(caps.param("GET", JOBS, "queue_contains") && caps.param("GET", JOBS, "task_contains"));
  const canSearch = { id: Boolean(caps.param("GET", JOBS, "id")), q: Boolean(caps.param("GET", JOBS, "q")), path: Boolean(caps.param("GET", JOBS, "path")) };
  const statusOk = (s) => s === "pending" || s === "processing" || s === "completed" || s === "failed" || s === "cancelled" || caps.accepts("GET", JOBS, "status", s);

  const submit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const values = {};
    for (const key of ["namespace", "status", "user_id", "limit", "sort"]) values[key] = f.get(key) || "";
    for (const [key, known] of [["queue", options.queues], ["task", options.tasks]]) {
      const v = (f.get(key) || "").trim();
      if (v && canPartial && !known.includes(v)) values[`${key}_contains`] = v;
      else values[key] = v;
    }
    const search = (f.get("search") || "").trim();
    const m = f.get("mode");
    if (search) {
      if (m === "id" && isFullId(search)) {
        try {
          const job = await api.job(search);
          rememberList(location.hash);
          location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
        } catch (err) {
          toast(err.status === 404 ? `No job has the id ${search}.` : err.message, "error");
        }
        return;
      }
      if (m === "path") {
        values.path = search;
        values.value = (f.get("value") || "").trim();
      } else values[m] = search;
    }
    if (dead) delete values.status;
    setParams(base, values);
  };

  const searchValue = params.get("path") || params.get("q") || params.get("id") || "";
  const searchHint = {
    id: canSearch.id ? "a whole id, or its first or last characters" : "a whole job id",
    q: "text anywhere in the payload",
    path: "a JSON path such as $.user.id, and the value",
  }[mode];
  return (
    <form class="filters card" onSubmit={submit} aria-label="Filter jobs">
      <div class="filter-row">
        <label class="grow">
          <span>Search</span>
          <span class="search">
            <select name="mode" aria-label="Search in" value={mode} onChange={(e) => setMode(e.currentTarget.value)}>
              <option value="id">Id</option>
              <option value="q" disabled={!canSearch.q}>Payload text{canSearch.q ? "" : " (needs server)"}</option>
              <option value="path" disabled={!canSearch.path}>JSON path{canSearch.path ? "" : " (needs server)"}</option>
            </select>
            <input name="search" type="search" defaultValue={searchValue} placeholder={searchHint} aria-describedby="search-hint" />
            {mode === "path" ? <input name="value" aria-label="Value at the path" placeholder="value" defaultValue={params.get("value") || ""} /> : null}
          </span>
          <small id="search-hint" class="muted">{searchHint}</small>
        </label>
      </div>
      <div class="filter-row">
        <label>
          <span>Namespace</span>
          <select name="namespace">
            <option value="">All</option>
            {options.namespaces.map((n) => <option key={n} value={n} selected={params.get("namespace") === n}>{n}</option>)}
          </select>
        </label>
        <label>
          <span>Queue</span>
          <input name="queue" list="queue-options" defaultValue={params.get("queue") || params.get("queue_contains") || ""} placeholder="All" autocomplete="off" />
          <datalist id="queue-options">{options.queues.map((q) => <option key={q} value={q} />)}</datalist>
        </label>
        <label>
          <span>Task</span>
          <input name="task" list="task-options" defaultValue={params.get("task") || params.get("task_contains") || ""} placeholder="All" autocomplete="off" />
          <datalist id="task-options">{options.tasks.map((t) => <option key={t} value={t} />)}</datalist>
        </label>
        {dead ? null : (
          <label>
            <span>Status</span>
            <select name="status">
              <option value="">All</option>
              {STATUSES.map((s) => (
                <option key={s} value={s} disabled={!statusOk(s)} selected={params.get("status") === s}>{s}{statusOk(s) ? "" : " (needs server)"}</option>
              ))}
            </select>
          </label>
        )}
        <label>
          <span>User</span>
          <input name="user_id" defaultValue={params.get("user_id") || ""} placeholder="Any" autocomplete="off" />
        </label>
        <label>
          <span>Per page</span>
          <select name="limit">
            {[10, 20, 50, 100].map((n) => <option key={n} value={n} selected={String(n) === (params.get("limit") || "20")}>{n}</option>)}
          </select>
        </label>
        <input type="hidden" name="sort" value={params.get("sort") || ""} />
        <div class="filter-buttons">
          <button class="primary" type="submit">Filter</button>
          <button type="button" onClick={() => { location.hash = base; }}>Clear</button>
        </div>
      </div>
      {canPartial ? null : (
        <small class="muted" data-needs="partial">Queue and task match exactly on this server: partial names need GET /api/v1/jobs?queue_contains=&amp;task_contains=.</small>
      )}
    </form>
  );
}

const SORTABLE = { created: "Created", run_at: "Run at", finished_at: "Failed at", attempts: "Tries" };

function SortHeader({ field, label, params, base, className }) {
  const canSort = Boolean(caps.param("GET", JOBS, "sort"));
  const sort = params.get("sort") || "-created";
  const current = sort.replace(/^-/, "") === field ? (sort.startsWith("-") ? "descending" : "ascending") : undefined;
  if (!canSort) return <th class={className} scope="col">{label}</th>;
  const next = current === "descending" ? field : `-${field}`;
  return (
    <th class={className} scope="col" aria-sort={current || "none"}>
      <button type="button" class="sort" onClick={() => setParams(base, { ...Object.fromEntries(params), sort: next, offset: 0, cursor: "", page: "" })}>
        {label}<span aria-hidden="true">{current === "descending" ? " ▼" : current === "ascending" ? " ▲" : ""}</span>
      </button>
    </th>
  );
}

function RowActions({ job, reload }) {
  const buttons = [];
  for (const [key, a] of Object.entries(ACTIONS)) {
    if (!a.allowed(job)) continue;
    buttons.push(
      <button key={key} type="button" class={`small ${a.danger ? "danger" : ""}`} data-action={key}
        aria-label={`${a.verb} job ${job.id}`}
        onClick={() => {
          if (a.danger && !window.confirm(`Delete job ${job.id} and its attempt history?`)) return;
          act(() => a.call(job), `Job ${a.done}`, reload);
        }}>
        {a.verb}
      </button>,
    );
  }
  return <div class="row-actions">{buttons}</div>;
}

/**
 * The rows to show. Normally the server's order. While `frozen`, the order shown last is kept: rows still in the
 * answer get their new data in place, rows that left it stay as greyed placeholders, new ones wait (counted).
 */
function useFrozenRows(items, frozen, thaw) {
  const order = useRef([]);
  const known = useRef(new Map());
  const lastItems = useRef(items);
  // After the user's own action (thaw set), its result shows at once: the next answer resets the order.
  if (thaw.current && items !== lastItems.current) {
    thaw.current = false;
    frozen = false;
  }
  lastItems.current = items;
  for (const j of items) known.current.set(j.id, j);
  let rows, waiting = 0;
  if (frozen && order.current.length) {
    const byId = new Map(items.map((j) => [j.id, j]));
    rows = order.current.map((id) => ({ job: byId.get(id) || known.current.get(id), gone: !byId.has(id) }));
    const shown = new Set(order.current);
    waiting = items.filter((j) => !shown.has(j.id)).length;
  } else {
    rows = items.map((job) => ({ job, gone: false }));
    order.current = items.map((j) => j.id);
    known.current = new Map(items.map((j) => [j.id, j]));
  }
  return { rows, waiting };
}

function BulkBar({ dead, page, filter, selected, setSelected, allMatching, setAllMatching, reload }) {
  const [pending, setPending] = useState(null); // {action, jobs?, counts?}
  const chosen = page.items.filter((j) => selected.has(j.id));
  const total = page.total;
  const serverBulk = needs.bulk();
  const actions = dead ? ["requeue", "delete"] : ["requeue", "cancel", "run_now", "delete"];

  const ask = async (action) => {
    if (allMatching) {
      try {
        const counts = await bulk(action, filter, { dryRun: true });
        setPending({ action, counts });
      } catch (err) {
        toast(err.message, "error");
      }
      return;
    }
    if (!chosen.length) {
      toast("Select jobs first (the boxes at the left of the rows).", "error");
      return;
    }
    setPending({ action, jobs: chosen });
  };

  const run = async () => {
    const { action, jobs, counts } = pending;
    const a = ACTIONS[action];
    if (counts) {
      try {
        const r = await bulk(action, filter, { expected: counts.applied });
        const skipped = Object.entries(r.skipped || {}).map(([why, n]) => `${num(n)} ${why}`).join(", ");
        toast(`${plural(r.applied, "job")} ${a.done}${skipped ? `; left as they were: ${skipped}` : ""}.`);
      } catch (err) {
        toast(err.message, "error");
      }
    } else {
      const r = await applyToSelection(action, jobs);
      const parts = [`${plural(r.applied, "job")} ${a.done}`];
      if (r.skipped) parts.push(`${num(r.skipped)} left as they were (${a.rule})`);
      if (r.failed) parts.push(`${num(r.failed)} had changed meanwhile (${r.firstError})`);
      toast(`${parts.join("; ")}.`, r.failed ? "error" : "ok");
    }
    setSelected(new Set());
    setAllMatching(false);
    reload();
  };

  let dialog = null;
  if (pending) {
    const a = ACTIONS[pending.action];
    let n, rest, body;
    if (pending.counts) {
      n = pending.counts.applied;
      rest = pending.counts.matched - n;
      body = <p>{plural(pending.counts.matched, "job")} match this filter. {num(n)} will be {a.done}{rest ? `; ${num(rest)} cannot be (${a.rule}) and are left as they are` : ""}.</p>;
    } else {
      n = pending.jobs.filter(a.allowed).length;
      rest = pending.jobs.length - n;
      body = <p>{num(n)} of the {plural(pending.jobs.length, "selected job")} will be {a.done}{rest ? `; ${num(rest)} cannot be (${a.rule}) and are left as they are` : ""}.</p>;
    }
    dialog = (
      <Confirm open title={`${a.verb} ${plural(n, "job")}?`} confirmLabel={n ? `${a.verb} ${plural(n, "job")}` : "Nothing to do"}
        danger={a.danger} onConfirm={n ? run : async () => {}} onClose={() => setPending(null)}>
        {body}
        {a.danger && n ? <p><strong>Deleting cannot be undone:</strong> the jobs and their attempt history go.</p> : null}
      </Confirm>
    );
  }

  const allOnPage = page.items.length > 0 && page.items.every((j) => selected.has(j.id));
  return (
    <div class="bulk" aria-label="Bulk actions" role="group">
      <span id="selected-count" class="muted" aria-live="polite">
        {allMatching ? `All ${num(total)} matching selected` : `${num(selected.size)} selected`}
      </span>
      {actions.map((key) => (
        <button key={key} type="button" class={`small ${ACTIONS[key].danger ? "danger" : ""}`} data-bulk={key} onClick={() => ask(key)}>
          {allMatching ? `${ACTIONS[key].verb} all ${num(total)}` : ACTIONS[key].verb}
        </button>
      ))}
      {allOnPage && total > page.items.length && !allMatching ? (
        serverBulk
          ? <button type="button" class="link-button" data-select-all-matching onClick={() => setAllMatching(true)}>Select all {num(total)} matching this filter</button>
          : <span class="muted small" data-needs="bulk">Acting on all {num(total)} matching needs the server's bulk endpoint (POST /api/v1/jobs/bulk).</span>
      ) : null}
      {allMatching ? <button type="button" class="link-button" onClick={() => { setAllMatching(false); setSelected(new Set()); }}>Clear selection</button> : null}
      {dialog}
    </div>
  );
}

function DeadLetterActions({ filter, total, reload }) {
  const [pending, setPending] = useState(null);
  if (!needs.bulk()) {
    return <NeedsServer what="bulk actions by filter (POST /api/v1/jobs/bulk)">“Retry all” and “Delete all” dead letters need the server's bulk endpoint; select rows below to act on a page at a time</NeedsServer>;
  }
  const ask = async (action) => {
    try {
      setPending({ action, counts: await bulk(action, filter, { dryRun: true }) });
    } catch (err) {
      toast(err.message, "error");
    }
  };
  const a = pending && ACTIONS[pending.action];
  return (
    <div class="page-actions">
      <button type="button" disabled={!total} data-dead-all="requeue" onClick={() => ask("requeue")}>Retry all</button>
      <button type="button" class="danger" disabled={!total} data-dead-all="delete" onClick={() => ask("delete")}>Delete all</button>
      {pending ? (
        <Confirm open title={`${a.verb} ${plural(pending.counts.applied, "dead letter")}?`} confirmLabel={`${a.verb} ${plural(pending.counts.applied, "job")}`}
          danger={a.danger} onClose={() => setPending(null)} onConfirm={async () => {
            await act(() => bulk(pending.action, filter, { expected: pending.counts.applied }), (r) => `${plural(r.applied, "job")} ${a.done}.`, reload);
          }}>
          <p>Every failed job matching this filter: {num(pending.counts.applied)}.</p>
        </Confirm>
      ) : null}
    </div>
  );
}

export function JobsPage({ route, dead = false }) {
  const base = dead ? "#/dead-letters" : "#/jobs";
  const params = route.params;
  const limit = Math.min(1000, Number(params.get("limit") || 20));
  const offset = Math.max(0, Number(params.get("offset") || 0));
  const cursor = params.get("cursor") || null;
  const filter = useMemo(() => filterFrom(params, dead), [route.hash]);
  const options = useOptions();
  const { data: page, error, reload: load } = useData(() => api.jobs(filter, { limit, offset, cursor }), route.hash);
  const thaw = useRef(false);
  const reload = () => {
    thaw.current = true;
    load();
  };
  const [selected, setSelected] = useState(new Set());
  const [allMatching, setAllMatching] = useState(false);
  const [frozen, setFrozen] = useState(false);
  useEffect(() => { setSelected(new Set()); setAllMatching(false); }, [route.hash]);

  const items = page ? page.items : [];
  const { rows, waiting } = useFrozenRows(items, frozen, thaw);
  const toggle = (id, on) => {
    const next = new Set(selected);
    if (on) next.add(id); else next.delete(id);
    setSelected(next);
    if (!on) setAllMatching(false);
  };
  const allOnPage = items.length > 0 && items.every((j) => selected.has(j.id));
  const cols = dead ? 10 : 11;
  const sortProps = { params, base };

  return (
    <div data-loaded={page ? "1" : undefined}>
      <PageTitle title={dead ? "Dead letters" : "Jobs"}>
        {dead && page ? <DeadLetterActions filter={filter} total={page.total} reload={reload} /> : null}
      </PageTitle>
      {dead ? <p class="muted">Jobs that failed for good: attempts exhausted or a permanent failure. Requeue runs them again from try 1.</p> : null}
      <Filters key={route.hash} base={base} params={params} dead={dead} options={options} />
      <ErrorNote error={error} />
      {page ? (
        <>
          <BulkBar dead={dead} page={page} filter={filter} selected={selected} setSelected={setSelected}
            allMatching={allMatching} setAllMatching={setAllMatching} reload={reload} />
          <TableWrap label={dead ? "Dead letters" : "Jobs"}
            onPointerEnter={() => setFrozen(true)} onPointerLeave={() => setFrozen(false)}
            onFocusIn={() => setFrozen(true)} onFocusOut={(e) => { if (!e.currentTarget.contains(e.relatedTarget)) setFrozen(false); }}>
            <table class="jobs" data-frozen={frozen ? "1" : "0"}>
              <thead>
                <tr>
                  <th scope="col" class="check">
                    <input type="checkbox" aria-label="Select every job on this page" checked={allOnPage}
                      onChange={(e) => { setSelected(e.currentTarget.checked ? new Set(items.map((j) => j.id)) : new Set()); setAllMatching(false); }} />
                  </th>
                  <th scope="col">ID</th>
                  <th scope="col">Task</th>
                  <th scope="col">Status</th>
                  <th scope="col" class="opt">Queue</th>
                  <th scope="col" class="opt2">User</th>
                  <SortHeader field="attempts" label="Tries" {...sortProps} />
                  {dead
                    ? <SortHeader field="finished_at" label="Failed at" {...sortProps} />
                    : <SortHeader field="run_at" label="Run at" {...sortProps} />}
                  {dead ? null : <SortHeader field="created" label="Created" className="opt2" {...sortProps} />}
                  <th scope="col">{dead ? "Error" : "Last error"}</th>
                  <th scope="col"><span class="sr-only">Actions</span></th>
                </tr>
              </thead>
              <tbody>
                {rows.length ? rows.map(({ job, gone }) => (
                  <tr key={job.id} data-job-row={job.id} class={gone ? "gone" : ""} aria-disabled={gone ? "true" : undefined}>
                    <td class="check">
                      <input type="checkbox" aria-label={`Select job ${job.id}`} checked={selected.has(job.id) || allMatching} disabled={gone}
                        onChange={(e) => toggle(job.id, e.currentTarget.checked)} />
                    </td>
                    <td class="nowrap"><JobLink id={job.id} from={route.hash} /></td>
                    <td class="task">{job.task}</td>
                    <td class="nowrap">
                      <Badge job={job} />
                      {job.cancel_requested ? <span class="muted small"> cancelling</span> : null}
                      {job.overrunning ? <span class="badge failed" data-overrun="1" title={`timed out at ${job.timed_out_at}`}>timed out, still running</span> : null}
                      {gone ? <span class="muted small"> no longer in this view</span> : null}
                    </td>
                    <td class="opt nowrap">{job.namespace === "default" ? job.queue : `${job.namespace} / ${job.queue}`}</td>
                    <td class="opt2">{job.user_id || <span class="muted">—</span>}</td>
                    <td class="nowrap num">{job.attempts}/{job.max_attempts}</td>
                    <td class="nowrap"><Time iso={dead ? job.finished_at : job.run_at} /></td>
                    {dead ? null : <td class="opt2 nowrap"><Time iso={job.created} /></td>}
                    <td class="error-cell">
                      {dead && errorClass(job) ? <code class="error-class">{errorClass(job)}</code> : null}
                      <span class="error-text" title={job.last_error || ""}>{job.last_error ? job.last_error.slice(0, 80) : ""}</span>
                    </td>
                    <td class="actions">{gone ? null : <RowActions job={job} reload={reload} />}</td>
                  </tr>
                )) : <Empty colSpan={cols}>{Object.keys(filter).length > (dead ? 1 : 0) ? "No jobs match this filter." : dead ? "No dead letters: nothing has failed for good." : "No jobs yet: enqueue one."}</Empty>}
              </tbody>
            </table>
          </TableWrap>
          {frozen && waiting ? <p class="muted small" data-waiting>{plural(waiting, "new job")} will show when the pointer leaves the table.</p> : null}
          <Pager page={page} limit={limit} offset={offset} params={params} base={base} />
          {caps.param("GET", JOBS, "sort") ? null : <p class="muted small" data-needs="sort">Newest first. Sorting by other columns needs GET /api/v1/jobs?sort=.</p>}
        </>
      ) : null}
    </div>
  );
}

// The cursors of the pages before this one, per list (filter and sort): "Previous" goes back along them. Kept for
// the session only; a page opened from a link starts a new trail (its "Previous" goes to the first page).
const trails = new Map();

function Pager({ page, limit, offset, params, base }) {
  const keyset = page.next_cursor !== undefined;
  const here = Object.fromEntries(params);
  const cursor = here.cursor || "";
  const number = Math.max(1, Number(here.page || 1));
  delete here.cursor;
  delete here.page;
  delete here.offset;
  const listKey = base + JSON.stringify(here);
  if (!keyset) {
    const first = page.total ? offset + 1 : 0;
    const last = Math.min(offset + page.items.length, page.total);
    const go = (o) => setParams(base, { ...Object.fromEntries(params), offset: o });
    return (
      <nav class="pager" aria-label="Pages">
        <span>Showing {num(first)}–{num(last)} of {num(page.total)}</span>
        <span class="buttons">
          <button type="button" disabled={offset === 0} onClick={() => go(Math.max(0, offset - limit))}>Previous</button>
          <button type="button" disabled={offset + limit >= page.total} onClick={() => go(offset + limit)}>Next</button>
        </span>
      </nav>
    );
  }
  const trail = trails.get(listKey) || [];
  const first = page.items.length ? (number - 1) * limit + 1 : 0;
  const last = first ? first + page.items.length - 1 : 0;
  const next = () => {
    trails.set(listKey, [...trail.slice(0, number - 1), cursor]);
    setParams(base, { ...here, cursor: page.next_cursor, page: number + 1 });
  };
  const previous = () => {
    const before = trail[number - 2];
    if (number <= 2 || before === undefined) setParams(base, here);
    else setParams(base, { ...here, cursor: before, page: number - 1 });
  };
  return (
    <nav class="pager" aria-label="Pages">
      <span>Showing {num(first)}–{num(last)} of {num(page.total)}</span>
      <span class="buttons">
        <button type="button" disabled={!cursor} onClick={previous}>Previous</button>
        <button type="button" disabled={!page.next_cursor} data-next-page onClick={next}>Next</button>
      </span>
    </nav>
  );
}
