package storage

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/cputime"
)

// benchRecord is a tool call record the size the gateway writes: ids,
// address, route, tool, credential key id, latency. Time is left for
// Append to set (now), so retention by age keeps it.
func benchRecord(i int) AuditRecord {
	return AuditRecord{
		Node: "node-0a1b2c3d", Kind: AuditToolCall, SessionID: "Q2FTZ1V0WkN5b0hVcE9KVw" + strconv.Itoa(i%64),
		Service: "billing-agent", TokenID: "0123456789abcdef0123456789abcdef", Remote: "10.1.2.3:50412",
		Org: "acme", Account: "alice", Route: "github", Tool: "list_issues",
		CredentialKeyID: "k-7f3a9c", Outcome: AuditOK, LatencyMicros: int64(1000 + i%977),
	}
}

// BenchmarkAuditAppend appends batches of records as the gateway's writer
// does: 8 is what a 5ms flush interval gathers at 1,500 calls/s, 64 a
// 40ms one, 512 the writer's largest batch, 1 a lone --audit-sync=always
// call. Retention: "none"; "retention", the node's default limits (90
// days, 10 million records) not reached, which Append still checks on
// every write; "full", a log at its record limit, so every Append also
// deletes as many of the oldest records as it adds — where a busy node's
// log is after its first hours. ns/op is per batch; cpu-ns/record is the
// process's CPU (user and system, the syncs included) per record.
func BenchmarkAuditAppend(b *testing.B) {
	const fullAt = 10_000
	cases := []struct {
		name string
		opts AuditOptions
		fill int
	}{
		{"none", AuditOptions{}, 0},
		{"retention", AuditOptions{MaxAge: 90 * 24 * time.Hour, MaxRecords: 10_000_000}, 0},
		{"full", AuditOptions{MaxAge: 90 * 24 * time.Hour, MaxRecords: fullAt}, 2 * fullAt},
	}
	for _, tc := range cases {
		for _, n := range []int{1, 8, 64, 512} {
			b.Run(fmt.Sprintf("%s/batch=%d", tc.name, n), func(b *testing.B) {
				l := openTestAudit(b, tc.opts)
				i := 0
				for fill := make([]AuditRecord, 512); i < tc.fill; {
					for j := range fill {
						fill[j] = benchRecord(i)
						i++
					}
					if err := l.Append(fill); err != nil {
						b.Fatal(err)
					}
				}
				batch := make([]AuditRecord, n)
				b.ReportAllocs()
				start, cpu := i, cputime.Process()
				for b.Loop() {
					for j := range batch {
						batch[j] = benchRecord(i)
						i++
					}
					if err := l.Append(batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i-start), "ns/record")
				b.ReportMetric(float64((cputime.Process()-cpu).Nanoseconds())/float64(i-start), "cpu-ns/record")
			})
		}
	}
}
