// Time-series charts with uPlot: real axes (time below, values at the left with units), a legend that shows the
// values under the cursor, and colours read from the page's CSS variables so that dark mode applies. uPlot draws
// on a canvas and sets its few styles through the CSSOM, which the Content-Security-Policy allows.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/**
 * `data`: [times (unix seconds), series1, series2, ...]; `series`: [{label, color (CSS variable name), fill?}];
 * `format`: a value formatter for the axis and legend. Re-created when the theme or the series change; new data
 * is set in place (no flicker, the cursor stays).
 */
const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6];

export function Chart({ data, series, format = (v) => String(v), integer = false, height = 200, label, theme }) {
  const box = useRef(null);
  const plot = useRef(null);

  useEffect(() => {
    const el = box.current;
    const grid = cssVar("--line");
    const text = cssVar("--muted");
    const axis = {
      stroke: text,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1 },
      font: "12px system-ui, sans-serif",
    };
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      padding: [8, 8, 0, 0],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: {
        // at least a minute wide, so a fresh page's few samples get readable time ticks, not milliseconds
        x: { time: true, range: (u, min, max) => [Math.min(min ?? 0, (max ?? 60) - 60), max ?? 60] },
        y: { range: (u, min, max) => [0, Math.max(integer ? 4 : 1, (max ?? 0) * 1.15)] },
      },
      axes: [
        { ...axis },
        { ...axis, size: 70, incrs: integer ? INTEGER_STEPS : undefined, values: (u, ticks) => ticks.map((v) => format(v)) },
      ],
      series: [
        {},
        ...series.map((s) => {
          const color = cssVar(s.color) || s.color;
          return {
            label: s.label,
            stroke: color,
            width: 2,
            fill: s.fill ? `${color}22` : undefined,
            points: { show: false },
            value: (u, v) => (v === null || v === undefined ? "—" : format(v)),
          };
        }),
      ],
    };
    plot.current = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => {
      if (plot.current) plot.current.setSize({ width: Math.max(200, el.clientWidth), height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [theme, series.map((s) => s.label).join("|"), height]);

  useEffect(() => {
    if (plot.current) plot.current.setData(data);
  }, [data]);

  return <div class="chart" ref={box} role="img" aria-label={label} />;
}
