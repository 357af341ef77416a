// Package bench is mcpgw's load generator: it opens N MCP sessions to an
// echo upstream, directly and through a gateway over each downstream
// transport, drives tools/call on them (as fast as they answer, or at a
// fixed rate) and reports throughput, latency percentiles, errors, the
// latency the gateway adds, CPU per call of every process and memory per
// idle session.
//
// Unless given addresses it starts its own upstream and gateway as child
// processes of the mcpgw binary, so that /proc can tell their CPU and
// memory apart from the load generator's. It speaks to the gateway only as
// a client does (the client package, the go-sdk, the admin HTTP API): it
// must not depend on the gateway's internals (node).
package bench
