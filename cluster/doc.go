// Package cluster replicates the gateway's configuration and sealed
// credentials. Every write is a typed, versioned Command; applying a command
// is deterministic and touches only local storage, so every node that applies
// the same log holds the same state.
//
// Raft (hashicorp/raft) orders the commands: Raft.Apply commits one on the
// leader and returns the error applying it produced; on a follower it is
// forwarded to the leader. The raft log and stable store live in
// <data-dir>/raft/raft.db (raft-boltdb), snapshots beside it; a snapshot is
// a consistent copy of the state database.
//
// One TCP listener carries everything between nodes, under mutual TLS with
// certificates from the cluster CA (NewCA, IssueNodeCert, LoadTLS): the
// ALPN protocol negotiated in the handshake picks raft's own RPCs or the
// small request protocol of forwarded writes and joins. A peer without a
// certificate from the CA gets no further than the handshake.
//
// The package must not touch the network beyond the raft transport.
package cluster
