// Formatting: numbers with the reader's thousands separators, times relative ("3 min ago") with the absolute time
// beside or under them, durations, short ids.

const numberFormat = new Intl.NumberFormat();
const percentFormat = new Intl.NumberFormat(undefined, { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 });
const fullFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const shortFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });

export const num = (n) => (n === null || n === undefined ? "—" : numberFormat.format(n));
export const percent = (x) => percentFormat.format(x);

/** "Success rate": the share of finished jobs that completed; no finished job → "no jobs yet" (never "0.0 %"). */
export function successRate(stats) {
  const finished = (stats.completed || 0) + (stats.failed || 0);
  return finished ? percent(stats.completed / finished) : null;
}

/** The absolute local time; the year only when it is not this year's. `full` always gives it. */
export function absolute(iso, full = false) {
  if (!iso) return "—";
  const d = new Date(iso);
  return (full || d.getFullYear() !== new Date().getFullYear() ? fullFormat : shortFormat).format(d);
}

export function relative(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = (Date.parse(iso) - now) / 1000;
  const s = Math.abs(seconds);
  if (s < 1.5) return "now";
  const [value, unit] = s < 60 ? [seconds, "second"] : s < 3600 ? [seconds / 60, "minute"] : s < 86400 ? [seconds / 3600, "hour"] : [seconds / 86400, "day"];
  return relativeFormat.format(Math.round(value), unit);
}

/** A duration in seconds as "850 ms", "12.4 s", "3 min 05 s", "2 h 07 min", "3 d 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/**
 * A job id shortened to its last 8 characters. Conveyor's ids are UUIDv7: they begin with the creation time, so
 * jobs created in the same minute share their first characters and only the end tells them apart.
 */
export const shortId = (id) => `…${id.slice(-8)}`;

export const isFullId = (text) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text.trim());

/** The exception class at the start of an error text ("ValueError: bad input" → "ValueError"), if there is one. */
export function errorClass(job) {
  if (job.error_class) return job.error_class;
  const text = job.last_error || "";
  const m = text.match(/^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Timeout|Interrupt|Warning|Fail\w*|Retry\w*))\b/);
  return m ? m[1] : null;
}

export const plural = (n, one, many = `${one}s`) => `${num(n)} ${n === 1 ? one : many}`;
