// Package node runs one mcpgw node: Config (DefaultConfig, Validate), New,
// Start and Close. It owns the node's lifecycle and wiring: it opens the
// store and the audit log, bootstraps or joins the raft cluster (with its
// TLS), builds the data path (a gateway.Gateway over the store) from its
// Config, opens the session, admin, QUIC and Unix socket listeners with
// their connection caps, and serves the admin API. It feeds the gateway
// what only a cluster member knows: the live node count that splits rate
// limits, and the service-token signing key a new cluster creates.
//
// It must not hold the data path: admission, routing, the message pump,
// credentials, the policy view and the audit queue live in package
// gateway, which node only calls (Handler, ServeFramed, Shutdown, Close).
package node
