// Package node runs one mcpgw node: it wires storage, the cluster's write
// path, transports and the admin API, and owns the router and proxy that
// pump JSON-RPC messages between a downstream session and its upstream.
//
// The proxy works on jsonrpc.Messages, not typed sessions, so every method of
// every protocol version passes in both directions. It inspects only what it
// must: initialize, tools/list, tools/call and errors.
//
// The package knows nothing of wire framing; the transport package turns
// wires into mcp.Connections.
package node
