package robustness

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

type opKind int

const (
	opPutRoute opKind = iota
	opDeleteRoute
	opIssueToken
	opRevokeToken
	opReadRoutes
	opReadTokens
)

func (k opKind) String() string {
	return [...]string{"put-route", "delete-route", "issue-token", "revoke-token", "read-routes", "read-tokens"}[k]
}

func (k opKind) isRead() bool { return k == opReadRoutes || k == opReadTokens }

// readMode is how a read reaches state.
type readMode int

const (
	// barrierRead writes a marker through the node, waits for the node's
	// local state to show it, then reads: linearizable.
	barrierRead readMode = iota
	// localRead reads the node's local state as it is.
	localRead
)

func (m readMode) String() string { return [...]string{"barrier", "local"}[m] }

// record is one operation as a client saw it. Times are nanoseconds since
// the run started; ret is math.MaxInt64 when the outcome is unknown.
type record struct {
	client int
	node   string
	kind   opKind
	key    string // writes: "route/<name>" or "token/<id>"
	value  string // writes: the value the key gets ("" deletes)
	out    outcome
	mode   readMode          // reads
	seen   map[string]string // reads: every model key of the read's kind that exists
	// refused, on a read, is a node's refusal to answer because it could
	// not confirm its copy is current: it observed nothing.
	refused bool
	call    int64
	ret     int64
}

// history collects records from all clients.
type history struct {
	start time.Time

	mu      sync.Mutex // guards the fields below
	records []record
	tokens  []string // ids of acknowledged issues, in order
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(r record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.kind == opIssueToken && r.out == ok {
		h.tokens = append(h.tokens, strings.TrimPrefix(r.key, "token/"))
	}
	h.records = append(h.records, r)
}

func (h *history) randomToken(pick func(int) int) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.tokens) == 0 {
		return "", false
	}
	return h.tokens[pick(len(h.tokens))], true
}

// kvInput and kvOutput are one operation on one key of the model.
type kvInput struct {
	write bool
	value string // what a write sets
}

type kvOutput struct {
	value string // what a read saw; "" is absent
}

// kvModel is one key of the admin state: a route's URL, or a token's
// "active" / "revoked"; "" while it does not exist. The history is
// partitioned by key, so a violation names the key it is on.
var kvModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.write {
			return true, in.value
		}
		return output.(kvOutput).value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(kvInput)
		if in.write {
			return fmt.Sprintf("set %q", in.value)
		}
		return fmt.Sprintf("get → %q", output.(kvOutput).value)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// modelKeys returns every key the model checks: all route names the
// clients use, and every token whose issue was acknowledged.
func (h *history) modelKeys(routeNames []string) []string {
	var keys []string
	for _, n := range routeNames {
		keys = append(keys, "route/"+n)
	}
	for _, id := range h.tokens {
		keys = append(keys, "token/"+id)
	}
	return keys
}

func keyKind(key string) opKind {
	if strings.HasPrefix(key, "route/") {
		return opReadRoutes
	}
	return opReadTokens
}

// operations turns the records into per-key porcupine histories holding
// every write and the reads of one mode. A 404 on a write is a local
// lookup that found nothing: a read of "absent" in local mode, and no
// operation at all in barrier mode (nothing was applied).
func (h *history) operations(mode readMode, keys []string) map[string][]porcupine.Operation {
	observed := make(map[string]bool) // key + value pairs some read saw
	for _, r := range h.records {
		if r.kind.isRead() {
			for k, v := range r.seen {
				observed[k+"\x00"+v] = true
			}
		}
	}
	ops := make(map[string][]porcupine.Operation)
	for _, r := range h.records {
		switch {
		case r.kind.isRead():
			if r.mode != mode || r.refused {
				continue
			}
			for _, k := range keys {
				if keyKind(k) == r.kind {
					ops[k] = append(ops[k], porcupine.Operation{ClientId: r.client, Input: kvInput{}, Output: kvOutput{value: r.seen[k]}, Call: r.call, Return: r.ret})
				}
			}
		case r.out == failed:
			// Never applied: no operation.
		case r.key == "":
			// An issue with no answer: its id is unknown, and no read is
			// checked against it.
		case r.out == notFound:
			if mode == localRead {
				ops[r.key] = append(ops[r.key], porcupine.Operation{ClientId: r.client, Input: kvInput{}, Output: kvOutput{}, Call: r.call, Return: r.ret})
			}
		case r.out == unknown && r.value != "" && r.kind == opPutRoute && !observed[r.key+"\x00"+r.value]:
			// A write of a unique value nobody saw is equivalent to one
			// taking effect after everything else: leaving it out keeps the
			// search small.
		default:
			ops[r.key] = append(ops[r.key], porcupine.Operation{ClientId: r.client, Input: kvInput{write: true, value: r.value}, Call: r.call, Return: r.ret})
		}
	}
	return ops
}

// violation is one key whose history is not linearizable.
type violation struct {
	key     string
	example string // a stale read, when one explains it
}

// check runs porcupine over each key's history for mode.
func (h *history) check(mode readMode, keys []string, timeout time.Duration) (violations []violation, inconclusive int) {
	for key, ops := range h.operations(mode, keys) {
		switch porcupine.CheckOperationsTimeout(kvModel, ops, timeout) {
		case porcupine.Illegal:
			violations = append(violations, violation{key: key, example: h.explain(mode, key)})
		case porcupine.Unknown:
			inconclusive++
		}
	}
	slices.SortFunc(violations, func(a, b violation) int { return strings.Compare(a.key, b.key) })
	return violations, inconclusive
}

// staleReads counts the reads of mode that returned, for some key, a value
// older than one acknowledged before the read started (the pattern explain
// reports), and the longest time between that acknowledgement and the
// read's start.
func (h *history) staleReads(mode readMode, keys []string) (n int, worst time.Duration) {
	acked := make(map[string][]record)
	writes := make(map[string][]record)
	for _, r := range h.records {
		if r.kind.isRead() || r.key == "" || r.out == notFound || r.out == failed {
			continue
		}
		writes[r.key] = append(writes[r.key], r)
		if r.out == ok {
			acked[r.key] = append(acked[r.key], r)
		}
	}
	for _, r := range h.records {
		if !r.kind.isRead() || r.mode != mode || r.refused {
			continue
		}
		stale := false
		for _, k := range keys {
			if keyKind(k) != r.kind {
				continue
			}
			got := r.seen[k]
			for _, w := range acked[k] {
				if w.ret >= r.call || w.value == got {
					continue
				}
				if !slices.ContainsFunc(writes[k], func(w2 record) bool { return w2.value == got && w2.ret > w.call }) {
					stale = true
					worst = max(worst, time.Duration(r.call-w.ret))
				}
			}
		}
		if stale {
			n++
		}
	}
	return n, worst
}

// explain looks for the simplest pattern behind a violation: a read that
// started after a write of another value was acknowledged and returned a
// value written before that write started (or nothing).
func (h *history) explain(mode readMode, key string) string {
	var writes []record
	for _, r := range h.records {
		if r.key == key && r.out == ok {
			writes = append(writes, r)
		}
	}
	for _, r := range h.records {
		if !r.kind.isRead() || r.mode != mode || r.refused || keyKind(key) != r.kind {
			continue
		}
		got := r.seen[key]
		for _, w := range writes {
			if w.ret >= r.call || w.value == got {
				continue
			}
			// w was acknowledged before r started; is there any write of
			// got that could come after w?
			later := false
			for _, w2 := range h.records {
				if w2.key == key && w2.value == got && w2.out != notFound && w2.out != failed && w2.ret > w.call {
					later = true
					break
				}
			}
			if !later {
				return fmt.Sprintf("%s %q by client %d via %s from %s, acknowledged at %s; then a read via %s from %s to %s returned %q",
					w.kind, w.value, w.client, w.node, ms(w.call), ms(w.ret), r.node, ms(r.call), ms(r.ret), got)
			}
		}
	}
	return "no single stale read explains it; rerun with the same seed"
}

func ms(ns int64) string {
	if ns == math.MaxInt64 {
		return "never"
	}
	return time.Duration(ns).Round(time.Millisecond).String()
}

// lostWrites returns acknowledged writes whose effect is missing from a
// node's final state: the final value is neither the write's nor that of
// any write that may have come after it.
func (h *history) lostWrites(final map[string]map[string]string, keys []string) []string {
	var lost []string
	for nodeID, state := range final {
		for _, w := range h.records {
			if w.kind.isRead() || w.out != ok || w.key == "" {
				continue
			}
			got := state[w.key]
			if got == w.value {
				continue
			}
			overwritten := false
			for _, w2 := range h.records {
				if w2.key == w.key && !w2.kind.isRead() && w2.out != notFound && w2.out != failed && w2.value == got && w2.ret > w.call {
					overwritten = true
					break
				}
			}
			if !overwritten {
				lost = append(lost, fmt.Sprintf("%s: %s %s=%q acknowledged at %s, final value %q", nodeID, w.kind, w.key, w.value, ms(w.ret), got))
			}
		}
	}
	slices.Sort(lost)
	return lost
}
