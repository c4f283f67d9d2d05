// The one place the UI talks to the server. Every call goes through request(): the admin token in the
// Authorization header (never in a URL), JSON in and out, and errors turned into ApiError with the server's
// message and machine code.
//
// Some pages want data the server does not offer yet (metrics history, bulk actions by filter, searches,
// sorting, queue latency, schedule history, workflows...). Each such need is one function below, named after the
// endpoint docs/ui-api-needs.md specifies. Whether the server has it is read from its OpenAPI document
// (`/openapi.json`, public): `caps.has(method, path)` and `caps.param(method, path, name)`. A function whose
// endpoint is missing throws Missing, which pages show as a clear "needs the server's ..." note instead of an error.

const TOKEN_KEY = "conveyor.adminToken";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", field = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** The server lacks the endpoint (or parameter) a feature needs. `need` names it, as in docs/ui-api-needs.md. */
export class Missing extends Error {
  constructor(need) {
    super(`needs ${need}`);
    this.need = need;
  }
}

export const session = {
  token: null,
  onUnauthorized: () => {},
  onNetwork: () => {},
  load() {
    localStorage.removeItem(TOKEN_KEY); // older versions kept it there, where it outlived the session
    this.token = sessionStorage.getItem(TOKEN_KEY);
    return this.token;
  },
  save(token) {
    this.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

export async function request(method, path, { body, query, signal } = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    const text = q.toString();
    if (text) url += `?${text}`;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    session.onNetwork(false);
    throw new ApiError("The server cannot be reached. Is it running?", { status: 0, code: "network" });
  }
  session.onNetwork(true);
  if (response.status === 401) {
    session.onUnauthorized("The token was not accepted; sign in again.");
    throw new ApiError("The token was not accepted", { status: 401, code: "unauthorized" });
  }
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const data = isJson ? await response.json() : await response.text();
  if (!response.ok) {
    const message = (data && data.message) || `${response.status} ${response.statusText}`;
    throw new ApiError(message, { status: response.status, code: data && data.error, field: data && data.field });
  }
  return data;
}

// ---- what the server offers ----------------------------------------------------------------------------------

export const caps = {
  paths: {},
  schemas: {},
  async load() {
    try {
      const doc = await (await fetch("/openapi.json", { cache: "no-store" })).json();
      this.paths = doc.paths || {};
      this.schemas = (doc.components && doc.components.schemas) || {};
    } catch {
      this.paths = {};
      this.schemas = {};
    }
  },
  op(method, path) {
    const item = this.paths[path];
    return item ? item[method.toLowerCase()] || null : null;
  },
  has(method, path) {
    return this.op(method, path) !== null;
  },
  /** The query parameter `name` of an operation, or null. */
  param(method, path, name) {
    const op = this.op(method, path);
    return (op && (op.parameters || []).find((p) => p.name === name && p.in === "query")) || null;
  },
  /** Whether a query parameter accepts `value` (enums are read from the schema; anything else is accepted). */
  accepts(method, path, name, value) {
    const p = this.param(method, path, name);
    if (!p) return false;
    const values = enumValues(p.schema);
    return values === null || values.includes(value);
  },
};

function enumValues(schema, depth = 0) {
  if (!schema || depth > 5) return null;
  if (schema.enum) return schema.enum;
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    for (const sub of schema[key] || []) {
      const found = enumValues(sub, depth + 1);
      if (found) return found;
    }
  }
  if (schema.$ref) return enumValues(caps.schemas[schema.$ref.split("/").pop()], depth + 1);
  return null;
}

function need(ok, what) {
  if (!ok) throw new Missing(what);
}

// ---- endpoints that exist (docs/http-api.md) ----------------------------------------------------------------

const enc = encodeURIComponent;
const nsq = (namespace) => (namespace ? { namespace } : undefined);

export const api = {
  me: () => request("GET", "/api/v1/me"),
  stats: (filter) => request("GET", "/api/v1/stats", { query: filter }),
  queues: (namespace) => request("GET", "/api/v1/queues", { query: nsq(namespace) }),
  queue: (q) => request("GET", `/api/v1/queues/${enc(q.name)}`, { query: { namespace: q.namespace } }),
  pauseQueue: (q) => request("POST", `/api/v1/queues/${enc(q.name)}/pause`, { query: { namespace: q.namespace } }),
  resumeQueue: (q) => request("POST", `/api/v1/queues/${enc(q.name)}/resume`, { query: { namespace: q.namespace } }),
  workers: () => request("GET", "/api/v1/workers"),
  schedules: () => request("GET", "/api/v1/schedules"),
  namespaces: () => request("GET", "/api/v1/namespaces"),
  createNamespace: (body) => request("POST", "/api/v1/namespaces", { body }),
  updateNamespace: (name, body) => request("PATCH", `/api/v1/namespaces/${enc(name)}`, { body }),
  deleteNamespace: (name) => request("DELETE", `/api/v1/namespaces/${enc(name)}`),
  job: (id) => request("GET", `/api/v1/jobs/${enc(id)}`),
  attempts: (id) => request("GET", `/api/v1/jobs/${enc(id)}/attempts`),
  enqueue: (body) => request("POST", "/api/v1/jobs", { body }),
  requeue: (id) => request("POST", `/api/v1/jobs/${enc(id)}/requeue`),
  cancel: (id) => request("POST", `/api/v1/jobs/${enc(id)}/cancel`),
  runNow: (id) => request("POST", `/api/v1/jobs/${enc(id)}/run-now`),
  remove: (id) => request("DELETE", `/api/v1/jobs/${enc(id)}`),

  /**
   * One page of jobs. `filter` keys: namespace, queue, task, status, user_id, and the ones that need the
   * server's support (checked here): status scheduled/retrying, id (a fragment), q (payload text), path + value
   * (JSON path), queue_contains, task_contains, sort. Dead letters are status=failed.
   */
  jobs(filter, { limit = 20, offset = 0, cursor = null } = {}) {
    // Pages by the server's keyset cursor (the previous answer's next_cursor): jobs that run or arrive meanwhile
    // never make a page skip or repeat one. A server without cursors pages by offset.
    const query = cursor && caps.param("GET", "/api/v1/jobs", "cursor") ? { limit, cursor } : { limit, offset };
    for (const key of ["namespace", "queue", "task", "user_id"]) if (filter[key]) query[key] = filter[key];
    if (filter.status) {
      need(caps.accepts("GET", "/api/v1/jobs", "status", filter.status), `the "${filter.status}" status filter (GET /api/v1/jobs?status=${filter.status})`);
      query.status = filter.status;
    }
    for (const [key, what] of [
      ["id", "search by id fragment (GET /api/v1/jobs?id=)"],
      ["q", "search in payloads (GET /api/v1/jobs?q=)"],
      ["path", "search by JSON path (GET /api/v1/jobs?path=&value=)"],
      ["queue_contains", "partial queue names (GET /api/v1/jobs?queue_contains=)"],
      ["task_contains", "partial task names (GET /api/v1/jobs?task_contains=)"],
      ["sort", "sorting (GET /api/v1/jobs?sort=)"],
    ]) {
      if (filter[key]) {
        need(caps.param("GET", "/api/v1/jobs", key), what);
        query[key] = filter[key];
      }
    }
    if (filter.path) query.value = filter.value ?? "";
    return request("GET", "/api/v1/jobs", { query });
  },
};

// ---- endpoints the UI needs next (docs/ui-api-needs.md) -------------------------------------------------------

export const needs = {
  history: () => caps.has("GET", "/api/v1/metrics/history"),
  bulk: () => caps.has("POST", "/api/v1/jobs/bulk"),
  queueSettings: () => caps.has("PATCH", "/api/v1/queues/{queue}"),
  queueFlow: () => caps.has("GET", "/api/v1/queues/{queue}"),
  scheduleRuns: () => caps.has("GET", "/api/v1/schedules/{name}/runs"),
  scheduleTrigger: () => caps.has("POST", "/api/v1/schedules/{name}/trigger"),
  scheduleManage: () => caps.has("POST", "/api/v1/schedules"),
  workflows: () => caps.has("GET", "/api/v1/workflows/{workflow_id}"),
  tasks: () => caps.has("GET", "/api/v1/tasks"),
};

/** Metrics history: per-interval series for the overview charts (docs/ui-api-needs.md §1). */
export function history(range, filter = {}) {
  need(needs.history(), "the metrics history (GET /api/v1/metrics/history)");
  return request("GET", "/api/v1/metrics/history", { query: { range, ...filter } });
}

/**
 * Bulk action by filter, done by the server (§2). `dry_run` answers the counts without changing anything, which
 * the confirmation names.
 */
export function bulk(action, filter, { dryRun = false, ids = null, expected = null } = {}) {
  need(needs.bulk(), "bulk actions by filter (POST /api/v1/jobs/bulk)");
  const body = { action, dry_run: dryRun };
  if (expected !== null) body.expected = expected;
  if (ids) body.ids = ids;
  else body.filter = filter;
  return request("POST", "/api/v1/jobs/bulk", { body });
}

export function updateQueue(q, settings) {
  need(needs.queueSettings(), "queue settings (PATCH /api/v1/queues/{queue})");
  return request("PATCH", `/api/v1/queues/${enc(q.name)}`, { query: { namespace: q.namespace }, body: settings });
}

export function scheduleRuns(name, limit = 20) {
  need(needs.scheduleRuns(), "schedule history (GET /api/v1/schedules/{name}/runs)");
  return request("GET", `/api/v1/schedules/${enc(name)}/runs`, { query: { limit } });
}

export function triggerSchedule(name) {
  need(needs.scheduleTrigger(), "trigger now (POST /api/v1/schedules/{name}/trigger)");
  return request("POST", `/api/v1/schedules/${enc(name)}/trigger`);
}

function manage(what) {
  need(needs.scheduleManage(), `${what} (POST /api/v1/schedules)`);
}

export const schedules = {
  create(body) {
    manage("creating schedules at runtime");
    return request("POST", "/api/v1/schedules", { body });
  },
  update(name, body) {
    manage("changing schedules at runtime");
    return request("PATCH", `/api/v1/schedules/${enc(name)}`, { body });
  },
  pause(name) {
    manage("pausing schedules");
    return request("POST", `/api/v1/schedules/${enc(name)}/pause`);
  },
  resume(name) {
    manage("resuming schedules");
    return request("POST", `/api/v1/schedules/${enc(name)}/resume`);
  },
  remove(name) {
    manage("deleting schedules");
    return request("DELETE", `/api/v1/schedules/${enc(name)}`);
  },
};

export function workflow(id) {
  need(needs.workflows(), "workflows (GET /api/v1/workflows/{workflow_id})");
  return request("GET", `/api/v1/workflows/${enc(id)}`);
}

export function tasks() {
  need(needs.tasks(), "the task list (GET /api/v1/tasks)");
  return request("GET", "/api/v1/tasks");
}
