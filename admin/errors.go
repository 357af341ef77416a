package admin

import (
	"errors"
	"fmt"

	"github.com/mcpgw/mcpgw/cluster"
)

// The kinds of failure a caller branches on. Every error a Service method
// returns is an *Error whose Kind is one of these.
var (
	// ErrInvalid: the request is malformed or refused by validation; the
	// caller must change it.
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: the record the request names does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request cannot be carried out in this node's
	// current state (a node removed from the cluster, a node without a
	// vault key file); it needs another node or another setup.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: no leader can take the write right now; retrying
	// shortly, or on another node, may succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrFailed: the operation failed for a reason its message states,
	// such as a replicated write that timed out.
	ErrFailed = errors.New("operation failed")
	// ErrInternal: a failure on the gateway's side (a damaged record, a
	// closed database) that the caller cannot act on. Its cause may name
	// internal keys: show callers only Op, and log the rest.
	ErrInternal = errors.New("internal error")
)

// Error is a failed use case.
type Error struct {
	// Kind is one of the sentinel errors above.
	Kind error
	// Op names what was being done, e.g. "read route" or "write route";
	// empty when Err says it all.
	Op string
	// Err is the cause. For every Kind but ErrInternal its text is meant
	// for the caller.
	Err error
	// Hint, when set, is appended to the message: what to do next.
	Hint string
}

func (e *Error) Error() string {
	msg := e.Err.Error()
	if e.Op != "" {
		msg = e.Op + ": " + msg
	}
	return msg + e.Hint
}

// Unwrap returns the cause, so errors.Is sees cluster and storage errors
// as well as the Kind.
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

func invalid(err error) error { return &Error{Kind: ErrInvalid, Err: err} }

func invalidf(format string, args ...any) error { return invalid(fmt.Errorf(format, args...)) }

func notFoundf(format string, args ...any) error {
	return &Error{Kind: ErrNotFound, Err: fmt.Errorf(format, args...)}
}

func internal(op string, err error) error { return &Error{Kind: ErrInternal, Op: op, Err: err} }

// writeError classifies a failed replicated write.
func writeError(op string, err error) error {
	e := &Error{Kind: ErrFailed, Op: op, Err: err}
	switch {
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrClosed):
		e.Kind, e.Hint = ErrUnavailable, "; retry shortly, or send it to another node (mcpgw cluster status)"
	case errors.Is(err, cluster.ErrNotMember):
		e.Kind, e.Hint = ErrConflict, "; send it to a member (mcpgw cluster status), or join this node again"
	case errors.Is(err, cluster.ErrInvalidCommand), errors.Is(err, cluster.ErrPeerUnreachable):
		// A join naming an address where no node of this cluster answers
		// is the request's fault, and nothing was changed.
		e.Kind = ErrInvalid
	}
	return e
}
