#!/usr/bin/env node
// Summarize the MCP conformance suite's client auth scenarios run twice:
// with the go-sdk's everything-client (the baseline) and with the gateway as
// the OAuth client (scripts/conformance-client).
//
// The conformance CLI (`conformance client --scenario S -o DIR`) writes
// DIR/<scenario>-<timestamp>/checks.json (the scenario keeps its "auth/"
// directory), an array of checks with id and status (SUCCESS, FAILURE,
// WARNING, INFO). A scenario passes when it produced checks and none is a
// FAILURE or WARNING (what the CLI marks with a tick).
//
// Usage:
//   node conformance-client-report.mjs --scenarios "auth/a auth/b" --sdk DIR --gateway DIR [--expected FILE]
//
// FILE lists scenarios the gateway is not expected to pass, one per line,
// "SCENARIO REASON", # comments. Exit 1 if a scenario the go-sdk client
// passes fails through the gateway and is not listed there. A listed
// scenario that passes is reported (the list should shrink), not failed.
import fs from "node:fs";
import path from "node:path";

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[++i];
    if (v === undefined) throw new Error(`missing value for ${a}`);
    switch (a) {
      case "--scenarios":
        out.scenarios = v.split(/\s+/).filter(Boolean);
        break;
      case "--sdk":
        out.sdk = v;
        break;
      case "--gateway":
        out.gateway = v;
        break;
      case "--expected":
        out.expected = v;
        break;
      default:
        throw new Error(`unknown argument ${a}`);
    }
  }
  if (!out.scenarios || !out.sdk || !out.gateway) throw new Error("--scenarios, --sdk and --gateway are required");
  return out;
}

const STAMP = /-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;

// result returns {pass, passed, failed, warnings, problems} for scenario in dir.
function result(dir, scenario) {
  const parent = path.join(dir, path.dirname(scenario));
  const base = path.basename(scenario);
  const out = { pass: false, passed: 0, failed: 0, warnings: 0, problems: [] };
  if (!fs.existsSync(parent)) return { ...out, problems: ["no results"] };
  const runs = fs
    .readdirSync(parent)
    .filter((n) => STAMP.test(n) && n.replace(STAMP, "") === base)
    .sort();
  if (runs.length === 0) return { ...out, problems: ["no results"] };
  const run = path.join(parent, runs[runs.length - 1]);
  try {
    // The client's last words say why a scenario it failed went wrong.
    out.stderr = fs.readFileSync(path.join(run, "stderr.txt"), "utf8").trim().split("\n").slice(-3);
  } catch {
    out.stderr = [];
  }
  let checks;
  try {
    checks = JSON.parse(fs.readFileSync(path.join(run, "checks.json"), "utf8"));
  } catch (e) {
    return { ...out, problems: [`unreadable checks.json: ${e.message}`] };
  }
  for (const c of Array.isArray(checks) ? checks : []) {
    const s = String(c.status ?? "").toUpperCase();
    if (s === "SUCCESS") out.passed++;
    else if (s === "FAILURE" || s === "WARNING") {
      if (s === "FAILURE") out.failed++;
      else out.warnings++;
      out.problems.push(`${s.toLowerCase()} ${c.id}: ${String(c.errorMessage || c.description || "").slice(0, 200)}`);
    }
  }
  out.pass = out.passed > 0 && out.failed === 0 && out.warnings === 0;
  return out;
}

function readExpected(file) {
  const m = new Map();
  if (!file || !fs.existsSync(file)) return m;
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const t = line.replace(/#.*/, "").trim();
    if (!t) continue;
    const [scenario, ...reason] = t.split(/\s+/);
    m.set(scenario, reason.join(" "));
  }
  return m;
}

const args = parseArgs(process.argv.slice(2));
const expected = readExpected(args.expected);
const sdkPass = [];
const gwPass = [];
const problems = [];
const notes = [];
const pad = Math.max(...args.scenarios.map((s) => s.length));
console.log(`${"scenario".padEnd(pad)}  go-sdk client   gateway`);
for (const s of args.scenarios) {
  const sdk = result(args.sdk, s);
  const gw = result(args.gateway, s);
  const cell = (r) => `${r.pass ? "pass" : "FAIL"} ${r.passed}/${r.passed + r.failed + r.warnings}`.padEnd(15);
  console.log(`${s.padEnd(pad)}  ${cell(sdk)}  ${cell(gw)}${expected.has(s) ? `  (listed: ${expected.get(s)})` : ""}`);
  if (sdk.pass) sdkPass.push(s);
  if (gw.pass) gwPass.push(s);
  if (!gw.pass) {
    for (const p of gw.problems) console.log(`    gateway ${p}`);
    if (!expected.has(s)) for (const l of gw.stderr ?? []) console.log(`    gateway client: ${l.slice(0, 400)}`);
  }
  if (sdk.pass && !gw.pass && !expected.has(s)) {
    problems.push(`${s}: passes with the go-sdk client, fails through the gateway`);
  }
  if (gw.pass && expected.has(s)) {
    notes.push(`${s}: passes through the gateway now; remove it from ${path.basename(args.expected)}`);
  }
}
console.log(`\ngo-sdk everything-client passes ${sdkPass.length}/${args.scenarios.length}: ${sdkPass.join(" ")}`);
console.log(`gateway passes ${gwPass.length}/${args.scenarios.length}: ${gwPass.join(" ")}`);
const more = gwPass.filter((s) => !sdkPass.includes(s));
if (more.length) console.log(`gateway passes, go-sdk client does not: ${more.join(" ")}`);
for (const n of notes) console.log(`note: ${n}`);
for (const p of problems) console.log(`PROBLEM: ${p}`);
process.exit(problems.length ? 1 : 0);
