package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/cputime"
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

// BenchmarkAuditWriter measures the audit writer's CPU per record with a
// real audit log (the node's default retention) under a steady load:
// with --audit-sync=batch, records are queued at 1,500 per second (what
// the gateway serves with 8 sessions × 8 workers on 2 cores) at several
// flush intervals; with always, 64 recorders each wait for their record's
// commit, as 64 calls in flight do. cpu-µs/record is the process's CPU
// (user and system, syncs included) per record: the writer's, since
// nothing else runs but the pacing, which "pacing-only" measures alone (a
// queue drained without writing) to subtract; records/commit is how many
// records a commit carried.
func BenchmarkAuditWriter(b *testing.B) {
	const rate = 1500 // records per second, for batch
	const recorders = 64
	rec := storage.AuditRecord{
		Kind: storage.AuditToolCall, SessionID: "Q2FTZ1V0WkN5b0hVcE9KVw", Service: "billing-agent",
		TokenID: "0123456789abcdef0123456789abcdef", Remote: "10.1.2.3:50412", Org: "acme", Account: "alice",
		Route: "github", Tool: "list_issues", CredentialKeyID: "k-7f3a9c", Outcome: storage.AuditOK, LatencyMicros: 1234,
	}
	cases := []struct {
		name  string
		sync  AuditSync
		flush time.Duration
	}{
		{"pacing-only", "", 0},
		{"batch/flush=5ms", AuditSyncBatch, 5 * time.Millisecond},
		{"batch/flush=20ms", AuditSyncBatch, 20 * time.Millisecond},
		{"batch/flush=50ms", AuditSyncBatch, 50 * time.Millisecond},
		{"batch/flush=100ms", AuditSyncBatch, 100 * time.Millisecond},
		{"always", AuditSyncAlways, 0},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			l, err := storage.OpenAudit(filepath.Join(b.TempDir(), storage.AuditFile), storage.AuditOptions{MaxAge: 90 * 24 * time.Hour, MaxRecords: 10_000_000})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			a := newAuditor(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 65536)
			if tc.sync == "" {
				done := make(chan struct{})
				defer close(done)
				go func() {
					for {
						select {
						case <-a.queue:
						case <-done:
							return
						}
					}
				}()
			} else {
				a.configure(tc.sync, tc.flush)
				a.start(l, "n1")
			}
			b.ReportAllocs()
			cpu := cputime.Process()
			start := time.Now()
			if tc.sync == AuditSyncAlways {
				var next atomic.Int64
				var wg sync.WaitGroup
				for range recorders {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							a.record(rec)
						}
					})
				}
				wg.Wait()
			} else {
				i := 0
				for b.Loop() {
					// Paced, not as fast as possible: records per commit
					// is what the flush interval gathers at this rate.
					if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
						time.Sleep(d)
					}
					a.record(rec)
					i++
				}
			}
			a.close()
			elapsed := time.Since(start)
			b.ReportMetric(float64((cputime.Process()-cpu).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/record")
			if n := histogramCount(a.writeSeconds); n > 0 {
				b.ReportMetric(float64(b.N)/n, "records/commit")
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			if d := counterValue(a.droppedFull) + counterValue(a.droppedWrite); d > 0 {
				b.Fatalf("%v records dropped", d)
			}
		})
	}
}

func histogramCount(h prometheus.Histogram) float64 {
	var m dto.Metric
	h.Write(&m)
	return float64(m.GetHistogram().GetSampleCount())
}
