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
//
// Load runs open their sessions one at a time (Config.OpenConcurrency), so
// that open p50 is the latency of one open and not of a queue on a small
// machine; +open p50 subtracts direct's, which is the upstream's
// initialize, and leaves the gateway's share.
//
// To see whether the per-call cost grows with the gateway's configuration,
// run twice, the second time with Config.Routes, Credentials and Rules
// (--routes 1000 --credentials 10000 --rules 1000), and compare gateway
// µs/call and +p50: the bench creates them through the admin API before
// measuring (Scale), and every report says what the gateway held. The
// gateway's µs/call during direct's run is what it spends with no session
// open: background work that grows with its configuration shows there.
package bench
