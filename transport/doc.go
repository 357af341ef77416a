// Package transport turns wires into MCP connections. Downstream it serves
// WebSocket and streamable HTTP sessions; upstream it dials streamable HTTP,
// legacy SSE, WebSocket and stdio servers. Every path yields an
// mcp.Connection that carries jsonrpc.Messages unchanged.
//
// The package decides nothing about routing, policy or credentials: callers
// hand it the endpoint to dial and the headers or environment to inject, and
// authenticate downstream requests before a session starts.
package transport
