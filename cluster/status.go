package cluster

import (
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Health is what a node knows of a peer's reachability.
type Health string

// Peer health values.
const (
	// HealthUp: bytes arrived from the peer within the liveness window.
	HealthUp Health = "up"
	// HealthDown: this node talks to the peer and heard nothing lately.
	HealthDown Health = "down"
	// HealthUnknown: this node has no reason to talk to the peer (a
	// follower does not talk to other followers).
	HealthUnknown Health = "unknown"
)

// Status is this node's view of the cluster.
type Status struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	State string `json:"state"` // Leader, Follower, Candidate or Shutdown

	LeaderID   string `json:"leader_id,omitempty"` // empty while no leader is known
	LeaderAddr string `json:"leader_addr,omitempty"`

	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`  // handed to the state database
	LastIndex     uint64 `json:"last_index"`     // last entry in the local log
	SnapshotIndex uint64 `json:"snapshot_index"` // last local snapshot
	// SnapshotsRestored counts snapshots installed into the state database
	// since Open: a follower too far behind the leader's log gets one.
	SnapshotsRestored uint64 `json:"snapshots_restored"`
	// Halted says why this node stopped applying the log; empty while
	// healthy.
	Halted string `json:"halted,omitempty"`
	// StateIndex is the raft index of the last entry the state database
	// holds: what read-your-writes waits on (AppliedIndex counts entries
	// handed to it, the database's own entries and raft's alike).
	StateIndex uint64 `json:"state_index"`
	// LeaderChanges counts the changes of leader this node saw since Open,
	// losing one included.
	LeaderChanges uint64 `json:"leader_changes"`

	Peers []Peer `json:"peers"`
}

// Peer is one server of the raft configuration, this node included.
type Peer struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // Voter, Nonvoter or Staging
	Leader   bool   `json:"leader,omitempty"`
	Self     bool   `json:"self,omitempty"`
	Health   Health `json:"health"`
	// LastContact is when this node last heard from the peer: from the
	// leader, every peer; from a follower, the leader. Zero if never.
	LastContact time.Time `json:"last_contact,omitzero"`
}

// livenessWindow is how long a peer counts as up after it was last heard
// from. Leaders hear from followers every HeartbeatTimeout/10 and
// candidates from voters once per election, so this spans a few of each.
func (r *Raft) livenessWindow() time.Duration {
	return 3 * max(r.cfg.HeartbeatTimeout, r.cfg.ElectionTimeout)
}

// heardFrom reports whether bytes arrived within the liveness window on a
// connection this node dialled to addr.
func (r *Raft) heardFrom(addr raft.ServerAddress) bool {
	return time.Since(r.mux.lastContact(string(addr))) < r.livenessWindow()
}

// Status returns this node's view of the cluster.
func (r *Raft) Status() Status {
	st := Status{ID: r.id, Addr: r.addr, State: "Shutdown"}
	if r.raft == nil {
		return st
	}
	state := r.raft.State()
	leaderAddr, leaderID := r.raft.LeaderWithID()
	stats := r.raft.Stats()
	st.State = state.String()
	st.LeaderID, st.LeaderAddr = string(leaderID), string(leaderAddr)
	st.Term = r.raft.CurrentTerm()
	st.CommitIndex = r.raft.CommitIndex()
	st.AppliedIndex = r.raft.AppliedIndex()
	st.LastIndex = r.raft.LastIndex()
	st.SnapshotIndex, _ = strconv.ParseUint(stats["last_snapshot_index"], 10, 64)
	st.SnapshotsRestored = r.fsm.restores.Load()
	st.StateIndex = r.fsm.progress.Load()
	st.LeaderChanges = r.leaderChanges.Load()
	if h := r.fsm.halted.Load(); h != nil {
		st.Halted = *h
	}
	for _, s := range r.servers() {
		p := Peer{
			ID:       string(s.ID),
			Addr:     string(s.Address),
			Suffrage: s.Suffrage.String(),
			Leader:   s.ID == leaderID,
			Self:     s.ID == raft.ServerID(r.id),
		}
		p.Health, p.LastContact = r.health(s, state, leaderID)
		st.Peers = append(st.Peers, p)
	}
	return st
}

func (r *Raft) health(s raft.Server, state raft.RaftState, leaderID raft.ServerID) (Health, time.Time) {
	if s.ID == raft.ServerID(r.id) {
		if state == raft.Shutdown {
			return HealthDown, time.Time{}
		}
		return HealthUp, time.Time{}
	}
	var last time.Time
	if state != raft.Leader && s.ID == leaderID {
		last = r.raft.LastContact()
	} else {
		last = r.mux.lastContact(string(s.Address))
	}
	switch {
	case !last.IsZero() && time.Since(last) < r.livenessWindow():
		return HealthUp, last
	case state == raft.Leader || s.ID == leaderID:
		return HealthDown, last
	}
	return HealthUnknown, last
}

// servers returns the latest raft configuration, nil if it cannot be read
// (raft is shut down).
func (r *Raft) servers() []raft.Server {
	cf := r.raft.GetConfiguration()
	if cf.Error() != nil {
		return nil
	}
	return cf.Configuration().Servers
}

// LiveNodes returns how many voters a cluster-wide rate limit is shared
// among. The leader counts the voters it heard from within the liveness
// window; a follower, which only hears from the leader, counts every voter.
// Erring that way keeps the sum of the nodes' shares at or below the limit.
func (r *Raft) LiveNodes() int {
	if r.raft == nil {
		return 1
	}
	state := r.raft.State()
	n := 0
	for _, s := range r.servers() {
		if s.Suffrage != raft.Voter {
			continue
		}
		if state != raft.Leader || s.ID == raft.ServerID(r.id) || r.heardFrom(s.Address) {
			n++
		}
	}
	return max(n, 1)
}

// Observe returns a channel that receives a value after leadership,
// membership or LiveNodes changes; a burst of changes may arrive as one.
// Read Status or LiveNodes for the new state. stop releases the channel.
func (r *Raft) Observe() (changes <-chan struct{}, stop func()) {
	ch := make(chan struct{}, 1)
	r.watchMu.Lock()
	r.watchers[ch] = struct{}{}
	r.watchMu.Unlock()
	return ch, func() {
		r.watchMu.Lock()
		delete(r.watchers, ch)
		r.watchMu.Unlock()
	}
}

func (r *Raft) notify() {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	for ch := range r.watchers {
		select {
		case ch <- struct{}{}:
		default: // a change is already pending
		}
	}
}

// leaderChange returns a channel closed at the next change of leader.
func (r *Raft) leaderChange() <-chan struct{} {
	r.leaderMu.Lock()
	defer r.leaderMu.Unlock()
	return r.leaderChanged
}

// watch turns raft's observations into notifications until Close, and
// checks LiveNodes every heartbeat, since a peer falling silent is no raft
// event on its own.
func (r *Raft) watch(obs <-chan raft.Observation) {
	defer r.wg.Done()
	tick := time.NewTicker(r.cfg.HeartbeatTimeout)
	defer tick.Stop()
	live := r.LiveNodes()
	for {
		select {
		case <-r.ctx.Done():
			return
		case o := <-obs:
			switch o.Data.(type) {
			case raft.LeaderObservation, raft.RaftState:
				if _, ok := o.Data.(raft.LeaderObservation); ok {
					r.leaderChanges.Add(1)
				}
				r.leaderMu.Lock()
				close(r.leaderChanged)
				r.leaderChanged = make(chan struct{})
				r.leaderMu.Unlock()
			}
			live = r.LiveNodes()
			r.notify()
		case <-tick.C:
			if n := r.LiveNodes(); n != live {
				live = n
				r.notify()
			}
		}
	}
}
