package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

func startClockedNode(t *testing.T) (*Node, *clocktest.Clock, storage.Route) {
	t.Helper()
	clock := clocktest.New(time.Now())
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp" // before the node, so it stops after it
	n := startNode(t, func(c *Config) { c.Clock = clock.Now })
	route := addRoute(t, n, storage.Route{Name: "up", URL: url})
	return n, clock, route
}

func refusal(err error) *transport.RefusalError {
	var re *transport.RefusalError
	if errors.As(err, &re) {
		return re
	}
	return nil
}

// TestTokenRefusals: each way a service token can be wrong gets its own
// 401 that says what was wrong, and never echoes the token.
func TestTokenRefusals(t *testing.T) {
	n, clock, route := startClockedNode(t)
	other := startNode(t) // another cluster: its tokens are signed by a key n does not hold
	foreign := issueToken(t, other, "svc", []string{"*"}, "1h").Token
	short := issueToken(t, n, "svc", []string{"*"}, "1m").Token
	revoked := issueToken(t, n, "svc", []string{"*"}, "1h")
	if resp := adminDo(t, n, http.MethodPost, "/v1/tokens/"+revoked.ID+"/revoke", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	acmeOnly := issueToken(t, n, "svc", []string{"acme"}, "1h").Token
	clock.Advance(2 * time.Minute) // short is now expired

	cases := []struct {
		name, token, org string
		status           int
		code             int64
		want             string
	}{
		{"missing", "", "acme", 401, transport.CodeUnauthorized, "no service token"},
		{"malformed", "not-a-token", "acme", 401, transport.CodeUnauthorized, "malformed"},
		{"wrong signature", foreign, "acme", 401, transport.CodeUnauthorized, "key"},
		{"expired", short, "acme", 401, transport.CodeUnauthorized, "expired"},
		{"revoked", revoked.Token, "acme", 401, transport.CodeUnauthorized, "revoked"},
		{"org not allowed", acmeOnly, "globex", 403, transport.CodeForbidden, `may not act for org "globex"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := client.Connect(ctx, route.URL, tc.org, "a1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(tc.token))
			re := refusal(err)
			if re == nil || re.Status != tc.status || re.Code != tc.code || !strings.Contains(re.Message, tc.want) {
				t.Fatalf("err = %v, want HTTP %d code %d containing %q", err, tc.status, tc.code, tc.want)
			}
			if tc.token != "" && strings.Contains(re.Message, tc.token) {
				t.Fatal("refusal echoes the token")
			}
		})
	}
	// The same token is fine for its own org.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "a1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(acmeOnly))
	if err != nil {
		t.Fatalf("acme-only token for acme: %v", err)
	}
	sess.Close()
}

// toolError calls a tool and returns the JSON-RPC error it got.
func toolError(t *testing.T, ctx context.Context, sess *mcp.ClientSession, tool string) *jsonrpc.Error {
	t.Helper()
	_, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "x"}})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("CallTool %s: err = %v, want a JSON-RPC error", tool, err)
	}
	return werr
}

// TestRules: deny beats allow, a route with rules denies by default,
// tools/list shows only allowed tools, and a session the rules deny
// entirely is refused before it opens.
func TestRules(t *testing.T) {
	n, _, route := startClockedNode(t)
	for _, r := range []storage.Rule{
		{ID: "r-allow", Service: "test-svc", Org: "*", Account: "*", Route: "up", Tool: "*", Effect: "allow"},
		{ID: "r-deny-slow", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "slow", Effect: "deny"},
		{ID: "r-deny-add", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "add_*", Effect: "deny"},
	} {
		if resp := adminDo(t, n, http.MethodPost, "/v1/rules", r); resp.StatusCode != http.StatusOK {
			t.Fatalf("put rule %s: HTTP %d", r.ID, resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "a1", viaGateway(n)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
	}
	if got, want := strings.Join(names, ","), "ask_llm,cancelled,echo,fail,getenv,traceparent,whoami"; got != want {
		t.Fatalf("tools/list = %s, want %s", got, want)
	}
	if got := callText(t, ctx, sess, "echo", "ok"); got != "ok" {
		t.Fatalf("echo = %q", got)
	}
	werr := toolError(t, ctx, sess, "slow")
	if werr.Code != transport.CodeForbidden || !strings.Contains(werr.Message, `"r-deny-slow"`) {
		t.Fatalf("slow: %v, want forbidden naming r-deny-slow", werr)
	}
	// The session survives the refusal.
	if got := callText(t, ctx, sess, "echo", "still here"); got != "still here" {
		t.Fatalf("echo after refusal = %q", got)
	}

	// Another service has no allow rule on this route: denied by default.
	other := issueToken(t, n, "other-svc", []string{"*"}, "1h").Token
	_, err = client.Connect(ctx, route.URL, "acme", "a1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(other))
	re := refusal(err)
	if re == nil || re.Status != http.StatusForbidden || re.Code != transport.CodeForbidden || !strings.Contains(re.Message, "deny by default") {
		t.Fatalf("other-svc: err = %v, want 403 deny by default", err)
	}
}

// TestRateLimit: burst 5 lets exactly 5 calls through at one instant; the
// 6th is refused with a retry-after hint and the session stays open; after
// the refill interval one more passes.
func TestRateLimit(t *testing.T) {
	n, clock, route := startClockedNode(t)
	l := storage.Limit{ID: "echo-5", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "echo", Rate: 2, Burst: 5}
	if resp := adminDo(t, n, http.MethodPost, "/v1/limits", l); resp.StatusCode != http.StatusOK {
		t.Fatalf("put limit: HTTP %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "a1", viaGateway(n)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for i := range 5 {
		if got := callText(t, ctx, sess, "echo", "x"); got != "x" {
			t.Fatalf("call %d = %q", i+1, got)
		}
	}
	werr := toolError(t, ctx, sess, "echo")
	var data struct {
		RetryAfterMs int64  `json:"retryAfterMs"`
		Limit        string `json:"limit"`
	}
	json.Unmarshal(werr.Data, &data)
	if werr.Code != transport.CodeRateLimited || data.Limit != "echo-5" || data.RetryAfterMs != 501 || !strings.Contains(werr.Message, "retry in 501ms") {
		t.Fatalf("6th call: %v data %s, want rate limited by echo-5 retry in 501ms", werr, werr.Data)
	}
	// Other tools are not limited.
	if got := callText(t, ctx, sess, "whoami", ""); got != "" {
		t.Fatalf("whoami = %q", got)
	}
	clock.Advance(500 * time.Millisecond)
	if got := callText(t, ctx, sess, "echo", "again"); got != "again" {
		t.Fatalf("after refill = %q", got)
	}
	if werr := toolError(t, ctx, sess, "echo"); werr.Code != transport.CodeRateLimited {
		t.Fatalf("after one refill the next call: %v, want rate limited", werr)
	}
}

// TestInsecureDev: --insecure-dev accepts sessions without a token.
func TestInsecureDev(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	n := startNode(t, func(c *Config) { c.InsecureDev = true })
	route := addRoute(t, n, storage.Route{Name: "up", URL: url})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := client.Connect(ctx, route.URL, "acme", "a1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
	if err != nil {
		t.Fatal(err)
	}
	sess.Close()
}
