package node

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// protocolVersions are the MCP protocol generations the go-sdk speaks,
// oldest first; the gateway carries each of them.
var protocolVersions = []string{"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"}

// downstreams are the ways a client reaches the gateway.
var downstreams = []string{"websocket", "streamable", "quic", "unix", "sse"}

// sseEndpoint is the gateway's legacy HTTP+SSE endpoint for a route.
func sseEndpoint(n *Node, route string) string {
	return "http://" + n.HTTPAddr() + "/v1/sse/" + route + "?org=org1&account=acct1&access_token=" + url.QueryEscape(testToken(n))
}

// connectVia opens a go-sdk client session through n over the downstream
// transport down, asking for protocol (empty: the SDK's newest), to route.
func connectVia(t *testing.T, ctx context.Context, n *Node, down string, route storage.Route, protocol string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return connectWith(t, ctx, n, down, route, protocol, mcp.NewClient(&mcp.Implementation{Name: "generations-test", Version: "1"}, opts))
}

// connectWith is connectVia for a client the caller built.
func connectWith(t *testing.T, ctx context.Context, n *Node, down string, route storage.Route, protocol string, c *mcp.Client) *mcp.ClientSession {
	t.Helper()
	var sopts *mcp.ClientSessionOptions
	if protocol != "" {
		sopts = &mcp.ClientSessionOptions{ProtocolVersion: protocol}
	}
	var tr mcp.Transport
	switch down {
	case "streamable":
		tr = &mcp.StreamableClientTransport{Endpoint: streamableEndpoint(n, route.Name)}
	case "sse":
		tr = &mcp.SSEClientTransport{Endpoint: sseEndpoint(n, route.Name)}
	default:
		var addr string
		opts := tokenOpts(n)
		switch down {
		case "websocket":
			addr = "ws://" + n.HTTPAddr()
		case "quic":
			addr = "quic://" + n.QUICAddr()
			opts = append(opts, client.WithRootCAs(nodeRoots(t, n)))
		case "unix":
			addr = "unix://" + n.cfg.UnixPath
		default:
			t.Fatalf("unknown downstream %q", down)
		}
		ct, err := client.NewTransport(addr, route.URL, "org1", "acct1", opts...)
		if err != nil {
			t.Fatal(err)
		}
		tr = ct
	}
	sess, err := c.Connect(ctx, tr, sopts)
	if err != nil {
		t.Fatalf("Connect over %s asking for %s: %v", down, protocol, err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// TestClientGenerations connects a go-sdk client pinned to each protocol
// version over each downstream transport to a stateless go-sdk upstream
// (the one kind of server that speaks every version), and checks the
// version it asked for is the one negotiated and that calls pass. It is
// the test behind the README's client generation matrix.
func TestClientGenerations(t *testing.T) {
	up := upstreamtest.New()
	r := storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StatelessHandler()) + "/mcp"}
	n := startNode(t)
	route := addRoute(t, n, r)
	for _, down := range downstreams {
		for _, v := range protocolVersions {
			t.Run(down+"/"+v, func(t *testing.T) {
				ctx := testContext(t, 20*time.Second)
				sess := connectVia(t, ctx, n, down, route, v, nil)
				if got := sess.InitializeResult().ProtocolVersion; got != v {
					t.Fatalf("negotiated %s, want %s", got, v)
				}
				tools, err := sess.ListTools(ctx, nil)
				if err != nil {
					t.Fatalf("ListTools: %v", err)
				}
				if len(tools.Tools) == 0 {
					t.Fatal("ListTools returned no tools")
				}
				echo(t, ctx, sess, "generation "+v+" over "+down)
				if err := sess.Ping(ctx, nil); err != nil {
					t.Fatalf("Ping: %v", err)
				}
			})
		}
	}
}
