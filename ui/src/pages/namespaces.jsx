// Namespaces: settings, job counts (from the queue list), every namespace that has jobs even without stored
// settings, and errors told in the UI's words rather than the API's ("PATCH ...").

import { useState } from "preact/hooks";
import { api } from "../api.js";
import { Confirm, ErrorNote, PageTitle, TableWrap } from "../components.jsx";
import { num, plural } from "../format.js";
import { useData } from "../live.js";
import { toast } from "../toast.js";

const DAY = 86400;
const DEFAULTS = {
  name: "", description: "", auto_run: true, max_attempts: 3, completed_retention: 7 * DAY, failed_retention: 30 * DAY,
  push_notification: false, run_notification: false, webhook_url: "", webhook_allow_private: false,
};

/** The server's error, said for someone using this page (the API's text names routes and fields). */
function uiMessage(err, name) {
  if (err.code === "conflict" || err.status === 409) return `A namespace named “${name}” already exists: edit it in the list below.`;
  if (err.status === 404) return `The namespace “${name}” no longer exists (deleted meanwhile).`;
  const labels = {
    name: "Name", max_attempts: "Max attempts", completed_retention: "Keep completed", failed_retention: "Keep failed",
    webhook_url: "Webhook URL", webhook_secret: "Webhook secret", description: "Description",
  };
  const field = err.field && labels[String(err.field).split(".").pop()];
  if (field === "Name") return "A name is 1 to 128 letters, digits, “-”, “_” or “.”.";
  if (field === "Webhook URL" && /private|loopback|public|address/i.test(err.message)) {
    return "The webhook URL points to a private or local address. Tick “Allow private addresses” to deliver inside your network.";
  }
  if (field) return `${field}: ${err.message.replace(/^[^:]*: /, "")}`;
  return err.message;
}

function Editor({ ns, onDone, onClose }) {
  const creating = ns === null;
  const v = ns || DEFAULTS;
  const [error, setError] = useState("");
  const submit = async (e) => {
    e.preventDefault();
    const d = new FormData(e.currentTarget);
    const name = creating ? String(d.get("name")).trim() : v.name;
    const body = {
      description: d.get("description"), auto_run: d.get("auto_run") === "on", max_attempts: Number(d.get("max_attempts")),
      completed_retention: Math.round(Number(d.get("completed_days")) * DAY), failed_retention: Math.round(Number(d.get("failed_days")) * DAY),
      push_notification: d.get("push_notification") === "on", run_notification: d.get("run_notification") === "on",
      webhook_url: d.get("webhook_url") || "", webhook_allow_private: d.get("webhook_allow_private") === "on",
    };
    if (d.get("webhook_secret")) body.webhook_secret = d.get("webhook_secret");
    try {
      if (creating) await api.createNamespace({ name, ...body });
      else await api.updateNamespace(name, body);
      toast(creating ? `Namespace ${name} created` : `Namespace ${name} saved`);
      onDone();
    } catch (err) {
      if (err.code !== "unauthorized") setError(uiMessage(err, name));
    }
  };
  return (
    <form class="card" id="ns-form" onSubmit={submit} aria-labelledby="ns-form-title">
      <h2 id="ns-form-title" class="first">{creating ? "New namespace" : `Edit ${v.name}`}</h2>
      <div class="form-grid">
        {creating ? <label>Name<input name="name" required pattern="[A-Za-z0-9\-_.]{1,128}" title="1 to 128 letters, digits, - _ ." /></label> : null}
        <label>Description<input name="description" defaultValue={v.description || ""} /></label>
        <label>Max attempts<input name="max_attempts" type="number" min="1" max="100" required defaultValue={v.max_attempts} /></label>
        <label>Keep completed (days)<input name="completed_days" type="number" min="0" step="any" required defaultValue={v.completed_retention / DAY} /></label>
        <label>Keep failed (days)<input name="failed_days" type="number" min="0" step="any" required defaultValue={v.failed_retention / DAY} /></label>
        <label>Webhook URL<input name="webhook_url" type="url" defaultValue={v.webhook_url || ""} /></label>
        <label>Webhook secret {v.webhook_secret_set ? "(set; empty keeps it)" : "(optional)"}<input name="webhook_secret" type="password" autocomplete="new-password" /></label>
        <label class="check"><input name="auto_run" type="checkbox" defaultChecked={v.auto_run} />Workers run its jobs (off: only Run consumes them)</label>
        <label class="check"><input name="push_notification" type="checkbox" defaultChecked={v.push_notification} />Webhook on push</label>
        <label class="check"><input name="run_notification" type="checkbox" defaultChecked={v.run_notification} />Webhook on run</label>
        <label class="check"><input name="webhook_allow_private" type="checkbox" defaultChecked={v.webhook_allow_private} />Allow private addresses</label>
      </div>
      <div id="ns-error" class="error-text" role="alert">{error}</div>
      <div class="form-buttons">
        <button class="primary" type="submit">{creating ? "Create" : "Save"}</button>
        <button type="button" onClick={onClose}>Close</button>
      </div>
    </form>
  );
}

export function NamespacesPage() {
  const { data, error, reload } = useData(async () => {
    const [namespaces, queues] = await Promise.all([api.namespaces(), api.queues()]);
    const counts = new Map();
    for (const q of queues.items) {
      const c = counts.get(q.namespace) || { total: 0, pending: 0, failed: 0, queues: 0 };
      for (const [status, n] of Object.entries(q.counts)) if (status !== "scheduled") c.total += n;
      c.pending += q.counts.pending || 0;
      c.failed += q.counts.failed || 0;
      c.queues += 1;
      counts.set(q.namespace, c);
    }
    const items = namespaces.items.map((ns) => ({ ...ns, stored: true }));
    for (const name of counts.keys()) if (!items.some((ns) => ns.name === name)) items.push({ ...DEFAULTS, name, stored: false });
    items.sort((a, b) => a.name.localeCompare(b.name));
    return { items, counts };
  }, "namespaces");
  const [editing, setEditing] = useState(undefined); // undefined: closed; null: new; a namespace: edit
  const [deleting, setDeleting] = useState(null);

  return (
    <div data-loaded={data ? "1" : undefined}>
      <PageTitle title="Namespaces">
        <button type="button" class="primary" onClick={() => setEditing(null)}>New namespace</button>
      </PageTitle>
      <ErrorNote error={error} />
      {editing !== undefined ? <Editor key={editing ? editing.name : "new"} ns={editing} onClose={() => setEditing(undefined)} onDone={() => { setEditing(undefined); reload(); }} /> : null}
      {data ? (
        <TableWrap label="Namespaces">
          <table class="namespaces">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col" class="num">Jobs</th>
                <th scope="col">Execution</th>
                <th scope="col" class="opt num">Max attempts</th>
                <th scope="col" class="opt2">Kept (done / failed)</th>
                <th scope="col" class="opt2">Webhook</th>
                <th scope="col"><span class="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((ns) => {
                const c = data.counts.get(ns.name) || { total: 0, pending: 0, failed: 0, queues: 0 };
                return (
                  <tr key={ns.name} data-namespace={ns.name}>
                    <td><strong>{ns.name}</strong>{ns.description ? <div class="muted small">{ns.description}</div> : null}
                      {ns.stored ? null : <div class="muted small">has jobs, no settings stored (defaults apply)</div>}</td>
                    <td class="num nowrap" data-count={c.total}>
                      <a href={`#/jobs?namespace=${encodeURIComponent(ns.name)}`}>{num(c.total)}</a>
                      <div class="muted small">{num(c.pending)} pending · {num(c.failed)} failed · {plural(c.queues, "queue")}</div>
                    </td>
                    <td>{ns.auto_run ? <span class="badge running">auto-run</span> : <span class="badge pending">Run only</span>}</td>
                    <td class="opt num">{ns.max_attempts}</td>
                    <td class="opt2 nowrap">{Math.round(ns.completed_retention / DAY)} d / {Math.round(ns.failed_retention / DAY)} d</td>
                    <td class="opt2 small">{ns.webhook_url ? <span class="break">{ns.webhook_url}</span> : <span class="muted">—</span>}
                      {ns.push_notification || ns.run_notification ? <div class="muted">on {[ns.push_notification ? "push" : null, ns.run_notification ? "run" : null].filter(Boolean).join(", ")}</div> : null}</td>
                    <td class="actions">
                      <div class="row-actions">
                        <button type="button" class="small" onClick={() => setEditing(ns)} aria-label={`Edit namespace ${ns.name}`}>{ns.stored ? "Edit" : "Set up"}</button>
                        {ns.name === "default" || !ns.stored ? null : (
                          <button type="button" class="small danger" onClick={() => setDeleting({ ns, count: c.total })} aria-label={`Delete namespace ${ns.name}`}>Delete</button>
                        )}
                      </div>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      {deleting ? (
        <Confirm open danger title={`Delete namespace ${deleting.ns.name}?`} confirmLabel={deleting.count ? `Delete it and ${plural(deleting.count, "job")}` : "Delete it"}
          onClose={() => setDeleting(null)} onConfirm={async () => {
            try {
              await api.deleteNamespace(deleting.ns.name);
              toast(`Namespace ${deleting.ns.name} deleted`);
              reload();
            } catch (err) {
              if (err.code !== "unauthorized") toast(uiMessage(err, deleting.ns.name), "error");
            }
          }}>
          <p>Its settings go, and so {deleting.count ? `do its ${plural(deleting.count, "job")}` : "would its jobs (it has none)"} with their history: none of them can run afterwards.</p>
        </Confirm>
      ) : null}
    </div>
  );
}
