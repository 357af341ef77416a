package node

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/adminapi"
)

// TestFirstSigningKeyAfterSlowElection starts a fresh node whose first
// election takes longer than its raft apply timeout, as on a loaded
// machine or a slow disk: Start gives up waiting for a leader and serves.
// The cluster must still get its first signing key once the node leads,
// and a token issued as soon as the node answers must succeed (or be
// refused as retryable while there is no leader), never fail for want of
// a key.
func TestFirstSigningKeyAfterSlowElection(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.InsecureDev = true // startNode issues no token: there is no leader yet
		c.RaftHeartbeatTimeout, c.RaftElectionTimeout = 1500*time.Millisecond, 1500*time.Millisecond
		c.RaftApplyTimeout = 300 * time.Millisecond
	})
	if st := n.Raft().Status(); st.LeaderID != "" {
		t.Skipf("the node elected itself within %v; the slow election this test needs did not happen", n.cfg.RaftApplyTimeout)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp := adminDo(t, n, http.MethodPost, "/v1/tokens", adminapi.IssueTokenRequest{Service: "svc", Orgs: []string{"*"}, TTL: "1h"})
		if resp.StatusCode == http.StatusCreated {
			break
		}
		var e adminapi.ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("issue token on a fresh node: HTTP %d %q, want 201 (or 503 while it has no leader)", resp.StatusCode, e.Error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("issue token on a fresh node: still HTTP 503 %q after 20s", e.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "the node to be ready", func() bool { return n.Readiness().Ready })
}
