package cluster

import "context"

// Faults injects network faults into the traffic between nodes, so that
// tests can cut links of a running cluster the way a partition or a frozen
// process would. Production never sets one.
type Faults interface {
	// Hold is called before every write to, and after every read from, an
	// authenticated connection with the node peerID. It returns nil once
	// traffic to that peer may pass again, or an error that fails the read
	// or write and closes the connection. ctx ends when the connection or
	// this node closes; Hold must return then.
	Hold(ctx context.Context, peerID string) error
}

// faultsBox lets an interface value sit in an atomic.Pointer.
type faultsBox struct{ Faults }

// SetFaults makes every connection of this node, open or future, consult
// f; nil removes it. It is for fault-injection tests and is valid after
// Open. While Hold blocks, raft sees the peer as silent: deadlines of the
// held read or write do not fire until it returns, like a link that drops
// every packet for a while.
func (r *Raft) SetFaults(f Faults) {
	if f == nil {
		r.mux.faults.Store(nil)
		return
	}
	r.mux.faults.Store(&faultsBox{f})
}
