package robustness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	long     = flag.Bool("long", false, "run many randomized runs (MCPGW_ROBUSTNESS_RUNS, default 100) instead of one; MCPGW_ROBUSTNESS_LONG=1 does the same")
	seedFlag = flag.Uint64("seed", 0, "seed of the first run; 0 picks one (logged)")
	duration = flag.Duration("duration", 0, "workload time of each run; default 30s for one run, 10s in long mode")
)

// Workload shape.
const (
	clients   = 4
	opTimeout = 5 * time.Second
	// opPace spaces each client's operations, keeping the test's load
	// low enough for the packages tested beside it on a small machine.
	opPace       = 20 * time.Millisecond
	checkTimeout = 30 * time.Second // per key; past it the key's check is inconclusive
)

var routeNames = []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"}

// runStats is what one run measured.
type runStats struct {
	seed         uint64
	ops          map[string]int // by kind and outcome
	faults       map[string]int
	barrierViol  []violation
	localViol    []violation
	inconclusive int
	lost         []string
	failover     []time.Duration // leader killed → first acknowledged write started after
	localStale   int             // local reads older than a write acknowledged before they started
	localLag     time.Duration   // the longest such gap
}

func envBool(name string) bool {
	v, _ := strconv.ParseBool(os.Getenv(name))
	return v
}

// TestLinearizable runs the workload against a three-node cluster under
// faults and checks the history: barrier reads, local reads and all writes
// must be linearizable, and every acknowledged write must be on every node
// once the faults heal. A read the node refused (it could not confirm its
// copy is current) observed nothing and is left out of the checks.
func TestLinearizable(t *testing.T) {
	runs := 1
	d := 30 * time.Second
	if *long || envBool("MCPGW_ROBUSTNESS_LONG") {
		runs, d = 100, 10*time.Second
		if n, err := strconv.Atoi(os.Getenv("MCPGW_ROBUSTNESS_RUNS")); err == nil && n > 0 {
			runs = n
		}
	}
	if *duration > 0 {
		d = *duration
	}
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64() % 1_000_000
	}

	total := runStats{ops: map[string]int{}, faults: map[string]int{}}
	var violatedRuns, localRuns, lostRuns int
	for i := range runs {
		s := seed + uint64(i)
		var st runStats
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			st = run(t, s, d)
			for _, v := range st.barrierViol {
				t.Errorf("barrier reads not linearizable on %s: %s (reproduce: -seed %d)", v.key, v.example, s)
			}
			for _, l := range st.lost {
				t.Errorf("acknowledged write lost: %s (reproduce: -seed %d)", l, s)
			}
			for _, v := range st.localViol {
				t.Errorf("local reads not linearizable on %s: %s (reproduce: -seed %d)", v.key, v.example, s)
			}
		})
		for k, v := range st.ops {
			total.ops[k] += v
		}
		for k, v := range st.faults {
			total.faults[k] += v
		}
		total.barrierViol = append(total.barrierViol, st.barrierViol...)
		total.localViol = append(total.localViol, st.localViol...)
		total.lost = append(total.lost, st.lost...)
		total.inconclusive += st.inconclusive
		total.failover = append(total.failover, st.failover...)
		total.localStale += st.localStale
		total.localLag = max(total.localLag, st.localLag)
		if len(st.barrierViol) > 0 {
			violatedRuns++
		}
		if len(st.localViol) > 0 {
			localRuns++
		}
		if len(st.lost) > 0 {
			lostRuns++
		}
	}
	t.Logf("SUMMARY runs=%d seeds=%d..%d ops=%d %v faults=%d %v barrier-violations=%d (runs %d) local-violations=%d keys (runs %d; %d stale local reads, up to %v after the write was acknowledged) lost-writes=%d (runs %d) inconclusive-keys=%d failover-first-ack %s",
		runs, seed, seed+uint64(runs)-1, sum(total.ops), sortedMap(total.ops), sum(total.faults), sortedMap(total.faults),
		len(total.barrierViol), violatedRuns, len(total.localViol), localRuns, total.localStale, total.localLag.Round(time.Millisecond), len(total.lost), lostRuns, total.inconclusive, percentiles(total.failover))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedMap(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "n=0"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%v max=%v", len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// failoverClock measures, after the nemesis kills the leader, how long
// until a write started after the kill is acknowledged.
type failoverClock struct {
	mu      sync.Mutex
	killed  int64 // when the leader was killed; 0 when not waiting
	samples []time.Duration
}

func (f *failoverClock) leaderKilled(at int64) {
	f.mu.Lock()
	f.killed = at
	f.mu.Unlock()
}

func (f *failoverClock) acked(call, ret int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killed != 0 && call >= f.killed {
		f.samples = append(f.samples, time.Duration(ret-f.killed))
		f.killed = 0
	}
}

// run is one randomized run: a fresh cluster, the workload for d under the
// nemesis, healing, the final state of every node, and the checks.
func run(t *testing.T, seed uint64, d time.Duration) runStats {
	t.Logf("seed %d", seed)
	c := newTestCluster(t, 3)
	h := &history{start: time.Now()}
	fo := &failoverClock{}
	st := runStats{seed: seed, ops: map[string]int{}, faults: map[string]int{}}

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker(ctx, c, h, fo, i, rand.New(rand.NewPCG(seed, uint64(i+1))))
		}()
	}
	nemesisErr := nemesis(ctx, c, h, fo, rand.New(rand.NewPCG(seed, 0)), st.faults)
	wg.Wait()
	if nemesisErr != nil {
		t.Fatal(nemesisErr)
	}

	// Heal everything and bring every node back, then read each node's
	// final state through a barrier: every acknowledged write must be
	// there.
	c.net.heal()
	for _, g := range c.nodes {
		if _, _, up := g.endpoint(); !up {
			if err := c.restart(g); err != nil {
				t.Fatalf("restart %s after the run: %v", g.id, err)
			}
		}
	}
	keys := h.modelKeys(routeNames)
	final := make(map[string]map[string]string)
	for i, g := range c.nodes {
		state := make(map[string]string)
		for _, kind := range []opKind{opReadRoutes, opReadTokens} {
			var r record
			deadline := time.Now().Add(30 * time.Second)
			for {
				rctx, rcancel := context.WithTimeout(context.Background(), opTimeout)
				var err error
				r, err = read(rctx, g, h, clients+i, kind, barrierRead, fmt.Sprintf("final-%d", kind))
				rcancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("final read of %s: %v", g.id, err)
				}
			}
			h.add(r)
			for k, v := range r.seen {
				state[k] = v
			}
		}
		final[g.id] = state
	}

	for _, r := range h.records {
		name := r.kind.String()
		if r.kind.isRead() {
			name += "/" + r.mode.String()
			if r.refused {
				name += "/refused"
			}
		} else {
			name += "/" + r.out.String()
		}
		st.ops[name]++
	}
	st.lost = h.lostWrites(final, keys)
	var inc int
	st.barrierViol, inc = h.check(barrierRead, keys, checkTimeout)
	st.inconclusive += inc
	st.localViol, inc = h.check(localRead, keys, checkTimeout)
	st.inconclusive += inc
	st.failover = fo.samples
	st.localStale, st.localLag = h.staleReads(localRead, keys)
	t.Logf("seed %d: %d ops %v, faults %v, barrier violations %d, local violations %d keys (%d stale reads, up to %v), lost %d, inconclusive %d, failover %s",
		seed, len(h.records), sortedMap(st.ops), sortedMap(st.faults), len(st.barrierViol), len(st.localViol), st.localStale, st.localLag.Round(time.Millisecond), len(st.lost), st.inconclusive, percentiles(st.failover))
	return st
}

// worker issues random operations through random nodes until ctx ends.
func worker(ctx context.Context, c *testCluster, h *history, fo *failoverClock, client int, rng *rand.Rand) {
	pace := time.NewTicker(opPace)
	defer pace.Stop()
	for seq := 0; ctx.Err() == nil; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		g := c.nodes[rng.IntN(len(c.nodes))]
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		r := record{client: client, node: g.id}
		switch p := rng.IntN(100); {
		case p < 30:
			name := routeNames[rng.IntN(len(routeNames))]
			r.kind, r.key, r.value = opPutRoute, "route/"+name, fmt.Sprintf("http://127.0.0.1:9/v/c%d-%d", client, seq)
			r.call = h.now()
			r.out = g.putRoute(octx, name, r.value)
		case p < 38:
			name := routeNames[rng.IntN(len(routeNames))]
			r.kind, r.key = opDeleteRoute, "route/"+name
			r.call = h.now()
			r.out = g.deleteRoute(octx, name)
		case p < 48:
			r.kind, r.value = opIssueToken, "active"
			r.call = h.now()
			var id string
			id, r.out = g.issueToken(octx)
			if r.out == ok {
				r.key = "token/" + id
			}
		case p < 55:
			id, found := h.randomToken(rng.IntN)
			if !found {
				cancel()
				continue
			}
			r.kind, r.key, r.value = opRevokeToken, "token/"+id, "revoked"
			r.call = h.now()
			r.out = g.revokeToken(octx, id)
		default:
			kind := opReadRoutes
			if rng.IntN(100) < 40 {
				kind = opReadTokens
			}
			mode := barrierRead
			if p >= 80 {
				mode = localRead
			}
			var err error
			r, err = read(octx, g, h, client, kind, mode, strconv.Itoa(seq))
			cancel()
			switch {
			case err == nil:
				h.add(r)
			case errors.Is(err, errUnconfirmed):
				// Kept to be counted; the checks skip it.
				r.refused, r.seen, r.ret = true, nil, h.now()
				h.add(r)
			}
			continue
		}
		cancel()
		r.ret = h.now()
		if r.out == unknown {
			r.ret = math.MaxInt64
		} else if r.out == ok {
			fo.acked(r.call, r.ret)
		}
		h.add(r)
	}
}

// read reads one kind of state through g. A barrier read first writes a
// marker route through g and waits until g's local state shows it: the
// marker's entry comes after every write acknowledged before the read
// started, so g then holds all of them. A failed read returns an error and
// observed nothing: errUnconfirmed when the node refused it.
func read(ctx context.Context, g *gateway, h *history, client int, kind opKind, mode readMode, tag string) (record, error) {
	r := record{client: client, node: g.id, kind: kind, mode: mode, call: h.now()}
	if mode == barrierRead {
		marker := fmt.Sprintf("zb%d", client)
		url := "http://127.0.0.1:9/b/" + tag
		if o := g.putRoute(ctx, marker, url); o != ok {
			return r, fmt.Errorf("barrier write through %s: %v", g.id, o)
		}
		for {
			routes, err := g.routes(ctx)
			if err != nil {
				return r, err
			}
			if routes[marker] == url {
				if kind == opReadRoutes {
					r.seen = modelRoutes(routes)
					r.ret = h.now()
					return r, nil
				}
				break
			}
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	if kind == opReadRoutes {
		routes, err := g.routes(ctx)
		if err != nil {
			return r, err
		}
		r.seen = modelRoutes(routes)
	} else {
		toks, err := g.tokens(ctx)
		if err != nil {
			return r, err
		}
		r.seen = make(map[string]string, len(toks))
		for id, v := range toks {
			r.seen["token/"+id] = v
		}
	}
	r.ret = h.now()
	return r, nil
}

// modelRoutes keeps the routes the model knows, leaving out markers.
func modelRoutes(routes map[string]string) map[string]string {
	m := make(map[string]string, len(routes))
	for name, url := range routes {
		if !strings.HasPrefix(name, "zb") {
			m["route/"+name] = url
		}
	}
	return m
}

// nemesis injects one fault at a time until ctx ends, counting them by
// kind, and heals each before the next:
//   - kill: a node (the leader half the time) is stopped without draining,
//     and started again on its files 0.5-1.5s later;
//   - pause: a node freezes for 0.5-2s: no raft traffic in or out, and its
//     admin API answers nothing (requests wait, as on a SIGSTOPped process);
//   - isolate: a node's raft links to both others are cut for 0.5-2s;
//   - cut-link: the raft link between two nodes is cut for 0.5-2s.
func nemesis(ctx context.Context, c *testCluster, h *history, fo *failoverClock, rng *rand.Rand, faults map[string]int) error {
	wait := func(min, max time.Duration) bool {
		t := time.NewTimer(min + time.Duration(rng.Int64N(int64(max-min))))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	// hold keeps a fault for its duration even if the run ends meanwhile,
	// so that no fault is counted without having been in force.
	hold := func(min, max time.Duration) {
		time.Sleep(min + time.Duration(rng.Int64N(int64(max-min)))) // the fault's duration, not synchronisation
	}
	pick := func() *gateway {
		if rng.IntN(2) == 0 {
			if l := c.leader(); l != nil {
				return l
			}
		}
		return c.nodes[rng.IntN(len(c.nodes))]
	}
	for wait(500*time.Millisecond, 1500*time.Millisecond) {
		switch rng.IntN(4) {
		case 0:
			g := pick()
			wasLeader := c.leader() == g
			c.kill(g)
			if wasLeader {
				faults["kill-leader"]++
				fo.leaderKilled(h.now())
			} else {
				faults["kill-follower"]++
			}
			hold(500*time.Millisecond, 1500*time.Millisecond)
			if err := c.restart(g); err != nil {
				return fmt.Errorf("restart %s: %w", g.id, err)
			}
		case 1:
			g := pick()
			faults["pause"]++
			c.net.update(func() { c.net.paused[g.id] = true })
			hold(500*time.Millisecond, 2*time.Second)
			c.net.heal()
		case 2:
			g := pick()
			faults["isolate"]++
			c.net.update(func() {
				for _, o := range c.nodes {
					if o != g {
						c.net.cut[pair(g.id, o.id)] = true
					}
				}
			})
			hold(500*time.Millisecond, 2*time.Second)
			c.net.heal()
		case 3:
			a := rng.IntN(len(c.nodes))
			b := (a + 1 + rng.IntN(len(c.nodes)-1)) % len(c.nodes)
			faults["cut-link"]++
			c.net.update(func() { c.net.cut[pair(c.nodes[a].id, c.nodes[b].id)] = true })
			hold(500*time.Millisecond, 2*time.Second)
			c.net.heal()
		}
	}
	return nil
}
