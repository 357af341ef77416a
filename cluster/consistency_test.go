package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
	"github.com/mcpgw/mcpgw/storage"
)

// A write forwarded to a leader that stalls is abandoned when the follower
// learns of the next leader and resent there: it is acknowledged within
// about a second of the new leader, not at the apply timeout.
func TestForwardedWriteFollowsLeaderChange(t *testing.T) {
	c := clustertest.NewCluster(t, 3, clustertest.WithConfig(func(cfg *cluster.Config) {
		cfg.ApplyTimeout = 10 * time.Second
	}))
	old := c.WaitForLeader(t)
	follower := c.Followers(t)[0]
	apply(t, follower, route("warm")) // the forwarding connection is open

	c.Stall(old.Index)
	t.Cleanup(func() { c.Unstall(old.Index) })
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- follower.Raft().Apply(context.Background(), route("during-election")) }()

	// When the follower first knows a leader other than the stalled one.
	var elected time.Time
	clustertest.Eventually(t, clustertest.Wait, func() error {
		st := follower.Raft().Status()
		if st.LeaderID == "" || st.LeaderID == old.ID {
			return fmt.Errorf("follower's leader is %q", st.LeaderID)
		}
		elected = time.Now()
		return nil
	})
	var err error
	select {
	case err = <-done:
	case <-time.After(clustertest.Wait):
		t.Fatalf("write still not acknowledged %v after the leader stalled", clustertest.Wait)
	}
	acked := time.Now()
	if err != nil {
		t.Fatalf("Apply()=%v, want the write acknowledged by the new leader", err)
	}
	t.Logf("new leader after %v, write acknowledged %v after it", elected.Sub(start).Round(time.Millisecond), acked.Sub(elected).Round(time.Millisecond))
	if got, limit := acked.Sub(elected), 1500*time.Millisecond; got > limit {
		t.Fatalf("write acknowledged %v after the new leader, want within %v", got, limit)
	}
	// The stalled leader comes back and the write is there once.
	c.Unstall(old.Index)
	waitRoutes(t, []string{"warm", "during-election"}, c.Nodes...)
}

// A command carrying a request id already applied is a no-op, even when
// the state moved on since: resending a write never undoes a later one.
func TestResentWriteIsAppliedOnce(t *testing.T) {
	store, err := storage.Open(filepath.Join(t.TempDir(), storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	put := route("a")
	put.RequestID = "req-1"
	del := cluster.Command{Op: cluster.OpDeleteRoute, Name: "a", RequestID: "req-2"}
	for i, cmd := range []cluster.Command{put, del, put} {
		if err := cluster.Apply(store, uint64(i+1), cmd); err != nil {
			t.Fatalf("apply %d: %v", i+1, err)
		}
	}
	if _, err := store.Route("a"); err == nil {
		t.Fatal("route a exists: the resent put was applied a second time, after the delete")
	}
	if got, err := store.AppliedIndex(); err != nil || got != 3 {
		t.Fatalf("AppliedIndex()=%d, %v, want 3", got, err)
	}
}

// A follower that waits for its last write holds it, and ReadIndex on
// another follower sees every acknowledged write: reads there are
// linearizable after it.
func TestReadYourWritesAcrossNodes(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	followers := c.Followers(t)
	writer, reader := followers[0], followers[1]
	for i := range 20 {
		name := fmt.Sprintf("r%d", i)
		index, err := writer.Raft().ApplyIndex(context.Background(), route(name))
		if err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
		if got := writer.Raft().LastWriteIndex(); got != index {
			t.Fatalf("LastWriteIndex()=%d after a write at %d", got, index)
		}
		ctx, cancel := context.WithTimeout(context.Background(), clustertest.Wait)
		err = writer.Raft().WaitApplied(ctx, writer.Raft().LastWriteIndex())
		cancel()
		if err != nil {
			t.Fatalf("wait for node %d to apply its own write: %v", writer.Index, err)
		}
		if !routeNames(t, writer)[name] {
			t.Fatalf("write %s acknowledged by node %d, which does not hold it", name, writer.Index)
		}
		seen, err := reader.Raft().ReadIndex(context.Background())
		if err != nil {
			t.Fatalf("read index on node %d: %v", reader.Index, err)
		}
		if seen < index {
			t.Fatalf("ReadIndex()=%d after a write at %d", seen, index)
		}
		if !routeNames(t, reader)[name] {
			t.Fatalf("node %d misses route %s after ReadIndex", reader.Index, name)
		}
	}
}

// BenchmarkStalledLeaderWrite measures a write issued through a follower
// the moment its leader stalls: the time to its acknowledgement from the
// stall and from the follower learning of the new leader.
func BenchmarkStalledLeaderWrite(b *testing.B) {
	var fromStall, fromLeader []time.Duration
	for i := range b.N {
		b.StopTimer()
		c := clustertest.NewCluster(b, 3, quiet)
		old := c.WaitForLeader(b)
		follower := c.Followers(b)[0]
		apply(b, follower, route("warm"))
		b.StartTimer()

		c.Stall(old.Index)
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- follower.Raft().Apply(context.Background(), route(fmt.Sprintf("stalled-%d", i))) }()
		var elected time.Time
		clustertest.Eventually(b, clustertest.Wait, func() error {
			if st := follower.Raft().Status(); st.LeaderID == "" || st.LeaderID == old.ID {
				return errors.New("no new leader")
			}
			elected = time.Now()
			return nil
		})
		if err := <-done; err != nil {
			b.Fatalf("write during the stall: %v", err)
		}
		fromStall = append(fromStall, time.Since(start))
		fromLeader = append(fromLeader, max(0, time.Since(elected)))
		b.StopTimer()
		c.Unstall(old.Index)
		c.Close()
	}
	for _, m := range []struct {
		unit string
		d    []time.Duration
	}{{"ack-after-stall-ms", fromStall}, {"ack-after-new-leader-ms", fromLeader}} {
		slices.Sort(m.d)
		b.ReportMetric(float64(m.d[len(m.d)/2].Milliseconds()), "p50-"+m.unit)
		b.ReportMetric(float64(slices.Max(m.d).Milliseconds()), "max-"+m.unit)
	}
	b.ReportMetric(0, "ns/op")
}
