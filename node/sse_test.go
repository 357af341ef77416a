package node

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestCloseEndsSSESessions: a legacy HTTP+SSE event stream never ends by
// itself, yet Node.Close returns well within the shutdown timeout with one
// open, and the session ends.
func TestCloseEndsSSESessions(t *testing.T) {
	const shutdown = 3 * time.Second
	n, route := gatewayTo(t, func(c *Config) { c.ShutdownTimeout = shutdown })
	ctx := testContext(t, 20*time.Second)
	sess := connectVia(t, ctx, n, "sse", route, "2024-11-05", nil)
	echo(t, ctx, sess, "before close")
	if got, want := activeSessions(t, n, "sse"), 1.0; got != want {
		t.Fatalf("mcpgw_proxy_sessions_active{transport=sse}=%v, want %v", got, want)
	}

	closeEndsSession(t, ctx, n, sess, shutdown)
}

// TestRevokedTokenEndsSSESession: revoking the token that opened a legacy
// HTTP+SSE session ends it, as on every other transport: its event stream
// closes.
func TestRevokedTokenEndsSSESession(t *testing.T) {
	n, route := gatewayTo(t)
	tok := issueToken(t, n, "sse-svc", []string{"*"}, "1h")
	ctx := testContext(t, 20*time.Second)
	endpoint := "http://" + n.HTTPAddr() + "/v1/sse/" + route.Name + "?org=org1&account=acct1&access_token=" + url.QueryEscape(tok.Token)
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "legacy", Version: "1"}, nil).Connect(ctx, &mcp.SSEClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer sess.Close()
	echo(t, ctx, sess, "before revocation")
	if resp := adminDo(t, n, http.MethodPost, "/v1/tokens/"+tok.ID+"/revoke", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	ended := make(chan error, 1)
	go func() { ended <- sess.Wait() }()
	receive(t, ctx, ended, "the revoked token's SSE session to end")
	waitFor(t, "the session to be gone", func() bool { return activeSessions(t, n, "sse") == 0 })
}
