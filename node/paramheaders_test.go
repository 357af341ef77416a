package node

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// TestParamHeadersForwarded: a 2026-07-28 upstream whose tool mirrors an
// argument into an Mcp-Param-* header (x-mcp-header) requires that header
// on every call; the gateway derives it from the body it forwards, using
// the tool's schema from the upstream's tools/list (listed and called in
// two stateless sessions), and never passes on the caller's.
func TestParamHeadersForwarded(t *testing.T) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "params", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "deploy", InputSchema: map[string]any{
		"type":       "object",
		"properties": map[string]any{"region": map[string]any{"type": "string", "x-mcp-header": "Region"}},
	}}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deployed"}}}, nil
	})
	var mu sync.Mutex
	var regions []string
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true})
	upURL := upstreamtest.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mcp-Method") == "tools/call" {
			mu.Lock()
			regions = append(regions, r.Header.Get("Mcp-Param-Region"))
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})) + "/mcp"
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "up", URL: upURL})
	ctx := testContext(t, 20*time.Second)
	// The caller's own Mcp-Param-Region disagrees with the body: it must
	// not reach the upstream.
	c := mcp.NewClient(&mcp.Implementation{Name: "params-test", Version: "1"}, nil)
	sess, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   streamableEndpoint(n, "up"),
		HTTPClient: &http.Client{Transport: headerRewriter{set: http.Header{"Mcp-Param-Region": {"us-east"}}}},
	}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	if _, err := sess.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "deploy", Arguments: map[string]any{"region": "eu-west"}})
	if err != nil {
		t.Fatalf("CallTool deploy: %v", err)
	}
	if res.IsError {
		t.Fatalf("deploy failed: %+v", res.Content)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(regions) != 1 || regions[0] != "eu-west" {
		t.Fatalf("upstream saw Mcp-Param-Region %q, want [eu-west]", regions)
	}
}
