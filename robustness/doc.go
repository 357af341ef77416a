// Package robustness holds the cluster's linearizability test, in the style
// of etcd's robustness tests and Jepsen: a real three-node gateway cluster
// in one process, concurrent clients writing and reading admin state
// (routes, service tokens) through random nodes over the admin HTTP API,
// and a nemesis that stops and restarts nodes, freezes them and cuts raft
// links between them. The recorded history is checked with porcupine
// against a key-value model of that state, and once the faults heal every
// acknowledged write must be on every node.
//
// The package has no code outside its tests. It drives nodes only through
// package node's public API and the admin API as a client sees it, so it
// keeps testing the same behaviour however the packages behind it change.
//
//	go test ./robustness/                      one short randomized run (CI)
//	go test ./robustness/ -seed 42             the same run again
//	go test ./robustness/ -long -timeout 0     many runs (MCPGW_ROBUSTNESS_RUNS, default 100)
//
// Reads are checked in two ways. Barrier reads first write a marker
// through the node, wait until the node's local state shows it and then
// read: everything committed before the read started is applied there, so
// these reads must be linearizable and a violation fails the test. Local
// reads ask any node's admin API directly. It catches up with the leader
// first, but a node that knows no leader (cut off from the majority)
// answers from its local copy, which may be stale; so their violations are
// reported, not fatal, unless MCPGW_ROBUSTNESS_STRICT_LOCAL=1.
package robustness
