package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Apply replicates cmd and returns once it is applied on the leader, with
// the error applying it produced there. On a follower the write is
// forwarded to the leader over the raft listener. While there is no leader
// Apply waits for one, up to ApplyTimeout or ctx's deadline, then returns
// an error wrapping ErrNoLeader; a leader that cannot be reached gives an
// error wrapping ErrNotLeader that names it.
//
// A write is sent again only when it surely never reached a leader's log;
// a write whose fate is unknown (the leader failed while committing it)
// returns an error saying so.
func (r *Raft) Apply(ctx context.Context, cmd Command) error {
	b, err := cmd.Encode()
	if err != nil {
		return fmt.Errorf("%w: encode: %v", ErrInvalidCommand, err)
	}
	return r.submit(ctx, request{Kind: kindApply, Command: b})
}

// Join adds the node id at raft address addr as a voter; the leader does it
// and a follower forwards the request. Joining again with the same id and
// address is a no-op; a member with the same id or address is replaced.
func (r *Raft) Join(ctx context.Context, id, addr string) error {
	if err := validNodeID(id); err != nil {
		return fmt.Errorf("join: node id: %w", err)
	}
	if err := advertisable(addr); err != nil {
		return fmt.Errorf("join: raft address %q: %v", addr, err)
	}
	return r.submit(ctx, request{Kind: kindJoin, ID: id, Addr: addr})
}

// Remove takes the node id out of the cluster; the leader does it and a
// follower forwards the request. Removing a node that is not a member is a
// no-op. The removed node receives no more entries, and the leader refuses
// writes it forwards; a removed leader steps down and stops its raft.
func (r *Raft) Remove(ctx context.Context, id string) error {
	return r.submit(ctx, request{Kind: kindRemove, ID: id})
}

// RequestJoin asks a member of an existing cluster, at one of peers (raft
// addresses), to add this node as a voter. It is how a new node, started
// without Bootstrap, enters the cluster, and a no-op for a member. Peers
// that are not up yet or have no leader are tried again until ApplyTimeout
// or ctx ends; a peer that refuses this node's certificate is final.
func (r *Raft) RequestJoin(ctx context.Context, peers ...string) error {
	if r.raft == nil {
		return ErrClosed
	}
	if len(peers) == 0 {
		return errors.New("join: no peer address given")
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
	defer cancel()
	req := request{Kind: kindJoin, ID: r.id, Addr: r.addr}
	backoff := 10 * time.Millisecond
	for {
		var errs []error
		for _, p := range peers {
			err := r.fwd.call(ctx, p, req)
			if err == nil {
				r.logger.Info("joined cluster", slog.String("via", p))
				return nil
			}
			err = fmt.Errorf("via %s: %w", p, err)
			if !transient(err) {
				return fmt.Errorf("join cluster: %w", err)
			}
			errs = append(errs, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("join cluster: %w", errors.Join(errs...))
		case <-t.C:
			backoff = min(2*backoff, time.Second)
		}
	}
}

// transient reports whether a request that failed with err may succeed
// if sent again: the peer was down or between leaders, not refusing.
func transient(err error) bool {
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &alert), errors.As(err, &verify):
		return false
	case errors.Is(err, errUnreachable), errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.Is(err, errLeadershipLost):
		return true
	}
	var remote *remoteError
	return !errors.As(err, &remote)
}

// errLeadershipLost is a write this node accepted as leader and then lost
// track of: a new leader may or may not commit it.
var errLeadershipLost = errors.New("leadership was lost while the write was committing: it may or may not be applied; read it back before retrying")

// retryable marks a failure that happened before the request reached a
// leader's log, so sending it again cannot apply it twice.
type retryable struct{ err error }

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// submit runs req on the leader: here if this node leads, otherwise by
// forwarding, retrying while leadership is unsettled until the deadline.
func (r *Raft) submit(ctx context.Context, req request) error {
	if r.raft == nil {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	// last is the latest reason to retry; inDoubt is set once this node,
	// as leader, lost leadership while req was committing.
	var last, inDoubt error
	for {
		changed := r.leaderChange()
		leaderAddr, leaderID := r.raft.LeaderWithID()
		var err error
		switch state := r.raft.State(); {
		case state == raft.Shutdown:
			return ErrClosed
		case inDoubt != nil:
			// Sending req again could apply it twice. Wait only to tell a
			// lost majority (no leader) from a mere change of leader.
			if leaderAddr != "" {
				return inDoubt
			}
			err = &retryable{nil}
		case state == raft.Leader:
			err = r.execute(ctx, req)
			if errors.Is(err, errLeadershipLost) && req.Kind == kindApply && !req.Forwarded {
				inDoubt = err
				err = &retryable{nil}
			}
		case req.Forwarded:
			// The sender retries; forwarding again could go in circles.
			if leaderAddr == "" {
				return fmt.Errorf("%w: this node knows of no leader", ErrNotLeader)
			}
			return fmt.Errorf("%w: the leader is %s at %s", ErrNotLeader, leaderID, leaderAddr)
		case leaderAddr != "":
			err = r.forward(ctx, string(leaderID), string(leaderAddr), req)
		default:
			err = &retryable{nil}
		}
		if errors.Is(err, errLeadershipLost) && req.Kind != kindApply {
			// Membership changes check the configuration before acting,
			// so doing one twice is harmless.
			err = &retryable{err}
		}
		var rt *retryable
		if !errors.As(err, &rt) {
			return err
		}
		if rt.err != nil {
			last = rt.err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if leaderAddr, _ := r.raft.LeaderWithID(); leaderAddr != "" && last != nil && inDoubt == nil {
				return last
			}
			err := r.noLeaderError()
			if inDoubt != nil {
				err = fmt.Errorf("%w; this write was in flight when leadership was lost and may or may not be applied", err)
			}
			return err
		case <-changed:
			t.Stop()
		case <-t.C:
			backoff = min(2*backoff, r.cfg.HeartbeatTimeout/2)
		}
	}
}

// forward sends req to the leader and returns its answer.
func (r *Raft) forward(ctx context.Context, leaderID, leaderAddr string, req request) error {
	req.Forwarded = true
	err := r.fwd.call(ctx, leaderAddr, req)
	var remote *remoteError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errUnreachable):
		return &retryable{fmt.Errorf("%w: leader %s at %s cannot be reached: %v", ErrNotLeader, leaderID, leaderAddr, err)}
	case errors.As(err, &remote):
		switch {
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
			// Leadership moved on since this node last heard.
			return &retryable{err}
		case errors.Is(err, ErrClosed):
			// The leader's closing, not this node's: not ErrClosed here.
			return fmt.Errorf("leader %s at %s shut down while handling the write: it may or may not be applied", leaderID, leaderAddr)
		}
		return err
	default:
		return fmt.Errorf("forward to leader %s at %s: %w; the write may or may not be applied", leaderID, leaderAddr, err)
	}
}

// execute runs req on this node, which believes it is the leader.
func (r *Raft) execute(ctx context.Context, req request) error {
	timeout := r.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		// Raft reads a zero timeout as none at all.
		return fmt.Errorf("timed out before reaching the leader's log: %w", context.DeadlineExceeded)
	}
	switch req.Kind {
	case kindApply:
		f := r.raft.Apply(req.Command, timeout)
		if err := wait(ctx, f); err != nil {
			return r.raftError(err)
		}
		if err, ok := f.Response().(error); ok {
			return err
		}
		return nil
	case kindJoin:
		return r.addVoter(ctx, req.ID, req.Addr, timeout)
	case kindRemove:
		return r.removeServer(ctx, req.ID, timeout)
	default:
		return fmt.Errorf("unknown request %q", req.Kind)
	}
}

func (r *Raft) addVoter(ctx context.Context, id, addr string, timeout time.Duration) error {
	cf := r.raft.GetConfiguration()
	if err := wait(ctx, cf); err != nil {
		return r.raftError(err)
	}
	servers := cf.Configuration().Servers
	for _, s := range servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr) && s.Suffrage == raft.Voter {
			return nil
		}
	}
	// A voter that never answers still counts towards the quorum: check
	// that the node is there before changing anything.
	if err := r.probe(ctx, id, addr); err != nil {
		return err
	}
	for _, s := range servers {
		switch {
		case s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr):
			// A non-voter: AddVoter promotes it.
		case s.ID == raft.ServerID(id) || s.Address == raft.ServerAddress(addr):
			// The node moved, or a wiped data dir came back with a new id.
			if err := wait(ctx, r.raft.RemoveServer(s.ID, 0, timeout)); err != nil {
				return fmt.Errorf("join %s: remove stale member %s at %s: %w", id, s.ID, s.Address, r.raftError(err))
			}
		}
	}
	if err := wait(ctx, r.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)); err != nil {
		return fmt.Errorf("join %s at %s: %w", id, addr, r.raftError(err))
	}
	r.logger.Info("node joined", slog.String("node_id", id), slog.String("raft_addr", addr))
	return nil
}

// probe dials addr as raft would and checks that the node answering there
// has a certificate from the cluster CA for node id.
func (r *Raft) probe(ctx context.Context, id, addr string) error {
	c, err := r.mux.dialTLS(ctx, addr, alpnRaft)
	if err != nil {
		return fmt.Errorf("join %s: %w at %s: %v; start it first (mcpgw serve --join) with a certificate from this cluster's CA (mcpgw init --ca-from), and give its --raft-advertise address; the cluster is unchanged", id, ErrPeerUnreachable, addr, err)
	}
	defer c.Close()
	if got := peerID(c); got != id {
		return fmt.Errorf("join %s: %w: the node at %s presents the certificate of node %q; give that id, or the address of node %q; the cluster is unchanged", id, ErrPeerUnreachable, addr, got, id)
	}
	return nil
}

func (r *Raft) removeServer(ctx context.Context, id string, timeout time.Duration) error {
	cf := r.raft.GetConfiguration()
	if err := wait(ctx, cf); err != nil {
		return r.raftError(err)
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			if err := wait(ctx, r.raft.RemoveServer(s.ID, 0, timeout)); err != nil {
				return fmt.Errorf("remove %s: %w", id, r.raftError(err))
			}
			r.logger.Info("node removed", slog.String("node_id", id))
			return nil
		}
	}
	return nil
}

// raftError turns raft's errors into this package's.
func (r *Raft) raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return &retryable{fmt.Errorf("%w: leadership moved", ErrNotLeader)}
	case errors.Is(err, raft.ErrLeadershipLost):
		// Not ErrNotLeader: that would have the sender retry a write that
		// may be in the log already.
		return errLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("write timed out on the leader: it may or may not be applied: %w", err)
	}
	return err
}

// wait waits for f, or for ctx to end first.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// noLeaderError explains why a write found no leader.
func (r *Raft) noLeaderError() error {
	voters, reachable, member := 0, 0, false
	for _, s := range r.servers() {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == raft.ServerID(r.id) {
			member = true
			reachable++
		} else if r.heardFrom(s.Address) {
			reachable++
		}
	}
	if !member {
		return fmt.Errorf("%w: this node is not a voter of any cluster (never joined, or removed): bootstrap it or join it to one", ErrNoLeader)
	}
	return fmt.Errorf("%w: this node cannot reach a quorum (%d of %d nodes); writes are refused until a majority is back", ErrNoLeader, reachable, voters)
}

// serveForward answers requests forwarded by other nodes on one connection.
func (r *Raft) serveForward(c net.Conn) {
	defer c.Close()
	peer := peerID(c)
	for {
		var req request
		if err := readFrame(c, &req); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, max(req.Timeout, time.Millisecond))
		var err error
		switch req.Kind {
		case kindJoin:
			// A node outside the cluster may ask to join, as itself only.
			if req.ID != peer && !r.isMember(peer) {
				err = fmt.Errorf("node %q may not add node %q: a node joins as itself", peer, req.ID)
			} else {
				err = r.submit(ctx, req)
			}
		case kindApply, kindRemove:
			// A removed node may not know it was removed and go on
			// forwarding writes; the leader knows.
			if r.raft.State() == raft.Leader && !r.isMember(peer) {
				err = fmt.Errorf("%w: node %q was removed or never joined; its writes are refused", ErrNotMember, peer)
			} else {
				err = r.submit(ctx, req)
			}
		default:
			err = fmt.Errorf("unknown request %q", req.Kind)
		}
		cancel()
		if err := writeFrame(c, encodeError(err)); err != nil {
			return
		}
	}
}

// peerID returns the node id in the certificate c's peer presented.
func peerID(c net.Conn) string {
	if tc, ok := c.(*trackedConn); ok {
		c = tc.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			return certs[0].Subject.CommonName
		}
	}
	return ""
}

func (r *Raft) isMember(id string) bool {
	for _, s := range r.servers() {
		if s.ID == raft.ServerID(id) {
			return true
		}
	}
	return false
}
