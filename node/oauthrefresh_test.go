package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/gateway"
	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// oauthCluster is a 3-node cluster with a route to an OAuth-protected MCP
// server, its authorization server, and a service token.
type oauthCluster struct {
	nodes []*Node
	as    *oauthtest.AS
	up    *oauthtest.MCP
	route storage.Route
	token string
}

// startOAuthCluster starts the cluster, its public URL a load balancer in
// front of node 1, and a route "docs" to an MCP server built by mcp.
func startOAuthCluster(t *testing.T, mcpOpts oauthtest.MCPOpts, asEdit func(*oauthtest.AS)) *oauthCluster {
	t.Helper()
	as := oauthtest.NewAS(t)
	if asEdit != nil {
		as.Update(asEdit)
	}
	if mcpOpts.PRMPath == "" {
		mcpOpts.PRMPath, mcpOpts.Advertise = "/.well-known/oauth-protected-resource/mcp", true
	}
	up := oauthtest.NewMCPWith(t, as, mcpOpts)
	var target atomic.Pointer[url.URL]
	lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(lb.Close)
	nodes := startCluster(t, 3, func(c *Config) { c.PublicURL, c.OAuthAllowLoopback = lb.URL, true })
	u, _ := url.Parse(nodes[0].HTTPURL())
	target.Store(u)
	tr := storage.TransportStreamable
	if mcpOpts.SSE {
		tr = storage.TransportSSE
	}
	route := addRoute(t, nodes[0], storage.Route{Name: "docs", URL: up.URL(), Transport: tr, Credential: storage.CredentialRequired})
	rule := storage.Rule{ID: "allow-all", Service: "*", Org: "*", Account: "*", Route: "docs", Tool: "*", Effect: "allow"}
	if resp := adminDo(t, nodes[0], http.MethodPost, "/v1/rules", rule); resp.StatusCode != http.StatusOK {
		t.Fatalf("put rule: HTTP %d", resp.StatusCode)
	}
	tok := issueToken(t, nodes[0], "svc-a", []string{"acme"}, "1h")
	return &oauthCluster{nodes: nodes, as: as, up: up, route: route, token: tok.Token}
}

// consent asks node n for a consent URL for account, approves it in a
// "browser" and waits until every node holds the credential it stored. It
// returns the consent URL.
func (c *oauthCluster) consent(t *testing.T, n *Node, account string) string {
	t.Helper()
	before, _ := n.store.Credential("acme", account, "docs")
	resp := adminDo(t, n, http.MethodPost, "/v1/oauth/url", adminapi.OAuthURLRequest{Org: "acme", Account: account, Route: "docs"})
	var consent adminapi.OAuthURL
	json.NewDecoder(resp.Body).Decode(&consent)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("oauth url: HTTP %d", resp.StatusCode)
	}
	res, err := http.Get(consent.URL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(page), "Connected") {
		t.Fatalf("callback page: HTTP %d:\n%s", res.StatusCode, page)
	}
	for _, m := range c.nodes {
		waitFor(t, "the new credential on every node", func() bool {
			cr, err := m.store.Credential("acme", account, "docs")
			return err == nil && cr.OAuth != nil && string(cr.Sealed) != string(before.Sealed)
		})
	}
	return consent.URL
}

func (c *oauthCluster) session(t *testing.T, ctx context.Context, n *Node, account string) *mcp.ClientSession {
	t.Helper()
	sess, err := connect(t, ctx, n, c.route.URL, "acme", account, client.WithToken(c.token))
	if err != nil {
		t.Fatalf("session through %s: %v", n.NodeID(), err)
	}
	return sess
}

func (c *oauthCluster) status(t *testing.T, n *Node, account string) adminapi.OAuthStatus {
	t.Helper()
	resp := adminDo(t, n, http.MethodGet, "/v1/oauth/status?org=acme&account="+account+"&route=docs", nil)
	defer resp.Body.Close()
	var st adminapi.OAuthStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("oauth status on %s: HTTP %d, %v", n.NodeID(), resp.StatusCode, err)
	}
	return st
}

// auditOf returns n's audit records of kind for account, polling until
// want of them are there.
func auditOf(t *testing.T, n *Node, kind storage.AuditKind, account string, want int) []storage.AuditRecord {
	t.Helper()
	var recs []storage.AuditRecord
	poll(t, 20*time.Second, "audit records on "+n.NodeID(), func() bool {
		var err error
		recs, err = n.audit.log.Query(storage.AuditQuery{Kind: kind, Org: "acme", Account: account, OldestFirst: true})
		return err == nil && len(recs) >= want
	})
	return recs
}

// refreshAudit waits until the nodes' audit logs hold want refresh
// records for account between them and returns them by node id.
func refreshAudit(t *testing.T, nodes []*Node, account string, want int) map[string][]storage.AuditRecord {
	t.Helper()
	by := map[string][]storage.AuditRecord{}
	poll(t, 20*time.Second, "refresh audit records", func() bool {
		total := 0
		for _, n := range nodes {
			recs, err := n.audit.log.Query(storage.AuditQuery{Kind: storage.AuditOAuthRefresh, Org: "acme", Account: account, OldestFirst: true})
			if err != nil {
				return false
			}
			by[n.NodeID()] = recs
			total += len(recs)
		}
		return total >= want
	})
	return by
}

// leadership is the leader and term the nodes agree on now: a test that
// checks "only the leader did it" compares it before and after, since on
// a loaded machine leadership may move meanwhile, and then another node
// rightly does the work.
func leadership(t *testing.T, nodes []*Node) (*Node, uint64) {
	t.Helper()
	l := waitForLeader(t, nodes, 3)
	return l, l.Raft().Status().Term
}

// poll waits for cond with a deadline generous enough for a loaded machine.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	clocktest.Poll(t, d, what, cond)
}

// callAll makes calls echo calls on every session at once and returns
// their errors.
func callAll(ctx context.Context, sessions []*mcp.ClientSession, calls int) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(sessions)*calls)
	for i, s := range sessions {
		for j := range calls {
			wg.Add(1)
			go func(k int, s *mcp.ClientSession) {
				defer wg.Done()
				res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
				switch {
				case err != nil:
					errs[k] = err
				case res.IsError:
					errs[k] = errors.New(res.Content[0].(*mcp.TextContent).Text)
				}
			}(i*calls+j, s)
		}
	}
	wg.Wait()
	return errs
}

// TestOAuthRefreshOnceAcrossCluster: when the access token expires while
// sessions on all three nodes call at once, every call gets a 401, the
// authorization server sees exactly one refresh, and every call succeeds
// on the new token. The refresh token rotates each time and the old one is
// never sent again; a transient token endpoint failure is retried and
// marks nothing.
func TestOAuthRefreshOnceAcrossCluster(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{}, nil)
	c.consent(t, c.nodes[1], "alice")
	leader, term := leadership(t, c.nodes)
	ctx := testContext(t, 60*time.Second)
	var sessions []*mcp.ClientSession
	for _, n := range c.nodes {
		s := c.session(t, ctx, n, "alice")
		if got := callText(t, ctx, s, "echo", "before"); got != "before" {
			t.Fatalf("echo = %q", got)
		}
		sessions = append(sessions, s)
	}
	if got := c.as.RefreshGrants(); got != 0 {
		t.Fatalf("refresh grants before expiry = %d, want 0", got)
	}

	for round, fail := range []int{0, 1} {
		c.as.Update(func(a *oauthtest.AS) { a.FailTokens = fail })
		c.as.ExpireAccess()
		start := time.Now()
		for i, err := range callAll(ctx, sessions, 3) {
			if err != nil {
				t.Fatalf("round %d: call %d after expiry: %v", round, i, err)
			}
		}
		t.Logf("round %d: 9 calls on 3 nodes through one refresh (%d transient failures first) in %v", round, fail, time.Since(start))
	}
	// One refresh per round; the second round's first try got a 503 and
	// was retried.
	if got, want := c.as.RefreshGrants(), 3; got != want {
		t.Fatalf("refresh grant requests = %d, want %d (one per expiry, plus one retry after a 503)", got, want)
	}
	if got := c.as.ReusedRefreshTokens(); got != 0 {
		t.Fatalf("a rotated-away refresh token was sent %d times", got)
	}
	for _, n := range c.nodes {
		if st := c.status(t, n, "alice"); st.State != "connected" || !st.Refreshable {
			t.Fatalf("status on %s = %+v, want connected", n.NodeID(), st)
		}
	}

	total := 0
	for id, recs := range refreshAudit(t, c.nodes, "alice", 2) {
		for _, r := range recs {
			total++
			if r.Outcome != storage.AuditOK || r.Reason != "401" || r.Issuer != c.as.URL() || r.Route != "docs" || r.Node != id {
				t.Fatalf("refresh audit record = %+v", r)
			}
		}
	}
	metric := 0.0
	for _, n := range c.nodes {
		metric += metricValue(t, n, "mcpgw_oauth_refreshes_total", "trigger", "401", "outcome", "ok")
	}
	if total != 2 || metric != 2 {
		t.Fatalf("%d refresh audit records, mcpgw_oauth_refreshes_total{401,ok} = %v; want 2 of each", total, metric)
	}
	if now, nowTerm := leadership(t, c.nodes); now != leader || nowTerm != term {
		t.Logf("leadership moved during the test (%s term %d -> %s term %d): not checking which node refreshed", leader.NodeID(), term, now.NodeID(), nowTerm)
		return
	}
	if got := metricValue(t, leader, "mcpgw_oauth_refreshes_total", "trigger", "401", "outcome", "ok"); got != 2 {
		t.Fatalf("leader's mcpgw_oauth_refreshes_total{401,ok} = %v, want 2: a follower refreshed", got)
	}
}

// TestOAuthRotationSurvivesLeaderChange: the refresh token a leader got
// by rotation is committed before the call it served proceeds, so the
// next leader refreshes with it, never with the one rotated away.
func TestOAuthRotationSurvivesLeaderChange(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{}, nil)
	c.consent(t, c.nodes[0], "alice")
	ctx := testContext(t, 60*time.Second)
	leader := waitForLeader(t, c.nodes, 3)
	rest := others(c.nodes, leader)
	sess := c.session(t, ctx, rest[0], "alice")
	c.as.ExpireAccess()
	callText(t, ctx, sess, "echo", "first refresh")
	leader.Close()
	waitForLeader(t, rest, 3)
	c.as.ExpireAccess()
	if got := callText(t, ctx, sess, "echo", "second refresh"); got != "second refresh" {
		t.Fatalf("echo = %q", got)
	}
	if got, reused := c.as.RefreshGrants(), c.as.ReusedRefreshTokens(); got != 2 || reused != 0 {
		t.Fatalf("refresh requests = %d with %d reused tokens, want 2 and 0", got, reused)
	}
	// No token the authorization server issued is in any audit record.
	for _, n := range rest {
		recs, err := n.audit.log.Query(storage.AuditQuery{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(recs)
		for _, tok := range c.as.Issued() {
			if strings.Contains(string(b), tok) {
				t.Fatalf("the audit log of %s holds a token", n.NodeID())
			}
		}
	}
}

// TestOAuthRefreshLegacySSE: a legacy HTTP+SSE upstream's 401 to a posted
// message is refreshed and the message sent again, like streamable HTTP's.
func TestOAuthRefreshLegacySSE(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{SSE: true}, nil)
	c.consent(t, c.nodes[0], "alice")
	ctx := testContext(t, 60*time.Second)
	var sessions []*mcp.ClientSession
	for _, n := range c.nodes {
		s := c.session(t, ctx, n, "alice")
		callText(t, ctx, s, "echo", "before")
		sessions = append(sessions, s)
	}
	c.as.ExpireAccess()
	for i, err := range callAll(ctx, sessions, 2) {
		if err != nil {
			t.Fatalf("call %d after expiry: %v", i, err)
		}
	}
	if got := c.as.RefreshGrants(); got != 1 {
		t.Fatalf("refresh grant requests = %d, want 1", got)
	}
}

// TestOAuthRefreshAheadOfExpiry: a short-lived token is refreshed by the
// leader before it expires, with no session asking; followers never
// refresh.
func TestOAuthRefreshAheadOfExpiry(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{}, func(a *oauthtest.AS) { a.AccessTTL = 4 * time.Second })
	leader, term := leadership(t, c.nodes)
	c.consent(t, c.nodes[2], "alice")
	poll(t, 20*time.Second, "a refresh ahead of expiry", func() bool { return c.as.RefreshGrants() >= 1 })
	// Long-lived from now on: the refresher goes quiet.
	c.as.Update(func(a *oauthtest.AS) { a.AccessTTL = time.Hour })
	for _, n := range c.nodes {
		poll(t, 20*time.Second, "a long-lived token on "+n.NodeID(), func() bool {
			cr, err := n.store.Credential("acme", "alice", "docs")
			return err == nil && cr.OAuth != nil && time.Until(cr.OAuth.Expires) > 30*time.Minute
		})
	}
	grants := c.as.RefreshGrants()
	by := refreshAudit(t, c.nodes, "alice", grants)
	for _, recs := range by {
		for _, r := range recs {
			if r.Outcome != storage.AuditOK || r.Reason != "expiry" || r.Issuer != c.as.URL() {
				t.Fatalf("refresh audit record = %+v", r)
			}
		}
	}
	if now, nowTerm := leadership(t, c.nodes); now != leader || nowTerm != term {
		t.Logf("leadership moved during the test (%s term %d -> %s term %d): not checking which node refreshed", leader.NodeID(), term, now.NodeID(), nowTerm)
	} else {
		if got := len(by[leader.NodeID()]); got != grants {
			t.Fatalf("the leader recorded %d refreshes, the authorization server saw %d", got, grants)
		}
		if got := metricValue(t, leader, "mcpgw_oauth_refreshes_total", "trigger", "expiry", "outcome", "ok"); got != float64(grants) {
			t.Fatalf("leader's expiry refreshes = %v, the authorization server saw %d", got, grants)
		}
		for _, n := range others(c.nodes, leader) {
			if got := by[n.NodeID()]; len(got) != 0 {
				t.Fatalf("follower %s refreshed: %+v", n.NodeID(), got)
			}
		}
	}
	if got := c.as.ReusedRefreshTokens(); got != 0 {
		t.Fatalf("a rotated-away refresh token was sent %d times", got)
	}
	ctx := testContext(t, 30*time.Second)
	if got := callText(t, ctx, c.session(t, ctx, c.nodes[1], "alice"), "echo", "fresh"); got != "fresh" {
		t.Fatalf("echo = %q", got)
	}
}

// TestOAuthRevokedRefreshNeedsConsent: when the user revoked the grant, the
// refresh after a 401 is refused with invalid_grant; the credential is
// marked on every node (oauth status says so, with the server's error),
// the call fails saying what to do, new sessions are refused the same way,
// and a new consent clears it.
func TestOAuthRevokedRefreshNeedsConsent(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{}, nil)
	c.consent(t, c.nodes[0], "bob")
	ctx := testContext(t, 60*time.Second)
	follower := others(c.nodes, waitForLeader(t, c.nodes, 3))[0]
	sess := c.session(t, ctx, follower, "bob")
	callText(t, ctx, sess, "echo", "before")

	c.as.RevokeRefresh()
	c.as.ExpireAccess()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after"}})
	if err == nil && !res.IsError {
		t.Fatal("a call with a revoked grant succeeded")
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	} else {
		msg = res.Content[0].(*mcp.TextContent).Text
	}
	checkMessage(t, msg, "needs a new consent", "invalid_grant", "refresh token revoked", "mcpgw oauth url")
	// The session stays up; its next call is refused the same way, without
	// a word to the upstream or the authorization server.
	hits := c.as.RefreshGrants()
	_, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "again"}})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != transport.CodeNoCredential {
		t.Fatalf("second call: %v, want a JSON-RPC error with code %d", err, transport.CodeNoCredential)
	}
	checkMessage(t, werr.Message, "needs a new consent", "invalid_grant", "mcpgw oauth url")
	if strings.Contains(werr.Message, "route list") || c.as.RefreshGrants() != hits {
		t.Fatalf("second call: %q after %d more refreshes", werr.Message, c.as.RefreshGrants()-hits)
	}

	for _, n := range c.nodes {
		poll(t, 20*time.Second, "the consent mark on "+n.NodeID(), func() bool {
			st := c.status(t, n, "bob")
			return st.State == "needs consent" && strings.Contains(st.Reason, "invalid_grant") && strings.Contains(st.Reason, "refresh token revoked")
		})
	}
	if _, err := connect(t, ctx, c.nodes[2], c.route.URL, "acme", "bob", client.WithToken(c.token)); err == nil || !strings.Contains(err.Error(), "needs a new consent") {
		t.Fatalf("new session with a dead credential: %v", err)
	}
	if got := c.as.RefreshGrants(); got != 1 {
		t.Fatalf("refresh grant requests = %d, want 1 (a refused grant is not retried)", got)
	}
	for _, recs := range refreshAudit(t, c.nodes, "bob", 1) {
		for _, r := range recs {
			if r.Outcome != storage.AuditError || r.Reason != "needs_consent" || !strings.Contains(r.Error, "invalid_grant") {
				t.Fatalf("audit record = %+v", r)
			}
		}
	}

	c.consent(t, c.nodes[1], "bob")
	if st := c.status(t, c.nodes[2], "bob"); st.State != "connected" {
		t.Fatalf("status after a new consent = %+v", st)
	}
	callText(t, ctx, c.session(t, ctx, c.nodes[2], "bob"), "echo", "again")
}

// TestOAuthConsentErrorWrapsNeedsConsent: the error the data path gives
// for a credential that cannot be refreshed is what consent delivery
// branches on: it wraps oauth.ErrNeedsConsent and carries the
// authorization server's code and description.
func TestOAuthConsentErrorWrapsNeedsConsent(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{}, nil)
	c.consent(t, c.nodes[0], "bob")
	c.as.RevokeRefresh()
	n := c.nodes[1]
	cr, err := n.store.Credential("acme", "bob", "docs")
	if err != nil {
		t.Fatal(err)
	}
	r := &oauthRefresher{n: n, svc: n.adminSvc.Load}
	if err := r.Refresh(testContext(t, 20*time.Second), "acme", "bob", "docs", cr.Sealed); err != nil {
		t.Fatal(err)
	}
	err = n.gw.CredentialError("acme", "bob", "docs")
	var ce *gateway.ConsentError
	var ase *oauth.ASError
	if !errors.Is(err, oauth.ErrNeedsConsent) || !errors.As(err, &ce) || !errors.As(err, &ase) {
		t.Fatalf("credential error = %v, want a ConsentError wrapping oauth.ErrNeedsConsent", err)
	}
	if ase.Code != "invalid_grant" || ase.Description != "refresh token revoked" || ce.Reason != storage.ConsentRefreshFailed {
		t.Fatalf("consent error = %+v / %+v", ce, ase)
	}
}

// TestOAuthStepUp: an upstream's 403 insufficient_scope marks the
// credential as needing consent for the granted scopes plus the
// challenged one; the token keeps working for what it grants, the next
// consent URL asks for the union, and after it the call succeeds.
func TestOAuthStepUp(t *testing.T) {
	c := startOAuthCluster(t, oauthtest.MCPOpts{ToolScopes: map[string]string{"admin_echo": "admin"}}, nil)
	c.consent(t, c.nodes[0], "carol")
	ctx := testContext(t, 60*time.Second)
	n := c.nodes[2]
	sess := c.session(t, ctx, n, "carol")
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "admin_echo", Arguments: map[string]any{"text": "x"}})
	if err == nil && !res.IsError {
		t.Fatal("admin_echo without the admin scope succeeded")
	}
	// The refused call carries a sign-in link for the wider scopes.
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != transport.CodeConsentRequired {
		t.Fatalf("admin_echo without the admin scope: %v (result %+v), want code %d", err, res, transport.CodeConsentRequired)
	}
	var data transport.ConsentData
	if err := json.Unmarshal(werr.Data, &data); err != nil {
		t.Fatalf("consent data %s: %v", werr.Data, err)
	}
	checkMessage(t, data.Reason, "insufficient_scope", "admin")
	if lu, err := url.Parse(data.AuthorizationURL); err != nil || lu.Query().Get("scope") != "read write offline_access admin" {
		t.Fatalf("step-up sign-in link %q, want one asking for scope %q", data.AuthorizationURL, "read write offline_access admin")
	}
	// Not blocking: what the grant covers still works.
	callText(t, ctx, sess, "echo", "still fine")

	for _, m := range c.nodes {
		poll(t, 20*time.Second, "the step-up mark on "+m.NodeID(), func() bool {
			st := c.status(t, m, "carol")
			return st.State == "needs consent" && strings.Contains(st.Reason, "read write offline_access admin")
		})
	}
	recs := auditOf(t, n, storage.AuditStepUp, "carol", 1)
	if r := recs[0]; r.Issuer != c.as.URL() || r.Route != "docs" || !strings.Contains(r.Error, "admin") {
		t.Fatalf("step-up audit record = %+v", r)
	}
	if got := metricValue(t, n, "mcpgw_oauth_step_ups_total"); got != 1 {
		t.Fatalf("mcpgw_oauth_step_ups_total = %v, want 1", got)
	}

	link := c.consent(t, c.nodes[1], "carol")
	lu, _ := url.Parse(link)
	if got, want := lu.Query().Get("scope"), "read write offline_access admin"; got != want {
		t.Fatalf("step-up consent asks for scope %q, want %q", got, want)
	}
	if st := c.status(t, n, "carol"); st.State != "connected" {
		t.Fatalf("status after step-up consent = %+v", st)
	}
	if got := callText(t, ctx, c.session(t, ctx, n, "carol"), "admin_echo", "granted"); got != "granted" {
		t.Fatalf("admin_echo = %q", got)
	}
}
