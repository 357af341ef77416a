package adminapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
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
)

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
	// acknowledged before the call.
	ReadIndex(ctx context.Context) (uint64, error)
}

// nodeLocal reports whether path serves this node's own view (its audit
// log, its raft status, membership changes), which no barrier through the
// leader should hold up: those must answer while there is no quorum.
func nodeLocal(path string) bool {
	return strings.HasPrefix(path, "/v1/cluster/") || strings.HasPrefix(path, "/v1/audit")
}

// consistent gives /v1/ answers read-your-writes. A request waits
// (bounded) until this node has applied the index in its MinIndexHeader
// and the latest write made through this node, else is refused with 503. Every other request on replicated state first
// waits for this node to apply what the leader has (a ReadIndex), so a
// write validated against state (a credential names a route) sees writes
// made through other nodes, and a read sees every acknowledged write. If
// that barrier fails (no quorum) a read answers from local state and a
// write goes on to fail or succeed as the cluster decides. Every answer
// carries IndexHeader.
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
			ctx, cancel := context.WithTimeout(r.Context(), wait)
			if _, err := c.ReadIndex(ctx); err != nil {
				s.logger.Debug("admin request served without a read barrier", "path", r.URL.Path, "error", err)
			}
			cancel()
		}
		next.ServeHTTP(&indexWriter{ResponseWriter: w, c: c}, r)
	})
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
