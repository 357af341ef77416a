package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// TestReadYourWritesAcrossNodes: a route added through one node is there
// at once for a credential stored through another, by a caller that
// carries nothing over (a new CLI process per command), and for a session
// opened through the node that took the write. Every answer says the
// index it reflects.
func TestReadYourWritesAcrossNodes(t *testing.T) {
	up := upstreamtest.New()
	base := upstreamtest.StartHTTP(t, up.StreamableHandler())
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes, 3)
	followers := others(nodes, leader)
	writer, reader := followers[0], followers[1]
	ctx := testContext(t, 60*time.Second)
	for i := range 20 {
		name := fmt.Sprintf("rw%02d", i)
		url := base + "/" + name // a target only this route allows
		resp := adminDo(t, writer, http.MethodPost, "/v1/routes", storage.Route{Name: name, URL: url})
		if resp.StatusCode != http.StatusCreated {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("add route %s: HTTP %d: %s", name, resp.StatusCode, body)
		}
		index, err := strconv.ParseUint(resp.Header.Get(adminapi.IndexHeader), 10, 64)
		if err != nil || index == 0 {
			t.Fatalf("add route %s: %s %q, want the write's raft index", name, adminapi.IndexHeader, resp.Header.Get(adminapi.IndexHeader))
		}
		resp = adminDo(t, reader, http.MethodPut, "/v1/credentials", adminapi.PutCredentialRequest{Org: "acme", Account: "a1", Route: name, Kind: "bearer", Secret: "s3cret"})
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("put credential for route %s through another node right after adding it: HTTP %d: %s", name, resp.StatusCode, body)
		}
		if got, _ := strconv.ParseUint(resp.Header.Get(adminapi.IndexHeader), 10, 64); got <= index {
			t.Fatalf("credential write answered %s %d, want past the route's %d", adminapi.IndexHeader, got, index)
		}
		// A session through the writer right after its write.
		sess, err := client.Connect(ctx, url, "acme", "a1", client.WithGateway("ws://"+writer.HTTPAddr()), client.WithToken(testToken(nodes[0])))
		if err != nil {
			t.Fatalf("session on route %s through the node that added it: %v", name, err)
		}
		sess.Close()
	}
}

// TestAdminClientWaitsForTheIndexItSaw: a request carrying a raft index
// the node has not applied waits for it, and is refused with 503 saying so
// when it does not come in time.
func TestAdminClientWaitsForTheIndexItSaw(t *testing.T) {
	n := startNode(t)
	a := adminapi.NewClient(n.AdminAddr(), n.AdminToken(), nil)
	var routes []adminapi.Route
	if err := a.Do(context.Background(), http.MethodGet, "/v1/routes", nil, &routes); err != nil {
		t.Fatal(err)
	}
	if a.Index() == 0 {
		t.Fatalf("client saw index 0 after an answer, want the node's")
	}
	req, _ := http.NewRequest(http.MethodGet, n.AdminURL()+"/v1/routes", nil)
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	req.Header.Set(adminapi.MinIndexHeader, strconv.FormatUint(a.Index()+1000, 10))
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e adminapi.ErrorBody
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Error, "has not caught up to index") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("request past the node's index: HTTP %d %q, want 503 saying the node has not caught up", resp.StatusCode, e.Error)
	}
	if took := time.Since(start); took < adminapi.DefaultMinIndexWait {
		t.Fatalf("refused after %v, want a wait of %v first", took, adminapi.DefaultMinIndexWait)
	}
}

func readyz(t *testing.T, n *Node) (int, Readiness) {
	t.Helper()
	resp, err := http.Get(n.AdminURL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd Readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, rd
}

// restartNode starts a closed cluster node again from its data dir, on its
// raft address, as the same process would after a restart.
func restartNode(t *testing.T, old *Node, raftAddr string) *Node {
	t.Helper()
	cfg := old.cfg
	cfg.RaftAddr, cfg.Join = raftAddr, nil
	cfg.HTTPAddr, cfg.AdminAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.UnixPath = ""
	cfg.RaftApplyTimeout = time.Second // Start waits this long for a leader
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("restart %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestReadyz: /readyz answers 503 without a quorum and on a node that
// started and has not caught up with the cluster, which also refuses
// sessions until then; /healthz says ok throughout. The raft metrics
// exist and follow.
func TestReadyz(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes, 3)
	addRoute(t, leader, storage.Route{Name: "up", URL: url})
	for _, n := range nodes {
		waitFor(t, n.NodeID()+" to be ready", func() bool { code, _ := readyz(t, n); return code == http.StatusOK })
		if got := metricValue(t, n, "mcpgw_raft_state", "state", n.Raft().Status().State); got != 1 {
			t.Fatalf("%s mcpgw_raft_state{state=%q}=%v, want 1", n.NodeID(), n.Raft().Status().State, got)
		}
		if got := metricValue(t, n, "mcpgw_raft_term"); got < 1 {
			t.Fatalf("%s mcpgw_raft_term=%v", n.NodeID(), got)
		}
	}
	if got := metricValue(t, leader, "mcpgw_raft_commit_index"); got < 1 {
		t.Fatalf("mcpgw_raft_commit_index=%v", got)
	}
	followers := others(nodes, leader)
	if got := metricValue(t, followers[0], "mcpgw_raft_last_contact_seconds", "peer", leader.NodeID()); got > 5 {
		t.Fatalf("follower last heard from the leader %vs ago", got)
	}

	// Without quorum.
	a, b, c := nodes[0], nodes[1], nodes[2]
	raftAddrs := map[*Node]string{a: a.Raft().Addr(), b: b.Raft().Addr(), c: c.Raft().Addr()}
	b.Close()
	c.Close()
	waitFor(t, "the lone node to report no leader", func() bool {
		code, rd := readyz(t, a)
		return code == http.StatusServiceUnavailable && !rd.Ready && strings.Contains(strings.Join(rd.Reasons, "; "), "no raft leader")
	})
	resp, err := http.Get(a.AdminURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz without quorum: HTTP %d, want 200: the process is alive", resp.StatusCode)
	}

	// A node that starts alone cannot catch up: not ready, no sessions.
	a.Close()
	a2 := restartNode(t, a, raftAddrs[a])
	code, rd := readyz(t, a2)
	if reasons := strings.Join(rd.Reasons, "; "); code != http.StatusServiceUnavailable || !strings.Contains(reasons, "catching up") || !strings.Contains(reasons, "no raft leader") {
		t.Fatalf("restarted alone: /readyz %d %+v, want 503 for no leader and catching up", code, rd)
	}
	ctx := testContext(t, 60*time.Second)
	_, err = client.Connect(ctx, url, "acme", "a1", client.WithGateway("ws://"+a2.HTTPAddr()), client.WithToken(testToken(nodes[0])))
	var re *transport.RefusalError
	if !errors.As(err, &re) || re.Code != transport.CodeOverloaded || !strings.Contains(re.Message, "catching up") {
		t.Fatalf("session on a node not caught up: %v, want a refusal saying it is catching up", err)
	}

	// Once a peer is back there is a leader and the node catches up.
	restartNode(t, b, raftAddrs[b])
	waitFor(t, "the restarted node to be ready", func() bool { code, _ := readyz(t, a2); return code == http.StatusOK })
	sess, err := client.Connect(ctx, url, "acme", "a1", client.WithGateway("ws://"+a2.HTTPAddr()), client.WithToken(testToken(nodes[0])))
	if err != nil {
		t.Fatalf("session once caught up: %v", err)
	}
	defer sess.Close()
	if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, a2, "mcpgw_raft_leader_changes_total"); got < 1 {
		t.Fatalf("mcpgw_raft_leader_changes_total=%v after a leader was found", got)
	}
}
