// Package transport turns wires into MCP connections. Downstream it serves
// WebSocket, streamable HTTP, QUIC and Unix socket sessions; upstream it
// dials streamable HTTP, legacy SSE, WebSocket and stdio servers. Every path
// yields an mcp.Connection that carries jsonrpc.Messages unchanged.
//
// The package decides nothing about routing, policy or credentials: callers
// hand it the endpoint to dial and the headers or environment to inject, and
// authenticate downstream requests before a session starts.
//
// # Framed streams (QUIC and Unix sockets)
//
// A QUIC connection (ALPN "mcp") carries one MCP session per bidirectional
// stream, so a service multiplexes many sessions on one handshake; a Unix
// socket connection carries one session. Both speak the same framing:
//
//  1. The client sends one open frame, a JSON object ended by "\n", of at
//     most 64 KiB (MaxOpenFrameBytes):
//
//     {"target":"https://mcp.example.com/mcp","org":"o","account":"a","token":"…"}
//
//     A named route may replace the target: {"route":"linear",…}. Each
//     key appears once, spelled exactly: a duplicate or a case variant
//     ("Token") is refused, so that no two readers of a frame disagree on
//     who asks for what. The frame must arrive within the open deadline
//     (10 s unless configured), or the stream is refused.
//
//  2. The gateway answers with one line: {"ok":true}, or
//     {"ok":false,"code":<JSON-RPC error code>,"error":"<what to do>"} and
//     closes the stream.
//
//  3. Then both sides send newline-delimited JSON-RPC 2.0, one message per
//     line. A line over the message cap is answered with a JSON-RPC error
//     (id null) and skipped through its newline; a line that is not JSON-RPC
//     is answered with a parse error (id null). A message whose envelope
//     has a duplicate or case-variant key (two "id"s, "Method") is answered
//     with -32600. Either way the session goes on.
//
// Closing a stream ends its session only; resetting it (RESET_STREAM or
// STOP_SENDING) does the same. Closing the QUIC connection ends all of its
// sessions.
//
// # Upstream HTTP connections
//
// The gateway's own streamable HTTP client (streamable_client.go) sends a
// call's POST to a plain-HTTP upstream on a connection it keeps
// (kept_conn.go), writing the request and reading the answer on the
// goroutine that sends the call, and holds a session's standalone event
// stream on a connection of its own (stream_conn.go). Both write and read
// with net/http's own request writer and response reader; TLS upstreams,
// and every other request, go through net/http's transport. Above all of
// them, injectingTransport decides where a request may go and injects the
// route's credential. What the client receives it hands to the session on
// the goroutine that read it (Deliverer).
package transport
