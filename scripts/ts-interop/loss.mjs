#!/usr/bin/env node
// Loss measurement for server-to-client requests made right after connect.
//
// Each try opens a new session with the official TypeScript SDK client
// (streamable HTTP for http:// URLs, WebSocket for ws:// URLs), declares the
// sampling and elicitation capabilities, and calls TOOL at once, the way an
// MCP host calls a tool right after connecting. TOOL (default test_sampling, on
// scripts/ts-reference-server) makes the server send sampling/createMessage or
// elicitation/create to the client before it answers. A try is:
//   ok    the client's handler got the request and the tool returned its answer;
//   lost  the tool returned, but the client never saw the request (the server's
//         own request timeout ran out: the request was dropped on the way);
//   hung  the tool call did not return within --timeout-ms;
//   error anything else (connect failed, tool error, ...).
//
// Usage:
//   node loss.mjs --label NAME --url URL [--tries K] [--tool TOOL] [--timeout-ms MS]
// Env:
//   MCPGW_TOKEN       sent as the access_token query parameter (never printed)
//   TS_INTEROP_DEPS   as for client.mjs
//
// Prints one line per run:
//   loss [NAME]: K tries, ok N, lost N, hung N, error N; lost or hung P %
// and exits 0 (a measurement, not a check), or 2 on bad arguments.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

function usage(msg) {
  process.stderr.write(`loss: ${msg}\nusage: node loss.mjs --label NAME --url URL [--tries K] [--tool TOOL] [--timeout-ms MS]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const out = { tries: 20, tool: "test_sampling", timeoutMs: 15000, label: "" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (v === undefined) usage(`missing value for ${a}`);
    i++;
    if (a === "--url") out.url = v;
    else if (a === "--label") out.label = v;
    else if (a === "--tool") out.tool = v;
    else if (a === "--tries") out.tries = Number(v);
    else if (a === "--timeout-ms") out.timeoutMs = Number(v);
    else usage(`unknown argument ${a}`);
  }
  if (!out.url) usage("--url is required");
  if (!Number.isInteger(out.tries) || out.tries <= 0) usage("--tries must be a positive integer");
  if (!Number.isFinite(out.timeoutMs) || out.timeoutMs <= 0) usage("--timeout-ms must be a positive number");
  return out;
}

async function loadSdk() {
  const SDK = "@modelcontextprotocol/sdk";
  const subpaths = ["client/index.js", "client/streamableHttp.js", "client/websocket.js", "types.js"];
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dirs = [here, process.env.TS_INTEROP_DEPS, path.resolve(here, "..", "..", ".cache", "ts-interop")].filter(Boolean);
  for (const dir of dirs) {
    const pkgDir = path.join(dir, "node_modules", ...SDK.split("/"));
    const pkgFile = path.join(pkgDir, "package.json");
    if (!fs.existsSync(pkgFile)) continue;
    const pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
    const pattern = pkg.exports?.["./*"]?.import ?? "./dist/esm/*";
    const url = (p) => pathToFileURL(path.join(pkgDir, pattern.replace("*", p))).href;
    const [c, h, w, types] = await Promise.all(subpaths.map((p) => import(url(p))));
    return { ...c, ...h, ...w, types };
  }
  usage(`${SDK} is not installed: run scripts/ts-interop.sh --install-only`);
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${ms} ms`), { hung: true })), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// oneTry runs one session and classifies it.
async function oneTry(sdk, url, tool, timeoutMs) {
  const transport = url.protocol.startsWith("ws") ? new sdk.WebSocketClientTransport(url) : new sdk.StreamableHTTPClientTransport(url);
  const client = new sdk.Client({ name: "mcpgw-loss", version: "0.0.0" }, { capabilities: { sampling: {}, elicitation: {} } });
  let asked = false;
  client.setRequestHandler(sdk.types.CreateMessageRequestSchema, async () => {
    asked = true;
    return { role: "assistant", content: { type: "text", text: "answer from the client" }, model: "none", stopReason: "endTurn" };
  });
  client.setRequestHandler(sdk.types.ElicitRequestSchema, async () => {
    asked = true;
    return { action: "accept", content: { username: "u", email: "u@example.com", response: "r" } };
  });
  try {
    await withTimeout(client.connect(transport, { timeout: timeoutMs }), timeoutMs);
    const args = tool === "test_sampling" ? { prompt: "p" } : tool === "test_elicitation" ? { message: "m" } : {};
    const result = await withTimeout(client.callTool({ name: tool, arguments: args }, undefined, { timeout: timeoutMs }), timeoutMs);
    if (result.isError) return { kind: "error", why: JSON.stringify(result.content) };
    return { kind: asked ? "ok" : "lost" };
  } catch (e) {
    if (e.hung || e.code === -32001) return { kind: "hung", why: e.message };
    return { kind: "error", why: e.message };
  } finally {
    await withTimeout(client.close(), 2000).catch(() => {});
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let url;
  try {
    url = new URL(args.url);
  } catch {
    usage(`invalid URL ${args.url}`);
  }
  if (process.env.MCPGW_TOKEN && !url.searchParams.has("access_token")) url.searchParams.set("access_token", process.env.MCPGW_TOKEN);
  const sdk = await loadSdk();
  const counts = { ok: 0, lost: 0, hung: 0, error: 0 };
  const whys = new Map();
  for (let i = 0; i < args.tries; i++) {
    const r = await oneTry(sdk, url, args.tool, args.timeoutMs);
    counts[r.kind]++;
    if (r.why) r.why = r.why.replace(/(access_token=)[^&\s"]+/g, "$1***");
    if (r.why) whys.set(r.why, (whys.get(r.why) ?? 0) + 1);
  }
  for (const [why, n] of whys) process.stderr.write(`loss [${args.label}]: ${n}× ${why}\n`);
  const bad = counts.lost + counts.hung;
  const pct = Math.round((100 * bad) / args.tries);
  console.log(
    `loss [${args.label}]: ${args.tries} tries, ok ${counts.ok}, lost ${counts.lost}, hung ${counts.hung}, error ${counts.error}; lost or hung ${pct} %`,
  );
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`loss: ${e.stack ?? e}\n`);
  process.exit(1);
});
