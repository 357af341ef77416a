package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
)

// freeze holds all of a node's traffic until thawed.
type freeze struct {
	once  sync.Once
	thawC chan struct{}
}

func newFreeze() *freeze { return &freeze{thawC: make(chan struct{})} }

func (f *freeze) thaw() { f.once.Do(func() { close(f.thawC) }) }

func (f *freeze) Hold(ctx context.Context, peer string) error {
	select {
	case <-f.thawC:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ cluster.Faults = (*freeze)(nil)

// TestFaultsFreezeALeader: a leader whose traffic is held loses the
// cluster to a new leader without its connections being closed, catches
// up once released, and a node closed while its traffic is held closes
// instead of waiting for the release.
func TestFaultsFreezeALeader(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	old := c.WaitForLeader(t)
	f := newFreeze()
	old.Raft().SetFaults(f)
	defer f.thaw()

	clustertest.Eventually(t, clustertest.Wait, func() error {
		for _, n := range c.Nodes {
			if n != old && n.Raft().Status().State == "Leader" {
				return nil
			}
		}
		return fmt.Errorf("no new leader among the other nodes")
	})
	var other *clustertest.Node
	for _, n := range c.Nodes {
		if n != old {
			other = n
		}
	}
	apply(t, other, route("while-frozen"))
	if routeNames(t, old)["while-frozen"] {
		t.Fatal("the frozen node applied a write made while its traffic was held")
	}

	f.thaw()
	old.Raft().SetFaults(nil)
	waitRoutes(t, []string{"while-frozen"}, old)

	// Closing a node whose traffic is held must not wait for the release.
	g := newFreeze()
	old.Raft().SetFaults(g)
	c.Kill(old.Index)
}
