package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/mcpgw/mcpgw/storage"
)

// Errors callers branch on.
var (
	// ErrNotLeader wraps a write that could not reach the leader; the
	// error names the leader when one is known.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader wraps a write refused because no leader was elected in
	// time: this node cannot reach a majority of the voters.
	ErrNoLeader = errors.New("no leader")
	// ErrNotMember wraps writes the leader refuses because they come
	// through a node that is not in the cluster's configuration.
	ErrNotMember = errors.New("not a member of the cluster")
	// ErrClosed is returned once the cluster is closed, or before Open.
	ErrClosed = errors.New("cluster is closed")
	// ErrHalted wraps writes on a node whose state database failed to apply
	// a committed entry; see Status.Halted.
	ErrHalted = errors.New("raft apply halted")
	// ErrPeerUnreachable wraps a join refused because no node of the
	// cluster answers at the given address as the node being joined; the
	// configuration is left unchanged.
	ErrPeerUnreachable = errors.New("the node to join cannot be reached")
)

// Files under the data dir.
const (
	// RaftDir holds the raft log, stable store and snapshots.
	RaftDir = "raft"
	// raftDBFile is the raft log and stable store (raft-boltdb).
	raftDBFile = "raft.db"
	// snapshotsRetained is how many snapshots stay on disk.
	snapshotsRetained = 2
)

// Raft is this node's member of the cluster: the write path for replicated
// state (Apply), membership (Join, Remove, RequestJoin) and what the node
// knows of the cluster (Status, LiveNodes, Observe).
type Raft struct {
	cfg    Config
	store  *storage.Store
	logger *slog.Logger

	ctx    context.Context // ends when Close starts
	cancel context.CancelFunc
	// closing is closed when Close starts: raft futures this node waits
	// for end then (see endOnClose).
	closing chan struct{}
	wg      sync.WaitGroup // the watch goroutine

	// Set by Open and not changed after, so methods called after Open
	// returns read them without a lock.
	id       string
	addr     string
	raft     *raft.Raft
	fsm      *fsm
	trans    *raft.NetworkTransport
	mux      *mux
	fwd      *forwarder
	logStore *raftboltdb.BoltStore
	observer *raft.Observer

	leaderChanges atomic.Uint64 // leader observations since Open
	lastWrite     atomic.Uint64 // index of the latest write acknowledged through this node
	leaderMu      sync.Mutex    // guards leaderChanged
	leaderChanged chan struct{} // closed and replaced when the leader changes

	handlersMu sync.RWMutex           // guards handlers
	handlers   map[string]CallHandler // by Call name; see Handle

	watchMu  sync.Mutex // guards watchers
	watchers map[chan struct{}]struct{}

	closeOnce sync.Once
	closeErr  error
}

// New checks cfg and prepares a cluster member writing into store. It does
// no I/O; Open starts it. The store stays the caller's: close it after
// Close returns.
func New(cfg Config, store *storage.Store) (*Raft, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("cluster needs a state database")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Raft{
		cfg:           cfg,
		store:         store,
		logger:        logger,
		ctx:           ctx,
		cancel:        cancel,
		closing:       make(chan struct{}),
		leaderChanged: make(chan struct{}),
		watchers:      make(map[chan struct{}]struct{}),
	}, nil
}

// Open loads or creates the node id, opens the raft files, starts the
// listener and raft, and bootstraps a new cluster if so configured. It
// does not wait for a leader.
func (r *Raft) Open(ctx context.Context) (err error) {
	if r.raft != nil {
		return errors.New("cluster is already open")
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if r.id, err = LoadNodeID(r.cfg.DataDir, r.cfg.NodeID); err != nil {
		return err
	}
	if err := certNamesNode(r.cfg.TLS, r.id); err != nil {
		return err
	}
	dir := filepath.Join(r.cfg.DataDir, RaftDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create raft dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // MkdirAll keeps the mode of a dir that exists
		return fmt.Errorf("create raft dir: %w", err)
	}
	path := filepath.Join(dir, raftDBFile)
	r.logStore, err = raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{Timeout: 5 * time.Second}})
	if err != nil {
		return fmt.Errorf("open %s: %w (is another mcpgw running with this data dir?)", path, err)
	}
	undo = append(undo, func() { r.logStore.Close() })
	hlog := newHclog(r.logger, "raft")
	snaps, err := newPrivateSnapshots(dir, snapshotsRetained, hlog.Named("snapshots"))
	if err != nil {
		return fmt.Errorf("open raft snapshots: %w", err)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", r.cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("listen --raft %s: %w", r.cfg.BindAddr, err)
	}
	r.addr = r.cfg.AdvertiseAddr
	if r.addr == "" {
		r.addr = ln.Addr().String()
		if err := advertisable(r.addr); err != nil {
			ln.Close()
			return fmt.Errorf("--raft %s: %v; set --raft-advertise", r.addr, err)
		}
	}
	r.mux = newMux(r.ctx, ln, r.cfg.TLS, r.cfg.Dial, r.cfg.DialTimeout, r.logger)
	undo = append(undo, func() { r.mux.Close() })
	r.fwd = &forwarder{mux: r.mux, maxIdle: 4}
	layer := &raftLayer{m: r.mux, advertise: tcpAddr(r.addr), closed: make(chan struct{})}
	r.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: r.cfg.RPCTimeout,
		Logger:  hlog.Named("transport"),
	})
	undo = append(undo, func() { r.trans.Close() })

	applied, err := r.store.AppliedIndex()
	if err != nil {
		return err
	}
	r.fsm = &fsm{store: r.store, logger: r.logger}
	r.fsm.setApplied(applied)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(r.id)
	rc.HeartbeatTimeout = r.cfg.HeartbeatTimeout
	rc.ElectionTimeout = r.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = r.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = r.cfg.CommitTimeout
	rc.SnapshotInterval = r.cfg.SnapshotInterval
	rc.SnapshotThreshold = r.cfg.SnapshotThreshold
	rc.TrailingLogs = r.cfg.TrailingLogs
	rc.Logger = hlog
	rc.NoLegacyTelemetry = true
	// The state database survives restarts and already holds what the
	// newest snapshot holds, so restoring it at start would only roll the
	// database back to replay the same entries. Only a database behind the
	// snapshot (lost, or replaced from an old backup) is restored.
	rc.NoSnapshotRestoreOnStart, err = upToDate(snaps, applied)
	if err != nil {
		return err
	}
	logs, err := raft.NewLogCache(512, r.logStore)
	if err != nil {
		return err
	}
	r.raft, err = raft.NewRaft(rc, r.fsm, logs, r.logStore, snaps, r.trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	undo = append(undo, func() { r.raft.Shutdown().Error(); r.raft = nil })

	if r.cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, r.logStore, snaps)
		if err != nil {
			return fmt.Errorf("read raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(r.id), Address: raft.ServerAddress(r.addr)}}}
			if err := r.raft.BootstrapCluster(conf).Error(); err != nil {
				return fmt.Errorf("bootstrap cluster: %w", err)
			}
			r.logger.Info("bootstrapped a new cluster", slog.String("node_id", r.id), slog.String("raft_addr", r.addr))
		}
	}

	obs := make(chan raft.Observation, 64)
	r.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.PeerObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.raft.RegisterObserver(r.observer)
	r.wg.Add(1)
	go r.watch(obs)
	r.mux.start(r.serveForward)
	r.logger.Debug("raft started", slog.String("node_id", r.id), slog.String("raft_addr", r.addr), slog.Uint64("applied_index", applied))
	return nil
}

// certNamesNode checks that the node certificate's common name is the node
// id: peers identify the node by it when it forwards writes or asks to
// join.
func certNamesNode(conf *tls.Config, id string) error {
	cert := conf.Certificates[0]
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("parse node certificate: %w", err)
		}
	}
	if leaf.Subject.CommonName != id {
		return fmt.Errorf("the node certificate is for node %q but this node is %q: issue a certificate for %q (mcpgw init)", leaf.Subject.CommonName, id, id)
	}
	return nil
}

// upToDate reports whether the database already holds everything in the
// newest snapshot.
func upToDate(snaps raft.SnapshotStore, applied uint64) (bool, error) {
	list, err := snaps.List()
	if err != nil {
		return false, fmt.Errorf("list raft snapshots: %w", err)
	}
	return len(list) == 0 || list[0].Index <= applied, nil
}

// ID returns this node's id. Valid after Open.
func (r *Raft) ID() string { return r.id }

// Addr returns this node's advertised raft address. Valid after Open.
func (r *Raft) Addr() string { return r.addr }

// Close leaves the cluster's traffic (not its membership: see Remove),
// stops raft and waits for every goroutine and connection to end. It is
// safe to call more than once and does not close the state database.
func (r *Raft) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		close(r.closing)
		if r.raft == nil {
			return
		}
		err := r.raft.Shutdown().Error()
		r.raft.DeregisterObserver(r.observer)
		r.trans.Close()
		r.mux.Close()
		r.wg.Wait()
		r.closeErr = errors.Join(err, r.logStore.Close())
	})
	return r.closeErr
}
