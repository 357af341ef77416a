#!/usr/bin/env node
// An MCP server built on the official TypeScript SDK's streamable HTTP
// transport, answering every server scenario of the MCP conformance suite
// (@modelcontextprotocol/conformance). mcpgw's conformance matrix runs the
// suite against it, directly and through the gateway, as the second server
// implementation next to the go-sdk's everything-server.
//
// It behaves the way a TypeScript SDK server does in the field, on purpose:
// server-to-client requests made from a tool handler without a related
// request id (sampling/createMessage, elicitation/create) go out on the
// session's standalone GET event stream, and the SDK drops them when no such
// stream is open at that moment. A proxy that opens that stream late loses
// them, which is what this server makes visible.
//
// Usage: node server.mjs [--port N]   (or PORT=N; default 3000)
// Listens on 127.0.0.1 only, serves MCP at /mcp, prints
// "listening on http://127.0.0.1:N/mcp" once ready.
//
// Env:
//   TS_REFERENCE_SERVER_DEPS  directory holding node_modules with the SDK
//                             (default: next to this file, else
//                             <repo>/.cache/ts-reference-server, where
//                             scripts/ts-reference-server.sh installs it)
//   TS_REFERENCE_SERVER_REQUEST_TIMEOUT_MS
//                             how long a tool waits for the client to answer
//                             its sampling or elicitation request (default
//                             10000). A request lost on the way then fails the
//                             scenario in seconds instead of the suite's 60 s.
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const NAME = "ts-reference-server";

function fail(msg) {
  process.stderr.write(`${NAME}: ${msg}\n`);
  process.exit(1);
}

// loadSdk imports the SDK modules this server needs, from a node_modules next
// to this file or from the install directory the wrapper script uses.
async function loadSdk() {
  const SDK = "@modelcontextprotocol/sdk";
  const subpaths = ["server/index.js", "server/streamableHttp.js", "server/express.js", "types.js"];
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dirs = [here, process.env.TS_REFERENCE_SERVER_DEPS, path.resolve(here, "..", "..", ".cache", "ts-reference-server")].filter(
    Boolean,
  );
  for (const dir of dirs) {
    const pkgDir = path.join(dir, "node_modules", ...SDK.split("/"));
    const pkgFile = path.join(pkgDir, "package.json");
    if (!fs.existsSync(pkgFile)) continue;
    const pkg = JSON.parse(fs.readFileSync(pkgFile, "utf8"));
    const pattern = pkg.exports?.["./*"]?.import ?? "./dist/esm/*";
    const url = (p) => pathToFileURL(path.join(pkgDir, pattern.replace("*", p))).href;
    const [server, http, express, types] = await Promise.all(subpaths.map((p) => import(url(p))));
    return { ...server, ...http, ...express, types };
  }
  fail(`${SDK} is not installed: run scripts/ts-reference-server.sh --install-only`);
}

function parsePort(argv) {
  let port = process.env.PORT ?? "3000";
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--port" && i + 1 < argv.length) port = argv[++i];
    else fail(`unknown argument ${argv[i]}; usage: node server.mjs [--port N]`);
  }
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`port must be an integer 0-65535, got ${JSON.stringify(port)}`);
  return n;
}

// 1x1 PNG and a minimal WAV file, as content samples.
const PNG_1X1 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV_TINY = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

const EMPTY_OBJECT = { type: "object", properties: {} };

const REQUEST_TIMEOUT_MS = Number(process.env.TS_REFERENCE_SERVER_REQUEST_TIMEOUT_MS || 10000);

// The tool list. call(args, extra, session) returns a CallToolResult.
function tools(server, transports) {
  const text = (t) => ({ content: [{ type: "text", text: t }] });
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));

  // Server-to-client requests are made with server.request and no
  // relatedRequestId: the SDK then sends them on the standalone GET stream.
  const elicit = async (message, requestedSchema, label) => {
    try {
      const r = await server.request({ method: "elicitation/create", params: { message, requestedSchema } }, types.ElicitResultSchema, {
        timeout: REQUEST_TIMEOUT_MS,
      });
      return text(`${label}: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
    } catch (e) {
      return text(`Elicitation not supported or error: ${e.message}`);
    }
  };

  return [
    {
      name: "test_simple_text",
      description: "Returns one text content item",
      call: async () => text("This is a simple text response for testing."),
    },
    {
      name: "test_image_content",
      description: "Returns one image content item",
      call: async () => ({ content: [{ type: "image", data: PNG_1X1, mimeType: "image/png" }] }),
    },
    {
      name: "test_audio_content",
      description: "Returns one audio content item",
      call: async () => ({ content: [{ type: "audio", data: WAV_TINY, mimeType: "audio/wav" }] }),
    },
    {
      name: "test_embedded_resource",
      description: "Returns an embedded text resource",
      call: async () => ({
        content: [
          {
            type: "resource",
            resource: { uri: "test://embedded-resource", mimeType: "text/plain", text: "This is an embedded resource content." },
          },
        ],
      }),
    },
    {
      name: "test_multiple_content_types",
      description: "Returns text, image and resource content together",
      call: async () => ({
        content: [
          { type: "text", text: "Multiple content types test:" },
          { type: "image", data: PNG_1X1, mimeType: "image/png" },
          {
            type: "resource",
            resource: {
              uri: "test://mixed-content-resource",
              mimeType: "application/json",
              text: JSON.stringify({ test: "data", value: 123 }),
            },
          },
        ],
      }),
    },
    {
      name: "test_tool_with_logging",
      description: "Sends three log notifications while it runs",
      call: async (_args, extra) => {
        for (const [i, data] of ["Tool execution started", "Tool processing data", "Tool execution completed"].entries()) {
          if (i > 0) await pause(50);
          await extra.sendNotification({ method: "notifications/message", params: { level: "info", data } });
        }
        return text("Tool with logging executed successfully");
      },
    },
    {
      name: "test_tool_with_progress",
      description: "Reports progress 0, 50 and 100 of 100",
      call: async (_args, extra) => {
        const progressToken = extra._meta?.progressToken ?? 0;
        for (const [i, progress] of [0, 50, 100].entries()) {
          if (i > 0) await pause(50);
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` },
          });
        }
        return text(String(progressToken));
      },
    },
    {
      name: "test_error_handling",
      description: "Always fails with a tool error",
      call: async () => {
        throw new Error("This tool intentionally returns an error for testing");
      },
    },
    {
      name: "test_reconnection",
      description: "Closes its own SSE response stream mid-call; the result is delivered after the client reconnects",
      call: async (_args, extra) => {
        const transport = extra.sessionId ? transports.get(extra.sessionId) : undefined;
        if (transport && extra.requestId !== undefined) transport.closeSSEStream(extra.requestId);
        await pause(100);
        return text("Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.");
      },
    },
    {
      name: "test_sampling",
      description: "Asks the client for an LLM completion (sampling/createMessage)",
      inputSchema: {
        type: "object",
        properties: { prompt: { type: "string", description: "The prompt to send to the LLM" } },
        required: ["prompt"],
      },
      call: async (args) => {
        try {
          const r = await server.request(
            {
              method: "sampling/createMessage",
              params: { messages: [{ role: "user", content: { type: "text", text: String(args.prompt ?? "") } }], maxTokens: 100 },
            },
            types.CreateMessageResultSchema,
            { timeout: REQUEST_TIMEOUT_MS },
          );
          const content = Array.isArray(r.content) ? r.content[0] : r.content;
          return text(`LLM response: ${content?.text ?? "No response"}`);
        } catch (e) {
          return text(`Sampling not supported or error: ${e.message}`);
        }
      },
    },
    {
      name: "test_elicitation",
      description: "Asks the client for user input (elicitation/create)",
      inputSchema: {
        type: "object",
        properties: { message: { type: "string", description: "The message to show the user" } },
        required: ["message"],
      },
      call: (args) =>
        elicit(
          String(args.message ?? ""),
          {
            type: "object",
            properties: {
              username: { type: "string", description: "User's response" },
              email: { type: "string", description: "User's email address" },
            },
            required: ["username", "email"],
          },
          "User response",
        ),
    },
    {
      name: "test_elicitation_sep1034_defaults",
      description: "Elicitation whose fields all carry default values (SEP-1034)",
      call: () =>
        elicit(
          "Please review and update the form fields with defaults",
          {
            type: "object",
            properties: {
              name: { type: "string", description: "User name", default: "John Doe" },
              age: { type: "integer", description: "User age", default: 30 },
              score: { type: "number", description: "User score", default: 95.5 },
              status: { type: "string", description: "User status", enum: ["active", "inactive", "pending"], default: "active" },
              verified: { type: "boolean", description: "Verification status", default: true },
            },
            required: [],
          },
          "Elicitation completed",
        ),
    },
    {
      name: "test_elicitation_sep1330_enums",
      description: "Elicitation with the five enum schema variants (SEP-1330)",
      call: () =>
        elicit(
          "Please select options from the enum fields",
          {
            type: "object",
            properties: {
              untitledSingle: { type: "string", description: "Select one option", enum: ["option1", "option2", "option3"] },
              titledSingle: {
                type: "string",
                description: "Select one option with titles",
                oneOf: [
                  { const: "value1", title: "First Option" },
                  { const: "value2", title: "Second Option" },
                  { const: "value3", title: "Third Option" },
                ],
              },
              legacyEnum: {
                type: "string",
                description: "Select one option (legacy)",
                enum: ["opt1", "opt2", "opt3"],
                enumNames: ["Option One", "Option Two", "Option Three"],
              },
              untitledMulti: {
                type: "array",
                description: "Select multiple options",
                minItems: 1,
                maxItems: 3,
                items: { type: "string", enum: ["option1", "option2", "option3"] },
              },
              titledMulti: {
                type: "array",
                description: "Select multiple options with titles",
                minItems: 1,
                maxItems: 3,
                items: {
                  anyOf: [
                    { const: "value1", title: "First Choice" },
                    { const: "value2", title: "Second Choice" },
                    { const: "value3", title: "Third Choice" },
                  ],
                },
              },
            },
            required: [],
          },
          "Elicitation completed",
        ),
    },
    {
      name: "json_schema_2020_12_tool",
      description: "Input schema using JSON Schema 2020-12 features ($schema, $defs, additionalProperties)",
      inputSchema: {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        type: "object",
        $defs: { address: { type: "object", properties: { street: { type: "string" }, city: { type: "string" } } } },
        properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
        additionalProperties: false,
      },
      call: async (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args ?? {})}`),
    },
  ];
}

const RESOURCES = [
  {
    uri: "test://static-text",
    name: "static-text",
    title: "Static Text Resource",
    description: "A static text resource",
    mimeType: "text/plain",
    text: "This is the content of the static text resource.",
  },
  {
    uri: "test://static-binary",
    name: "static-binary",
    title: "Static Binary Resource",
    description: "A static binary resource (a PNG image)",
    mimeType: "image/png",
    blob: PNG_1X1,
  },
  {
    uri: "test://watched-resource",
    name: "watched-resource",
    title: "Watched Resource",
    description: "A resource clients may subscribe to",
    mimeType: "text/plain",
    text: "Watched resource content",
  },
];
const TEMPLATE = /^test:\/\/template\/([^/]+)\/data$/;

const PROMPTS = [
  {
    name: "test_simple_prompt",
    title: "Simple Test Prompt",
    description: "A prompt without arguments",
    get: () => [{ role: "user", content: { type: "text", text: "This is a simple prompt for testing." } }],
  },
  {
    name: "test_prompt_with_arguments",
    title: "Prompt With Arguments",
    description: "A prompt with two required arguments",
    arguments: [
      { name: "arg1", description: "First test argument", required: true },
      { name: "arg2", description: "Second test argument", required: true },
    ],
    get: (a) => [{ role: "user", content: { type: "text", text: `Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'` } }],
  },
  {
    name: "test_prompt_with_embedded_resource",
    title: "Prompt With Embedded Resource",
    description: "A prompt that embeds the resource it is given",
    arguments: [{ name: "resourceUri", description: "URI of the resource to embed", required: true }],
    get: (a) => [
      {
        role: "user",
        content: { type: "resource", resource: { uri: a.resourceUri, mimeType: "text/plain", text: "Embedded resource content for testing." } },
      },
      { role: "user", content: { type: "text", text: "Please process the embedded resource above." } },
    ],
  },
  {
    name: "test_prompt_with_image",
    title: "Prompt With Image",
    description: "A prompt with image content",
    get: () => [
      { role: "user", content: { type: "image", data: PNG_1X1, mimeType: "image/png" } },
      { role: "user", content: { type: "text", text: "Please analyze the image above." } },
    ],
  },
];

let types;

// newSession builds the MCP server of one session.
function newSession(sdk, transports) {
  const server = new sdk.Server(
    { name: "mcpgw-ts-reference-server", version: "1.0.0" },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const subscriptions = new Set();
  const log = (data) => server.sendLoggingMessage({ level: "info", logger: NAME, data }).catch(() => {});
  const list = tools(server, transports);
  const byName = new Map(list.map((t) => [t.name, t]));

  server.setRequestHandler(types.ListToolsRequestSchema, async () => ({
    tools: list.map(({ name, description, inputSchema }) => ({ name, description, inputSchema: inputSchema ?? EMPTY_OBJECT })),
  }));
  server.setRequestHandler(types.CallToolRequestSchema, async (req, extra) => {
    const tool = byName.get(req.params.name);
    if (!tool) {
      throw new types.McpError(types.ErrorCode.InvalidParams, `unknown tool ${JSON.stringify(req.params.name)}: call tools/list for the names`);
    }
    try {
      return await tool.call(req.params.arguments ?? {}, extra);
    } catch (e) {
      return { content: [{ type: "text", text: e.message }], isError: true };
    }
  });

  server.setRequestHandler(types.ListResourcesRequestSchema, async () => ({
    resources: RESOURCES.map(({ uri, name, title, description, mimeType }) => ({ uri, name, title, description, mimeType })),
  }));
  server.setRequestHandler(types.ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [
      {
        uriTemplate: "test://template/{id}/data",
        name: "template",
        title: "Resource Template",
        description: "A resource template with parameter substitution",
        mimeType: "application/json",
      },
    ],
  }));
  server.setRequestHandler(types.ReadResourceRequestSchema, async (req) => {
    const uri = req.params.uri;
    const r = RESOURCES.find((x) => x.uri === uri);
    if (r) {
      return { contents: [r.blob ? { uri, mimeType: r.mimeType, blob: r.blob } : { uri, mimeType: r.mimeType, text: r.text }] };
    }
    const m = TEMPLATE.exec(uri);
    if (m) {
      const id = decodeURIComponent(m[1]);
      return { contents: [{ uri, mimeType: "application/json", text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }] };
    }
    throw new types.McpError(-32002, `resource ${JSON.stringify(uri)} not found: call resources/list for the URIs`);
  });
  server.setRequestHandler(types.SubscribeRequestSchema, async (req) => {
    subscriptions.add(req.params.uri);
    log(`Subscribed to resource: ${req.params.uri}`);
    return {};
  });
  server.setRequestHandler(types.UnsubscribeRequestSchema, async (req) => {
    subscriptions.delete(req.params.uri);
    log(`Unsubscribed from resource: ${req.params.uri}`);
    return {};
  });

  server.setRequestHandler(types.ListPromptsRequestSchema, async () => ({
    prompts: PROMPTS.map(({ name, title, description, arguments: args }) => ({ name, title, description, arguments: args })),
  }));
  server.setRequestHandler(types.GetPromptRequestSchema, async (req) => {
    const p = PROMPTS.find((x) => x.name === req.params.name);
    if (!p) throw new types.McpError(types.ErrorCode.InvalidParams, `unknown prompt ${JSON.stringify(req.params.name)}: call prompts/list`);
    const args = req.params.arguments ?? {};
    for (const a of p.arguments ?? []) {
      if (a.required && args[a.name] === undefined) {
        throw new types.McpError(types.ErrorCode.InvalidParams, `prompt ${p.name} needs argument ${a.name}`);
      }
    }
    return { description: p.description, messages: p.get(args) };
  });

  server.setRequestHandler(types.SetLevelRequestSchema, async (req) => {
    log(`Log level set to: ${req.params.level}`);
    return {};
  });
  server.setRequestHandler(types.CompleteRequestSchema, async () => ({ completion: { values: [], total: 0, hasMore: false } }));
  return server;
}

// memoryEventStore keeps every event so a client reconnecting with
// Last-Event-ID gets the rest of its stream (SEP-1699 resumability).
function memoryEventStore() {
  const events = [];
  let seq = 0;
  return {
    async storeEvent(streamId, message) {
      const eventId = `${streamId}::${String(++seq).padStart(12, "0")}`;
      events.push({ eventId, streamId, message });
      return eventId;
    },
    async replayEventsAfter(lastEventId, { send }) {
      const streamId = lastEventId.slice(0, lastEventId.lastIndexOf("::"));
      for (const e of events) {
        if (e.streamId === streamId && e.eventId > lastEventId && Object.keys(e.message).length > 0) {
          await send(e.eventId, e.message);
        }
      }
      return streamId;
    },
  };
}

async function main() {
  const port = parsePort(process.argv.slice(2));
  if (!Number.isFinite(REQUEST_TIMEOUT_MS) || REQUEST_TIMEOUT_MS <= 0) {
    fail("TS_REFERENCE_SERVER_REQUEST_TIMEOUT_MS must be a positive number of milliseconds");
  }
  const sdk = await loadSdk();
  types = sdk.types;
  const transports = new Map();
  // createMcpExpressApp checks Host against localhost names (DNS rebinding
  // protection) and parses JSON bodies.
  const app = sdk.createMcpExpressApp({ host: "127.0.0.1" });
  const jsonError = (res, status, code, message) => res.status(status).json({ jsonrpc: "2.0", error: { code, message }, id: null });

  app.post("/mcp", async (req, res) => {
    const sid = req.headers["mcp-session-id"];
    try {
      let transport = sid ? transports.get(sid) : undefined;
      if (!transport) {
        if (sid || req.body?.method !== "initialize") {
          return jsonError(res, sid ? 404 : 400, -32000, sid ? "session not found: initialize a new session" : "no Mcp-Session-Id: send initialize first");
        }
        const server = newSession(sdk, transports);
        transport = new sdk.StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          eventStore: memoryEventStore(),
          retryInterval: 5000,
          onsessioninitialized: (id) => transports.set(id, transport),
        });
        transport.onclose = () => {
          if (transport.sessionId) transports.delete(transport.sessionId);
          server.close().catch(() => {});
        };
        await server.connect(transport);
      }
      await transport.handleRequest(req, res, req.body);
    } catch (e) {
      process.stderr.write(`${NAME}: POST failed: ${e.stack ?? e}\n`);
      if (!res.headersSent) jsonError(res, 500, -32603, "internal error");
    }
  });
  const bySession = async (req, res) => {
    const sid = req.headers["mcp-session-id"];
    const transport = sid ? transports.get(sid) : undefined;
    if (!transport) {
      res.status(sid ? 404 : 400).send(sid ? "session not found" : "no Mcp-Session-Id");
      return;
    }
    try {
      await transport.handleRequest(req, res);
    } catch (e) {
      process.stderr.write(`${NAME}: ${req.method} failed: ${e.stack ?? e}\n`);
      if (!res.headersSent) res.status(500).send("internal error");
    }
  };
  app.get("/mcp", bySession);
  app.delete("/mcp", bySession);

  const listener = app.listen(port, "127.0.0.1", () => {
    process.stdout.write(`listening on http://127.0.0.1:${listener.address().port}/mcp\n`);
  });
  listener.on("error", (e) => fail(`cannot listen on 127.0.0.1:${port}: ${e.message}`));
  // Open event streams would hold a graceful close forever.
  const stop = () => process.exit(0);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => fail(e.stack ?? String(e)));
