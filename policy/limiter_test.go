package policy

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lim returns a limit over everything with the given id, rate and burst;
// tests narrow it with field assignments.
func lim(id string, rate float64, burst int) Limit {
	return Limit{ID: id, Service: "*", Org: "*", Account: "*", Route: "*", Tool: "*", Rate: rate, Burst: burst}
}

func mustLimiter(t testing.TB, limits ...Limit) *Limiter {
	t.Helper()
	l, err := NewLimiter(limits)
	if err != nil {
		t.Fatalf("NewLimiter: %v", err)
	}
	return l
}

// result is one Allow outcome, for exact comparisons.
type result struct {
	ok    bool
	retry time.Duration
	id    string
}

func allow(l *Limiter, k Key, now time.Time) result {
	ok, retry, id := l.Allow(k, now)
	return result{ok, retry, id}
}

// drain calls Allow n times at now and fails unless all pass.
func drain(t *testing.T, l *Limiter, k Key, now time.Time, n int) {
	t.Helper()
	for i := range n {
		if got := allow(l, k, now); !got.ok {
			t.Fatalf("call %d of %d at %v refused: %+v", i+1, n, now.Sub(t0), got)
		}
	}
}

var key1 = Key{Service: "ci", Org: "acme", Account: "a1", Route: "github", Tool: "list_repos"}

func TestLimitValidate(t *testing.T) {
	ok := lim("l", 10, 5)
	with := func(f func(*Limit)) Limit { l := ok; f(&l); return l }
	tests := []struct {
		name    string
		limit   Limit
		wantErr string
	}{
		{"valid", ok, ""},
		{"exact fields", Limit{ID: "l", Service: "s", Org: "o", Account: "a", Route: "r", Tool: "t", Rate: 0.1, Burst: 1}, ""},
		{"pool", with(func(l *Limit) { l.Pool = DimTool | DimAccount }), ""},
		{"no id", with(func(l *Limit) { l.ID = "" }), "limit has no id"},
		{"empty tool", with(func(l *Limit) { l.Tool = "" }), "tool is empty"},
		{"tool pattern", with(func(l *Limit) { l.Tool = "list_*" }), `tool "list_*" is invalid`},
		{"empty service", with(func(l *Limit) { l.Service = "" }), "service is empty"},
		{"zero rate", with(func(l *Limit) { l.Rate = 0 }), "rate 0 is invalid"},
		{"negative rate", with(func(l *Limit) { l.Rate = -1 }), "rate -1 is invalid"},
		{"NaN rate", with(func(l *Limit) { l.Rate = math.NaN() }), "rate NaN is invalid"},
		{"infinite rate", with(func(l *Limit) { l.Rate = math.Inf(1) }), "rate +Inf is invalid"},
		{"zero burst", with(func(l *Limit) { l.Burst = 0 }), "burst 0 is invalid"},
		{"unknown pool field", with(func(l *Limit) { l.Pool = 1 << 6 }), "pool 0x40 names unknown fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValidate(t, tt.limit.Validate(), tt.wantErr)
		})
	}
}

func TestSetLimitsErrors(t *testing.T) {
	a := lim("a", 1, 1)
	aFaster := a
	aFaster.Rate = 2
	tests := []struct {
		name    string
		limits  []Limit
		wantErr string
	}{
		{"invalid limit names its position", []Limit{a, lim("b", 0, 1)}, `limit 2: limit "b": rate 0 is invalid`},
		{"same id and selectors", []Limit{a, aFaster}, `limit 2: limit "a" repeats the selectors`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewLimiter(tt.limits)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewLimiter() error = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	// A failed SetLimits leaves the old limits in force.
	l := mustLimiter(t, a)
	if err := l.SetLimits([]Limit{lim("b", 0, 1)}); err == nil {
		t.Fatal("SetLimits(invalid) = nil, want error")
	}
	drain(t, l, key1, t0, 1)
	if got, want := allow(l, key1, t0), (result{false, time.Second, "a"}); got != want {
		t.Errorf("Allow after failed SetLimits = %+v, want %+v", got, want)
	}
}

func TestDims(t *testing.T) {
	d, err := ParseDims("tool, account")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d, DimTool|DimAccount; got != want {
		t.Errorf("ParseDims = %v, want %v", got, want)
	}
	if got, want := d.String(), "account,tool"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if d, err := ParseDims(""); d != 0 || err != nil {
		t.Errorf("ParseDims(\"\") = %v, %v; want 0, nil", d, err)
	}
	if _, err := ParseDims("org,user"); err == nil || !strings.Contains(err.Error(), `unknown field "user"`) {
		t.Errorf("ParseDims(org,user) error = %v", err)
	}
}

func TestLimiterBurstExact(t *testing.T) {
	l := mustLimiter(t, lim("per-key", 10, 5))
	drain(t, l, key1, t0, 5)
	steps := []struct {
		at   time.Duration
		want result
	}{
		{0, result{false, 100 * time.Millisecond, "per-key"}},
		{0, result{false, 100 * time.Millisecond, "per-key"}}, // a refusal consumes nothing
		{100*time.Millisecond - time.Nanosecond, result{false, time.Nanosecond, "per-key"}},
		{100 * time.Millisecond, result{true, 0, ""}},
		{100 * time.Millisecond, result{false, 100 * time.Millisecond, "per-key"}},
		{250 * time.Millisecond, result{true, 0, ""}},
		{250 * time.Millisecond, result{false, 50 * time.Millisecond, "per-key"}},
	}
	for i, s := range steps {
		if got := allow(l, key1, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d at +%v: Allow = %+v, want %+v", i, s.at, got, s.want)
		}
	}
	// Refilled to the burst, never beyond it.
	later := t0.Add(time.Hour)
	drain(t, l, key1, later, 5)
	if got := allow(l, key1, later); got.ok {
		t.Errorf("call 6 after a long idle period allowed, want refused (burst 5)")
	}
}

func TestLimiterRetryAfterIsExact(t *testing.T) {
	for _, rate := range []float64{0.001, 0.5, 3, 7, 10, 1000, 1e6, 1.0 / 3} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			l := mustLimiter(t, lim("l", rate, 1))
			drain(t, l, key1, t0, 1)
			got := allow(l, key1, t0)
			if got.ok {
				t.Fatal("second call allowed, want refused")
			}
			ideal := time.Duration(float64(time.Second) / rate)
			if d := got.retry - ideal; d < 0 || d > time.Microsecond {
				t.Errorf("retryAfter = %v, want %v rounded up", got.retry, ideal)
			}
			if r := allow(l, key1, t0.Add(got.retry-time.Nanosecond)); r.ok {
				t.Errorf("allowed 1ns before retryAfter %v", got.retry)
			}
			if r := allow(l, key1, t0.Add(got.retry)); !r.ok {
				t.Errorf("refused at retryAfter %v: %+v", got.retry, r)
			}
		})
	}
}

func TestLimiterAllMatchingLimits(t *testing.T) {
	route := lim("route", 1, 1)
	route.Route = "github"
	tool := lim("tool", 1, 3)
	tool.Tool = "list_repos"
	tool.Pool = DimRoute
	l := mustLimiter(t, route, tool)
	elsewhere := key1
	elsewhere.Route = "gitlab" // only "tool" matches, and shares its bucket

	if got, want := allow(l, key1, t0), (result{true, 0, ""}); got != want {
		t.Fatalf("first call = %+v, want %+v", got, want)
	}
	if got, want := allow(l, key1, t0), (result{false, time.Second, "route"}); got != want {
		t.Fatalf("second call = %+v, want %+v", got, want)
	}
	// The refused call took nothing from "tool": two of its three remain.
	drain(t, l, elsewhere, t0, 2)
	if got, want := allow(l, elsewhere, t0), (result{false, time.Second, "tool"}); got != want {
		t.Fatalf("call beyond tool burst = %+v, want %+v", got, want)
	}

	// When several refuse, the longest wait is reported.
	slow := lim("slow", 0.25, 1)
	fast := lim("fast", 2, 1)
	l = mustLimiter(t, fast, slow)
	drain(t, l, key1, t0, 1)
	if got, want := allow(l, key1, t0), (result{false, 4 * time.Second, "slow"}); got != want {
		t.Errorf("both refusing = %+v, want %+v", got, want)
	}
	if got, want := allow(l, key1, t0.Add(time.Second)), (result{false, 3 * time.Second, "slow"}); got != want {
		t.Errorf("only slow refusing = %+v, want %+v", got, want)
	}
}

func TestLimiterMostSpecificPerID(t *testing.T) {
	general := lim("calls", 1, 1)
	indexer := lim("calls", 1, 3)
	indexer.Service = "indexer"
	byOrg := lim("tie", 1, 2)
	byOrg.Org = "acme"
	byAccount := lim("tie", 1, 4)
	byAccount.Account = "a1"

	tests := []struct {
		name   string
		limits []Limit
		key    Key
		burst  int
		id     string
	}{
		{"general applies to others", []Limit{general, indexer}, Key{Service: "ci", Tool: "t"}, 1, "calls"},
		{"specific overrides general", []Limit{general, indexer}, Key{Service: "indexer", Tool: "t"}, 3, "calls"},
		{"list order does not matter", []Limit{indexer, general}, Key{Service: "indexer", Tool: "t"}, 3, "calls"},
		{"tie: earliest listed", []Limit{byOrg, byAccount}, Key{Org: "acme", Account: "a1"}, 2, "tie"},
		{"tie reversed", []Limit{byAccount, byOrg}, Key{Org: "acme", Account: "a1"}, 4, "tie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustLimiter(t, tt.limits...)
			drain(t, l, tt.key, t0, tt.burst)
			if got, want := allow(l, tt.key, t0), (result{false, time.Second, tt.id}); got != want {
				t.Errorf("call %d = %+v, want %+v", tt.burst+1, got, want)
			}
			if got, want := l.Buckets(), 1; got != want {
				t.Errorf("Buckets() = %d, want %d (one limit per id applies)", got, want)
			}
		})
	}
}

func TestLimiterBuckets(t *testing.T) {
	perKey := lim("per-key", 1, 1)
	pooled := lim("pooled", 1, 1)
	pooled.Route = "linear"
	pooled.Pool = DimTool | DimService
	l := mustLimiter(t, perKey, pooled)

	k := func(service, account, route, tool string) Key {
		return Key{Service: service, Org: "acme", Account: account, Route: route, Tool: tool}
	}
	steps := []struct {
		key  Key
		want result
	}{
		{k("ci", "a1", "github", "x"), result{true, 0, ""}},
		{k("ci", "a1", "github", "x"), result{false, time.Second, "per-key"}},
		{k("ci", "a1", "github", "y"), result{true, 0, ""}}, // "*" means each tool
		{k("ci", "a2", "github", "x"), result{true, 0, ""}}, // and each account
		{k("ci", "a1", "linear", "x"), result{true, 0, ""}},
		{k("ci", "a1", "linear", "y"), result{false, time.Second, "pooled"}},  // tools share a bucket
		{k("bot", "a1", "linear", "z"), result{false, time.Second, "pooled"}}, // so do services
		{k("ci", "a2", "linear", "x"), result{true, 0, ""}},                   // accounts do not
	}
	for i, s := range steps {
		if got := allow(l, s.key, t0); got != s.want {
			t.Fatalf("step %d %+v: Allow = %+v, want %+v", i, s.key, got, s.want)
		}
	}
}

func TestLimiterNoLimits(t *testing.T) {
	l := mustLimiter(t)
	other := mustLimiter(t, Limit{ID: "x", Service: "nobody", Org: "*", Account: "*", Route: "*", Tool: "*", Rate: 1, Burst: 1})
	for range 3 {
		for _, l := range []*Limiter{l, other} {
			if got, want := allow(l, key1, t0), (result{true, 0, ""}); got != want {
				t.Fatalf("Allow = %+v, want %+v", got, want)
			}
		}
	}
	if got := l.Buckets() + other.Buckets(); got != 0 {
		t.Errorf("Buckets() = %d, want 0", got)
	}
}

func TestLimiterShare(t *testing.T) {
	t.Run("split before first use", func(t *testing.T) {
		l := mustLimiter(t, lim("l", 10, 10))
		l.SetShare(2)
		drain(t, l, key1, t0, 5)
		if got, want := allow(l, key1, t0), (result{false, 200 * time.Millisecond, "l"}); got != want {
			t.Fatalf("call 6 = %+v, want %+v (5/s, burst 5 per node)", got, want)
		}
	})
	t.Run("re-split shrinks a full bucket", func(t *testing.T) {
		l := mustLimiter(t, lim("l", 10, 10))
		drain(t, l, key1, t0, 1)
		l.SetShare(2)
		later := t0.Add(time.Hour)
		drain(t, l, key1, later, 5)
		if got, want := allow(l, key1, later), (result{false, 200 * time.Millisecond, "l"}); got != want {
			t.Fatalf("call 6 = %+v, want %+v", got, want)
		}
	})
	t.Run("re-split keeps an empty bucket empty", func(t *testing.T) {
		l := mustLimiter(t, lim("l", 10, 10))
		l.SetShare(2)
		drain(t, l, key1, t0, 5)
		l.SetShare(1) // a node left: this node now enforces 10/s, burst 10
		if got, want := allow(l, key1, t0), (result{false, 100 * time.Millisecond, "l"}); got != want {
			t.Fatalf("after re-split = %+v, want %+v", got, want)
		}
		drain(t, l, key1, t0.Add(time.Second), 10)
	})
	t.Run("burst never below one", func(t *testing.T) {
		l := mustLimiter(t, lim("l", 3, 2))
		l.SetShare(3)
		drain(t, l, key1, t0, 1)
		if got, want := allow(l, key1, t0), (result{false, time.Second, "l"}); got != want {
			t.Fatalf("call 2 = %+v, want %+v (1/s, burst 1)", got, want)
		}
	})
	t.Run("zero nodes counts as one", func(t *testing.T) {
		l := mustLimiter(t, lim("l", 10, 4))
		l.SetShare(0)
		drain(t, l, key1, t0, 4)
		if got := allow(l, key1, t0); got.ok {
			t.Fatalf("call 5 allowed")
		}
	})
}

func TestSetLimitsKeepsUnchangedState(t *testing.T) {
	a, b := lim("a", 1, 1), lim("b", 1, 1)
	b.Route = "other"
	l := mustLimiter(t, a)
	drain(t, l, key1, t0, 1)

	if err := l.SetLimits([]Limit{b, a}); err != nil {
		t.Fatal(err)
	}
	if got, want := allow(l, key1, t0), (result{false, time.Second, "a"}); got != want {
		t.Errorf("unchanged limit after SetLimits: Allow = %+v, want %+v (state kept)", got, want)
	}

	changed := a
	changed.Burst = 2
	if err := l.SetLimits([]Limit{changed}); err != nil {
		t.Fatal(err)
	}
	if got, want := l.Buckets(), 0; got != want {
		t.Errorf("Buckets() after changing the limit = %d, want %d", got, want)
	}
	drain(t, l, key1, t0, 2)
	if got, want := allow(l, key1, t0), (result{false, time.Second, "a"}); got != want {
		t.Errorf("changed limit: call 3 = %+v, want %+v", got, want)
	}

	if err := l.SetLimits(nil); err != nil {
		t.Fatal(err)
	}
	if got, want := allow(l, key1, t0), (result{true, 0, ""}); got != want || l.Buckets() != 0 {
		t.Errorf("no limits: Allow = %+v, Buckets() = %d; want %+v, 0", got, l.Buckets(), want)
	}
}

func TestLimiterBucketCap(t *testing.T) {
	l := mustLimiter(t, lim("l", 1, 1))
	l.SetMaxBuckets(4)
	keyN := func(i int) Key { k := key1; k.Account = fmt.Sprint("a", i); return k }
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	// Four drained buckets, a1 used longest ago.
	for i := 1; i <= 4; i++ {
		drain(t, l, keyN(i), at(i), 1)
	}
	if got, want := l.Buckets(), 4; got != want {
		t.Fatalf("Buckets() = %d, want %d", got, want)
	}
	// A fifth key evicts the least recently used.
	drain(t, l, keyN(5), at(5), 1)
	if got, want := l.Buckets(), 4; got != want {
		t.Fatalf("Buckets() after a fifth key = %d, want %d", got, want)
	}
	for i := 2; i <= 5; i++ {
		if got := allow(l, keyN(i), at(6)); got.ok {
			t.Errorf("a%d allowed at +6ms; its bucket should have been kept (drained)", i)
		}
	}
	// a1 lost its state: it starts over with a full bucket. That evicts a2.
	drain(t, l, keyN(1), at(7), 1)
	if got := allow(l, keyN(2), at(8)); !got.ok {
		t.Errorf("a2 refused after eviction; want a fresh bucket")
	}

	// Full buckets go first, whatever their age: evicting them loses nothing.
	l = mustLimiter(t, lim("l", 1, 1))
	l.SetMaxBuckets(4)
	drain(t, l, keyN(1), t0, 1) // refills by t0+1s
	for i := 2; i <= 4; i++ {
		drain(t, l, keyN(i), t0.Add(1500*time.Millisecond), 1)
	}
	drain(t, l, keyN(5), t0.Add(1600*time.Millisecond), 1)
	for i := 2; i <= 5; i++ {
		if got := allow(l, keyN(i), t0.Add(1700*time.Millisecond)); got.ok {
			t.Errorf("a%d allowed; only the full a1 bucket should have been evicted", i)
		}
	}

	// The default cap.
	l.SetMaxBuckets(0)
	if got, want := l.maxBuckets, DefaultMaxBuckets; got != want {
		t.Errorf("SetMaxBuckets(0) cap = %d, want %d", got, want)
	}
}

func TestLimiterEvictsInBatches(t *testing.T) {
	l := mustLimiter(t, lim("l", 1, 1))
	l.SetMaxBuckets(64)
	k := key1
	for i := range 64 {
		k.Account = fmt.Sprint("a", i)
		drain(t, l, k, t0.Add(time.Duration(i)), 1)
	}
	k.Account = "new"
	drain(t, l, k, t0.Add(time.Millisecond), 1)
	// 64 - 64/8 = 56 kept, minus one for room: 55 old plus the new one.
	if got, want := l.Buckets(), 56; got != want {
		t.Errorf("Buckets() = %d, want %d", got, want)
	}
}

func TestLimiterConcurrentExactCount(t *testing.T) {
	const burst, workers, calls = 100, 8, 50
	l := mustLimiter(t, lim("l", 1, burst))
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				if ok, _, _ := l.Allow(key1, t0); ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != burst {
		t.Errorf("allowed %d of %d concurrent calls at one instant, want exactly %d", got, workers*calls, burst)
	}
}

func TestLimiterAllowDoesNotAllocate(t *testing.T) {
	route := lim("route", 1e9, 1<<30)
	route.Route = "github"
	l := mustLimiter(t, lim("all", 1e9, 1<<30), route)
	now := t0
	l.Allow(key1, now) // create the buckets
	if n := testing.AllocsPerRun(100, func() {
		now = now.Add(time.Microsecond)
		l.Allow(key1, now)
	}); n != 0 {
		t.Errorf("Allow allocates %v times, want 0", n)
	}
}
