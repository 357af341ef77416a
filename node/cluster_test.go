package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// callParams calls tool with a text argument.
func callParams(tool, text string) *mcp.CallToolParams {
	return &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": text}}
}

// clusterHeartbeat is the raft heartbeat and election timeout of test
// clusters. At 150ms a machine whose two cores are shared with other
// builds (load average 15 and more) deposed healthy leaders mid-write;
// 500ms keeps elections quick (about a second) and leaders in place.
const clusterHeartbeat = 500 * time.Millisecond

// startCluster starts size gateway nodes in this process: the first
// bootstraps a cluster (creating its CA), the others get certificates from
// that CA, as `mcpgw init --ca-from` would issue, and join through it. All
// share one vault identity. It returns once every node sees size voters
// and the same leader.
func startCluster(t testing.TB, size int, mutate ...func(*Config)) []*Node {
	t.Helper()
	keys := testVaultKeys(t)
	var nodes []*Node
	for i := range size {
		dir := t.TempDir()
		id := fmt.Sprintf("gw%d", i+1)
		var join []string
		if i > 0 {
			ca, err := cluster.LoadCA(DefaultClusterTLSDir(nodes[0].cfg.DataDir))
			if err != nil {
				t.Fatal(err)
			}
			tlsDir := DefaultClusterTLSDir(dir)
			if err := os.MkdirAll(tlsDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := cluster.IssueNodeCert(ca, tlsDir, id, []string{"127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			join = []string{nodes[0].Raft().Addr()}
		}
		opts := append([]func(*Config){func(c *Config) {
			c.DataDir, c.NodeID, c.Join = dir, id, join
			c.VaultKeys, c.VaultKeyFile = keys, ""
			c.RaftHeartbeatTimeout, c.RaftElectionTimeout = clusterHeartbeat, clusterHeartbeat
			c.RaftApplyTimeout = 5 * time.Second
		}}, mutate...)
		nodes = append(nodes, startNode(t, opts...))
	}
	waitForLeader(t, nodes, size)
	return nodes
}

// waitForLeader waits until every node sees voters voters and all agree on
// a leader among them, and returns it.
func waitForLeader(t testing.TB, nodes []*Node, voters int) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, "a leader all nodes agree on", func() bool {
		leader = nil
		id := ""
		for _, n := range nodes {
			st := n.Raft().Status()
			if st.LeaderID == "" || id != "" && st.LeaderID != id || len(st.Peers) != voters {
				return false
			}
			id = st.LeaderID
			if st.State == "Leader" {
				leader = n
			}
		}
		return leader != nil
	})
	return leader
}

// others returns nodes without n.
func others(nodes []*Node, n *Node) []*Node {
	return slices.DeleteFunc(slices.Clone(nodes), func(x *Node) bool { return x == n })
}

// tokenRefused reports whether n refuses tok.
func tokenRefused(n *Node, tok string) bool {
	_, err := n.gw.VerifyToken(tok)
	return err != nil
}

// TestClusterReplicates: a route, credential, rule and token written
// through one node's admin API are in force on every node; a session
// through the third node uses the credential written on the first; a
// token revoked on the second is refused by all three.
func TestClusterReplicates(t *testing.T) {
	up := upstreamtest.New()
	secret := "cluster-upstream-secret"
	up.RequireBearer.Store(&secret)
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp" // before the nodes, so it stops after them
	nodes := startCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	route := addRoute(t, n1, storage.Route{Name: "gh", URL: url, Credential: storage.CredentialRequired})
	putCredential(t, n1, "acme", "alice", "gh", "bearer", secret)
	for _, r := range []storage.Rule{
		{ID: "allow-all", Service: "*", Org: "*", Account: "*", Route: "gh", Tool: "*", Effect: "allow"},
		{ID: "deny-slow", Service: "*", Org: "*", Account: "*", Route: "gh", Tool: "slow", Effect: "deny"},
	} {
		if resp := adminDo(t, n1, http.MethodPost, "/v1/rules", r); resp.StatusCode != http.StatusOK {
			t.Fatalf("put rule %s: HTTP %d", r.ID, resp.StatusCode)
		}
	}
	tok := issueToken(t, n1, "svc-a", []string{"acme"}, "1h")

	for _, n := range nodes {
		waitFor(t, "the writes to reach "+n.NodeID(), func() bool {
			rules, _ := n.store.Rules()
			_, err := n.store.Credential("acme", "alice", "gh")
			return err == nil && len(rules) == 2
		})
		// What the admin API lists on every node is the same.
		var infos []adminapi.CredentialInfo
		json.NewDecoder(adminDo(t, n, http.MethodGet, "/v1/credentials", nil).Body).Decode(&infos)
		if len(infos) != 1 || infos[0].Account != "alice" {
			t.Fatalf("%s lists credentials %+v, want alice's", n.NodeID(), infos)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n3.HTTPAddr()), client.WithToken(tok.Token))
	if err != nil {
		t.Fatalf("session through node 3 with a token issued on node 1: %v", err)
	}
	defer sess.Close()
	if got := callText(t, ctx, sess, "echo", "via n3"); got != "via n3" {
		t.Fatalf("echo through node 3 = %q", got)
	}
	if werr := toolError(t, ctx, sess, "slow"); werr.Code != transport.CodeForbidden || !strings.Contains(werr.Message, "deny-slow") {
		t.Fatalf("slow through node 3: %v, want the rule written on node 1 to forbid it", werr)
	}

	if resp := adminDo(t, n2, http.MethodPost, "/v1/tokens/"+tok.ID+"/revoke", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke on node 2: HTTP %d", resp.StatusCode)
	}
	for _, n := range nodes {
		waitFor(t, n.NodeID()+" to refuse the revoked token", func() bool { return tokenRefused(n, tok.Token) })
	}
	_, err = client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n3.HTTPAddr()), client.WithToken(tok.Token))
	if re := refusal(err); re == nil || re.Status != http.StatusUnauthorized {
		t.Fatalf("revoked token through node 3: %v, want 401", err)
	}

	// One signing key for the whole cluster: the joining nodes made none.
	keys, _ := n3.store.TokenKeys()
	if len(keys) != 1 {
		t.Fatalf("node 3 holds %d signing keys, want the leader's one", len(keys))
	}
}

// TestClusterLeaderFailover: closing the leader elects another; every
// acknowledged write survives, writes through the survivors succeed, and a
// client given all three addresses moves to a survivor and goes on.
func TestClusterLeaderFailover(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes, 3)
	followers := others(nodes, leader)
	route := addRoute(t, followers[0], storage.Route{Name: "up", URL: url})

	// Replicated write latency, through a follower (forwarded to the leader).
	var lat []time.Duration
	for i := range 30 {
		start := time.Now()
		addRoute(t, followers[0], storage.Route{Name: fmt.Sprintf("r%02d", i), URL: url})
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("replicated write through a follower: p50 %v, p90 %v", lat[len(lat)/2], lat[len(lat)*9/10])

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addrs := []string{"ws://" + leader.HTTPAddr()}
	for _, f := range followers {
		addrs = append(addrs, "ws://"+f.HTTPAddr())
	}
	sess, err := client.Connect(ctx, route.URL, "acme", "a1", client.WithGateway(strings.Join(addrs, ",")), client.WithToken(testToken(nodes[0])))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if got := callText(t, ctx, sess, "echo", "before"); got != "before" {
		t.Fatalf("echo before failover = %q", got)
	}
	if leader.Sessions() != 1 {
		t.Fatalf("the leader carries %d sessions, want the client's one", leader.Sessions())
	}

	start := time.Now()
	leader.Close()
	newLeader := waitForLeader(t, followers, 3)
	elected := time.Since(start)
	waitFor(t, "the session to move to a survivor", func() bool { return followers[0].Sessions()+followers[1].Sessions() == 1 })
	var werr *jsonrpc.Error
	for {
		// A call written while the client was still noticing the loss is
		// answered with transport.CodeNodeLost, which callers may retry.
		_, err := sess.CallTool(ctx, callParams("echo", "after"))
		if !errors.As(err, &werr) || werr.Code != client.CodeNodeLost {
			if err != nil {
				t.Fatalf("echo after failover: %v", err)
			}
			break
		}
	}
	t.Logf("leader closed: new leader %s after %v, session answering through a survivor after %v", newLeader.NodeID(), elected, time.Since(start))

	for _, f := range followers {
		// Every acknowledged write is committed; a survivor that was behind
		// gets it from the new leader.
		waitFor(t, f.NodeID()+" to hold all 31 acknowledged routes", func() bool {
			routes, err := f.store.Routes()
			return err == nil && len(routes) == 31
		})
	}
	for _, f := range followers {
		addRoute(t, f, storage.Route{Name: "after-" + f.NodeID(), URL: url})
	}
	// The closed node shows as down once the liveness window has passed.
	waitFor(t, "the new leader to report the closed node down", func() bool {
		for _, p := range newLeader.Raft().Status().Peers {
			if p.ID == leader.NodeID() {
				return p.Health == cluster.HealthDown
			}
		}
		return false
	})
}

// TestClusterRateLimitShare: a cluster-wide burst of 6 gives each of 3
// live nodes a burst of 2; once a node leaves, each of the 2 left gets 3.
func TestClusterRateLimitShare(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	nodes := startCluster(t, 3)
	n := nodes[0]
	route := addRoute(t, n, storage.Route{Name: "up", URL: url})
	// A rate this low refills nothing while the test runs.
	l := storage.Limit{ID: "echo-6", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "echo", Rate: 0.001, Burst: 6}
	if resp := adminDo(t, n, http.MethodPost, "/v1/limits", l); resp.StatusCode != http.StatusOK {
		t.Fatalf("put limit: HTTP %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	passes := func(account string) int {
		t.Helper()
		sess, err := connect(t, ctx, n, route.URL, "acme", account)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			res, err := sess.CallTool(ctx, callParams("echo", "x"))
			var werr *jsonrpc.Error
			if errors.As(err, &werr) && werr.Code == transport.CodeRateLimited {
				return i
			}
			if err != nil || res.IsError {
				t.Fatalf("call %d: %v %v", i+1, err, res)
			}
			if i > 10 {
				t.Fatal("no rate limit after 10 calls")
			}
		}
	}

	waitFor(t, "the limit to be shared by 3 nodes", func() bool { return n.gw.LiveNodes() == 3 })
	if got, want := passes("a1"), 2; got != want {
		t.Fatalf("with 3 live nodes %d calls passed through one node, want %d", got, want)
	}

	gone := nodes[2]
	if resp := adminDo(t, n, http.MethodPost, "/v1/cluster/remove", adminapi.ClusterRemoveRequest{ID: gone.NodeID()}); resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("remove %s: HTTP %d %s", gone.NodeID(), resp.StatusCode, body)
	}
	gone.Close()
	waitFor(t, "the limit to be re-split among 2 nodes", func() bool { return n.gw.LiveNodes() == 2 })
	if got, want := passes("a2"), 3; got != want {
		t.Fatalf("with 2 live nodes %d calls passed through one node, want %d", got, want)
	}
}

// TestClusterAdminErrors: the cluster endpoints answer, and a write
// through a node that cannot reach a quorum is refused with 503 and
// Retry-After, not a 500.
func TestClusterAdminErrors(t *testing.T) {
	nodes := startCluster(t, 2, func(c *Config) { c.RaftApplyTimeout = time.Second })
	var st cluster.Status
	json.NewDecoder(adminDo(t, nodes[1], http.MethodGet, "/v1/cluster/status", nil).Body).Decode(&st)
	if len(st.Peers) != 2 || st.LeaderID == "" || st.ID != "gw2" {
		t.Fatalf("status on gw2: %+v", st)
	}
	if resp := adminDo(t, nodes[1], http.MethodPost, "/v1/cluster/join", adminapi.ClusterJoinRequest{ID: "x"}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("join without an address: HTTP %d, want 400", resp.StatusCode)
	}
	// Two voters: with one gone the other has no quorum.
	nodes[0].Close()
	resp := adminDoOnce(t, nodes[1], http.MethodPost, "/v1/routes", storage.Route{Name: "r", URL: "http://127.0.0.1:1/mcp"})
	var e adminapi.ErrorBody
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(e.Error, "leader") {
		t.Fatalf("write without quorum: HTTP %d Retry-After %q %q, want 503 with Retry-After naming the missing leader", resp.StatusCode, resp.Header.Get("Retry-After"), e.Error)
	}
}

// TestBackupHasNoPlaintext: GET /v1/backup is a valid state database
// holding the credential only sealed.
func TestBackupHasNoPlaintext(t *testing.T) {
	n := startNode(t)
	secret := "plaintext-must-not-leak-4f1c"
	addRoute(t, n, storage.Route{Name: "gh", URL: "http://127.0.0.1:1/mcp", Credential: storage.CredentialRequired})
	putCredential(t, n, "acme", "alice", "gh", "bearer", secret)
	resp := adminDo(t, n, http.MethodGet, "/v1/backup", nil)
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: HTTP %d, %v", resp.StatusCode, err)
	}
	if bytes.Contains(data, []byte(secret)) {
		t.Fatal("the backup holds the credential in plaintext")
	}
	path := filepath.Join(t.TempDir(), storage.StateFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(path)
	if err != nil {
		t.Fatalf("backup is not a state database: %v", err)
	}
	defer s.Close()
	c, err := s.Credential("acme", "alice", "gh")
	if err != nil {
		t.Fatalf("backup lacks the credential: %v", err)
	}
	cred, err := n.vaultKeys().Unseal(c.Sealed, vault.AAD{Org: "acme", Account: "alice", Route: "gh"})
	if err != nil || cred.Token != secret {
		t.Fatalf("the backup's sealed credential does not unseal to the secret: %v", err)
	}
}
