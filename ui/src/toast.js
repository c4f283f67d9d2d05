// Toasts: short messages in a polite live region (screen readers read them), gone after a few seconds.
import { useEffect, useState } from "preact/hooks";

let items = [];
let seq = 0;
const listeners = new Set();

function changed() {
  for (const fn of [...listeners]) fn(items);
}

export function toast(message, kind = "ok") {
  const id = ++seq;
  items = [...items, { id, message, kind }];
  changed();
  setTimeout(() => {
    items = items.filter((t) => t.id !== id);
    changed();
  }, kind === "error" ? 8000 : 4500);
}

export function useToasts() {
  const [list, setList] = useState(items);
  useEffect(() => {
    listeners.add(setList);
    return () => listeners.delete(setList);
  }, []);
  return list;
}

/** Run an action, toast its outcome in the UI's words, and reload. Returns whether it worked. */
export async function act(fn, done, reload) {
  try {
    const result = await fn();
    const text = typeof done === "function" ? done(result) : done;
    if (text) toast(text);
    if (reload) reload();
    return true;
  } catch (err) {
    if (err.code !== "unauthorized") toast(err.message, "error");
    return false;
  }
}
