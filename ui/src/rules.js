// Which action applies to which job: the server's rules (docs/http-api.md), so the UI offers a button only where
// it means something and a bulk action sends only the jobs it can change, reporting the rest by reason.

import { api } from "./api.js";

export const ACTIONS = {
  requeue: {
    verb: "Requeue", done: "requeued", allowed: (j) => j.status === "failed" || j.status === "cancelled",
    rule: "only failed or cancelled jobs can be requeued", call: (j) => api.requeue(j.id),
  },
  run_now: {
    verb: "Run now", done: "made due now", allowed: (j) => j.status === "pending" && j.scheduled,
    rule: "only jobs waiting for a later time can be run now", call: (j) => api.runNow(j.id),
  },
  cancel: {
    verb: "Cancel", done: "cancelled", allowed: (j) => j.status === "pending" || (j.status === "processing" && !j.cancel_requested),
    rule: "only pending or running jobs can be cancelled", call: (j) => api.cancel(j.id),
  },
  delete: {
    verb: "Delete", done: "deleted", allowed: (j) => j.status === "pending" || j.status === "failed", danger: true,
    rule: "only pending or failed jobs can be deleted (cancel a running one first)", call: (j) => api.remove(j.id),
  },
};

/** Apply `action` to the jobs it allows, a few requests at a time; the others are left alone and counted. */
export async function applyToSelection(action, jobs) {
  const a = ACTIONS[action];
  const allowed = jobs.filter(a.allowed);
  const result = { applied: 0, skipped: jobs.length - allowed.length, failed: 0, firstError: null };
  let next = 0;
  const worker = async () => {
    while (next < allowed.length) {
      const job = allowed[next++];
      try {
        await a.call(job);
        result.applied += 1;
      } catch (err) {
        result.failed += 1; // the job changed since the page showed it (another worker, another admin)
        result.firstError = result.firstError || err.message;
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return result;
}
