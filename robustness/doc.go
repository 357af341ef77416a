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
// read: everything committed before the read started is applied there.
// Local reads ask any node's admin API directly, which confirms with the
// leader that its copy is current first, and refuses the read (503,
// Mcpgw-Consistency: unconfirmed) when it cannot, as on a node cut off
// from the majority. Both kinds must be linearizable: a violation of
// either fails the test. A refused read observed nothing and is not
// checked.
package robustness
