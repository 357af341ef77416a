package cluster

import (
	"context"

	"github.com/mcpgw/mcpgw/storage"
)

// Local applies commands straight to the local store. It serves a node that
// runs without raft (tests of components above the cluster); a lone node in
// production is a raft cluster of one.
type Local struct {
	Store *storage.Store
}

// Apply applies cmd to the store.
func (l *Local) Apply(_ context.Context, cmd Command) error {
	return Apply(l.Store, 0, cmd)
}
