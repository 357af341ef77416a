package gateway

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/cputime"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// BenchmarkProxyToolsCall measures one tools/call round trip to the same
// upstream, directly and through the gateway's handler (a Gateway over a
// store in a temp dir, no raft, no node listeners), each over one session
// on loopback in this process. Allocations count every party: client,
// gateway and upstream.
func BenchmarkProxyToolsCall(b *testing.B) {
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(b, up.StreamableHandler()) + "/mcp"
	tg := newTestGateway(b)
	route := tg.addRoute(b, storage.Route{Name: "up", URL: upURL})
	token := tg.issueToken(b, "bench", "*")
	sdkClient := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
	pinned := &mcp.ClientSessionOptions{ProtocolVersion: benchProtocol}

	b.Run("direct", func(b *testing.B) {
		sess, err := sdkClient.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: upURL}, pinned)
		if err != nil {
			b.Fatal(err)
		}
		benchCalls(b, sess)
	})
	b.Run("gateway", func(b *testing.B) {
		sess, err := client.Connect(context.Background(), route.URL, "org1", "acct1",
			client.WithGateway(tg.wsURL()), client.WithToken(token), client.WithProtocolVersion(benchProtocol))
		if err != nil {
			b.Fatal(err)
		}
		benchCalls(b, sess)
	})
	// Tracing at ratio 1: every call gets its spans, handed to a batch
	// processor whose exporter discards them, so no I/O is measured.
	traced := newTestGateway(b, func(o *Options) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
			sdktrace.WithSampler(sdktrace.TraceIDRatioBased(1)))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		o.TracerProvider = tp
	})
	tracedRoute := traced.addRoute(b, storage.Route{Name: "up", URL: upURL})
	tracedToken := traced.issueToken(b, "bench", "*")
	b.Run("gateway-traced", func(b *testing.B) {
		sess, err := client.Connect(context.Background(), tracedRoute.URL, "org1", "acct1",
			client.WithGateway(traced.wsURL()), client.WithToken(tracedToken), client.WithProtocolVersion(benchProtocol))
		if err != nil {
			b.Fatal(err)
		}
		benchCalls(b, sess)
	})
	b.Run("gateway-streamable", func(b *testing.B) {
		sess, err := sdkClient.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: tg.url + "/v1/mcp/up?org=org1&account=acct1&access_token=" + url.QueryEscape(token)}, pinned)
		if err != nil {
			b.Fatal(err)
		}
		benchCalls(b, sess)
	})
}

// benchProtocol is pinned so every case negotiates the same protocol.
const benchProtocol = "2025-11-25"

// benchCalls calls echo in the benchmark loop and reports the median and
// 99th percentile latency in microseconds. It closes sess.
func benchCalls(b *testing.B, sess *mcp.ClientSession) {
	defer sess.Close()
	if got := sess.InitializeResult().ProtocolVersion; got != benchProtocol {
		b.Fatalf("negotiated %s, want %s", got, benchProtocol)
	}
	ctx := context.Background()
	params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}}
	if _, err := sess.CallTool(ctx, params); err != nil { // warm up the connections
		b.Fatal(err)
	}
	latencies := make([]time.Duration, 0, max(b.N, 1))
	b.ReportAllocs()
	// CPU of every party (client, gateway, upstream: one process), which
	// the machine's load inflates less than the latency.
	cpu := cputime.Process()
	defer func() {
		b.ReportMetric(float64((cputime.Process()-cpu).Nanoseconds())/float64(max(b.N, 1))/1e3, "cpu-µs/op")
	}()
	for b.Loop() {
		start := time.Now()
		if _, err := sess.CallTool(ctx, params); err != nil {
			b.Fatal(err)
		}
		latencies = append(latencies, time.Since(start))
	}
	slices.Sort(latencies)
	at := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}
