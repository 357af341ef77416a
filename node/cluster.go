package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
)

// ClusterTLSSubdir is where, under the QUIC listener's TLS dir, the cluster
// CA and this node's raft certificate live by default. The QUIC listener's
// own files (cert.pem, key.pem) stay one level up.
const ClusterTLSSubdir = "cluster"

// TLSDir is the data dir's directory of TLS material.
const TLSDir = "tls"

// DefaultClusterTLSDir returns the default ClusterTLSDir of a data dir.
func DefaultClusterTLSDir(dataDir string) string {
	return filepath.Join(dataDir, TLSDir, ClusterTLSSubdir)
}

// clusterTLSDir returns the directory of the raft certificates in force.
func (c *Config) clusterTLSDir() string {
	if c.ClusterTLSDir != "" {
		return c.ClusterTLSDir
	}
	return DefaultClusterTLSDir(c.DataDir)
}

// joining reports whether this node enters an existing cluster rather
// than bootstrapping one.
func (c *Config) joining() bool { return len(c.Join) > 0 || !c.Bootstrap }

// clusterConfig returns the raft configuration of node id.
func (c *Config) clusterConfig(id string, tlsConf *tls.Config, logger *slog.Logger) cluster.Config {
	cc := cluster.DefaultConfig()
	cc.NodeID = id
	cc.DataDir = c.DataDir
	cc.BindAddr = c.RaftAddr
	cc.AdvertiseAddr = c.RaftAdvertise
	cc.TLS = tlsConf
	cc.Bootstrap = !c.joining()
	cc.HeartbeatTimeout = c.RaftHeartbeatTimeout
	cc.ElectionTimeout = c.RaftElectionTimeout
	cc.LeaderLeaseTimeout = c.RaftHeartbeatTimeout / 2
	cc.CommitTimeout = max(5*time.Millisecond, min(50*time.Millisecond, c.RaftHeartbeatTimeout/20))
	cc.ApplyTimeout = c.RaftApplyTimeout
	cc.Logger = logger
	return cc
}

// validateCluster checks the cluster settings that need no files.
func (c *Config) validateCluster() error {
	if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
		return fmt.Errorf("--raft %q is not host:port: %v", c.RaftAddr, err)
	}
	if c.RaftHeartbeatTimeout < 10*time.Millisecond || c.RaftElectionTimeout < c.RaftHeartbeatTimeout {
		return fmt.Errorf("raft heartbeat timeout %v must be at least 10ms and election timeout %v at least the heartbeat timeout", c.RaftHeartbeatTimeout, c.RaftElectionTimeout)
	}
	if c.RaftApplyTimeout <= 0 {
		return errors.New("raft apply timeout must be positive")
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("--join %q is not the host:port of a member's raft listener: %v", j, err)
		}
	}
	return nil
}

// clusterTLS loads this node's raft certificates. A node bootstrapping a
// new cluster with none yet gets a new cluster CA and a certificate, so
// `mcpgw serve` with no flags works; a node joining a cluster must be given
// a certificate from that cluster's CA.
func (n *Node) clusterTLS(id string) (*tls.Config, error) {
	dir := n.cfg.clusterTLSDir()
	_, err := os.Stat(filepath.Join(dir, cluster.NodeCertFile))
	if errors.Is(err, os.ErrNotExist) {
		if n.cfg.joining() {
			return nil, fmt.Errorf("no cluster certificate in %s: a node joining a cluster needs one from that cluster's CA: run `mcpgw cluster bundle --out join.bundle` against a member, copy the bundle to this host, run `mcpgw init --ca-from join.bundle --node-id %s --raft-advertise <this host> --data-dir %s`, then delete the bundle", dir, id, n.cfg.DataDir)
		}
		if _, err := os.Stat(filepath.Join(n.cfg.DataDir, cluster.RaftDir)); err == nil {
			return nil, fmt.Errorf("no cluster certificate in %s, but this data dir already belongs to a cluster: restore the certificate files, or issue new ones from the cluster's CA with `mcpgw init --ca-from <bundle>`", dir)
		}
		if err := CreateClusterTLS(dir, id, n.cfg.certHosts()); err != nil {
			return nil, err
		}
		n.logger.Info("created a cluster CA and this node's certificate; other nodes join with a bundle of this CA (mcpgw cluster bundle)", slog.String("dir", dir), slog.String("node_id", id))
	} else if err != nil {
		return nil, fmt.Errorf("cluster certificate: %w", err)
	}
	conf, err := cluster.LoadTLS(dir)
	if err != nil {
		return nil, fmt.Errorf("%w (cluster TLS dir %s)", err, dir)
	}
	return conf, nil
}

// advertiseHosts returns the host other nodes dial, for the certificate.
func (c *Config) advertiseHosts() []string {
	addr := c.RaftAdvertise
	if addr == "" {
		addr = c.RaftAddr
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return []string{host}
}

// CreateClusterTLS creates a cluster CA in dir (ca.crt, ca.key) and a
// certificate for node id naming hosts (node.crt, node.key).
func CreateClusterTLS(dir, id string, hosts []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cluster TLS dir: %w", err)
	}
	ca, err := cluster.NewCA(dir)
	if err != nil {
		return fmt.Errorf("create cluster CA in %s: %w", dir, err)
	}
	return cluster.IssueNodeCert(ca, dir, id, hosts)
}

// startCluster opens this node's raft member: bootstrapping a new cluster,
// asking to join one, or rejoining the one its data dir belongs to.
func (n *Node) startCluster(ctx context.Context, id string) error {
	tlsConf, err := n.clusterTLS(id)
	if err != nil {
		return err
	}
	n.audit.cert, n.audit.roots = tlsConf.Certificates[0], tlsConf.RootCAs
	r, err := cluster.New(n.cfg.clusterConfig(id, tlsConf, n.logger), n.store)
	if err != nil {
		return err
	}
	if err := r.Open(ctx); err != nil {
		return err
	}
	n.raft = r
	n.writes = r
	n.metrics.raft.r.Store(r)
	member := len(r.Status().Peers) > 0
	if !member && len(n.cfg.Join) > 0 {
		if err := r.RequestJoin(ctx, n.cfg.Join...); err != nil {
			return fmt.Errorf("%w; check that --join names the --raft address of a running member", err)
		}
		member = true
	}
	if !member {
		n.logger.Info("waiting to be added to a cluster: run `mcpgw cluster join` against a member", slog.String("node_id", id), slog.String("raft_addr", r.Addr()))
		return nil
	}
	if !n.waitForLeader(ctx) {
		n.logger.Warn("no raft leader yet: serving from local state; writes fail until a majority of the nodes is up", slog.Duration("waited", n.cfg.RaftApplyTimeout))
		return nil
	}
	if err := n.ensureSigningKeyOnLeader(ctx); err != nil {
		return fmt.Errorf("create service token signing key: %w", err)
	}
	return nil
}

// waitForLeader waits up to RaftApplyTimeout for this node to know a
// leader and, if it leads, to have applied every committed entry.
func (n *Node) waitForLeader(ctx context.Context) bool {
	changes, stop := n.raft.Observe()
	defer stop()
	deadline := time.NewTimer(n.cfg.RaftApplyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		st := n.raft.Status()
		if st.LeaderID != "" && (st.State != "Leader" || st.AppliedIndex >= st.LastIndex) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-changes:
		case <-tick.C:
		}
	}
}

// watchLiveNodes re-splits cluster-wide rate limits among the live nodes
// whenever membership or liveness changes, until the node closes.
func (n *Node) watchLiveNodes() {
	changes, stop := n.raft.Observe()
	n.gw.SetLiveNodes(n.raft.LiveNodes())
	n.clusterWG.Add(1)
	go func() {
		defer n.clusterWG.Done()
		defer stop()
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-changes:
				live := n.raft.LiveNodes()
				n.gw.SetLiveNodes(live)
				n.logger.Debug("rate limits re-split", slog.Int("live_nodes", live))
			}
		}
	}()
}

// ensureSigningKeyOnLeader creates the first service-token signing key of
// a new cluster. Only the leader does it, once it has applied the whole
// log: a node joining a cluster gets the leader's key instead.
//
// A new leader appends an entry of its own right after winning, so it may
// briefly lag its own log: it waits for that (bounded by RaftApplyTimeout)
// rather than skip the key and leave a fresh cluster unable to issue tokens.
func (n *Node) ensureSigningKeyOnLeader(ctx context.Context) error {
	deadline := time.Now().Add(n.cfg.RaftApplyTimeout)
	for {
		st := n.raft.Status()
		switch {
		case st.State != "Leader":
			return nil
		case st.AppliedIndex >= st.LastIndex:
			return n.ensureSigningKey(ctx)
		case time.Now().After(deadline):
			return fmt.Errorf("the leader has not applied its own log after %v", n.cfg.RaftApplyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Raft returns this node's cluster member; nil before Start.
func (n *Node) Raft() *cluster.Raft { return n.raft }

// NodeID returns this node's id in the cluster; empty before Start.
func (n *Node) NodeID() string {
	if n.raft == nil {
		return ""
	}
	return n.raft.ID()
}

var _ applier = (*cluster.Raft)(nil)
