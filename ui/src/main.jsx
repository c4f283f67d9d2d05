// Conveyor admin UI: the shell (sign-in, navigation, live status, theme) and the hash router.
//
// The token: kept in sessionStorage (this tab only, gone when it closes; never localStorage), sent only in the
// Authorization header — never in a URL, so it reaches no log, history entry or Referer. No cookie is used, so
// there is no ambient credential for another site to ride on (no CSRF). See docs/choices.md.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, caps, session } from "./api.js";
import { start, stop, setPaused, useLiveStatus } from "./live.js";
import { useToasts } from "./toast.js";
import { OverviewPage } from "./pages/overview.jsx";
import { JobsPage } from "./pages/jobs.jsx";
import { JobPage } from "./pages/job.jsx";
import { QueuesPage } from "./pages/queues.jsx";
import { WorkersPage } from "./pages/workers.jsx";
import { SchedulesPage } from "./pages/schedules.jsx";
import { NamespacesPage } from "./pages/namespaces.jsx";
import { WorkflowPage } from "./pages/workflow.jsx";

const NAV = [
  ["overview", "Overview"],
  ["jobs", "Jobs"],
  ["dead-letters", "Dead letters"],
  ["queues", "Queues"],
  ["workers", "Workers"],
  ["schedules", "Schedules"],
  ["namespaces", "Namespaces"],
];

// ---- theme: the system's preference unless the user picked one (kept in localStorage: it is not a secret) ------

const THEME_KEY = "conveyor.theme";
const media = window.matchMedia("(prefers-color-scheme: dark)");

function effectiveTheme(choice) {
  return choice === "light" || choice === "dark" ? choice : media.matches ? "dark" : "light";
}

function useTheme() {
  const [choice, setChoice] = useState(localStorage.getItem(THEME_KEY) || "system");
  const [system, setSystem] = useState(media.matches);
  useEffect(() => {
    const fn = () => setSystem(media.matches);
    media.addEventListener("change", fn);
    return () => media.removeEventListener("change", fn);
  }, []);
  const theme = effectiveTheme(choice);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    if (choice === "system") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, choice);
  }, [choice, theme, system]);
  return [choice, theme, setChoice];
}

// ---- routing ------------------------------------------------------------------------------------------------

function parseHash() {
  const hash = location.hash || "#/overview";
  const [path, query = ""] = hash.slice(1).split("?");
  return { path, params: new URLSearchParams(query), hash };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const fn = () => setRoute(parseHash());
    window.addEventListener("hashchange", fn);
    return () => window.removeEventListener("hashchange", fn);
  }, []);
  return route;
}

function Page({ route, theme }) {
  const parts = route.path.split("/").filter(Boolean);
  const [page, arg] = parts;
  switch (page) {
    case "overview": return <OverviewPage theme={theme} />;
    case "jobs": return arg ? <JobPage key={arg} id={decodeURIComponent(arg)} /> : <JobsPage route={route} />;
    case "dead-letters": return <JobsPage route={route} dead />;
    case "queues": return <QueuesPage />;
    case "workers": return <WorkersPage />;
    case "schedules": return <SchedulesPage />;
    case "namespaces": return <NamespacesPage />;
    case "workflows": return <WorkflowPage id={decodeURIComponent(arg || "")} />;
    default:
      location.replace("#/overview");
      return null;
  }
}

// ---- shell --------------------------------------------------------------------------------------------------

function Login({ onSignIn, message }) {
  const [error, setError] = useState(message || "");
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    document.title = "Sign in · Conveyor";
  }, []);
  return (
    <div id="login" class="login">
      <form id="login-form" class="card login-card" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        const failure = await onSignIn(e.currentTarget.elements.token.value.trim());
        setBusy(false);
        if (failure) setError(failure);
      }}>
        <h1 class="brand big"><span class="logo" aria-hidden="true" />Conveyor</h1>
        <p class="muted">
          Paste an admin token: <code>conveyor serve</code> prints one on first start, <code>conveyor token create NAME</code> makes
          more. It is kept for this tab only.
        </p>
        <label for="token-input">Admin token</label>
        <input id="token-input" name="token" type="password" autocomplete="current-password" required />
        <div id="login-error" class="error-text" role="alert">{error}</div>
        <button class="primary" type="submit" disabled={busy}>Sign in</button>
      </form>
    </div>
  );
}

function LiveControl() {
  const status = useLiveStatus();
  const text = status.paused ? "paused" : status.text;
  return (
    <div class="live">
      <span id="live-dot" class={`dot ${status.paused ? "paused" : status.on ? "on" : "off"}`} aria-hidden="true" />
      <span id="live-text">{text}</span>
      <button id="pause-live" type="button" class="link small" aria-pressed={status.paused ? "true" : "false"}
        onClick={() => setPaused(!status.paused)}>
        {status.paused ? "Resume live" : "Pause live"}
      </button>
    </div>
  );
}

function ThemeControl({ choice, setChoice }) {
  const next = { system: "light", light: "dark", dark: "system" }[choice];
  return (
    <button id="theme-toggle" type="button" class="link small" onClick={() => setChoice(next)}
      aria-label={`Theme: ${choice}. Switch to ${next}`}>
      Theme: {choice}
    </button>
  );
}

function Shell({ route, theme, themeChoice, setThemeChoice, onSignOut }) {
  const [menuOpen, setMenuOpen] = useState(false);
  const current = route.path.split("/")[1] || "overview";
  const section = current === "workflows" ? "jobs" : current;
  useEffect(() => setMenuOpen(false), [route.hash]);
  return (
    <div id="shell" class="shell">
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main").focus(); }}>Skip to content</a>
      <header class="sidebar">
        <div class="brand-row">
          <div class="brand"><span class="logo" aria-hidden="true" />Conveyor</div>
          <button type="button" class="menu-button" aria-expanded={menuOpen ? "true" : "false"} aria-controls="nav"
            onClick={() => setMenuOpen(!menuOpen)}>Menu</button>
        </div>
        <nav id="nav" class={menuOpen ? "open" : ""} aria-label="Main">
          {NAV.map(([page, label]) => (
            <a href={`#/${page}`} data-page={page} class={section === page ? "active" : ""}
              aria-current={section === page ? "page" : undefined}>{label}</a>
          ))}
          <div class="spacer" />
          <LiveControl />
          <ThemeControl choice={themeChoice} setChoice={setThemeChoice} />
          <button id="logout" type="button" class="link" onClick={onSignOut}>Sign out</button>
        </nav>
      </header>
      <main id="main" class="main" tabIndex={-1}>
        <Page route={route} theme={theme} />
      </main>
    </div>
  );
}

function Toasts() {
  const list = useToasts();
  return (
    <div id="toasts" class="toasts" aria-live="polite">
      {list.map((t) => <div key={t.id} class={`toast ${t.kind}`} role={t.kind === "error" ? "alert" : "status"}>{t.message}</div>)}
    </div>
  );
}

function App() {
  const [signedIn, setSignedIn] = useState(false);
  const [message, setMessage] = useState("");
  const [checked, setChecked] = useState(false);
  const route = useRoute();
  const [themeChoice, theme, setThemeChoice] = useTheme();

  const signOut = (why = "") => {
    session.clear();
    stop();
    setMessage(why);
    setSignedIn(false);
  };
  session.onUnauthorized = signOut;

  const signIn = async (token) => {
    session.token = token;
    session.onUnauthorized = () => {}; // a refused token is this form's answer, not a session that ended
    try {
      const me = await api.me();
      if (me.kind !== "admin") {
        session.token = null;
        return "This is a user token: the admin UI needs an admin token (conveyor token create NAME).";
      }
    } catch (err) {
      session.token = null;
      return err.code === "unauthorized" ? "The token was not accepted." : err.message;
    } finally {
      session.onUnauthorized = signOut;
    }
    session.save(token);
    await caps.load();
    setMessage("");
    setSignedIn(true);
    start();
    return null;
  };

  useEffect(() => {
    const saved = session.load();
    if (saved) signIn(saved).then((failure) => { if (failure) signOut(failure); setChecked(true); });
    else setChecked(true);
  }, []);

  if (!checked) return null;
  return (
    <>
      {signedIn
        ? <Shell route={route} theme={theme} themeChoice={themeChoice} setThemeChoice={setThemeChoice} onSignOut={() => signOut()} />
        : <Login key={message} onSignIn={signIn} message={message} />}
      <Toasts />
    </>
  );
}

render(<App />, document.getElementById("root"));
