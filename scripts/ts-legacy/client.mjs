#!/usr/bin/env node
// Legacy interop client: the TypeScript MCP SDK 1.0.x (the HTTP+SSE
// transport of protocol 2024-11-05, as the Inspector's --transport sse
// speaks it) talking to mcpgw's /v1/sse endpoint.
//
// Usage:
//   node client.mjs SSE_URL TOOL [JSON_ARGS]
//   e.g. node client.mjs 'http://127.0.0.1:8080/v1/sse?target=http://127.0.0.1:9000/mcp&org=o1&account=a1' echo '{"text":"hi"}'
//
// Env:
//   MCPGW_TOKEN       service token; sent as the access_token query parameter
//                     (EventSource cannot set request headers, and the SDK's
//                     POSTs carry none)
//   MCPGW_TIMEOUT_MS  overall deadline in milliseconds (default 20000)
//   TS_LEGACY_DEPS    directory holding node_modules with the SDK and the
//                     eventsource polyfill (default: next to this file, else
//                     <repo>/.cache/ts-legacy, where scripts/ts-legacy.sh
//                     installs them)
//
// It connects (asking for 2024-11-05, the one version SDK 1.0.x knows), lists tools,
// calls TOOL with JSON_ARGS (default {}), prints the tools/call result as
// JSON on stdout and exits 0. Any error: a message on stderr and exit 1.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const NAME = "ts-legacy";

function fail(msg) {
  process.stderr.write(`${NAME}: ${msg}\n`);
  process.exit(1);
}

// depsDir finds the node_modules holding the SDK.
function depsDir() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const dir of [here, process.env.TS_LEGACY_DEPS, path.resolve(here, "..", "..", ".cache", "ts-legacy")]) {
    if (dir && fs.existsSync(path.join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json"))) return dir;
  }
  fail(`@modelcontextprotocol/sdk is not installed: run scripts/ts-legacy.sh --install-only`);
}

async function main() {
  const [rawUrl, tool, rawArgs] = process.argv.slice(2);
  if (!rawUrl || !tool) fail("usage: node client.mjs SSE_URL TOOL [JSON_ARGS]");
  const url = new URL(rawUrl);
  if (process.env.MCPGW_TOKEN) url.searchParams.set("access_token", process.env.MCPGW_TOKEN);
  const args = rawArgs ? JSON.parse(rawArgs) : {};

  const dir = depsDir();
  const require = createRequire(path.join(dir, "package.json"));
  // SDK 1.0.x uses the browser EventSource; Node 20 has none.
  globalThis.EventSource = require("eventsource");
  const sdk = path.join(dir, "node_modules", "@modelcontextprotocol", "sdk");
  const version = JSON.parse(fs.readFileSync(path.join(sdk, "package.json"), "utf8")).version;
  const { Client } = await import(pathToFileURL(path.join(sdk, "dist", "client", "index.js")).href);
  const { SSEClientTransport } = await import(pathToFileURL(path.join(sdk, "dist", "client", "sse.js")).href);

  const timeout = Number(process.env.MCPGW_TIMEOUT_MS || 20000);
  const timer = setTimeout(() => fail(`no result within ${timeout} ms`), timeout);
  const client = new Client({ name: NAME, version: "0.0.0" }, { capabilities: {} });
  const transport = new SSEClientTransport(url);
  try {
    await client.connect(transport);
  } catch (e) {
    fail(`connect to ${url.origin}${url.pathname} failed: ${e?.message ?? e}`);
  }
  process.stderr.write(`${NAME}: connected with @modelcontextprotocol/sdk ${version}\n`);
  const tools = await client.listTools();
  if (!tools.tools.some((t) => t.name === tool)) fail(`tools/list has no tool ${JSON.stringify(tool)}`);
  const result = await client.callTool({ name: tool, arguments: args });
  process.stdout.write(JSON.stringify(result) + "\n");
  clearTimeout(timer);
  await client.close();
  process.exit(0);
}

main().catch((e) => fail(e?.stack ?? String(e)));
