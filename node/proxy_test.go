package node

//lint:file-ignore SA1019 sampling is deprecated from 2026-07-28 on, but the gateway carries the older protocol versions that have it

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// upstreamCase is one way to reach the test upstream.
type upstreamCase struct {
	name  string
	route func(t *testing.T, up *upstreamtest.Server) storage.Route
}

var upstreamCases = []upstreamCase{
	{"streamable", func(t *testing.T, up *upstreamtest.Server) storage.Route {
		return storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"}
	}},
	{"stateless", func(t *testing.T, up *upstreamtest.Server) storage.Route {
		return storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StatelessHandler()) + "/mcp"}
	}},
	{"sse", func(t *testing.T, up *upstreamtest.Server) storage.Route {
		return storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.SSEHandler()) + "/sse", Transport: storage.TransportSSE}
	}},
	{"stdio", func(t *testing.T, up *upstreamtest.Server) storage.Route {
		return storage.Route{Name: "up", Transport: storage.TransportStdio, Command: []string{os.Args[0], upstreamtest.StdioArg}}
	}},
}

// gatewayCase is one way for a client to reach the gateway.
type gatewayCase struct {
	name string
	// opts returns the client options that reach n this way.
	opts func(t testing.TB, n *Node) []client.Option
}

var gatewayCases = []gatewayCase{
	{"websocket", func(t testing.TB, n *Node) []client.Option {
		return append([]client.Option{client.WithGateway("ws://" + n.HTTPAddr())}, tokenOpts(n)...)
	}},
	{"quic", func(t testing.TB, n *Node) []client.Option {
		return append([]client.Option{client.WithGateway("quic://" + n.QUICAddr()), client.WithRootCAs(nodeRoots(t, n))}, tokenOpts(n)...)
	}},
	{"unix", func(t testing.TB, n *Node) []client.Option {
		return append([]client.Option{client.WithGateway("unix://" + n.cfg.UnixPath)}, tokenOpts(n)...)
	}},
}

// TestProxyEndToEnd drives every method kind through the gateway with the
// real client library, for every downstream and upstream transport.
func TestProxyEndToEnd(t *testing.T) {
	for _, gw := range gatewayCases {
		for _, tc := range upstreamCases {
			for _, protocol := range []string{"2025-11-25", "2026-07-28"} {
				t.Run(gw.name+"/"+tc.name+"/"+protocol, func(t *testing.T) { testProxyEndToEnd(t, gw, tc, protocol) })
			}
		}
	}
}

func testProxyEndToEnd(t *testing.T, gw gatewayCase, tc upstreamCase, protocol string) {
	{
		{
			up := upstreamtest.New()
			// The upstream starts first so that it stops last: sessions the
			// node ends on Close can still end their upstream sessions.
			r := tc.route(t, up)
			n := startNode(t)
			route := addRoute(t, n, r)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			var mu sync.Mutex
			var progress []float64
			listChanged := make(chan struct{}, 1)
			sess, err := client.Connect(ctx, route.URL, "org1", "acct1", append(gw.opts(t, n),
				client.WithProtocolVersion(protocol),
				client.WithClientOptions(&mcp.ClientOptions{
					CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
						text := req.Params.Messages[0].Content.(*mcp.TextContent).Text
						return &mcp.CreateMessageResult{Model: "test", Role: "assistant", Content: &mcp.TextContent{Text: strings.ToUpper(text)}}, nil
					},
					ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
						mu.Lock()
						progress = append(progress, req.Params.Progress)
						mu.Unlock()
					},
					ToolListChangedHandler: func(ctx context.Context, req *mcp.ToolListChangedRequest) {
						select {
						case listChanged <- struct{}{}:
						default:
						}
					},
				}))...)
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer sess.Close()
			// Servers that speak the stateless 2026-07-28 protocol negotiate it;
			// it has no server-to-client requests (sampling becomes multi
			// round-trip results).
			modern := sess.InitializeResult().ProtocolVersion >= "2026-07-28"
			if want := protocol == "2026-07-28" && tc.name != "streamable" && tc.name != "sse"; modern != want {
				t.Fatalf("negotiated %s, want modern=%v", sess.InitializeResult().ProtocolVersion, want)
			}

			tools, err := sess.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("ListTools: %v", err)
			}
			if got, want := len(tools.Tools), 9; got != want {
				t.Fatalf("ListTools returned %d tools, want %d", got, want)
			}

			res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
			if err != nil {
				t.Fatalf("CallTool echo: %v", err)
			}
			if got, want := res.Content[0].(*mcp.TextContent).Text, "hi"; got != want {
				t.Fatalf("echo = %q, want %q", got, want)
			}

			rr, err := sess.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://greeting"})
			if err != nil {
				t.Fatalf("ReadResource: %v", err)
			}
			if got, want := rr.Contents[0].Text, "hello from upstream"; got != want {
				t.Fatalf("resource = %q, want %q", got, want)
			}

			pr, err := sess.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada"}})
			if err != nil {
				t.Fatalf("GetPrompt: %v", err)
			}
			if got, want := pr.Messages[0].Content.(*mcp.TextContent).Text, "Hello, Ada"; got != want {
				t.Fatalf("prompt = %q, want %q", got, want)
			}

			if !modern && tc.name != "stateless" { // stateless servers cannot send requests to the client
				res, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "ask_llm", Arguments: map[string]any{"text": "ping"}})
				if err != nil {
					t.Fatalf("CallTool ask_llm: %v", err)
				}
				if got, want := res.Content[0].(*mcp.TextContent).Text, "sampled: PING"; got != want {
					t.Fatalf("ask_llm = %q, want %q", got, want)
				}
			}

			// Progress, then cancellation of the same call.
			callCtx, callCancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() {
				_, err := sess.CallTool(callCtx, &mcp.CallToolParams{Name: "slow", Meta: mcp.Meta{"progressToken": "p1"}})
				errc <- err
			}()
			waitFor(t, "three progress notifications", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(progress) == 3
			})
			callCancel()
			if err := <-errc; err == nil {
				t.Fatal("cancelled slow call returned no error")
			}
			// A stateless server on a legacy protocol cannot tie a cancellation
			// to the request it names; every other combination must see it.
			if modern || tc.name != "stateless" {
				waitFor(t, "upstream to see the cancellation", func() bool {
					res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "cancelled"})
					return err == nil && res.Content[0].(*mcp.TextContent).Text == "1"
				})
			}
			mu.Lock()
			if fmt.Sprint(progress) != "[1 2 3]" {
				t.Errorf("progress = %v, want [1 2 3]", progress)
			}
			mu.Unlock()

			if !modern && tc.name != "stateless" {
				if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "add_tool", Arguments: map[string]any{"text": "new_tool"}}); err != nil {
					t.Fatalf("CallTool add_tool: %v", err)
				}
				select {
				case <-listChanged:
				case <-ctx.Done():
					t.Fatal("no tools/list_changed notification arrived")
				}
			}
		}
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	clocktest.Poll(t, 10*time.Second, what, cond)
}
