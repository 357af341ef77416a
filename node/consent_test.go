package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// consentCluster is a 3-node cluster behind a public URL that reaches
// node 2, with an OAuth-protected upstream routed as "docs", a rule
// allowing it and a service token for org acme.
type consentCluster struct {
	nodes []*Node
	as    *oauthtest.AS
	up    *oauthtest.MCP
	route storage.Route
	token string
	lb    string // the public URL
}

func newConsentCluster(t *testing.T, stateless ...bool) *consentCluster {
	t.Helper()
	as := oauthtest.NewAS(t)
	up := oauthtest.NewMCPWith(t, as, oauthtest.MCPOpts{PRMPath: "/.well-known/oauth-protected-resource/mcp", Advertise: true, Stateless: len(stateless) > 0 && stateless[0]})
	var target atomic.Pointer[url.URL]
	lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(lb.Close)
	nodes := startCluster(t, 3, func(c *Config) { c.PublicURL, c.OAuthAllowLoopback = lb.URL, true })
	u, _ := url.Parse(nodes[1].HTTPURL())
	target.Store(u)
	route := addRoute(t, nodes[0], storage.Route{Name: "docs", URL: up.URL(), Credential: storage.CredentialRequired})
	rule := storage.Rule{ID: "allow-all", Service: "*", Org: "*", Account: "*", Route: "docs", Tool: "*", Effect: "allow"}
	if resp := adminDo(t, nodes[0], http.MethodPost, "/v1/rules", rule); resp.StatusCode != http.StatusOK {
		t.Fatalf("put rule: HTTP %d", resp.StatusCode)
	}
	tok := issueToken(t, nodes[0], "svc-a", []string{"acme"}, "1h")
	return &consentCluster{nodes: nodes, as: as, up: up, route: route, token: tok.Token, lb: lb.URL}
}

// approve plays the user's browser: opens the authorization URL, lets the
// authorization server redirect to the gateway's public callback (node 2),
// and checks the page says connected.
func (c *consentCluster) approve(t *testing.T, authURL string) {
	t.Helper()
	if err := c.follow(authURL); err != nil {
		t.Fatal(err)
	}
}

// follow is approve for handlers that run off the test goroutine.
func (c *consentCluster) follow(authURL string) error {
	var landed string
	browser := &http.Client{CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		landed = r.URL.String()
		return nil
	}}
	res, err := browser.Get(authURL)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	page, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(page), "Connected") || !strings.HasPrefix(landed, c.lb+OAuthCallbackPath) {
		return fmt.Errorf("consent: HTTP %d, landed on %q:\n%s", res.StatusCode, landed, page)
	}
	return nil
}

func (c *consentCluster) connect(ctx context.Context, n *Node, account string, opts ...client.Option) (*mcp.ClientSession, error) {
	opts = append([]client.Option{client.WithGateway("ws://" + n.HTTPAddr()), client.WithToken(c.token)}, opts...)
	return client.Connect(ctx, c.route.URL, "acme", account, opts...)
}

// TestConsentRequiredRefusal: a session for an account with no credential
// on an OAuth route is refused with a typed error carrying a working
// authorization URL; retries get the same URL (one pending flow, not one
// per attempt); once the user approves through another node, a session
// through a third node succeeds. The streamable HTTP refusal carries the
// URL in its JSON-RPC error data.
func TestConsentRequiredRefusal(t *testing.T) {
	c := newConsentCluster(t)
	n1, n3 := c.nodes[0], c.nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, err := c.connect(ctx, n1, "alice")
	var cerr *client.ConsentRequiredError
	if !errors.As(err, &cerr) {
		t.Fatalf("Connect without consent: %v, want a *client.ConsentRequiredError", err)
	}
	if cerr.Reason != "no credential yet" || !strings.HasPrefix(cerr.URL, c.as.URL()+"/authorize?") {
		t.Fatalf("consent error: reason %q, url %q", cerr.Reason, cerr.URL)
	}
	if strings.Contains(err.Error(), cerr.URL) {
		t.Fatal("the error text holds the authorization URL; it belongs in the data only")
	}

	const retries = 20
	for i := range retries {
		_, err := c.connect(ctx, n1, "alice")
		var again *client.ConsentRequiredError
		if !errors.As(err, &again) || again.URL != cerr.URL {
			t.Fatalf("retry %d: %v, want the same authorization URL", i, err)
		}
	}
	waitFor(t, "the pending flow to reach node 3", func() bool {
		p, err := n3.store.OAuthPendings()
		return err == nil && len(p) == 1
	})
	if p, _ := n1.store.OAuthPendings(); len(p) != 1 {
		t.Fatalf("%d pending flows after %d retries, want 1", len(p), retries+1)
	}

	// Streamable HTTP: the refusal's body is a JSON-RPC error whose data
	// holds the same URL.
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, _ := http.NewRequest(http.MethodPost, n1.HTTPURL()+"/v1/mcp/docs?org=acme&account=alice", bytes.NewReader([]byte(init)))
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error struct {
			Code int64                 `json:"code"`
			Data transport.ConsentData `json:"data"`
		} `json:"error"`
	}
	json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || body.Error.Code != transport.CodeConsentRequired || body.Error.Data.AuthorizationURL != cerr.URL {
		t.Fatalf("streamable refusal: HTTP %d, %+v", res.StatusCode, body.Error)
	}

	c.approve(t, cerr.URL)
	waitFor(t, "the credential to reach node 3", func() bool {
		_, err := n3.store.Credential("acme", "alice", "docs")
		return err == nil
	})
	sess, err := c.connect(ctx, n3, "alice")
	if err != nil {
		t.Fatalf("session after consent: %v", err)
	}
	defer sess.Close()
	if got := callText(t, ctx, sess, "echo", "consented"); got != "consented" {
		t.Fatalf("echo = %q", got)
	}

	// Bob's sessions, ten at once: one flow, its link for all, not alice's.
	urls := make(chan string, 10)
	var wg sync.WaitGroup
	for range cap(urls) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.connect(ctx, n1, "bob")
			var bob *client.ConsentRequiredError
			if !errors.As(err, &bob) {
				t.Errorf("bob: %v", err)
				return
			}
			urls <- bob.URL
		}()
	}
	wg.Wait()
	close(urls)
	bobURL := <-urls
	for u := range urls {
		if u != bobURL {
			t.Fatalf("concurrent sessions got different links: %q and %q", u, bobURL)
		}
	}
	if bobURL == "" || bobURL == cerr.URL {
		t.Fatalf("bob's link %q, alice's %q", bobURL, cerr.URL)
	}
	if p, _ := n1.store.OAuthPendings(); len(p) != 1 || p[0].Account != "bob" {
		t.Fatalf("pending flows after bob's ten sessions: %+v, want bob's one", p)
	}

	// Alice's status is connected, with the issuer.
	resp := adminDo(t, n3, http.MethodGet, "/v1/oauth/status?org=acme&account=alice&route=docs", nil)
	var st adminapi.OAuthStatus
	json.NewDecoder(resp.Body).Decode(&st)
	if st.State != "connected" || st.Issuer != c.as.URL() {
		t.Fatalf("status: %+v, want connected with issuer %s", st, c.as.URL())
	}
}

// TestRotationWaitsForOAuthRecords: after a data key rotation, the OAuth
// client secret the gateway registered is resealed under the new key, while
// the old key, which still seals an open consent flow, is listed with it and
// not retired; once the flow completes, the old key is retired.
func TestRotationWaitsForOAuthRecords(t *testing.T) {
	as := oauthtest.NewAS(t)
	up := oauthtest.NewMCP(t, as, nil, nil)
	n := startNode(t, func(c *Config) { c.PublicURL, c.OAuthAllowLoopback = "http://127.0.0.1:1", true })
	addRoute(t, n, storage.Route{Name: "docs", URL: up.URL(), Credential: storage.CredentialRequired})
	resp := adminDo(t, n, http.MethodPost, "/v1/oauth/url", adminapi.OAuthURLRequest{Org: "acme", Account: "alice", Route: "docs"})
	var consent adminapi.OAuthURL
	json.NewDecoder(resp.Body).Decode(&consent)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("oauth url: HTTP %d", resp.StatusCode)
	}
	old := vaultStatus(t, n).Keys[0]
	if old.OAuthFlows != 1 || old.OAuthClients != 1 {
		t.Fatalf("before rotation the key seals %d oauth flows and %d oauth clients, want 1 and 1", old.OAuthFlows, old.OAuthClients)
	}
	rot := rotateDataKey(t, n)
	var st adminapi.VaultStatus
	waitFor(t, "the oauth client secret to move to the new key", func() bool {
		st = vaultStatus(t, n)
		for _, k := range st.Keys {
			if k.ID == rot.KeyID && k.OAuthClients == 1 {
				return true
			}
		}
		return false
	})
	var kept bool
	for _, k := range st.Keys {
		kept = kept || (k.ID == old.ID && k.OAuthFlows == 1)
	}
	if !kept || !st.Rotating {
		t.Fatalf("vault status while a flow sealed with the old key is open: %+v", st)
	}

	// The user approves; the callback goes to the gateway by hand.
	stop := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := stop.Get(consent.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	back, _ := url.Parse(res.Header.Get("Location"))
	resp = adminDo(t, n, http.MethodPost, "/v1/oauth/complete", adminapi.OAuthCompleteRequest{Query: back.RawQuery})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("complete: HTTP %d", resp.StatusCode)
	}
	waitResealed(t, n, rot.KeyID)
}

// elicitingClient is a go-sdk client that declares URL elicitation and,
// asked to, follows the URL as the user's browser would; it records the
// elicitations it got and the completions it was told of.
type elicitingClient struct {
	c         *consentCluster
	elicited  chan *mcp.ElicitParams
	completed chan string
}

func newElicitingClient(c *consentCluster) *elicitingClient {
	return &elicitingClient{c: c, elicited: make(chan *mcp.ElicitParams, 4), completed: make(chan string, 4)}
}

func (e *elicitingClient) options() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			e.elicited <- req.Params
			if err := e.c.follow(req.Params.URL); err != nil {
				return nil, err
			}
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
		ElicitationCompleteHandler: func(_ context.Context, req *mcp.ElicitationCompleteNotificationRequest) {
			e.completed <- req.Params.ElicitationID
		},
	}
}

// checkElicited checks the one elicitation was a URL one at the
// authorization server.
func (e *elicitingClient) checkElicited(t *testing.T) *mcp.ElicitParams {
	t.Helper()
	select {
	case p := <-e.elicited:
		if p.Mode != "url" || p.ElicitationID == "" || !strings.HasPrefix(p.URL, e.c.as.URL()+"/authorize?") {
			t.Fatalf("elicitation: mode %q, id %q, url %q", p.Mode, p.ElicitationID, p.URL)
		}
		select {
		case p := <-e.elicited:
			t.Fatalf("a second elicitation: %+v", p)
		default:
		}
		return p
	default:
		t.Fatal("no elicitation reached the client")
	}
	return nil
}

// TestConsentByURLElicitation: a 2025-11-25 client that declares URL
// elicitation and connects through node 1 without a credential is sent
// the authorization URL as an elicitation; following it completes consent
// through node 2's callback; the session then opens, is told the
// elicitation completed, and its calls reach the upstream.
func TestConsentByURLElicitation(t *testing.T) {
	c := newConsentCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := newElicitingClient(c)
	sess, err := c.connect(ctx, c.nodes[0], "alice", client.WithProtocolVersion("2025-11-25"), client.WithClientOptions(e.options()))
	if err != nil {
		t.Fatalf("connect with url elicitation: %v", err)
	}
	defer sess.Close()
	if got := callText(t, ctx, sess, "echo", "after consent"); got != "after consent" {
		t.Fatalf("echo = %q", got)
	}
	p := e.checkElicited(t)
	select {
	case id := <-e.completed:
		if id != p.ElicitationID {
			t.Fatalf("completion for elicitation %q, want %q", id, p.ElicitationID)
		}
	case <-ctx.Done():
		t.Fatal("no notifications/elicitation/complete")
	}
	if _, err := c.nodes[2].store.Credential("acme", "alice", "docs"); err != nil {
		waitFor(t, "the credential to reach node 3", func() bool {
			_, err := c.nodes[2].store.Credential("acme", "alice", "docs")
			return err == nil
		})
	}
}

// TestConsentByInputRequired: a 2026-07-28 client that declares URL
// elicitation, to an upstream serving 2026-07-28, connects through node 1 without a credential; its tool call
// is answered input_required with the URL elicitation, which the client
// fulfils by following it (consent completes through node 2's callback);
// its retry then reaches the upstream and succeeds, and later calls go
// straight through.
func TestConsentByInputRequired(t *testing.T) {
	c := newConsentCluster(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := newElicitingClient(c)
	sess, err := c.connect(ctx, c.nodes[0], "alice", client.WithClientOptions(e.options()))
	if err != nil {
		t.Fatalf("connect on 2026-07-28: %v", err)
	}
	defer sess.Close()
	if v := sess.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %q, want 2026-07-28", v)
	}
	if got := callText(t, ctx, sess, "echo", "retried"); got != "retried" {
		t.Fatalf("echo = %q", got)
	}
	e.checkElicited(t)
	if got := callText(t, ctx, sess, "echo", "again"); got != "again" {
		t.Fatalf("second echo = %q", got)
	}
	select {
	case p := <-e.elicited:
		t.Fatalf("elicited again after consent: %+v", p)
	default:
	}
}

// TestConsentByInputRequiredOverStreamable: the same for a 2026-07-28
// client over stateless streamable HTTP, where every request is a session
// of its own: the call is answered input_required, and the retry, a new
// request, waits for the credential and then reaches the upstream without
// the gateway's input response.
func TestConsentByInputRequiredOverStreamable(t *testing.T) {
	c := newConsentCluster(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := newElicitingClient(c)
	endpoint := c.nodes[0].HTTPURL() + "/v1/mcp/docs?org=acme&account=alice&access_token=" + url.QueryEscape(c.token)
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "modern", Version: "1"}, e.options()).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("connect over streamable HTTP: %v", err)
	}
	defer sess.Close()
	if v := sess.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %q, want 2026-07-28", v)
	}
	if got := callText(t, ctx, sess, "echo", "stateless"); got != "stateless" {
		t.Fatalf("echo = %q", got)
	}
	e.checkElicited(t)
	if got := callText(t, ctx, sess, "echo", "again"); got != "again" {
		t.Fatalf("second echo = %q", got)
	}
}

// TestConsentLapsesMidSession: when an open session's credential goes away
// (revoked, or, once refresh fails, needing consent), its next call fails
// with the consent code and a fresh authorization URL in the error data.
func TestConsentLapsesMidSession(t *testing.T) {
	// A stateless upstream: a stateful one would keep the session the
	// gateway can no longer end (its DELETE has no credential to carry).
	c := newConsentCluster(t, true)
	n1 := c.nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.connect(ctx, n1, "alice")
	var first *client.ConsentRequiredError
	if !errors.As(err, &first) {
		t.Fatalf("connect: %v", err)
	}
	c.approve(t, first.URL)
	waitFor(t, "the credential to reach node 1", func() bool {
		_, err := n1.store.Credential("acme", "alice", "docs")
		return err == nil
	})
	sess, err := c.connect(ctx, n1, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	callText(t, ctx, sess, "echo", "connected")

	if resp := adminDo(t, n1, http.MethodDelete, "/v1/oauth/credential?org=acme&account=alice&route=docs", nil); resp.StatusCode/100 != 2 {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	waitFor(t, "the revocation to reach node 1", func() bool {
		_, err := n1.store.Credential("acme", "alice", "docs")
		return errors.Is(err, storage.ErrNotFound)
	})
	_, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "revoked"}})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) || werr.Code != transport.CodeConsentRequired {
		t.Fatalf("call after revoke: %v, want code %d", err, transport.CodeConsentRequired)
	}
	var data transport.ConsentData
	if json.Unmarshal(werr.Data, &data) != nil || !strings.HasPrefix(data.AuthorizationURL, c.as.URL()+"/authorize?") || data.AuthorizationURL == first.URL {
		t.Fatalf("consent data %s, want a fresh authorization URL", werr.Data)
	}
}
