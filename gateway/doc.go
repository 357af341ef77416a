// Package gateway is mcpgw's data path: it admits sessions, resolves them
// to routes, injects credentials, applies policy, rate limits and caps, and
// pumps JSON-RPC messages between a downstream session and its upstream,
// auditing as it goes.
//
// It owns session admission (sessions.go), the router (router.go), the
// message pump (proxy.go), the credential source (credentials.go), the
// re-establishment of stdio and WebSocket upstream connections on a
// rotated credential (reconnect.go), the policy view built from replicated state (policyview.go), the watch that
// ends sessions whose token stopped being valid (tokenwatch.go), the audit
// queue (audit.go) and the data path's metrics (metrics.go).
//
// A Gateway works over explicit dependencies: a State it reads the
// replicated configuration from (a *storage.Store satisfies it), the vault
// keys, and Options (clock, logger, Prometheus registerer, audit log,
// limits). It serves downstream sessions through Handler (WebSocket and
// streamable HTTP) and ServeFramed (a QUIC stream or a Unix socket
// connection).
//
// It must not import node, cluster or anything that listens: it never
// writes replicated state, opens listeners or files, or knows whether it
// runs in a cluster. The node package builds it and feeds it what it needs
// (the live node count that splits rate limits, for one).
//
// The proxy works on jsonrpc.Messages, not typed sessions, so every method
// of every protocol version passes in both directions. It inspects only
// what it must: initialize, tools/list, tools/call and errors.
package gateway
