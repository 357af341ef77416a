package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
)

// TestFailover: with two gateway addresses, killing the node a session
// uses moves the session to the other one; the next call succeeds without
// the caller reconnecting, and a call in flight during the loss fails with
// CodeNodeLost.
func TestFailover(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	a, b := client.StartInsecureNode(t, url, nil), client.StartInsecureNode(t, url, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inFlight := make(chan struct{}, 1)
	sess, err := client.Connect(ctx, url, "acme", "a1",
		client.WithGateway("ws://"+a.HTTPAddr()+",ws://"+b.HTTPAddr()),
		client.WithProtocolVersion("2025-11-25"),
		client.WithClientOptions(&mcp.ClientOptions{
			ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
				select {
				case inFlight <- struct{}{}:
				default:
				}
			},
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	echo := func() (string, error) {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
		if err != nil {
			return "", err
		}
		return res.Content[0].(*mcp.TextContent).Text, nil
	}
	if got, err := echo(); err != nil || got != "hi" {
		t.Fatalf("before failover: %q, %v", got, err)
	}

	// A call in flight when its node dies.
	slowErr := make(chan error, 1)
	go func() {
		_, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "slow", Meta: mcp.Meta{"progressToken": "p"}})
		slowErr <- err
	}()
	select {
	case <-inFlight: // the upstream reported progress: the call is on node a
	case <-ctx.Done():
		t.Fatal("slow call never reached the upstream")
	}
	if a.Sessions() != 1 || b.Sessions() != 0 {
		t.Fatalf("sessions a=%d b=%d, want the session on a", a.Sessions(), b.Sessions())
	}
	a.Close()
	var werr *jsonrpc.Error
	if err := <-slowErr; !errors.As(err, &werr) || werr.Code != client.CodeNodeLost {
		t.Fatalf("in-flight call: err = %v, want CodeNodeLost", err)
	}
	if got, err := echo(); err != nil || got != "hi" {
		t.Fatalf("after failover: %q, %v", got, err)
	}
	if b.Sessions() != 1 {
		t.Fatalf("node b carries %d sessions, want 1", b.Sessions())
	}
}
