package clustertest

import (
	"context"
	"sync"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// LocalWriter applies commands straight to a store, as the FSM does on
// every node, without raft: the write path for tests of the layers above
// it (admin use cases, the admin API), which then need no cluster.
type LocalWriter struct {
	store *storage.Store

	mu      sync.Mutex
	err     error // fails every write while set
	applied int
}

// NewLocalWriter returns a LocalWriter applying to store.
func NewLocalWriter(store *storage.Store) *LocalWriter { return &LocalWriter{store: store} }

// Apply applies cmd to the store, or fails with the error Fail set.
func (w *LocalWriter) Apply(ctx context.Context, cmd cluster.Command) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := cluster.Apply(w.store, 0, cmd); err != nil {
		return err
	}
	w.applied++
	return nil
}

// Fail makes every later write fail with err (nil: succeed again), as a
// cluster without a leader or a node removed from it would.
func (w *LocalWriter) Fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// Applied returns how many commands were applied.
func (w *LocalWriter) Applied() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.applied
}
