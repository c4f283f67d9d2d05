// Builds the admin UI into src/conveyor/ui/static (the files the Python package serves and ships).
//
//   npm ci && npm run build     write the files (commit them: a `pip install` must never need Node)
//   npm run check               build into memory and compare with the committed files (CI runs this)
//
// The output depends only on the sources and the exact versions in package-lock.json: no timestamps, no absolute
// paths, no hashes of the machine. esbuild bundles every module into one ES module script (app.js) and every
// stylesheet into app.css; index.html is copied. The Content-Security-Policy forbids inline script and style and
// eval, so nothing here may produce them (esbuild emits none; Preact and uPlot set styles through the CSSOM).
import * as esbuild from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, readdirSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "conveyor", "ui", "static");
const check = process.argv.includes("--check");

const common = {
  bundle: true,
  minify: true,
  write: false,
  legalComments: "none", // the licences of the bundled packages go in THIRD-PARTY-LICENSES.txt, whole
  logLevel: "warning",
  absWorkingDir: here,
};

const js = await esbuild.build({
  ...common,
  entryPoints: ["src/main.jsx"],
  outfile: "app.js",
  format: "esm",
  target: ["es2022", "chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  charset: "utf8",
});
const css = await esbuild.build({ ...common, entryPoints: ["src/app.css"], outfile: "app.css", loader: { ".css": "css" } });

const licences = ["preact", "uplot"]
  .map((name) => {
    const pkg = JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8"));
    const text = readFileSync(join(here, "node_modules", name, "LICENSE"), "utf8").trim();
    return `${pkg.name} ${pkg.version} (${pkg.license})\n\n${text}\n`;
  })
  .join("\n" + "-".repeat(80) + "\n\n");

const files = {
  "index.html": readFileSync(join(here, "src", "index.html"), "utf8"),
  "app.js": js.outputFiles[0].text,
  "app.css": css.outputFiles[0].text,
  "THIRD-PARTY-LICENSES.txt": `The admin UI bundles these packages (app.js, app.css):\n\n${licences}`,
};

if (check) {
  const stale = [];
  const present = new Set(readdirSync(out));
  for (const [name, text] of Object.entries(files)) {
    let committed = null;
    try { committed = readFileSync(join(out, name), "utf8"); } catch { /* missing */ }
    if (committed !== text) stale.push(name);
    present.delete(name);
  }
  for (const extra of present) stale.push(`${extra} (not built from ui/: remove it)`);
  if (stale.length) {
    console.error(`ui: the committed build in src/conveyor/ui/static does not match ui/src: ${stale.join(", ")}.\n` +
      "Run `cd ui && npm ci && npm run build` and commit the result.");
    process.exit(1);
  }
  console.log("ui: src/conveyor/ui/static matches ui/src");
} else {
  mkdirSync(out, { recursive: true });
  for (const name of readdirSync(out)) if (!(name in files)) unlinkSync(join(out, name));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(out, name), text);
  const size = (n) => `${(Buffer.byteLength(files[n]) / 1024).toFixed(1)} KiB`;
  console.log(`ui: wrote ${Object.keys(files).join(", ")} (app.js ${size("app.js")}, app.css ${size("app.css")})`);
}
