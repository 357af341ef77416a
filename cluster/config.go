package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures a node's membership in the raft cluster. The zero value
// is not valid; start from DefaultConfig.
type Config struct {
	// NodeID names this node in the cluster for as long as its data dir
	// lives. Default: the id stored in <DataDir>/node-id, or a new random id
	// that is then stored there.
	NodeID string
	// DataDir holds node-id and, under raft/, the raft log, stable store
	// (raft.db) and snapshots. Default "./data".
	DataDir string
	// BindAddr is the raft listener: raft RPCs and forwarded writes, both
	// over mutual TLS. Default "127.0.0.1:7423".
	BindAddr string
	// AdvertiseAddr is the address the other nodes dial to reach this one.
	// Default: the address the listener is bound to, which must then not be
	// a wildcard address.
	AdvertiseAddr string
	// TLS is the mutual TLS configuration of the raft listener and of
	// outgoing raft connections: it must present this node's certificate,
	// whose common name is the node id and whose names include the
	// advertise host, and verify peers against the cluster CA on both
	// sides (LoadTLS builds one). Required.
	TLS *tls.Config
	// Bootstrap makes this node the first voter of a new cluster when it has
	// no raft state yet; it is ignored once state exists. Default false.
	Bootstrap bool

	// HeartbeatTimeout is how long a follower waits without hearing from
	// the leader before it starts an election. Default 1s.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes. Default 1s.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without
	// hearing from a quorum. Default 500ms; at most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long the leader waits before it sends an
	// empty append to advance followers' commit index. Default 50ms.
	CommitTimeout time.Duration
	// RPCTimeout bounds one raft RPC on an established connection; snapshot
	// installs get it scaled by their size. Default 10s.
	RPCTimeout time.Duration
	// DialTimeout bounds opening a connection to a peer, TLS handshake
	// included. Default 5s.
	DialTimeout time.Duration
	// ApplyTimeout bounds one write end to end: waiting for a leader,
	// forwarding, replication and the apply. A shorter context deadline
	// wins. Default 10s.
	ApplyTimeout time.Duration

	// SnapshotInterval is how often raft checks whether to snapshot.
	// Default 2m.
	SnapshotInterval time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one. Default 8192.
	SnapshotThreshold uint64
	// TrailingLogs is how many entries a snapshot leaves in the log, so a
	// follower slightly behind catches up from the log instead of a whole
	// snapshot. Default 10240.
	TrailingLogs uint64

	// Logger receives structured logs, raft's own included. Default: discard.
	Logger *slog.Logger

	// Dial, when set, opens outgoing TCP connections instead of a
	// net.Dialer; TLS is layered on top by the cluster. Default nil.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// DefaultConfig returns timeouts suited to nodes on one LAN. TLS is left
// nil: a cluster has no usable default for it.
func DefaultConfig() Config {
	return Config{
		DataDir:            "./data",
		BindAddr:           "127.0.0.1:7423",
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		RPCTimeout:         10 * time.Second,
		DialTimeout:        5 * time.Second,
		ApplyTimeout:       10 * time.Second,
		SnapshotInterval:   2 * time.Minute,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
	}
}

// Validate reports the first invalid setting, naming the flag to fix.
func (c *Config) Validate() error {
	if c.NodeID != "" {
		if err := validNodeID(c.NodeID); err != nil {
			return fmt.Errorf("--node-id: %w", err)
		}
	}
	if c.DataDir == "" {
		return errors.New("data dir is empty: set --data-dir")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("--raft %q is not host:port: %v", c.BindAddr, err)
	}
	if c.AdvertiseAddr != "" {
		if err := advertisable(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("--raft-advertise %q: %v", c.AdvertiseAddr, err)
		}
	}
	if err := checkMutualTLS(c.TLS); err != nil {
		return err
	}
	for name, d := range map[string]time.Duration{
		"heartbeat": c.HeartbeatTimeout, "election": c.ElectionTimeout,
		"leader lease": c.LeaderLeaseTimeout, "commit": c.CommitTimeout,
		"rpc": c.RPCTimeout, "dial": c.DialTimeout, "apply": c.ApplyTimeout,
		"snapshot interval": c.SnapshotInterval,
	} {
		if d < 5*time.Millisecond {
			return fmt.Errorf("raft %s timeout %v is too short: use at least 5ms", name, d)
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return fmt.Errorf("raft leader lease timeout %v exceeds heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		return fmt.Errorf("raft election timeout %v is shorter than heartbeat timeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold == 0 {
		return errors.New("raft snapshot threshold must be positive")
	}
	return nil
}

// advertisable checks that addr is host:port other nodes can dial.
func advertisable(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" || port == "" || port == "0" {
		return errors.New("needs a host and a fixed port")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return errors.New("a wildcard address cannot be dialled: advertise this node's own address")
	}
	return nil
}

// checkMutualTLS refuses a TLS configuration that would let an
// unauthenticated peer in on either side of a raft connection.
func checkMutualTLS(c *tls.Config) error {
	switch {
	case c == nil:
		return errors.New("raft TLS is not configured: give the node certificate, key and cluster CA (mcpgw init creates them)")
	case len(c.Certificates) == 0:
		return errors.New("raft TLS has no node certificate")
	case c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil:
		return errors.New("raft TLS must require and verify client certificates against the cluster CA")
	case c.RootCAs == nil || c.InsecureSkipVerify:
		return errors.New("raft TLS must verify servers against the cluster CA")
	}
	return nil
}
