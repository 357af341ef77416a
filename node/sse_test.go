package node

import (
	"context"
	"errors"
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

	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(shutdown + 2*time.Second):
		t.Fatalf("Close did not return within %v", shutdown+2*time.Second)
	}
	if elapsed := time.Since(start); elapsed >= shutdown {
		t.Errorf("Close took %v with an idle SSE session, want less than the %v shutdown timeout", elapsed, shutdown)
	}
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := sess.CallTool(callCtx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "after close"}})
	if err == nil {
		t.Fatal("CallTool after Close succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CallTool after Close hung until its deadline: %v", err)
	}
}
