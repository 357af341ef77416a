package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/storage"
)

// TestCloseEndsSessions checks that Node.Close returns within the shutdown
// timeout while sessions are open, and that those sessions end.
func TestCloseEndsSessions(t *testing.T) {
	const shutdown = 3 * time.Second
	for _, kind := range []string{"websocket", "streamable"} {
		t.Run(kind, func(t *testing.T) {
			n, route := gatewayTo(t, func(c *Config) { c.ShutdownTimeout = shutdown })
			ctx := testContext(t, 20*time.Second)
			var sess *mcp.ClientSession
			if kind == "websocket" {
				var err error
				sess, err = client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				t.Cleanup(func() { sess.Close() })
			} else {
				sess = connectStreamable(t, ctx, n, "up", "2025-11-25", nil)
			}
			echo(t, ctx, sess, "before close")

			closeEndsSession(t, ctx, n, sess, shutdown)
		})
	}
}

// TestSessionEndClosesUpstream checks that a downstream session ending, by
// closing or by dropping its connection, ends its upstream session too.
func TestSessionEndClosesUpstream(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T, ctx context.Context, n *Node, route storage.Route) (end func())
	}{
		{name: "websocket close", open: func(t *testing.T, ctx context.Context, n *Node, route storage.Route) func() {
			sess, err := client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			echo(t, ctx, sess, "x")
			return func() { sess.Close() }
		}},
		{name: "websocket dropped", open: func(t *testing.T, ctx context.Context, n *Node, route storage.Route) func() {
			raw := dialRaw(t, n, route.URL, nil)
			raw.initialize()
			raw.echo("x")
			return func() { raw.c.CloseNow() }
		}},
		{name: "streamable close", open: func(t *testing.T, ctx context.Context, n *Node, route storage.Route) func() {
			sess := connectStreamable(t, ctx, n, route.Name, "2025-11-25", nil)
			echo(t, ctx, sess, "x")
			return func() { sess.Close() }
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, route, up := gatewayToServer(t)
			ctx := testContext(t, 20*time.Second)
			end := tc.open(t, ctx, n, route)
			if got, want := up.Sessions(), 1; got != want {
				t.Fatalf("upstream holds %d sessions, want %d", got, want)
			}
			end()
			waitFor(t, "the upstream session to end", func() bool { return up.Sessions() == 0 })
		})
	}
}

// TestCloseDrainsStreamableCalls checks that a call in flight over
// streamable HTTP when Node.Close starts is answered before the node stops.
func TestCloseDrainsStreamableCalls(t *testing.T) {
	const shutdown = 5 * time.Second
	n, _ := gatewayTo(t, func(c *Config) { c.ShutdownTimeout = shutdown })
	ctx := testContext(t, 20*time.Second)
	progressed := make(chan struct{}, 3)
	sess := connectStreamable(t, ctx, n, "up", "2025-11-25", &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			progressed <- struct{}{}
		},
	})
	type result struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		// slow answers after 2s unless cancelled, reporting progress first.
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "slow", Meta: mcp.Meta{"progressToken": "drain"}})
		done <- result{res, err}
	}()
	select {
	case <-progressed:
	case <-ctx.Done():
		t.Fatal("the slow call never reported progress")
	}

	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if elapsed := time.Since(start); elapsed >= shutdown {
		t.Errorf("Close took %v, want less than the %v shutdown timeout", elapsed, shutdown)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("call in flight during Close: %v", r.err)
	}
	if got, want := r.res.Content[0].(*mcp.TextContent).Text, "not cancelled"; got != want {
		t.Fatalf("call in flight during Close = %q, want %q", got, want)
	}
}

// closeEndsSession closes n, which holds sess idle, and checks that Close
// returns before the shutdown timeout and that sess's next call fails
// rather than hangs.
func closeEndsSession(t *testing.T, ctx context.Context, n *Node, sess *mcp.ClientSession, shutdown time.Duration) {
	t.Helper()
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
		t.Errorf("Close took %v with idle sessions, want less than the %v shutdown timeout", elapsed, shutdown)
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
