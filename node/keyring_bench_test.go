package node

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// BenchmarkRotation10k rotates the data key of a 3-node cluster holding
// 10,000 credentials and reports how long resealing takes until the old
// key is retired, and the p50/p99 latency of live traffic on the leader
// (where the resealer runs) before and during it: tools/call on an open
// session, and opening a session (which unseals its credential). Run it
// with -benchtime=1x: one iteration is one whole rotation.
func BenchmarkRotation10k(b *testing.B) {
	up := upstreamtest.New()
	secret := "bench-rotation-secret"
	up.RequireBearer.Store(&secret)
	url := upstreamtest.StartHTTP(b, up.StreamableHandler()) + "/mcp"
	nodes := startCluster(b, 3, steadyRaft)
	leader := nodes[0]
	for _, n := range nodes {
		if n.raft.Status().State == "Leader" {
			leader = n
		}
	}
	route := addRoute(b, leader, storage.Route{Name: "gh", URL: url, Credential: storage.CredentialRequired})
	const total = 10_000
	seedCredentials(b, leader, "gh", total-1, "unused")
	putCredential(b, leader, "acme", "live", "gh", "bearer", secret)
	tok := issueToken(b, leader, "bench", []string{"acme"}, "1h")
	ctx := context.Background()
	opts := []client.Option{client.WithGateway("ws://" + leader.HTTPAddr()), client.WithToken(tok.Token), client.WithProtocolVersion(benchProtocol)}
	sess, err := client.Connect(ctx, route.URL, "acme", "live", opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}

	// measure runs live traffic until stop closes and returns the call and
	// session-open latencies.
	measure := func(stop <-chan struct{}) (calls, opens []time.Duration) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return calls, opens
			default:
			}
			start := time.Now()
			if _, err := sess.CallTool(ctx, params); err != nil {
				b.Fatal(err)
			}
			calls = append(calls, time.Since(start))
			if i%10 == 0 {
				start = time.Now()
				s, err := client.Connect(ctx, route.URL, "acme", "live", opts...)
				if err != nil {
					b.Fatalf("session open: %v", err)
				}
				opens = append(opens, time.Since(start))
				s.Close()
			}
		}
	}
	for range b.N {
		stop := make(chan struct{})
		time.AfterFunc(3*time.Second, func() { close(stop) })
		beforeCalls, beforeOpens := measure(stop)

		stop = make(chan struct{})
		var duringCalls, duringOpens []time.Duration
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); duringCalls, duringOpens = measure(stop) }()
		start := time.Now()
		res := rotateDataKey(b, leader)
		// Done once the old key is retired, which it is only when nothing
		// references it. Read from the keyring alone: polling vault status
		// counts every record each time, load on the leader that would be
		// measured as the rotation's.
		deadline := time.Now().Add(10 * time.Minute)
		for {
			dks, err := leader.store.DataKeys()
			if err != nil {
				b.Fatal(err)
			}
			if len(dks) == 1 && dks[0].ID == res.KeyID {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("still rotating after 10m: %d data keys", len(dks))
			}
			time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
		}
		took := time.Since(start)
		close(stop)
		wg.Wait()
		b.ReportMetric(took.Seconds(), "rotation-s")
		report := func(name string, lat []time.Duration) {
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), name+"-p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), name+"-p99-µs")
		}
		report("call-before", beforeCalls)
		report("call-during", duringCalls)
		report("open-before", beforeOpens)
		report("open-during", duringOpens)
		b.Logf("rotation of %d records: %v; calls before %d, during %d; opens before %d, during %d", total+1, took, len(beforeCalls), len(duringCalls), len(beforeOpens), len(duringOpens))
	}
}
