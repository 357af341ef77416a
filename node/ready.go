package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/transport"
)

// admitWait is how long a session opened while the node catches up after
// a start waits for it before it is refused.
const admitWait = 2 * time.Second

// catchUp closes n.caughtUp once this node's state holds every write the
// cluster acknowledged before the node started: until then it may hold old
// routes and miss revocations, so it admits no sessions and is not ready.
// It retries (no leader yet, leader changing) until the node closes.
//
// Caught up also means holding a service-token signing key. A fresh
// cluster's first leader creates it in Start, but only if it won its first
// election within RaftApplyTimeout; a slower election (a loaded machine, a
// slow disk) leaves that to here, once the node leads. Without it the
// cluster could never issue a token.
func (n *Node) catchUp() {
	changes, stop := n.raft.Observe()
	n.clusterWG.Add(1)
	go func() {
		defer n.clusterWG.Done()
		defer stop()
		start := time.Now()
		for {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.RaftApplyTimeout)
			index, err := n.raft.ReadIndex(ctx)
			if err == nil {
				err = n.ensureFirstSigningKey(ctx)
			}
			cancel()
			if err == nil {
				close(n.caughtUp)
				n.logger.Info("caught up with the cluster", slog.Uint64("index", index), slog.Duration("took", time.Since(start)))
				return
			}
			n.logger.Debug("catching up with the cluster", slog.Any("error", err))
			t := time.NewTimer(250 * time.Millisecond)
			select {
			case <-n.ctx.Done():
				t.Stop()
				return
			case <-changes:
				t.Stop()
			case <-t.C:
			}
		}
	}()
}

// ensureFirstSigningKey makes sure this node's state holds a signing key
// after a ReadIndex: the leader creates the cluster's first one if it has
// none; a follower has to wait for the leader's.
func (n *Node) ensureFirstSigningKey(ctx context.Context) error {
	keys, err := n.store.TokenKeys()
	if err != nil || len(keys) > 0 {
		return err
	}
	if n.raft.Status().State != "Leader" {
		return errors.New("no service-token signing key replicated from the leader yet")
	}
	if err := n.ensureSigningKeyOnLeader(ctx); err != nil {
		return fmt.Errorf("create the cluster's first service-token signing key: %w", err)
	}
	return nil
}

// tokenKeyring is the keyring the admin use cases issue tokens with. Until
// the node has caught up after its start its state may lack a signing key
// the cluster has, or one the node is about to create (see catchUp), so a
// keyring without an active key waits for that, bounded by admitWait; the
// issue then fails only if the cluster really has no key.
func (n *Node) tokenKeyring() (*policy.Keyring, error) {
	kr, err := n.gw.Keyring()
	if err != nil || kr.ActiveKeyID() != "" || n.raft == nil || n.isCaughtUp() {
		return kr, err
	}
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case <-n.caughtUp:
	case <-n.ctx.Done():
	case <-t.C:
	}
	return n.gw.Keyring()
}

func (n *Node) isCaughtUp() bool {
	select {
	case <-n.caughtUp:
		return true
	default:
		return false
	}
}

// admit refuses sessions until the node has caught up after its start,
// and holds a session opened right after a write through this node until
// the node holds that write (a route just added), bounded by admitWait.
func (n *Node) admit(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, admitWait)
	defer cancel()
	if n.isCaughtUp() {
		if last := n.raft.LastWriteIndex(); last > n.raft.AppliedIndex() {
			// Past the bound the session is decided on what the node has.
			n.raft.WaitApplied(ctx, last)
		}
		return nil
	}
	select {
	case <-n.caughtUp:
		return nil
	case <-ctx.Done():
		if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	st := n.raft.Status()
	return &transport.Refusal{Code: transport.CodeOverloaded, RetryAfter: 1,
		Message: fmt.Sprintf("this gateway node is catching up with the cluster after a start (state at raft index %d, commit index %d, leader %q) and admits no sessions yet: retry shortly or connect to another node", st.StateIndex, st.CommitIndex, st.LeaderID)}
}

// Readiness is the answer of GET /readyz.
type Readiness struct {
	Ready bool `json:"ready"`
	// Reasons say what keeps the node from being ready; empty when ready.
	Reasons []string `json:"reasons,omitempty"`
}

// Readiness reports whether this node should get traffic: it knows a
// leader (writes can commit), has caught up with the cluster since it
// started (its reads are not old) and its listeners are up. /healthz says
// only that the process answers.
func (n *Node) Readiness() Readiness {
	var reasons []string
	if !n.listening.Load() {
		reasons = append(reasons, "listeners are not up yet")
	}
	var st cluster.Status
	if r := n.raft; r != nil {
		st = r.Status()
	}
	if st.LeaderID == "" {
		reasons = append(reasons, "no raft leader: this node cannot reach a quorum of the cluster")
	}
	if !n.isCaughtUp() {
		reasons = append(reasons, fmt.Sprintf("catching up after start: state at raft index %d, commit index %d; not caught up with the leader yet", st.StateIndex, st.CommitIndex))
	}
	if st.Halted != "" {
		reasons = append(reasons, st.Halted)
	}
	return Readiness{Ready: len(reasons) == 0, Reasons: reasons}
}

func (n *Node) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := n.Readiness()
	w.Header().Set("Content-Type", "application/json")
	if !rd.Ready {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(rd)
}

// readBarrier is the admin API's Consistency: raft's, and whether this
// node knows a leader, so that a read on a node cut off from the majority
// is refused at once rather than wait out the bound.
type readBarrier struct{ *cluster.Raft }

func (b readBarrier) HasLeader() bool { return b.Status().LeaderID != "" }
