package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"time"

	"github.com/hashicorp/raft"
)

// Apply replicates cmd and returns once it is applied on the leader, with
// the error applying it produced there. On a follower the
// write is forwarded to the leader over the raft listener. While there is no
// leader Apply waits for one, up to ApplyTimeout or ctx's deadline, then
// returns an error wrapping ErrNoLeader; a leader that cannot be reached
// gives an error wrapping ErrNotLeader that names it.
//
// Each write carries a request id the state machine applies once, so a
// write whose fate is unknown (the leader stalled or failed while
// committing it) is sent again to the next leader: a leader change costs
// one election, not the whole ApplyTimeout.
func (r *Raft) Apply(ctx context.Context, cmd Command) error {
	_, err := r.ApplyIndex(ctx, cmd)
	return err
}

// ApplyIndex is Apply that also returns the raft index the write was
// applied at on the leader. This node's state database may take a moment
// longer to hold it (a follower learns of the commit with the leader's next
// message): wait with WaitApplied, or for every write made through this
// node with WaitApplied(ctx, LastWriteIndex()).
func (r *Raft) ApplyIndex(ctx context.Context, cmd Command) (uint64, error) {
	if r.raft == nil {
		return 0, ErrClosed
	}
	if cmd.RequestID == "" {
		cmd.RequestID = rand.Text()
	}
	b, err := cmd.Encode()
	if err != nil {
		return 0, fmt.Errorf("%w: encode: %v", ErrInvalidCommand, err)
	}
	index, err := r.submit(ctx, request{Kind: kindApply, Command: b})
	if err != nil {
		return 0, err
	}
	for {
		last := r.lastWrite.Load()
		if index <= last || r.lastWrite.CompareAndSwap(last, index) {
			return index, nil
		}
	}
}

// LastWriteIndex returns the raft index of the latest write acknowledged
// through this node: a read here after waiting for it sees every write
// this node took.
func (r *Raft) LastWriteIndex() uint64 { return r.lastWrite.Load() }

// AppliedIndex returns the raft index of the last entry this node's state
// database holds.
func (r *Raft) AppliedIndex() uint64 {
	if r.fsm == nil {
		return 0
	}
	return r.fsm.progress.Load()
}

// WaitApplied waits until this node's state database holds raft entry
// index, or ctx ends.
func (r *Raft) WaitApplied(ctx context.Context, index uint64) error {
	if r.fsm == nil {
		return ErrClosed
	}
	return r.fsm.waitApplied(ctx, index)
}

// ReadIndex makes the next local read linearizable: it asks the leader how
// far it has applied, after a barrier through the leader's log (so a leader
// deposed without knowing it cannot answer), and waits until this node has
// applied as far. Every write acknowledged anywhere before ReadIndex was
// called is then visible here. It returns that index; without a leader it
// fails as Apply does.
func (r *Raft) ReadIndex(ctx context.Context) (uint64, error) {
	if r.raft == nil {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
	defer cancel()
	index, err := r.submit(ctx, request{Kind: kindReadIndex})
	if err != nil {
		return 0, err
	}
	if err := r.fsm.waitApplied(ctx, index); err != nil {
		return 0, fmt.Errorf("this node has applied raft index %d of the leader's %d: %w", r.fsm.progress.Load(), index, err)
	}
	return index, nil
}

// CallHandler does, on the leader, the work of one Raft.Call: payload is
// the caller's. It returns the raft index of the state the caller must read
// afterwards (0: the leader's applied index when it returns).
type CallHandler func(ctx context.Context, payload []byte) (index uint64, err error)

// Handle registers h for Calls named name. A node registers its handlers
// once it can run them; a Call reaching a leader without one fails with an
// error that says to retry.
func (r *Raft) Handle(name string, h CallHandler) {
	r.handlersMu.Lock()
	defer r.handlersMu.Unlock()
	if r.handlers == nil {
		r.handlers = make(map[string]CallHandler)
	}
	r.handlers[name] = h
}

// Call runs the handler named name on the leader, here or over the
// forwarding connection (authenticated by the cluster CA, like a forwarded
// write), and waits until this node has applied the state the handler
// answered with, so a read here afterwards sees it. Calls are resent
// while leadership moves, as writes are: handlers must be idempotent.
func (r *Raft) Call(ctx context.Context, name string, payload []byte) error {
	if r.raft == nil {
		return ErrClosed
	}
	index, err := r.submit(ctx, request{Kind: kindCall, Call: name, Payload: payload})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
	defer cancel()
	if err := r.fsm.waitApplied(ctx, index); err != nil {
		return fmt.Errorf("this node has applied raft index %d of the leader's %d: %w", r.fsm.progress.Load(), index, err)
	}
	return nil
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
	_, err := r.submit(ctx, request{Kind: kindJoin, ID: id, Addr: addr})
	return err
}

// Remove takes the node id out of the cluster; the leader does it and a
// follower forwards the request. Removing a node that is not a member is a
// no-op. The removed node receives no more entries, and the leader refuses
// writes it forwards; a removed leader steps down and stops its raft.
func (r *Raft) Remove(ctx context.Context, id string) error {
	_, err := r.submit(ctx, request{Kind: kindRemove, ID: id})
	return err
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
			_, err := r.fwd.call(ctx, p, req)
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

// retryable marks a failure after which req may be sent again: it never
// reached a leader's log, or it did but is idempotent (writes carry a
// request id the state machine applies once; joins, removals and read
// barriers check before acting). sent says whether it may have reached a
// log, so a timeout can say the write's fate is unknown.
type retryable struct {
	err  error
	sent bool
}

func (e *retryable) Error() string {
	if e.err == nil {
		return "retry"
	}
	return e.err.Error()
}
func (e *retryable) Unwrap() error { return e.err }

// submit runs req on the leader: here if this node leads, otherwise by
// forwarding, retrying while leadership is unsettled until the deadline.
// It returns the raft index of the write, or for a read barrier the
// leader's applied index.
func (r *Raft) submit(ctx context.Context, req request) (uint64, error) {
	if r.raft == nil {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ApplyTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	// last is the latest reason to retry; sent is set once req may have
	// reached some leader's log.
	var last error
	var sent bool
	for {
		changed := r.leaderChange()
		leaderAddr, leaderID := r.raft.LeaderWithID()
		var index uint64
		var err error
		switch state := r.raft.State(); {
		case state == raft.Shutdown:
			return 0, ErrClosed
		case state == raft.Leader:
			index, err = r.execute(ctx, req)
			if errors.Is(err, errLeadershipLost) {
				if req.Forwarded {
					// The sender knows it may be in a log and resends.
					return 0, err
				}
				err = &retryable{err: err, sent: true}
			}
		case req.Forwarded:
			// The sender retries; forwarding again could go in circles.
			if leaderAddr == "" {
				return 0, fmt.Errorf("%w: this node knows of no leader", ErrNotLeader)
			}
			return 0, fmt.Errorf("%w: the leader is %s at %s", ErrNotLeader, leaderID, leaderAddr)
		case leaderAddr != "":
			index, err = r.forward(ctx, changed, string(leaderID), string(leaderAddr), req)
		default:
			err = &retryable{}
		}
		var rt *retryable
		if !errors.As(err, &rt) {
			return index, err
		}
		if rt.err != nil {
			last = rt.err
		}
		sent = sent || rt.sent
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if leaderAddr, _ := r.raft.LeaderWithID(); leaderAddr != "" && last != nil && !sent {
				return 0, last
			}
			err := r.noLeaderError()
			if leaderAddr, _ := r.raft.LeaderWithID(); leaderAddr != "" && last != nil {
				err = last
			}
			if sent && req.Kind == kindApply {
				err = fmt.Errorf("%w; this write was in flight when leadership changed and may or may not be applied: read it back before retrying", err)
			}
			return 0, err
		case <-changed:
			t.Stop()
		case <-t.C:
			backoff = min(2*backoff, r.cfg.HeartbeatTimeout/2)
		}
	}
}

// forward sends req to the leader and returns its answer. It abandons the
// request when changed is closed (this node learnt of a new leader, or of
// none): a stalled leader would otherwise hold it until the deadline.
func (r *Raft) forward(ctx context.Context, changed <-chan struct{}, leaderID, leaderAddr string, req request) (uint64, error) {
	req.Forwarded = true
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-changed:
			cancel()
		case <-done:
		}
	}()
	index, err := r.fwd.call(fctx, leaderAddr, req)
	var remote *remoteError
	switch {
	case err == nil:
		return index, nil
	case errors.Is(err, errUnreachable):
		return 0, &retryable{err: fmt.Errorf("%w: leader %s at %s cannot be reached: %v", ErrNotLeader, leaderID, leaderAddr, err)}
	case errors.As(err, &remote):
		switch {
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
			// Leadership moved on since this node last heard.
			return 0, &retryable{err: err}
		case errors.Is(err, errLeadershipLost):
			return 0, &retryable{err: err, sent: true}
		case errors.Is(err, ErrClosed):
			// The leader's closing, not this node's: not ErrClosed here.
			return 0, &retryable{err: fmt.Errorf("leader %s at %s shut down while handling the write", leaderID, leaderAddr), sent: true}
		}
		return 0, err
	case ctx.Err() != nil:
		return 0, fmt.Errorf("forward to leader %s at %s: %w; the write may or may not be applied", leaderID, leaderAddr, err)
	case fctx.Err() != nil:
		r.logger.Info("leader changed while a request was forwarded: sending it again", slog.String("old_leader", leaderID), slog.String("request", string(req.Kind)))
		return 0, &retryable{err: fmt.Errorf("%w: leader %s at %s was replaced while handling the request", ErrNotLeader, leaderID, leaderAddr), sent: true}
	default:
		// The connection failed mid-request: the leader may have taken it.
		return 0, &retryable{err: fmt.Errorf("forward to leader %s at %s: %w", leaderID, leaderAddr, err), sent: true}
	}
}

// execute runs req on this node, which believes it is the leader.
func (r *Raft) execute(ctx context.Context, req request) (uint64, error) {
	timeout := r.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		// Raft reads a zero timeout as none at all.
		return 0, fmt.Errorf("timed out before reaching the leader's log: %w", context.DeadlineExceeded)
	}
	switch req.Kind {
	case kindApply:
		f := r.raft.Apply(req.Command, timeout)
		if err := r.wait(ctx, f); err != nil {
			return 0, r.raftError(err)
		}
		if err, ok := f.Response().(error); ok {
			return 0, err
		}
		return f.Index(), nil
	case kindReadIndex:
		// The barrier commits through a quorum, which a deposed leader
		// cannot reach, and returns once everything before it is applied.
		if err := r.wait(ctx, r.raft.Barrier(timeout)); err != nil {
			err = r.raftError(err)
			if errors.Is(err, errLeadershipLost) {
				err = &retryable{err: err}
			}
			return 0, err
		}
		return r.fsm.progress.Load(), nil
	case kindCall:
		r.handlersMu.RLock()
		h := r.handlers[req.Call]
		r.handlersMu.RUnlock()
		if h == nil {
			return 0, fmt.Errorf("the leader cannot handle %q yet: it is still starting; retry shortly", req.Call)
		}
		index, err := h(ctx, req.Payload)
		if err == nil && index == 0 {
			// The handler wrote nothing or applied its writes: what it
			// decided on is in the leader's state as of now.
			index = r.fsm.progress.Load()
		}
		return index, err
	case kindJoin:
		return 0, r.addVoter(ctx, req.ID, req.Addr, timeout)
	case kindRemove:
		return 0, r.removeServer(ctx, req.ID, timeout)
	default:
		return 0, fmt.Errorf("unknown request %q", req.Kind)
	}
}

func (r *Raft) addVoter(ctx context.Context, id, addr string, timeout time.Duration) error {
	cf := r.raft.GetConfiguration()
	if err := r.wait(ctx, cf); err != nil {
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
			if err := r.wait(ctx, r.raft.RemoveServer(s.ID, 0, timeout)); err != nil {
				return fmt.Errorf("join %s: remove stale member %s at %s: %w", id, s.ID, s.Address, r.raftError(err))
			}
		}
	}
	if err := r.wait(ctx, r.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)); err != nil {
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
	if err := r.wait(ctx, cf); err != nil {
		return r.raftError(err)
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			if err := r.wait(ctx, r.raft.RemoveServer(s.ID, 0, timeout)); err != nil {
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
		return &retryable{err: fmt.Errorf("%w: leadership moved", ErrNotLeader)}
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

// wait waits for f, or for ctx to end or this node to close first. The
// goroutine reading f ends with f's answer or once the node closes, so
// none outlives the node (see endOnClose).
func (r *Raft) wait(ctx context.Context, f raft.Future) error {
	endOnClose(f, r.closing)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closing:
		return ErrClosed
	}
}

// endOnClose makes f's Error return raft.ErrRaftShutdown once closing is
// closed, if raft has not answered f by then. Raft answers most futures
// when it shuts down, but not the future of a write (Apply, Barrier) whose
// entry was committed and queued for the state machine when it stopped:
// that one's Error would block for ever. Raft's futures have the field for
// it (ShutdownCh, which raft itself sets on the others) but no setter, so
// it is set here, before anything reads f. Futures without it (one raft
// answered at once) are left alone.
func endOnClose(f raft.Future, closing chan struct{}) {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return
	}
	ch := v.Elem().FieldByName("ShutdownCh")
	if ch.IsValid() && ch.CanSet() && ch.Type() == reflect.TypeOf(closing) && ch.IsNil() {
		ch.Set(reflect.ValueOf(closing))
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
		var index uint64
		switch req.Kind {
		case kindJoin:
			// A node outside the cluster may ask to join, as itself only.
			if req.ID != peer && !r.isMember(peer) {
				err = fmt.Errorf("node %q may not add node %q: a node joins as itself", peer, req.ID)
			} else {
				_, err = r.submit(ctx, req)
			}
		case kindApply, kindRemove, kindReadIndex, kindCall:
			// A removed node may not know it was removed and go on
			// forwarding writes; the leader knows.
			if r.raft.State() == raft.Leader && !r.isMember(peer) {
				err = fmt.Errorf("%w: node %q was removed or never joined; its writes are refused", ErrNotMember, peer)
			} else {
				index, err = r.submit(ctx, req)
			}
		default:
			err = fmt.Errorf("unknown request %q", req.Kind)
		}
		cancel()
		resp := encodeError(err)
		resp.Index = index
		if err := writeFrame(c, resp); err != nil {
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
