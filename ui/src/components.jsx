// Small shared components. Every server value is rendered as text (JSX escapes it): payloads, errors and
// tracebacks are user data and never become markup.

import { useEffect, useRef, useState } from "preact/hooks";
import { absolute, relative, shortId } from "./format.js";
import { Missing } from "./api.js";

export function Badge({ job, status }) {
  const shown = job ? displayStatus(job) : status;
  return <span class={`badge ${shown}`} data-status={shown}>{shown}</span>;
}

/** pending splits into what a reader needs to know: scheduled (waits for its time) or retrying (a try failed). */
export function displayStatus(job) {
  if (job.status === "pending" && job.scheduled) return job.attempts > 0 ? "retrying" : "scheduled";
  return job.status;
}

/** A time shown relative ("3 min ago") with the absolute time under it (or in the tooltip when `compact`). */
export function Time({ iso, compact = false, now }) {
  if (!iso) return <span class="muted">—</span>;
  const abs = absolute(iso);
  return (
    <time class="time" datetime={iso} title={absolute(iso, true)}>
      <span class="rel">{relative(iso, now)}</span>
      {compact ? null : <span class="abs">{abs}</span>}
    </time>
  );
}

export function JobLink({ id, from }) {
  return (
    <a class="mono id" href={`#/jobs/${encodeURIComponent(id)}`} title={id} onClick={() => from && rememberList(from)}>
      {shortId(id)}
    </a>
  );
}

const BACK_KEY = "conveyor.lastList";
/** The list (with its filters) a job page was opened from, for the breadcrumb back. Kept for this tab. */
export function rememberList(hash) {
  sessionStorage.setItem(BACK_KEY, hash);
}
export function lastList() {
  return sessionStorage.getItem(BACK_KEY) || "#/jobs";
}

/** A page's heading, which also sets the document title. */
export function PageTitle({ title, children }) {
  useEffect(() => {
    document.title = `${title} · Conveyor`;
  }, [title]);
  return (
    <div class="page-head">
      <h1>{title}</h1>
      <div class="page-actions">{children}</div>
    </div>
  );
}

/** What a page cannot show on this server, and what it needs (docs/ui-api-needs.md names the endpoint). */
export function NeedsServer({ what, children }) {
  return (
    <div class="needs" role="note" data-needs={what}>
      <strong>Not on this server yet:</strong> {children || "this part of the page"}.{" "}
      <span class="muted">It needs {what}, which this server's API does not offer.</span>
    </div>
  );
}

export function ErrorNote({ error }) {
  if (!error) return null;
  if (error instanceof Missing) return <NeedsServer what={error.need} />;
  if (error.name === "AbortError") return null;
  return <div class="error-box" role="alert">{error.message}</div>;
}

export function Empty({ colSpan, children }) {
  return (
    <tr class="empty-row">
      <td colSpan={colSpan} class="empty">{children}</td>
    </tr>
  );
}

/**
 * A confirmation dialog (native <dialog>, modal): the question names what will happen and to how many jobs.
 * `onConfirm` may be async; the dialog stays open, its button disabled, until it settles.
 */
export function Confirm({ open, title, children, confirmLabel, danger = false, onConfirm, onClose }) {
  const ref = useRef(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog ref={ref} class="confirm" aria-labelledby="confirm-title" onClose={() => onClose()} onCancel={() => onClose()}>
      <form method="dialog" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          await onConfirm();
        } finally {
          setBusy(false);
          onClose();
        }
      }}>
        <h2 id="confirm-title">{title}</h2>
        <div class="confirm-body">{children}</div>
        <div class="confirm-buttons">
          <button type="button" onClick={() => onClose()}>Cancel</button>
          <button type="submit" class={danger ? "danger-solid" : "primary"} disabled={busy} autofocus>{confirmLabel}</button>
        </div>
      </form>
    </dialog>
  );
}

/** A table inside a box that scrolls sideways on a narrow screen, so the page itself never does. */
export function TableWrap({ children, label, ...rest }) {
  return (
    <div class="table-wrap" role="region" aria-label={label} tabIndex={0} {...rest}>
      {children}
    </div>
  );
}

export function Json({ value }) {
  return <pre class="json">{JSON.stringify(value, null, 2)}</pre>;
}

export function Progress({ progress }) {
  if (!progress) return null;
  const fraction = Math.max(0, Math.min(1, Number(progress.fraction ?? progress.value ?? 0)));
  return (
    <div class="progress" data-progress={fraction}>
      <progress max="1" value={fraction} aria-label="Progress">{Math.round(fraction * 100)}%</progress>
      <span>{Math.round(fraction * 100)}%{progress.message ? ` · ${progress.message}` : ""}</span>
    </div>
  );
}
