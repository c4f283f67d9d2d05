// Live updates. Pages reload their data on a "tick": every 2 s, and 300 ms after the server's event stream says a
// job was pushed or ran. "Pause live" stops the ticks (the stream stays open, so the status stays true). Data
// arriving never rebuilds the page: components re-render with it and Preact updates the rows in place, keyed by
// id, so an opened <details>, a text selection, focus and the scroll position are left alone.
//
// The event stream is read with fetch() and the Authorization header (EventSource cannot send one), and is
// aborted when the page is hidden for good (pagehide), so the server sees the connection end cleanly.

import { useEffect, useRef, useState, useCallback } from "preact/hooks";
import { session } from "./api.js";

const REFRESH_MS = 2000;
const listeners = new Set();
const statusListeners = new Set();

export const live = {
  tick: 0,
  paused: false,
  status: { on: false, text: "connecting…" },
  controller: null,
  timer: null,
};

function emit() {
  for (const fn of [...listeners]) fn(live.tick);
}

function setStatus(on, text) {
  live.status = { on, text };
  for (const fn of [...statusListeners]) fn(live.status);
}

export function bump() {
  if (live.paused) return;
  live.tick += 1;
  emit();
}

let pendingBump = null;
function bumpSoon() {
  if (pendingBump) return;
  pendingBump = setTimeout(() => {
    pendingBump = null;
    bump();
  }, 300);
}

export function setPaused(paused) {
  live.paused = paused;
  for (const fn of [...statusListeners]) fn(live.status);
  if (!paused) bump();
}

export function start() {
  stop();
  live.timer = setInterval(() => {
    if (document.visibilityState === "visible") bump();
  }, REFRESH_MS);
  connect();
}

export function stop() {
  clearInterval(live.timer);
  live.timer = null;
  if (live.controller) live.controller.abort();
  live.controller = null;
}

window.addEventListener("pagehide", () => {
  if (live.controller) live.controller.abort();
});

async function connect() {
  const controller = new AbortController();
  live.controller = controller;
  let delay = 1000;
  while (!controller.signal.aborted && session.token) {
    try {
      const response = await fetch("/api/events?types=push,run", {
        headers: { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401) {
        session.onUnauthorized("The token was not accepted; sign in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`event stream: ${response.status}`);
      setStatus(true, "live");
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const line = block.split("\n").find((l) => l.startsWith("event:"));
          const type = line ? line.slice(6).trim() : "";
          if (type === "push" || type === "run") bumpSoon();
        }
      }
    } catch {
      if (controller.signal.aborted) return;
    }
    setStatus(false, "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

/** The live status and pause flag, re-rendering when either changes. */
export function useLiveStatus() {
  const [, force] = useState(0);
  useEffect(() => {
    const fn = () => force((n) => n + 1);
    statusListeners.add(fn);
    fn(); // the status may have changed between the first render and now
    return () => statusListeners.delete(fn);
  }, []);
  return { ...live.status, paused: live.paused };
}

/**
 * Load data with `loader(signal)` when `key` changes and again on every live tick. The last good data stays shown
 * while a reload runs and when one fails (the error is returned beside it), so nothing flashes or collapses.
 * `reload()` forces a load now (after an action).
 */
export function useData(loader, key, { live: follow = true } = {}) {
  const [state, setState] = useState({ data: undefined, error: null, key: undefined });
  const busy = useRef(false);
  const keyRef = useRef(key);
  keyRef.current = key;
  const loaderRef = useRef(loader);
  loaderRef.current = loader;

  const load = useCallback(async (force = false) => {
    if (busy.current && !force) return;
    busy.current = true;
    const forKey = keyRef.current;
    try {
      const data = await loaderRef.current();
      if (keyRef.current === forKey) setState({ data, error: null, key: forKey });
    } catch (error) {
      if (keyRef.current === forKey) setState((s) => ({ data: s.key === forKey ? s.data : undefined, error, key: forKey }));
    } finally {
      busy.current = false;
    }
  }, []);

  useEffect(() => {
    load(true);
  }, [key]);

  useEffect(() => {
    if (!follow) return undefined;
    const fn = () => load(false);
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, [follow]);

  const current = state.key === key;
  return { data: current ? state.data : undefined, error: current ? state.error : null, loading: !current, reload: () => load(true) };
}

/** Re-render every `ms` (relative times, runtimes), paused with live updates. */
export function useClock(ms = 1000) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => {
      if (!live.paused) setNow(Date.now());
    }, ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}
