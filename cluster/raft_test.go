package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/cluster/clustertest"
	"github.com/mcpgw/mcpgw/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func route(name string) cluster.Command {
	return cluster.Command{Op: cluster.OpPutRoute, Route: &storage.Route{
		Name:      name,
		URL:       "https://" + name + ".example.com/mcp",
		Transport: storage.TransportStreamable,
		Kind:      storage.KindExternal,
		Created:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}}
}

// apply writes cmd through n as a client would: a write whose fate is
// unknown (leadership changed under it) is sent again, which every
// command allows. Tests of what is acknowledged call Apply themselves.
func apply(t testing.TB, n *clustertest.Node, cmd cluster.Command) {
	t.Helper()
	clustertest.Eventually(t, clustertest.Wait, func() error {
		err := n.Raft().Apply(context.Background(), cmd)
		if errors.Is(err, cluster.ErrInvalidCommand) || errors.Is(err, cluster.ErrClosed) {
			t.Fatalf("apply %s through node %d: %v", cmd.Op, n.Index, err)
		}
		if err != nil {
			t.Logf("apply %s through node %d: %v; again", cmd.Op, n.Index, err)
		}
		return err
	})
}

// routeNames returns the names of the routes in n's store.
func routeNames(t testing.TB, n *clustertest.Node) map[string]bool {
	t.Helper()
	routes, err := n.Store().Routes()
	if err != nil {
		t.Fatalf("routes of node %d: %v", n.Index, err)
	}
	names := make(map[string]bool, len(routes))
	for _, r := range routes {
		names[r.Name] = true
	}
	return names
}

// waitRoutes waits until each node holds every route in want.
func waitRoutes(t testing.TB, want []string, nodes ...*clustertest.Node) {
	t.Helper()
	for _, n := range nodes {
		clustertest.Eventually(t, clustertest.Wait, func() error {
			have := routeNames(t, n)
			var missing []string
			for _, name := range want {
				if !have[name] {
					missing = append(missing, name)
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("node %d lacks %d of %d routes, first %s", n.Index, len(missing), len(want), missing[0])
			}
			return nil
		})
	}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestWritesThroughAnyNodeReachEveryStore(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.WaitForLeader(t)
	follower := c.Followers(t)[0]

	apply(t, leader, route("via-leader"))
	cred := storage.Credential{
		Org: "org_42", Account: "acct_7", Route: "via-leader", Kind: "oauth", KeyID: "age1key",
		Sealed:  []byte("age-encryption.org/v1\x00\x01\xff sealed bytes"),
		Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Rotated: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	apply(t, follower, cluster.Command{Op: cluster.OpPutCredential, Credential: &cred})
	apply(t, follower, route("via-follower"))

	waitRoutes(t, []string{"via-leader", "via-follower"}, c.Nodes...)
	for _, n := range c.Nodes {
		clustertest.Eventually(t, clustertest.Wait, func() error {
			got, err := n.Store().Credential("org_42", "acct_7", "via-leader")
			if err != nil {
				return fmt.Errorf("node %d: %w", n.Index, err)
			}
			if diff := cmp.Diff(cred, got); diff != "" {
				t.Fatalf("node %d credential (-want +got):\n%s", n.Index, diff)
			}
			return nil
		})
	}
}

func TestFollowerGetsTheLeadersCommandError(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	follower := c.Followers(t)[0]
	for _, tc := range []struct {
		name string
		cmd  cluster.Command
	}{
		{"missing payload", cluster.Command{Op: cluster.OpPutRoute}},
		{"unknown op", cluster.Command{Op: 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := follower.Raft().Apply(context.Background(), tc.cmd)
			if !errors.Is(err, cluster.ErrInvalidCommand) {
				t.Fatalf("Apply()=%v, want an error wrapping ErrInvalidCommand", err)
			}
		})
	}
	// The refused entries are in the log; the cluster goes on.
	apply(t, follower, route("after"))
	waitRoutes(t, []string{"after"}, c.Nodes...)
}

func TestAcknowledgedWritesSurviveLeaderKill(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.WaitForLeader(t)
	follower := c.Followers(t)[0]

	var (
		mu    sync.Mutex
		acked []string
		// ackedAfterKill counts writes acknowledged after the kill.
		ackedAfterKill int
		killed         bool
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	writer := func(prefix string, r *cluster.Raft) {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("%s%d", prefix, i)
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := r.Apply(wctx, route(name))
			cancel()
			if errors.Is(err, cluster.ErrClosed) {
				return
			}
			if err == nil {
				mu.Lock()
				acked = append(acked, name)
				if killed {
					ackedAfterKill++
				}
				mu.Unlock()
			}
		}
	}
	wg.Add(2)
	go writer("f", follower.Raft())
	go writer("l", leader.Raft())

	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(acked), ackedAfterKill
	}
	clustertest.Eventually(t, clustertest.Wait, func() error {
		if n, _ := count(); n < 50 {
			return fmt.Errorf("%d writes acknowledged", n)
		}
		return nil
	})
	mu.Lock()
	killed = true
	mu.Unlock()
	c.Kill(leader.Index)

	newLeader := c.WaitForLeader(t)
	if newLeader == leader {
		t.Fatal("the killed node is still leader")
	}
	clustertest.Eventually(t, clustertest.Wait, func() error {
		if _, n := count(); n < 50 {
			return fmt.Errorf("%d writes acknowledged since the kill", n)
		}
		return nil
	})
	stop()
	wg.Wait()

	c.WaitSynced(t)
	mu.Lock()
	defer mu.Unlock()
	var survivors []*clustertest.Node
	for _, n := range c.Nodes {
		if n.Alive() {
			survivors = append(survivors, n)
		}
	}
	waitRoutes(t, acked, survivors...)
	t.Logf("%d writes acknowledged, %d after the leader was killed", len(acked), ackedAfterKill)
}

func TestRestartedNodeCatchesUpFromLog(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	follower := c.Followers(t)[0]
	c.Kill(follower.Index)
	leader := c.WaitForLeader(t)
	want := names("r", 20)
	for _, name := range want {
		apply(t, leader, route(name))
	}
	c.Restart(follower.Index)
	waitRoutes(t, want, follower)
	if got := follower.Raft().Status().SnapshotsRestored; got != 0 {
		t.Fatalf("SnapshotsRestored=%d, want 0: a node a few entries behind catches up from the log", got)
	}
}

// catchUpFromSnapshot starts three nodes that snapshot often, kills a
// follower, applies routes until the leader's log no longer holds what the
// dead node needs next, restarts it, and waits until it has every route by
// installing a snapshot.
func catchUpFromSnapshot(t *testing.T) (c *clustertest.Cluster, leader, follower *clustertest.Node) {
	t.Helper()
	const trailing = 4
	c = clustertest.NewCluster(t, 3, clustertest.WithConfig(func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = trailing
		cfg.SnapshotInterval = 20 * time.Millisecond
	}))
	follower = c.Followers(t)[0]
	behind := follower.Raft().Status().LastIndex
	c.Kill(follower.Index)
	leader = c.WaitForLeader(t)
	want := names("r", 100)
	for _, name := range want {
		apply(t, leader, route(name))
	}
	// Wait until the leader's log no longer holds what the dead node
	// needs next, so only a snapshot can bring it up to date.
	clustertest.Eventually(t, clustertest.Wait, func() error {
		st := leader.Raft().Status()
		if st.SnapshotIndex < behind+trailing+1+50 {
			return fmt.Errorf("leader snapshot index %d", st.SnapshotIndex)
		}
		return nil
	})
	c.Restart(follower.Index)
	waitRoutes(t, want, follower)
	if got := follower.Raft().Status().SnapshotsRestored; got == 0 {
		t.Fatal("SnapshotsRestored=0, want a snapshot install")
	}
	return c, leader, follower
}

func TestLongDeadNodeCatchesUpFromSnapshot(t *testing.T) {
	c, leader, _ := catchUpFromSnapshot(t)
	// And the log goes on from the snapshot.
	apply(t, leader, route("after-snapshot"))
	waitRoutes(t, []string{"after-snapshot"}, c.Nodes...)
}

func TestFourthNodeJoinsWithFullState(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.WaitForLeader(t)
	before := names("before", 10)
	for _, name := range before {
		apply(t, leader, route(name))
	}
	n4 := c.AddNode(t)
	c.WaitForVoters(t, 4)
	waitRoutes(t, before, n4)
	apply(t, n4, route("through-new-node"))
	waitRoutes(t, []string{"through-new-node"}, c.Nodes...)
	clustertest.Eventually(t, clustertest.Wait, func() error {
		if got, want := c.WaitForLeader(t).Raft().LiveNodes(), 4; got != want {
			return fmt.Errorf("LiveNodes()=%d, want %d", got, want)
		}
		return nil
	})
}

func TestRemovedNodeStopsReceivingWrites(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	followers := c.Followers(t)
	removed, keeper := followers[0], followers[1]
	apply(t, keeper, route("before"))
	waitRoutes(t, []string{"before"}, c.Nodes...)

	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Wait)
	defer cancel()
	// Through the other follower: membership changes are forwarded too.
	if err := keeper.Raft().Remove(ctx, removed.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	c.WaitForVoters(t, 2)
	after := names("after", 5)
	for _, name := range after {
		apply(t, keeper, route(name))
	}
	leader := c.WaitForLeader(t)
	waitRoutes(t, after, leader, keeper)
	have := routeNames(t, removed)
	for _, name := range after {
		if have[name] {
			t.Fatalf("removed node received %s", name)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	defer wcancel()
	err := removed.Raft().Apply(wctx, route("from-removed"))
	// The leader refuses it, or, once the removed node stops hearing
	// from the leader, it finds no leader.
	if !errors.Is(err, cluster.ErrNotMember) && !errors.Is(err, cluster.ErrNoLeader) {
		t.Fatalf("Apply on removed node = %v, want ErrNotMember or ErrNoLeader", err)
	}
	t.Logf("removed node refuses writes: %v", err)
	if err := keeper.Raft().Remove(ctx, removed.ID); err != nil {
		t.Fatalf("removing a non-member again: %v", err)
	}
}

func TestMinorityCannotWrite(t *testing.T) {
	const wantMsg = "no leader: this node cannot reach a quorum (1 of 3 nodes); writes are refused until a majority is back"
	for _, tc := range []struct {
		name    string
		isolate func(*testing.T, *clustertest.Cluster) *clustertest.Node
		// exact is false where the node led as the write came in: the
		// write reached its log before it noticed it lost the majority,
		// so the error goes on to say the write's fate is open.
		exact bool
	}{
		{"partitioned follower", func(t *testing.T, c *clustertest.Cluster) *clustertest.Node { return c.Followers(t)[0] }, true},
		{"partitioned leader", func(t *testing.T, c *clustertest.Cluster) *clustertest.Node { return c.WaitForLeader(t) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clustertest.NewCluster(t, 3)
			// The node cut off must already hold the three-voter
			// configuration, or it counts the nodes it knew of then.
			c.WaitSynced(t)
			cut := tc.isolate(t, c)
			c.Partition(cut.Index)
			checkRefused(t, cut, wantMsg, tc.exact)

			// The majority goes on, and the healed node catches up
			// without the refused write.
			apply(t, c.WaitForLeader(t), route("majority"))
			c.Heal(cut.Index)
			waitRoutes(t, []string{"majority"}, cut)
			apply(t, cut, route("healed"))
			waitRoutes(t, []string{"healed"}, c.Nodes...)
			if have := routeNames(t, cut); have["minority"] {
				t.Fatal("the write refused in the minority was applied after healing")
			}
		})
	}
	t.Run("one of three alive", func(t *testing.T) {
		c := clustertest.NewCluster(t, 3)
		leader := c.WaitForLeader(t)
		followers := c.Followers(t)
		c.Kill(followers[0].Index)
		c.Kill(followers[1].Index)
		checkRefused(t, leader, wantMsg, false)
	})
}

// checkRefused checks a write through n fails within its deadline with
// ErrNoLeader and the message operators see: exactly, or followed by more
// when the node was leader as the write came in.
func checkRefused(t *testing.T, n *clustertest.Node, wantMsg string, exact bool) {
	t.Helper()
	const timeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := n.Raft().Apply(ctx, route("minority"))
	took := time.Since(start)
	if !errors.Is(err, cluster.ErrNoLeader) {
		t.Fatalf("Apply()=%v, want ErrNoLeader", err)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
	if got := err.Error(); got != wantMsg && (exact || !strings.HasPrefix(got, wantMsg)) {
		t.Fatalf("error %q, want %q", got, wantMsg)
	}
	if took > timeout+500*time.Millisecond {
		t.Fatalf("refusal took %v, want about the %v deadline", took, timeout)
	}
	if have := routeNames(t, n); have["minority"] {
		t.Fatal("the refused write was applied")
	}
}

func TestLiveNodesAndObserve(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	// Under CPU load leadership may move at any point, so every check
	// reads the leader afresh rather than trusting one captured earlier.
	var leader *clustertest.Node
	// A new leader counts a follower once it has heard back from it.
	clustertest.Eventually(t, clustertest.Wait, func() error {
		if leader = c.Leader(); leader == nil {
			return errors.New("no agreed leader")
		}
		if got, want := leader.Raft().LiveNodes(), 3; got != want {
			return fmt.Errorf("leader LiveNodes()=%d, want %d", got, want)
		}
		for _, p := range leader.Raft().Status().Peers {
			if p.Health != cluster.HealthUp {
				return fmt.Errorf("leader sees peer %s as %s, want up", p.ID, p.Health)
			}
		}
		return nil
	})

	// Whichever node leads once the victim is gone must notice and say so.
	var changes []<-chan struct{}
	for _, n := range c.Nodes {
		ch, stop := n.Raft().Observe()
		defer stop()
		changes = append(changes, ch)
	}
	var victim *clustertest.Node
	for _, n := range c.Nodes {
		if n != leader {
			victim = n
			break
		}
	}
	c.Kill(victim.Index)
	settled := func() error {
		cur := c.Leader()
		if cur == nil {
			return errors.New("no agreed leader")
		}
		if got, want := cur.Raft().LiveNodes(), 2; got != want {
			return fmt.Errorf("leader LiveNodes()=%d after a follower died, want %d", got, want)
		}
		for _, p := range cur.Raft().Status().Peers {
			if want := map[bool]cluster.Health{true: cluster.HealthDown, false: cluster.HealthUp}[p.ID == victim.ID]; p.Health != want {
				return fmt.Errorf("leader sees peer %s as %s, want %s", p.ID, p.Health, want)
			}
		}
		return nil
	}
	// Wait on Observe alone, with no timer: a node that failed to report a
	// change would leave the loop waiting until the deadline.
	deadline := time.After(clustertest.Wait)
	for err := settled(); err != nil; err = settled() {
		select {
		case <-changes[0]:
		case <-changes[1]:
		case <-changes[2]:
		case <-deadline:
			t.Fatalf("%v after %v", err, clustertest.Wait)
		}
	}

	// Followers share limits among every voter.
	clustertest.Eventually(t, clustertest.Wait, func() error {
		cur := c.Leader()
		if cur == nil {
			return errors.New("no agreed leader")
		}
		for _, n := range c.Nodes {
			if n == cur || n == victim {
				continue
			}
			if got, want := n.Raft().LiveNodes(), 3; got != want {
				return fmt.Errorf("follower LiveNodes()=%d, want %d", got, want)
			}
		}
		return nil
	})
}

func TestStatus(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	apply(t, c.WaitForLeader(t), route("r"))
	c.WaitSynced(t)
	// Leadership may move under CPU load: compare every node's view with
	// the leader of the moment, until they agree.
	clustertest.Eventually(t, clustertest.Wait, func() error {
		leader := c.Leader()
		if leader == nil {
			return errors.New("no agreed leader")
		}
		for _, n := range c.Nodes {
			st := n.Raft().Status()
			if st.LeaderID != leader.ID || st.LeaderAddr != leader.Addr {
				return fmt.Errorf("node %d: leader %s at %s, want %s at %s", n.Index, st.LeaderID, st.LeaderAddr, leader.ID, leader.Addr)
			}
			if st.ID != n.ID || st.Addr != n.Addr || st.Term == 0 || st.CommitIndex == 0 || st.AppliedIndex == 0 {
				return fmt.Errorf("node %d: incomplete status %+v", n.Index, st)
			}
			if len(st.Peers) != 3 {
				return fmt.Errorf("node %d: %d peers, want 3", n.Index, len(st.Peers))
			}
			for _, p := range st.Peers {
				if p.Suffrage != "Voter" {
					return fmt.Errorf("node %d: peer %s is %s", n.Index, p.ID, p.Suffrage)
				}
				if p.ID == leader.ID && (p.Health != cluster.HealthUp || !p.Leader) {
					return fmt.Errorf("node %d sees leader as %+v", n.Index, p)
				}
			}
		}
		return nil
	})
}

func TestRestartDoesNotReapplyTheLog(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.WaitForLeader(t)
	want := names("r", 10)
	for _, name := range want {
		apply(t, leader, route(name))
	}
	c.WaitSynced(t)
	last := leader.Raft().Status().LastIndex
	for i := range c.Nodes {
		c.Kill(i)
	}
	for i := range c.Nodes {
		c.Restart(i)
	}
	c.WaitForLeader(t)
	for _, n := range c.Nodes {
		clustertest.Eventually(t, clustertest.Wait, func() error {
			if got := n.Raft().Status().AppliedIndex; got < last {
				return fmt.Errorf("node %d applied %d of %d", n.Index, got, last)
			}
			return nil
		})
		// Raft handed the whole log to the fsm again; a store that
		// committed nothing skipped all of it.
		if got := n.Store().Generation(); got != 1 {
			t.Errorf("node %d store committed %d writes replaying its log, want 0", n.Index, got-1)
		}
		if got := n.Raft().Status().SnapshotsRestored; got != 0 {
			t.Errorf("node %d restored %d snapshots at restart, want 0", n.Index, got)
		}
	}
	apply(t, c.WaitForLeader(t), route("after-restart"))
	waitRoutes(t, append(want, "after-restart"), c.Nodes...)
}
