package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
)

// Headers of the admin API's read-your-writes.
const (
	// IndexHeader, on every /v1/ answer, is the raft index of the
	// replicated state the answer reflects: after a write, at least the
	// write's own index.
	IndexHeader = "Mcpgw-Index"
	// MinIndexHeader, on a request, is the highest IndexHeader the caller
	// has seen; the node answers only once its state reflects that index.
	MinIndexHeader = "Mcpgw-Min-Index"
	// ConsistencyHeader, on a read request, set to ConsistencyStale, asks
	// for this node's local copy as it is, without the read barrier. On
	// an answer it says how the answer was made: ConsistencyStale for such
	// a read, ConsistencyUnconfirmed on a refusal because this node could
	// not confirm its copy is current (nothing was read or changed, so the
	// request may go to another node).
	ConsistencyHeader = "Mcpgw-Consistency"
	// ConsistencyStale is ConsistencyHeader's value of a local read.
	ConsistencyStale = "stale"
	// ConsistencyUnconfirmed is ConsistencyHeader's value on the refusal
	// of a request whose read barrier did not complete.
	ConsistencyUnconfirmed = "unconfirmed"
)

// CodeNotCurrent is the ErrorBody code of a request refused because this
// node could not confirm that its copy of the replicated state is current.
const CodeNotCurrent = "not_current"

// DefaultMinIndexWait bounds how long a node waits to catch up to a
// request's MinIndexHeader, or to the leader, before answering.
const DefaultMinIndexWait = 5 * time.Second

// Consistency is how far this node's copy of the replicated state has got,
// and the means to wait for more. *cluster.Raft is one.
type Consistency interface {
	// AppliedIndex is the raft index of the last entry the state holds.
	AppliedIndex() uint64
	// LastWriteIndex is the raft index of the latest write acknowledged
	// through this node, which its state may not hold yet.
	LastWriteIndex() uint64
	// WaitApplied waits until the state holds entry index.
	WaitApplied(ctx context.Context, index uint64) error
	// ReadIndex waits until the state holds every write the cluster
	// acknowledged before the call, waiting for a leader if there is none
	// yet. Without one in time its error wraps cluster.ErrNoLeader.
	ReadIndex(ctx context.Context) (uint64, error)
	// HasLeader reports whether this node knows of a leader now.
	HasLeader() bool
}

// nodeLocal reports whether path serves this node's own view (its audit
// log, its raft status, membership changes), which no barrier through the
// leader should hold up: those must answer while there is no quorum.
func nodeLocal(path string) bool {
	return strings.HasPrefix(path, "/v1/cluster/") || strings.HasPrefix(path, "/v1/audit")
}

// consistent gives /v1/ answers read-your-writes and linearizable reads.
// A request waits (bounded) until this node has applied the index in its
// MinIndexHeader and the latest write made through this node, else is
// refused with 503. Every other request on replicated state first waits
// for this node to apply what the leader has (a ReadIndex), so a read sees
// every write acknowledged before it started, and a write validated
// against state (a credential names a route, a delete finds its record)
// sees writes made through other nodes. When that barrier cannot complete
// the request is refused with 503 and ConsistencyUnconfirmed, before
// anything is read or changed: at once for a read on a node that knows no
// leader (it is cut off from the majority, and waiting out the bound on
// every read would not help), after the bound otherwise. A read that asks
// for ConsistencyStale skips both waits and answers from the local copy,
// marked so. Every answer carries IndexHeader.
func (s *server) consistent(next http.Handler) http.Handler {
	c := s.opts.Consistency
	if c == nil {
		return next
	}
	wait := s.opts.MinIndexWait
	if wait <= 0 {
		wait = DefaultMinIndexWait
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		switch v := r.Header.Get(ConsistencyHeader); {
		case v == "":
		case !strings.EqualFold(v, ConsistencyStale):
			writeError(w, http.StatusBadRequest, "%s %q is not known: send %q on a read to get this node's local copy without the read barrier, or leave it out", ConsistencyHeader, v, ConsistencyStale)
			return
		case !read:
			writeError(w, http.StatusBadRequest, "%s: %s is for reads (GET): a %s always goes through the leader; leave the header out", ConsistencyHeader, ConsistencyStale, r.Method)
			return
		default:
			w.Header().Set(ConsistencyHeader, ConsistencyStale)
			next.ServeHTTP(&indexWriter{ResponseWriter: w, c: c}, r)
			return
		}
		// The node's own last write, so a caller sees what it just wrote
		// here even without the header.
		min := c.LastWriteIndex()
		if v := r.Header.Get(MinIndexHeader); v != "" {
			seen, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				writeError(w, http.StatusBadRequest, "%s %q is not a raft index: send the %s value of an earlier answer", MinIndexHeader, v, IndexHeader)
				return
			}
			min = max(min, seen)
		}
		if min > c.AppliedIndex() {
			ctx, cancel := context.WithTimeout(r.Context(), wait)
			err := c.WaitApplied(ctx, min)
			cancel()
			if err != nil {
				w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
				writeError(w, http.StatusServiceUnavailable, "this node has not caught up to index %d yet (it has applied %d after %v): retry, or ask another node", min, c.AppliedIndex(), wait)
				return
			}
		}
		if !nodeLocal(r.URL.Path) {
			var err error
			if read && !c.HasLeader() {
				err = cluster.ErrNoLeader
			} else {
				ctx, cancel := context.WithTimeout(r.Context(), wait)
				_, err = c.ReadIndex(ctx)
				cancel()
			}
			if err != nil {
				if r.Context().Err() != nil {
					return // the caller is gone
				}
				s.logger.Debug("admin request refused: read barrier failed", "method", r.Method, "path", r.URL.Path, "error", err)
				s.refuseUnconfirmed(w, read, wait, err)
				return
			}
		}
		next.ServeHTTP(&indexWriter{ResponseWriter: w, c: c}, r)
	})
}

// refuseUnconfirmed answers a request whose read barrier failed with err.
func (s *server) refuseUnconfirmed(w http.ResponseWriter, read bool, wait time.Duration, err error) {
	var msg string
	switch {
	case read && errors.Is(err, cluster.ErrNoLeader):
		msg = fmt.Sprintf("this node knows no leader, so it cannot confirm its copy is current: retry on another node, or ask for the local copy explicitly with --stale (header %s: %s)", ConsistencyHeader, ConsistencyStale)
	case read:
		msg = fmt.Sprintf("this node could not confirm with the leader within %v that its copy is current (%v): retry on another node, or ask for the local copy explicitly with --stale (header %s: %s)", wait, err, ConsistencyHeader, ConsistencyStale)
	case errors.Is(err, cluster.ErrNoLeader):
		msg = fmt.Sprintf("this node found no leader within %v, so it cannot check the write against current state: nothing was changed; retry shortly, or send it to another node (mcpgw cluster status)", wait)
	default:
		msg = fmt.Sprintf("this node could not confirm with the leader within %v that its copy is current (%v), so it cannot check the write against it: nothing was changed; retry shortly, or send it to another node (mcpgw cluster status)", wait, err)
	}
	w.Header().Set(ConsistencyHeader, ConsistencyUnconfirmed)
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: msg, Code: CodeNotCurrent})
}

// indexWriter stamps IndexHeader on the answer as it starts: what this
// node holds, or the latest write through it if that is later (a write
// the handler just made may be committed but not applied here yet).
type indexWriter struct {
	http.ResponseWriter
	c       Consistency
	stamped bool
}

func (w *indexWriter) stamp() {
	if !w.stamped {
		w.stamped = true
		w.Header().Set(IndexHeader, strconv.FormatUint(max(w.c.AppliedIndex(), w.c.LastWriteIndex()), 10))
	}
}

func (w *indexWriter) WriteHeader(code int) {
	w.stamp()
	w.ResponseWriter.WriteHeader(code)
}

func (w *indexWriter) Write(b []byte) (int, error) {
	w.stamp()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines of long downloads).
func (w *indexWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
