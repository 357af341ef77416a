#!/usr/bin/env node
// Interop client: the official TypeScript MCP SDK talking to mcpgw over WebSocket.
//
// Usage:
//   node client.mjs WS_URL TOOL [JSON_ARGS]
//   e.g. node client.mjs 'ws://127.0.0.1:8080/v1/mcp?target=http://127.0.0.1:9000/mcp&org=o1&account=a1' echo '{"text":"hi"}'
//
// Env:
//   MCPGW_TOKEN       service token; sent as the access_token query parameter
//                     (the SDK's WebSocket transport cannot set request headers)
//   MCPGW_TIMEOUT_MS  overall deadline in milliseconds (default 20000)
//   TS_INTEROP_DEPS   directory holding node_modules with the SDK (default: a
//                     node_modules next to this file, else <repo>/.cache/ts-interop,
//                     where scripts/ts-interop.sh installs it)
//
// It connects with subprotocol "mcp" (what WebSocketClientTransport sends),
// initializes, lists tools, calls TOOL with JSON_ARGS (default {}), prints the
// tools/call result as JSON on stdout and exits 0. Any error: a message on
// stderr and exit 1. A result with isError=true is still a result (exit 0).
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const NAME = "ts-interop";

function fail(msg) {
  process.stderr.write(`${NAME}: ${msg}\n`);
  process.exit(1);
}

// loadSdk imports the SDK's client modules: from a node_modules next to this
// file (npm ci here), else from TS_INTEROP_DEPS or <repo>/.cache/ts-interop.
async function loadSdk() {
  const SDK = "@modelcontextprotocol/sdk";
  const subpaths = ["client/index.js", "client/websocket.js"];
  try {
    const [c, w] = await Promise.all(subpaths.map((p) => import(`${SDK}/${p}`)));
    return { Client: c.Client, WebSocketClientTransport: w.WebSocketClientTransport };
  } catch (e) {
    if (e?.code !== "ERR_MODULE_NOT_FOUND" || !String(e.message).includes(SDK)) throw e;
  }
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dirs = [process.env.TS_INTEROP_DEPS, path.resolve(here, "..", "..", ".cache", "ts-interop")].filter(Boolean);
  for (const dir of dirs) {
    const pkgDir = path.join(dir, "node_modules", ...SDK.split("/"));
    const pkgFile = path.join(pkgDir, "package.json");
    if (!fs.existsSync(pkgFile)) continue;
    const pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
    const pattern = pkg.exports?.["./*"]?.import ?? "./dist/esm/*";
    const url = (p) => pathToFileURL(path.join(pkgDir, pattern.replace("*", p))).href;
    const [c, w] = await Promise.all(subpaths.map((p) => import(url(p))));
    return { Client: c.Client, WebSocketClientTransport: w.WebSocketClientTransport };
  }
  fail(`${SDK} is not installed: run scripts/ts-interop.sh --install-only (or npm ci in ${here})`);
}

function describe(err) {
  if (err === undefined || err === null) return "unknown error";
  if (typeof err !== "object") return String(err);
  // undici's WebSocket reports failures as an ErrorEvent whose .error/.message
  // may be empty; dig out whatever explains it.
  const parts = [];
  const msg = err.message || err.error?.message;
  if (msg) parts.push(msg);
  const cause = err.cause ?? err.error?.cause;
  if (cause) {
    const c = cause.code ? `${cause.code}${cause.message ? " " + cause.message : ""}` : cause.message || String(cause);
    if (c && !parts.includes(c)) parts.push(c);
  }
  if (err.code !== undefined && typeof err.code === "number" && !String(msg).includes(String(err.code))) {
    parts.push(`code ${err.code}`);
  }
  if (err.data !== undefined) parts.push(`data ${JSON.stringify(err.data)}`);
  return parts.length > 0 ? parts.join(": ") : err.type ? `WebSocket ${err.type}` : String(err);
}

// diagnose repeats the WebSocket handshake by hand after a failed connect, to
// say why it failed: nothing listening, an HTTP refusal (status and body, e.g.
// the gateway's 4xx explanation), or a handshake without subprotocol "mcp".
function diagnose(url, ms = 3000) {
  return new Promise((resolve) => {
    const mod = url.protocol === "wss:" ? https : http;
    const target = new URL(url);
    target.protocol = url.protocol === "wss:" ? "https:" : "http:";
    const req = mod.request(target, {
      method: "GET",
      timeout: ms,
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": crypto.randomBytes(16).toString("base64"),
        "Sec-WebSocket-Protocol": "mcp",
      },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      const proto = res.headers["sec-websocket-protocol"];
      resolve(
        proto === "mcp"
          ? "a manual handshake succeeded (101, subprotocol mcp); the failure may be transient"
          : `server accepted the upgrade but selected subprotocol ${proto ? JSON.stringify(proto) : "(none)"} instead of "mcp"`,
      );
    });
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        if (body.length < 500) body += d;
      });
      res.on("end", () => resolve(`HTTP ${res.statusCode}${body.trim() ? ": " + body.trim().slice(0, 500) : ""}`));
      res.on("error", () => resolve(`HTTP ${res.statusCode}`));
    });
    req.on("timeout", () => {
      req.destroy();
      resolve(`no answer within ${ms} ms`);
    });
    req.on("error", (e) => {
      const addr = `${target.hostname}:${target.port || (url.protocol === "wss:" ? 443 : 80)}`;
      resolve(e.code === "ECONNREFUSED" ? `nothing listens on ${addr} (ECONNREFUSED)` : `${e.code ?? ""} ${e.message}`.trim());
    });
    req.end();
  });
}

async function main() {
  const [rawUrl, tool, rawArgs] = process.argv.slice(2);
  if (!rawUrl || !tool) {
    fail("usage: node client.mjs WS_URL TOOL [JSON_ARGS]");
  }
  if (typeof WebSocket === "undefined") {
    fail(`this Node (${process.version}) has no global WebSocket: use Node >= 22, or Node 20.10+ with --experimental-websocket`);
  }

  let url;
  try {
    url = new URL(rawUrl);
  } catch {
    fail(`invalid URL: ${rawUrl}`);
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    fail(`URL must be ws:// or wss://, got ${url.protocol}//`);
  }
  const token = process.env.MCPGW_TOKEN;
  if (token && !url.searchParams.has("access_token")) {
    url.searchParams.set("access_token", token);
  }

  let args = {};
  if (rawArgs !== undefined && rawArgs !== "") {
    try {
      args = JSON.parse(rawArgs);
    } catch (e) {
      fail(`JSON_ARGS is not valid JSON: ${e.message}`);
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      fail("JSON_ARGS must be a JSON object");
    }
  }

  const timeoutMs = Number(process.env.MCPGW_TIMEOUT_MS || 20000);

  // Never print the token: show the URL without it.
  const shown = new URL(url);
  if (shown.searchParams.has("access_token")) shown.searchParams.set("access_token", "***");

  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) fail("MCPGW_TIMEOUT_MS must be a positive number");
  let stage = "connect";
  const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms during ${stage} (${shown})`), timeoutMs);

  const { Client, WebSocketClientTransport } = await loadSdk();
  let closedEarly = false;
  const transport = new WebSocketClientTransport(url);
  const client = new Client({ name: "mcpgw-ts-interop", version: "0.0.0" }, { capabilities: {} });
  client.onclose = () => {
    closedEarly = true;
  };

  try {
    await client.connect(transport, { timeout: timeoutMs });
    const server = client.getServerVersion();
    process.stderr.write(
      `${NAME}: connected to ${shown} (server ${server?.name ?? "?"} ${server?.version ?? "?"}, subprotocol mcp)\n`,
    );

    stage = "tools/list";
    const listed = await client.listTools(undefined, { timeout: timeoutMs });
    const names = (listed.tools ?? []).map((t) => t.name);
    process.stderr.write(`${NAME}: tools: ${names.join(", ") || "(none)"}\n`);
    if (!names.includes(tool)) {
      process.stderr.write(`${NAME}: warning: tool ${tool} is not in tools/list; calling it anyway\n`);
    }

    stage = `tools/call ${tool}`;
    const result = await client.callTool({ name: tool, arguments: args }, undefined, { timeout: timeoutMs });
    await new Promise((resolve) => process.stdout.write(JSON.stringify(result) + "\n", resolve));
  } catch (err) {
    let msg = describe(err);
    if (closedEarly && !/closed/i.test(msg)) msg += " (the server closed the connection)";
    if (stage === "connect") msg = `${msg} [${await diagnose(url)}]`;
    fail(`${stage} failed (${shown}): ${msg}`);
  } finally {
    clearTimeout(timer);
  }
  try {
    await client.close();
  } catch {
    // closing is best effort
  }
  process.exit(0);
}

main().catch((err) => fail(describe(err)));
