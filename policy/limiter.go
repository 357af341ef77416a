package policy

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxBuckets is the number of token buckets a Limiter keeps before it
// evicts idle ones.
const DefaultMaxBuckets = 100_000

// Key identifies what a call is charged to. It has the same fields as
// Request, so Key(req) converts one.
type Key struct {
	Service, Org, Account, Route, Tool string
}

// Dims is a set of Key fields.
type Dims uint8

// Key fields, for Limit.Pool.
const (
	DimService Dims = 1 << iota
	DimOrg
	DimAccount
	DimRoute
	DimTool

	dimAll = DimService | DimOrg | DimAccount | DimRoute | DimTool
)

var dimNames = [...]struct {
	dim  Dims
	name string
}{{DimService, "service"}, {DimOrg, "org"}, {DimAccount, "account"}, {DimRoute, "route"}, {DimTool, "tool"}}

// String returns the set as a comma-separated list, e.g. "account,tool".
func (d Dims) String() string {
	var names []string
	for _, n := range dimNames {
		if d&n.dim != 0 {
			names = append(names, n.name)
		}
	}
	if rest := d &^ dimAll; rest != 0 {
		names = append(names, fmt.Sprintf("0x%x", uint8(rest)))
	}
	return strings.Join(names, ",")
}

// ParseDims parses a comma-separated list of Key field names
// (service, org, account, route, tool); "" is the empty set.
func ParseDims(s string) (Dims, error) {
	var d Dims
	if s == "" {
		return 0, nil
	}
next:
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		for _, n := range dimNames {
			if f == n.name {
				d |= n.dim
				continue next
			}
		}
		return 0, fmt.Errorf("unknown field %q; use service, org, account, route or tool", f)
	}
	return d, nil
}

// Limit is a cluster-wide token bucket over the calls it matches.
//
// Each selector is an exact value or "*" for any. By default "*" means "each":
// every distinct concrete key gets its own bucket, so a limit with Account "*"
// limits every account separately. Fields in Pool instead share one bucket
// across all their values: Route "linear", Account "*", Tool "*" with Pool
// DimTool limits each account's calls to any linear tool together.
//
// Limits with the same ID form a family of which at most one applies to a
// call: the matching one with the most exact selectors, the earliest listed
// on a tie. That lets a specific limit override a general one ("calls" at 10/s
// for every service, but 100/s for service "indexer"). Limits with different
// IDs all apply.
type Limit struct {
	ID      string  // names the limit in refusals and metrics; see above for repeated IDs
	Service string  // exact, or "*" for any
	Org     string  // exact, or "*" for any
	Account string  // exact, or "*" for any
	Route   string  // exact, or "*" for any
	Tool    string  // exact, or "*" for any
	Rate    float64 // calls per second, cluster-wide
	Burst   int     // calls at once, cluster-wide
	Pool    Dims    // fields whose values share one bucket; default none: one bucket per distinct key
}

// Validate reports whether the limit is well formed.
func (l Limit) Validate() error {
	if l.ID == "" {
		return errors.New("limit has no id; give every limit an id")
	}
	if len(l.ID) > maxIDLen {
		return fmt.Errorf("limit id %.20q... is longer than %d characters; use a shorter id", l.ID, maxIDLen)
	}
	for _, f := range [...]struct{ name, value string }{
		{"service", l.Service}, {"org", l.Org}, {"account", l.Account}, {"route", l.Route}, {"tool", l.Tool},
	} {
		if err := checkSelector(f.name, f.value); err != nil {
			return fmt.Errorf("limit %q: %w", l.ID, err)
		}
	}
	if !(l.Rate > 0) || math.IsInf(l.Rate, 0) {
		return fmt.Errorf("limit %q: rate %v is invalid; use a positive number of calls per second", l.ID, l.Rate)
	}
	if l.Burst < 1 {
		return fmt.Errorf("limit %q: burst %d is invalid; use at least 1", l.ID, l.Burst)
	}
	if l.Pool&^dimAll != 0 {
		return fmt.Errorf("limit %q: pool %s names unknown fields; use service, org, account, route or tool", l.ID, l.Pool)
	}
	return nil
}

func (l *Limit) matches(k *Key) bool {
	return (l.Service == "*" || l.Service == k.Service) &&
		(l.Org == "*" || l.Org == k.Org) &&
		(l.Account == "*" || l.Account == k.Account) &&
		(l.Route == "*" || l.Route == k.Route) &&
		(l.Tool == "*" || l.Tool == k.Tool)
}

func (l *Limit) exactFields() int {
	n := 0
	for _, v := range [...]string{l.Service, l.Org, l.Account, l.Route, l.Tool} {
		if v != "*" {
			n++
		}
	}
	return n
}

// limitEntry is a compiled Limit. Its address identifies the limit's buckets,
// so an unchanged limit keeps its entry, and its buckets, across SetLimits.
type limitEntry struct {
	Limit
}

// limitFamily is the limits sharing an ID, most specific first.
type limitFamily []*limitEntry

// bucketKey names one bucket: a limit and the concrete key, with pooled
// fields blanked.
type bucketKey struct {
	entry                              *limitEntry
	service, org, account, route, tool string
}

type bucket struct {
	lim      *rate.Limiter
	nodes    int   // share the limiter's rate and burst were split for
	lastUsed int64 // unix nanoseconds of the last Allow that touched it
}

// Limiter enforces Limits on calls. It is safe for concurrent use.
//
// Limits are cluster-wide: with N live nodes (SetShare), each node enforces
// Rate/N and max(1, Burst/N), so no call needs a network round trip. Buckets
// are created on first use, full, and re-split lazily on their next use after
// the share changes.
//
// Memory is bounded: once the limiter holds its cap of buckets
// (SetMaxBuckets; default DefaultMaxBuckets), the next new bucket first evicts every full bucket,
// which loses nothing because a full bucket behaves exactly like a new one,
// and if that frees too little, the least recently used buckets until an
// eighth of the room is free. An evicted bucket that was not full comes back
// full, so eviction errs towards allowing. The cap may be exceeded by the
// number of limits that match a single call.
//
// One mutex guards all buckets. A call holds it for a few hundred
// nanoseconds, far below the cost of the upstream call being limited, and it
// makes checking several limits at once atomic: a call refused by one limit
// consumes nothing from the others.
type Limiter struct {
	mu         sync.Mutex
	families   []limitFamily         // guarded by mu
	entries    map[Limit]*limitEntry // guarded by mu; every entry in families
	nodes      int                   // guarded by mu; live nodes sharing the limits, at least 1
	maxBuckets int                   // guarded by mu
	buckets    map[bucketKey]*bucket // guarded by mu
}

// NewLimiter returns a limiter enforcing limits, for a single node.
func NewLimiter(limits []Limit) (*Limiter, error) {
	l := &Limiter{nodes: 1, maxBuckets: DefaultMaxBuckets, buckets: make(map[bucketKey]*bucket)}
	if err := l.SetLimits(limits); err != nil {
		return nil, err
	}
	return l, nil
}

// SetLimits replaces the limits. Buckets of limits that are unchanged (same
// ID, selectors, rate, burst and pool) keep their state; the others start
// over full.
func (l *Limiter) SetLimits(limits []Limit) error {
	seen := make(map[Limit]bool, len(limits))
	for i, lim := range limits {
		if err := lim.Validate(); err != nil {
			return fmt.Errorf("limit %d: %w", i+1, err)
		}
		sel := lim
		sel.Rate, sel.Burst, sel.Pool = 0, 0, 0
		if seen[sel] {
			return fmt.Errorf("limit %d: limit %q repeats the selectors of an earlier limit with that id; merge them", i+1, lim.ID)
		}
		seen[sel] = true
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	entries := make(map[Limit]*limitEntry, len(limits))
	var families []limitFamily
	familyOf := make(map[string]int)
	for _, lim := range limits {
		e := l.entries[lim]
		if e == nil {
			e = &limitEntry{Limit: lim}
		}
		entries[lim] = e
		i, ok := familyOf[lim.ID]
		if !ok {
			i = len(families)
			familyOf[lim.ID] = i
			families = append(families, nil)
		}
		families[i] = append(families[i], e)
	}
	for _, f := range families {
		slices.SortStableFunc(f, func(a, b *limitEntry) int { return b.exactFields() - a.exactFields() })
	}
	l.families, l.entries = families, entries
	for k := range l.buckets {
		if entries[k.entry.Limit] != k.entry {
			delete(l.buckets, k)
		}
	}
	return nil
}

// SetShare sets the number of live nodes that split every limit; values
// below 1 count as 1.
func (l *Limiter) SetShare(liveNodes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes = max(1, liveNodes)
}

// Share returns the number of live nodes the limits are split among.
func (l *Limiter) Share() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodes
}

// SetMaxBuckets sets the bucket cap; n <= 0 restores DefaultMaxBuckets.
func (l *Limiter) SetMaxBuckets(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n <= 0 {
		n = DefaultMaxBuckets
	}
	l.maxBuckets = n
}

// Buckets returns the number of buckets held.
func (l *Limiter) Buckets() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// maxLimitsPerCall sizes the stack buffers Allow uses; more matching limit
// families still work, with an allocation.
const maxLimitsPerCall = 8

// Allow charges one call to key at now. If every matching limit has a token,
// it takes one from each and returns ok. Otherwise it takes none and returns
// the limit that refused, with the wait until it will have a token; when
// several refuse, the one with the longest wait. Calls no limit matches are
// allowed.
func (l *Limiter) Allow(key Key, now time.Time) (ok bool, retryAfter time.Duration, limitID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.families) == 0 {
		return true, 0, ""
	}
	var hitBuf [maxLimitsPerCall]*limitEntry
	hits := hitBuf[:0]
	for _, f := range l.families {
		for _, e := range f {
			if e.matches(&key) {
				hits = append(hits, e)
				break
			}
		}
	}
	if len(hits) == 0 {
		return true, 0, ""
	}

	var bucketBuf [maxLimitsPerCall]*bucket
	buckets := bucketBuf[:0]
	missing := 0
	for _, e := range hits {
		b := l.buckets[e.bucketKey(&key)]
		if b == nil {
			missing++
		}
		buckets = append(buckets, b)
	}
	if missing > 0 {
		// Make room before creating, then look every bucket up again:
		// eviction may have dropped one this call had found.
		l.makeRoom(missing, now)
		for i, e := range hits {
			buckets[i] = l.bucket(e, e.bucketKey(&key))
		}
	}

	nanos := now.UnixNano()
	ok = true
	for i, b := range buckets {
		b.resplit(l.nodes, hits[i], now)
		b.lastUsed = nanos
		if tokens := b.lim.TokensAt(now); tokens < 1 {
			if wait := waitFor(b.lim, tokens, now); ok || wait > retryAfter {
				retryAfter, limitID = wait, hits[i].ID
			}
			ok = false
		}
	}
	if !ok {
		return false, retryAfter, limitID
	}
	for _, b := range buckets {
		// Cannot fail: the bucket had a token and mu is held.
		b.lim.AllowN(now, 1)
	}
	return true, 0, ""
}

// bucketKey returns the key of e's bucket for key.
func (e *limitEntry) bucketKey(key *Key) bucketKey {
	k := bucketKey{entry: e, service: key.Service, org: key.Org, account: key.Account, route: key.Route, tool: key.Tool}
	if e.Pool != 0 {
		if e.Pool&DimService != 0 {
			k.service = ""
		}
		if e.Pool&DimOrg != 0 {
			k.org = ""
		}
		if e.Pool&DimAccount != 0 {
			k.account = ""
		}
		if e.Pool&DimRoute != 0 {
			k.route = ""
		}
		if e.Pool&DimTool != 0 {
			k.tool = ""
		}
	}
	return k
}

// bucket returns the bucket for k, creating it full if needed. l.mu must
// be held.
func (l *Limiter) bucket(e *limitEntry, k bucketKey) *bucket {
	b := l.buckets[k]
	if b == nil {
		r, burst := e.perNode(l.nodes)
		b = &bucket{lim: rate.NewLimiter(r, burst), nodes: l.nodes}
		l.buckets[k] = b
	}
	return b
}

// resplit adjusts the bucket to the current share, at now. l.mu must be
// held.
func (b *bucket) resplit(nodes int, e *limitEntry, now time.Time) {
	if b.nodes == nodes {
		return
	}
	r, burst := e.perNode(nodes)
	b.lim.SetLimitAt(now, r)
	b.lim.SetBurstAt(now, burst)
	b.nodes = nodes
}

// perNode splits the limit across nodes.
func (e *limitEntry) perNode(nodes int) (rate.Limit, int) {
	return rate.Limit(e.Rate / float64(nodes)), max(1, e.Burst/nodes)
}

// waitFor returns how long after now lim, holding tokens (< 1) at now, will
// hold one token, rounded up to the nanosecond so that a retry after exactly
// that long succeeds.
func waitFor(lim *rate.Limiter, tokens float64, now time.Time) time.Duration {
	r := float64(lim.Limit())
	wait := time.Duration(math.Ceil((1 - tokens) / r * float64(time.Second)))
	// Float rounding in the bucket's own arithmetic may leave it a hair
	// short of a token; nudge forward until it is not.
	for i := 0; i < 16 && lim.TokensAt(now.Add(wait)) < 1; i++ {
		wait++
	}
	return wait
}

// makeRoom evicts buckets so that need more fit under the cap. l.mu must be
// held.
func (l *Limiter) makeRoom(need int, now time.Time) {
	if len(l.buckets)+need <= l.maxBuckets {
		return
	}
	keep := max(0, l.maxBuckets-l.maxBuckets/8-need)
	for k, b := range l.buckets {
		if b.lim.TokensAt(now) >= float64(b.lim.Burst()) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) <= keep {
		return
	}
	used := make([]int64, 0, len(l.buckets))
	for _, b := range l.buckets {
		used = append(used, b.lastUsed)
	}
	slices.Sort(used)
	cutoff := used[len(used)-keep-1]
	for k, b := range l.buckets {
		if b.lastUsed <= cutoff {
			delete(l.buckets, k)
		}
	}
}
