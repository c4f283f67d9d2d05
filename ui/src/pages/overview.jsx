// Overview: counts as cards that open the matching list, paused queues flagged, and charts with axes — from the
// server's stored metrics history when it has one (1 h / 24 h / 7 d), else sampled while the page is open.

import { useMemo, useState } from "preact/hooks";
import { api, caps, history, needs } from "../api.js";
import { Chart } from "../chart.jsx";
import { ErrorNote, NeedsServer, PageTitle } from "../components.jsx";
import { duration, num, plural, successRate } from "../format.js";
import { useData } from "../live.js";
import { QueueTable } from "./queues.jsx";

// Samples of /stats taken while an overview is shown in this tab (the fallback when the server keeps no history).
const samples = [];
const MAX_SAMPLES = 1800; // an hour at one sample every 2 s

function sample(stats) {
  const t = Date.now() / 1000;
  const last = samples[samples.length - 1];
  if (last && t - last.t < 1) return;
  samples.push({ t, done: stats.completed, failed: stats.failed, depth: stats.pending + stats.processing });
  if (samples.length > MAX_SAMPLES) samples.shift();
}

function sampledSeries() {
  const t = [], processed = [], failed = [], depth = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = b.t - a.t;
    t.push(b.t);
    processed.push(Math.max(0, (b.done - a.done) / dt) * 60);
    failed.push(Math.max(0, (b.failed - a.failed) / dt) * 60);
    depth.push(b.depth);
  }
  return { t, processed, failed, depth };
}

const RANGES = [["1h", "1 hour"], ["24h", "24 hours"], ["7d", "7 days"]];
const perMinute = (v) => `${num(Math.round(v * 10) / 10)}/min`;
const seconds = (v) => duration(v);
const count = (v) => num(Math.round(v));

const THROUGHPUT = [{ label: "Processed", color: "--completed", fill: true }, { label: "Failed", color: "--failed" }];
const LATENCY = [{ label: "Wait p50", color: "--brand" }, { label: "Wait p95", color: "--scheduled" }];
const DEPTH = [{ label: "Waiting", color: "--pending", fill: true }, { label: "Oldest due (s)", color: "--failed" }];
const DEPTH_SAMPLED = [{ label: "Pending + processing", color: "--pending", fill: true }];

function statusLink(status) {
  if (status === "failed") return "#/dead-letters";
  if (status === "scheduled" && !caps.accepts("GET", "/api/v1/jobs", "status", "scheduled")) return "#/jobs?status=pending";
  return status ? `#/jobs?status=${status}` : "#/jobs";
}

function Cards({ stats }) {
  const rate = successRate(stats);
  const cards = [
    ["pending", "Pending", stats.pending, "pending"],
    ["scheduled", "Scheduled", stats.scheduled, "scheduled"],
    ["processing", "Processing", stats.processing, "processing"],
    ["completed", "Completed", stats.completed, "completed"],
    ["failed", "Failed", stats.failed, "failed"],
    ["cancelled", "Cancelled", stats.cancelled, "cancelled"],
    ["total", "Total", stats.total, null],
  ];
  return (
    <div class="cards">
      {cards.map(([key, label, value, status]) => (
        <a class="card stat" data-stat={key} href={statusLink(status)} key={key}>
          <span class="label">{label}</span>
          <span class="value">{num(value)}</span>
        </a>
      ))}
      <div class="card stat" data-stat="success_rate">
        <span class="label">Success rate</span>
        <span class={`value ${rate ? "" : "muted small-value"}`}>{rate || "no jobs yet"}</span>
      </div>
    </div>
  );
}

function PausedBanner({ queues }) {
  const paused = queues.filter((q) => q.paused);
  if (!paused.length) return null;
  return (
    <div class="banner warn" data-paused-banner>
      <strong>{plural(paused.length, "queue")} paused:</strong>{" "}
      {paused.map((q, i) => (
        <span key={`${q.namespace}/${q.name}`}>
          {i ? ", " : ""}
          <a href={`#/jobs?namespace=${encodeURIComponent(q.namespace)}&queue=${encodeURIComponent(q.name)}`}>{q.namespace} / {q.name}</a>
          {" "}({num((q.counts.pending || 0))} waiting)
        </span>
      ))}
      . Workers take no job from {paused.length === 1 ? "it" : "them"} until resumed on the <a href="#/queues">Queues</a> page.
    </div>
  );
}

// History changes once a minute: ask at most every 30 s per range, whatever the live refresh rate.
const historyCache = new Map();
async function cachedHistory(range) {
  const hit = historyCache.get(range);
  if (hit && Date.now() - hit.at < 30_000) return hit.data;
  const data = await history(range);
  historyCache.set(range, { at: Date.now(), data });
  return data;
}

function HistoryCharts({ theme }) {
  const [range, setRange] = useState("1h");
  const { data, error } = useData(() => cachedHistory(range), range);
  const s = data && data.series;
  const throughput = useMemo(() => (s ? [s.t, s.completed, s.failed] : null), [data]);
  const latency = useMemo(() => (s ? [s.t, s.wait_p50, s.wait_p95] : null), [data]);
  const depth = useMemo(() => (s ? [s.t, s.depth, s.oldest_due_age] : null), [data]);
  return (
    <section aria-labelledby="charts-title">
      <div class="section-head">
        <h2 id="charts-title">History</h2>
        <div class="segmented" role="group" aria-label="Time range">
          {RANGES.map(([value, label]) => (
            <button type="button" key={value} aria-pressed={range === value ? "true" : "false"} onClick={() => setRange(value)}>{label}</button>
          ))}
        </div>
      </div>
      <ErrorNote error={error} />
      {s ? (
        <div class="charts">
          <div class="card chart-card"><h3>Jobs finished per minute</h3><Chart theme={theme} data={throughput} series={THROUGHPUT} format={count} integer label="Processed and failed jobs per minute" /></div>
          <div class="card chart-card"><h3>Queue wait (due → started)</h3><Chart theme={theme} data={latency} series={LATENCY} format={seconds} label="Queue wait percentiles" /></div>
          <div class="card chart-card"><h3>Queue depth</h3><Chart theme={theme} data={depth} series={DEPTH} format={count} integer label="Jobs waiting and the oldest due job's age" /></div>
        </div>
      ) : null}
    </section>
  );
}

function SampledCharts({ stats, theme }) {
  const series = useMemo(() => sampledSeries(), [stats]);
  const throughput = [series.t, series.processed, series.failed];
  const depth = [series.t, series.depth];
  return (
    <section aria-labelledby="charts-title">
      <div class="section-head">
        <h2 id="charts-title">Since this page opened</h2>
        <div class="segmented" role="group" aria-label="Time range">
          {RANGES.map(([value, label]) => <button type="button" key={value} disabled title="needs the server's metrics history">{label}</button>)}
        </div>
      </div>
      <NeedsServer what="the metrics history (GET /api/v1/metrics/history)">
        charts over 1 hour, 24 hours and 7 days, and queue wait times, need the server's stored metrics history. Shown
        instead: what this tab sampled every 2 seconds since it opened the overview (lost on reload)
      </NeedsServer>
      <div class="charts">
        <div class="card chart-card" data-chart="throughput"><h3>Jobs finished per minute</h3>
          {series.t.length > 1
            ? <Chart theme={theme} data={throughput} series={THROUGHPUT} format={count} integer label="Processed and failed jobs per minute, sampled" />
            : <p class="muted chart-wait">Collecting samples…</p>}
        </div>
        <div class="card chart-card" data-chart="depth"><h3>Queue depth</h3>
          {series.t.length > 1
            ? <Chart theme={theme} data={depth} series={DEPTH_SAMPLED} format={count} integer label="Jobs pending or processing, sampled" />
            : <p class="muted chart-wait">Collecting samples…</p>}
        </div>
      </div>
    </section>
  );
}

export function OverviewPage({ theme }) {
  const { data, error } = useData(async () => {
    const [stats, queues] = await Promise.all([api.stats(), api.queues()]);
    sample(stats);
    return { stats, queues: queues.items };
  }, "overview");
  return (
    <div data-loaded={data ? "1" : undefined}>
      <PageTitle title="Overview" />
      <ErrorNote error={error} />
      {data ? (
        <>
          <Cards stats={data.stats} />
          <PausedBanner queues={data.queues} />
          {needs.history() ? <HistoryCharts theme={theme} /> : <SampledCharts stats={data.stats} theme={theme} />}
          <h2>Queues</h2>
          <QueueTable queues={data.queues} actions={false} />
        </>
      ) : null}
    </div>
  );
}
