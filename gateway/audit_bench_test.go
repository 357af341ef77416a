package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
)

// BenchmarkAuditProxyOverhead measures one tools/call end to end through
// the gateway (client library over WebSocket, streamable HTTP upstream,
// all on loopback) with auditing in place: each call queues one record,
// written in the background. Compare with the same benchmark on a tree
// without the auditor to see what auditing adds per call.
func BenchmarkAuditProxyOverhead(b *testing.B) {
	up := upstreamtest.New()
	tg := newTestGateway(b)
	route := tg.addRoute(b, storage.Route{Name: "up", URL: upstreamtest.StartHTTP(b, up.StreamableHandler()) + "/mcp"})
	ctx := context.Background()
	sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway(tg.wsURL()), client.WithToken(tg.issueToken(b, "bench", "*")))
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		if _, err := sess.CallTool(ctx, params); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

// BenchmarkAuditRecord measures what auditing costs the proxy's hot path
// per tools/call: building the record and queueing it. The writer's work
// happens on its own goroutine (see storage's BenchmarkAuditAppend).
func BenchmarkAuditRecord(b *testing.B) {
	a := newAuditor(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 65536)
	done := make(chan struct{})
	defer close(done)
	go func() { // a writer that keeps up
		for {
			select {
			case <-a.queue:
			case <-done:
				return
			}
		}
	}()
	g := &Gateway{audit: a}
	s := &session{g: g, id: "SESSIONID", remote: "127.0.0.1:50000", route: storage.Route{Name: "gh"}, org: "acme", account: "alice",
		claims: &policy.Claims{ID: "0123456789abcdef0123456789abcdef", Service: "billing-agent"}}
	pc := pendingCall{method: "tools/call", tool: "list_issues", start: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		s.auditToolCall(pc, storage.AuditOK, nil)
	}
	if d := counterValue(a.droppedFull); d > 0 {
		b.Logf("%v records dropped", d)
	}
}

// BenchmarkPayloadHashes measures what --audit-hash-payloads adds to one
// tools/call: reading and hashing the arguments (1 KiB) and hashing a
// 4 KiB result.
func BenchmarkPayloadHashes(b *testing.B) {
	params := json.RawMessage(`{"name":"search","arguments":{"query":"` + strings.Repeat("q", 1000) + `","limit":10}}`)
	result := json.RawMessage(`{"content":[{"type":"text","text":"` + strings.Repeat("r", 4000) + `"}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if argumentsSHA256(params) == "" || hexSHA256(result) == "" {
			b.Fatal("no hash")
		}
	}
}
