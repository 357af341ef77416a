package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// benchProtocol is pinned so every case negotiates the same protocol.
const benchProtocol = "2025-11-25"

// BenchmarkTransports measures one tools/call round trip on one session:
// straight to the upstream, and through the gateway over each downstream
// transport. It reports p50 and p99 latencies besides the mean.
func BenchmarkTransports(b *testing.B) {
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(b, up.StreamableHandler()) + "/mcp"
	n := startNode(b)
	route := addRoute(b, n, storage.Route{Name: "up", URL: upURL})
	impl := &mcp.Implementation{Name: "bench", Version: "1"}

	cases := []struct {
		name    string
		connect func(ctx context.Context) (*mcp.ClientSession, error)
	}{
		{"direct-streamable", func(ctx context.Context) (*mcp.ClientSession, error) {
			return mcp.NewClient(impl, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: upURL}, &mcp.ClientSessionOptions{ProtocolVersion: benchProtocol})
		}},
	}
	for _, gw := range gatewayCases {
		cases = append(cases, struct {
			name    string
			connect func(ctx context.Context) (*mcp.ClientSession, error)
		}{"gateway-" + gw.name, func(ctx context.Context) (*mcp.ClientSession, error) {
			return client.Connect(ctx, route.URL, "org1", "acct1", append(gw.opts(b, n),
				client.WithImplementation(impl), client.WithProtocolVersion(benchProtocol))...)
		}})
	}

	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			sess, err := tc.connect(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer sess.Close()
			if got := sess.InitializeResult().ProtocolVersion; got != benchProtocol {
				b.Fatalf("negotiated %s, want %s", got, benchProtocol)
			}
			params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}
			if _, err := sess.CallTool(ctx, params); err != nil { // warm up connections
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				res, err := sess.CallTool(ctx, params)
				lat = append(lat, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if res.IsError {
					b.Fatalf("echo failed: %v", res.Content)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
