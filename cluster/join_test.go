package cluster_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
	"github.com/mcpgw/mcpgw/internal/tcptest"
	"github.com/mcpgw/mcpgw/storage"
)

// startLoneNode opens a raft member with a certificate from the cluster's
// CA for certID that belongs to no cluster, and returns its address.
func startLoneNode(t *testing.T, c *clustertest.Cluster, certID string) string {
	t.Helper()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if err := cluster.IssueNodeCert(c.CA, tlsDir, certID, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	tlsConf, err := cluster.LoadTLS(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clustertest.Config()
	cfg.DataDir, cfg.NodeID, cfg.TLS = dir, certID, tlsConf
	store, err := storage.Open(filepath.Join(dir, storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := cluster.New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		store.Close()
	})
	return r.Addr()
}

// TestJoinRefusesNodeItCannotReach: joining an address where no node of
// the cluster answers as the named node fails before the configuration
// changes, through the leader and through a follower alike, so a typo in
// `mcpgw cluster join` cannot add a dead voter and raise the quorum.
func TestJoinRefusesNodeItCannotReach(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.WaitForLeader(t)
	follower := c.Followers(t)[0]
	foreign := c.NewForeignNode(t).Addr()
	wrongID := startLoneNode(t, c, "node-x")

	tests := []struct {
		name    string
		via     *clustertest.Node
		id      string
		addr    string
		wantErr string
	}{
		{"nothing listens, via leader", leader, "node9", tcptest.FreeAddr(t), "cannot be reached"},
		{"nothing listens, via follower", follower, "node9", tcptest.FreeAddr(t), "cannot be reached"},
		{"certificate from another CA", leader, "foreign", foreign, "cannot be reached"},
		{"certificate names another node", follower, "node-y", wrongID, `presents the certificate of node "node-x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.via.Raft().Join(context.Background(), tt.id, tt.addr)
			if !errors.Is(err, cluster.ErrPeerUnreachable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Join(%s, %s) = %v, want %v containing %q", tt.id, tt.addr, err, cluster.ErrPeerUnreachable, tt.wantErr)
			}
			st := c.WaitForLeader(t).Raft().Status()
			if got, want := len(st.Peers), 3; got != want {
				t.Fatalf("after a refused join the configuration has %d servers, want %d: %+v", got, want, st.Peers)
			}
			for _, p := range st.Peers {
				if p.ID == tt.id || p.Addr == tt.addr {
					t.Fatalf("refused node is in the configuration: %+v", p)
				}
			}
		})
	}

	// A node that does answer as itself still joins.
	n4 := c.AddNode(t)
	c.WaitForVoters(t, 4)
	if err := leader.Raft().Join(context.Background(), n4.ID, n4.Addr); err != nil {
		t.Fatalf("joining a member again: %v", err)
	}
}
