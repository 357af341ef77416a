// Package cluster replicates the gateway's configuration and sealed
// credentials. Every write is a typed, versioned Command; applying a command
// is deterministic and touches only local storage, so every node that applies
// the same log holds the same state.
//
// The package must not touch the network beyond the raft transport.
package cluster
