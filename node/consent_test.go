package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

func newConsentCluster(t *testing.T) *consentCluster {
	t.Helper()
	as := oauthtest.NewAS(t)
	up := oauthtest.NewMCP(t, as, nil, nil)
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
	var landed string
	browser := &http.Client{CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		landed = r.URL.String()
		return nil
	}}
	res, err := browser.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	page, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(page), "Connected") || !strings.HasPrefix(landed, c.lb+OAuthCallbackPath) {
		t.Fatalf("consent: HTTP %d, landed on %q:\n%s", res.StatusCode, landed, page)
	}
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

	// The used link is not handed out again: bob's is his own, and alice's
	// status is connected, with the issuer.
	_, err = c.connect(ctx, n1, "bob")
	var bob *client.ConsentRequiredError
	if !errors.As(err, &bob) || bob.URL == cerr.URL {
		t.Fatalf("bob: %v", err)
	}
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
