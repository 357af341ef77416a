package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
)

// quiet keeps raft's complaints about the killed leader out of benchmark
// output, which prints every log line.
var quiet = clustertest.WithLogLevel(slog.LevelError + 4)

// lanTimeouts puts DefaultConfig's timeouts back on a test node.
func lanTimeouts(cfg *cluster.Config) {
	d := cluster.DefaultConfig()
	cfg.HeartbeatTimeout = d.HeartbeatTimeout
	cfg.ElectionTimeout = d.ElectionTimeout
	cfg.LeaderLeaseTimeout = d.LeaderLeaseTimeout
	cfg.CommitTimeout = d.CommitTimeout
	cfg.RPCTimeout = d.RPCTimeout
	cfg.DialTimeout = d.DialTimeout
	cfg.ApplyTimeout = d.ApplyTimeout
}

// reportPercentiles reports the 50th and 99th percentile of ds in µs.
func reportPercentiles(b *testing.B, ds []time.Duration, unit string) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration { return ds[min(len(ds)-1, int(float64(len(ds))*p))] }
	b.ReportMetric(float64(at(0.50).Microseconds()), "p50-"+unit)
	b.ReportMetric(float64(at(0.99).Microseconds()), "p99-"+unit)
}

// BenchmarkReplicatedWrite measures one write committed by a majority of
// three nodes on loopback and applied on the leader, with LAN timeouts
// and fsync on (raft log and state database).
func BenchmarkReplicatedWrite(b *testing.B) {
	c := clustertest.NewCluster(b, 3, clustertest.WithConfig(lanTimeouts), quiet)
	leader := c.WaitForLeader(b)
	follower := c.Followers(b)[0]
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		node *clustertest.Node
	}{{"leader", leader}, {"follower", follower}} {
		b.Run(tc.name, func(b *testing.B) {
			r := tc.node.Raft()
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				if err := r.Apply(ctx, route(fmt.Sprintf("%s-%d", tc.name, i))); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			reportPercentiles(b, lat, "µs")
		})
	}

	b.Run("leader-parallel", func(b *testing.B) {
		r := leader.Raft()
		var mu sync.Mutex
		var lat []time.Duration
		var n int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				mu.Lock()
				n++
				name := fmt.Sprintf("par-%d", n)
				mu.Unlock()
				start := time.Now()
				if err := r.Apply(ctx, route(name)); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
		b.StopTimer()
		reportPercentiles(b, lat, "µs")
	})
}

// BenchmarkFailover measures the time from killing the leader of three
// nodes to the first write acknowledged through a surviving node, with
// the test timeouts and with DefaultConfig's.
func BenchmarkFailover(b *testing.B) {
	for _, tc := range []struct {
		name   string
		config func(*cluster.Config)
	}{
		{"test-timeouts", func(*cluster.Config) {}},
		{"default-timeouts", lanTimeouts},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var took []time.Duration
			for i := range b.N {
				b.StopTimer()
				c := clustertest.NewCluster(b, 3, clustertest.WithConfig(tc.config), quiet)
				leader := c.WaitForLeader(b)
				survivor := c.Followers(b)[0]
				apply(b, survivor, route("warm"))
				b.StartTimer()

				start := time.Now()
				c.Kill(leader.Index)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := survivor.Raft().Apply(ctx, route(fmt.Sprintf("after-%d", i)))
					cancel()
					if err == nil {
						break
					}
					if time.Since(start) > time.Minute {
						b.Fatalf("no write succeeded a minute after the leader died: %v", err)
					}
				}
				took = append(took, time.Since(start))
				b.StopTimer()
				c.Close()
			}
			var sum time.Duration
			for _, d := range took {
				sum += d
			}
			b.ReportMetric(float64(sum.Milliseconds())/float64(len(took)), "failover-ms")
			b.ReportMetric(float64(slices.Max(took).Milliseconds()), "max-failover-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
