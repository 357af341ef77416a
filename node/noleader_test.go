package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// partition is a cluster.Faults that cuts every raft link of one node
// while on is set: each read or write on a link fails, as when the node's
// network is unplugged.
type partition struct {
	self, cutOff string
	on           *atomic.Bool
}

var _ cluster.Faults = partition{}

func (p partition) Hold(_ context.Context, peer string) error {
	if p.on.Load() && (p.self == p.cutOff || peer == p.cutOff) {
		return errors.New("partitioned")
	}
	return nil
}

// getAdmin sends GET path to n's admin API with the extra header pairs.
func getAdmin(t *testing.T, n *Node, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.AdminURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestNoLeaderReadsRefused: a node cut off from the majority knows no
// leader and refuses admin reads with 503 and a message saying why and
// what to do, rather than answer from a copy that may be stale; it answers
// an explicit stale read, marked as such; a client given several nodes
// reads from a healthy one; its status, /readyz and /healthz keep
// answering. Once the partition heals it reads through the barrier again.
func TestNoLeaderReadsRefused(t *testing.T) {
	// One admin token on every node, as an operator sets up for a client
	// given several of them.
	const adminToken = "one-admin-token-for-every-node-of-this-cluster"
	nodes := startCluster(t, 3, func(c *Config) {
		if err := os.WriteFile(filepath.Join(c.DataDir, AdminTokenFile), []byte(adminToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	leader := waitForLeader(t, nodes, 3)
	cut := others(nodes, leader)[0]
	healthy := others(nodes, cut)
	addRoute(t, leader, storage.Route{Name: "before", URL: "http://127.0.0.1:9/before"})
	waitFor(t, "the route on every node", func() bool {
		_, err := cut.store.Route("before")
		return err == nil
	})

	var on atomic.Bool
	on.Store(true)
	for _, n := range nodes {
		n.Raft().SetFaults(partition{self: n.NodeID(), cutOff: cut.NodeID(), on: &on})
	}
	t.Cleanup(func() { on.Store(false) })
	deadline := time.Now().Add(20 * time.Second)
	for cut.Raft().Status().LeaderID != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the cut-off node still knows leader %q", cut.Raft().Status().LeaderID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A write the majority takes meanwhile: the cut-off copy lacks it.
	addRoute(t, waitForLeader(t, healthy, 3), storage.Route{Name: "during", URL: "http://127.0.0.1:9/during"})

	const wantMsg = "this node knows no leader, so it cannot confirm its copy is current: retry on another node, or ask for the local copy explicitly with --stale (header Mcpgw-Consistency: stale)"
	for _, path := range []string{"/v1/routes", "/v1/tokens", "/v1/rules", "/v1/limits", "/v1/credentials", "/v1/vault/status"} {
		resp, body := getAdmin(t, cut, path)
		var e adminapi.ErrorBody
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || e.Error != wantMsg || e.Code != adminapi.CodeNotCurrent ||
			resp.Header.Get(adminapi.ConsistencyHeader) != adminapi.ConsistencyUnconfirmed || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("GET %s on a node without a leader: HTTP %d %s: %+v (headers %v), want 503 %q code %q", path, resp.StatusCode, resp.Header.Get(adminapi.ConsistencyHeader), e, resp.Header, wantMsg, adminapi.CodeNotCurrent)
		}
	}

	// The explicit stale read answers from the local copy, marked.
	resp, body := getAdmin(t, cut, "/v1/routes", adminapi.ConsistencyHeader, adminapi.ConsistencyStale)
	var routes []adminapi.Route
	if err := json.Unmarshal(body, &routes); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("stale read: HTTP %d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get(adminapi.ConsistencyHeader); got != adminapi.ConsistencyStale {
		t.Fatalf("stale read answered %s %q, want %q", adminapi.ConsistencyHeader, got, adminapi.ConsistencyStale)
	}
	if len(routes) != 1 || routes[0].Name != "before" {
		t.Fatalf("stale read = %+v, want the local copy: route before only", routes)
	}
	a := adminapi.NewClient(cut.AdminURL(), cut.AdminToken(), &adminapi.ClientOptions{Stale: true})
	if err := a.Do(context.Background(), http.MethodGet, "/v1/routes", nil, &routes); err != nil || !a.AnsweredStale() {
		t.Fatalf("client with Stale: %v, stale %v", err, a.AnsweredStale())
	}
	// A write may not ask for it.
	req, _ := http.NewRequest(http.MethodDelete, cut.AdminURL()+"/v1/routes/before", nil)
	req.Header.Set("Authorization", "Bearer "+cut.AdminToken())
	req.Header.Set(adminapi.ConsistencyHeader, adminapi.ConsistencyStale)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("stale delete: %v %v, want 400", resp, err)
	} else {
		resp.Body.Close()
	}

	// A client given the cut-off node first reads, and writes, through a
	// healthy one.
	a = adminapi.NewClient(cut.AdminURL()+","+healthy[0].AdminURL()+","+healthy[1].AdminURL(), cut.AdminToken(), nil)
	routes = nil
	if err := a.Do(context.Background(), http.MethodGet, "/v1/routes", nil, &routes); err != nil {
		t.Fatalf("read through the client with the cut-off node first: %v", err)
	}
	if len(routes) != 2 || a.Base() == cut.AdminURL() || a.AnsweredStale() {
		t.Fatalf("client read %+v from %s (stale %v), want both routes from a healthy node", routes, a.Base(), a.AnsweredStale())
	}
	a = adminapi.NewClient(cut.AdminURL()+","+healthy[0].AdminURL(), cut.AdminToken(), nil)
	if err := a.Do(context.Background(), http.MethodPost, "/v1/routes", adminapi.Route{Name: "failover", URL: "http://127.0.0.1:9/failover"}, nil); err != nil {
		t.Fatalf("write through the client with the cut-off node first: %v", err)
	}
	// Alone, the refusal reaches the caller, typed.
	a = adminapi.NewClient(cut.AdminURL(), cut.AdminToken(), nil)
	var se *adminapi.StatusError
	if err := a.Do(context.Background(), http.MethodGet, "/v1/routes", nil, &routes); !errors.As(err, &se) || se.Code != adminapi.CodeNotCurrent || se.Status != http.StatusServiceUnavailable || se.Message != wantMsg {
		t.Fatalf("read through a client of the cut-off node alone: %v, want the no-leader refusal", err)
	}

	// The node's own view keeps answering.
	resp, body = getAdmin(t, cut, "/v1/cluster/status")
	var st adminapi.ClusterStatus
	if err := json.Unmarshal(body, &st); resp.StatusCode != http.StatusOK || err != nil || st.LeaderID != "" {
		t.Fatalf("cluster status without a leader: HTTP %d %s", resp.StatusCode, body)
	}
	if code, rd := readyz(t, cut); code != http.StatusServiceUnavailable || rd.Ready {
		t.Fatalf("/readyz without a leader: %d %+v, want 503", code, rd)
	}

	on.Store(false)
	waitFor(t, "the healed node to read through the barrier", func() bool {
		resp, body := getAdmin(t, cut, "/v1/routes")
		routes = nil
		return resp.StatusCode == http.StatusOK && json.Unmarshal(body, &routes) == nil && len(routes) == 3 && resp.Header.Get(adminapi.ConsistencyHeader) == ""
	})
}
