#!/usr/bin/env node
// Interop server: the official TypeScript MCP SDK's streamable HTTP server,
// with a tool that asks the client for input the way the MCP conformance
// suite's reference server (examples/servers/typescript) did until its
// conformance#407 fix: with server.request(), which names no related client
// request, so the SDK sends the request on the session's standalone GET
// stream. With no GET stream open at that moment, the SDK parks the request
// in the event store, where only a GET that resumes with Last-Event-ID
// finds it, and the tool call waits for an answer that never comes.
//
// Usage:
//   node standalone-server.mjs
//
// Prints "listening http://127.0.0.1:PORT/mcp" on stdout once it serves, on
// a free loopback port. Tool "ask" elicits {response: string} with the
// call's "text" as the message and returns "answered: <response>".
//
// Env:
//   TS_INTEROP_DEPS  directory holding node_modules with the SDK (default: a
//                    node_modules next to this file, else <repo>/.cache/ts-interop,
//                    where scripts/ts-interop.sh installs it)
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const SDK = "@modelcontextprotocol/sdk";
const subpaths = ["server/index.js", "server/streamableHttp.js", "types.js"];

async function loadSdk() {
  try {
    return await Promise.all(subpaths.map((p) => import(`${SDK}/${p}`)));
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
    return await Promise.all(subpaths.map((p) => import(pathToFileURL(path.join(pkgDir, pattern.replace("*", p))).href)));
  }
  process.stderr.write(`standalone-server: ${SDK} is not installed: run scripts/ts-interop.sh --install-only\n`);
  process.exit(1);
}

const [{ Server }, { StreamableHTTPServerTransport }, types] = await loadSdk();
const { CallToolRequestSchema, ElicitResultSchema, ListToolsRequestSchema, isInitializeRequest } = types;

// An in-memory event store, as the reference server has: what is sent on a
// stream with no client attached is kept for a resuming GET.
function eventStore() {
  const events = new Map();
  return {
    async storeEvent(streamId, message) {
      const eventId = `${streamId}_${Date.now()}_${randomUUID()}`;
      events.set(eventId, { streamId, message });
      return eventId;
    },
    async replayEventsAfter(lastEventId, { send }) {
      const last = events.get(lastEventId);
      if (!last) return "";
      let after = false;
      for (const [id, ev] of events) {
        if (id === lastEventId) after = true;
        else if (after && ev.streamId === last.streamId) await send(id, ev.message);
      }
      return last.streamId;
    },
  };
}

function newServer() {
  const server = new Server({ name: "standalone-requester", version: "1" }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: [{
      name: "ask",
      description: "asks the client for input on the standalone stream",
      inputSchema: { type: "object", properties: { text: { type: "string" } } },
    }],
  }));
  server.setRequestHandler(CallToolRequestSchema, async (req) => {
    const res = await server.request({
      method: "elicitation/create",
      params: {
        message: String(req.params.arguments?.text ?? ""),
        requestedSchema: { type: "object", properties: { response: { type: "string" } }, required: ["response"] },
      },
    }, ElicitResultSchema, { timeout: 10000 });
    return { content: [{ type: "text", text: `answered: ${res.content?.response}` }] };
  });
  return server;
}

const transports = new Map();

function readJSON(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      try {
        resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined);
      } catch (e) {
        reject(e);
      }
    });
    req.on("error", reject);
  });
}

const httpServer = http.createServer(async (req, res) => {
  try {
    const body = req.method === "POST" ? await readJSON(req) : undefined;
    const sid = req.headers["mcp-session-id"];
    let transport = sid ? transports.get(sid) : undefined;
    if (!transport) {
      if (sid || req.method !== "POST" || !isInitializeRequest(body)) {
        res.writeHead(sid ? 404 : 400, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "unknown or missing session" } }));
        return;
      }
      const t = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        eventStore: eventStore(),
        onsessioninitialized: (id) => transports.set(id, t),
      });
      const server = newServer();
      t.onclose = () => {
        if (t.sessionId) transports.delete(t.sessionId);
        server.close();
      };
      await server.connect(t);
      transport = t;
    }
    await transport.handleRequest(req, res, body);
  } catch (e) {
    if (!res.headersSent) {
      res.writeHead(500, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32603, message: String(e?.message ?? e) } }));
    }
  }
});

httpServer.listen(0, "127.0.0.1", () => {
  process.stdout.write(`listening http://127.0.0.1:${httpServer.address().port}/mcp\n`);
});
