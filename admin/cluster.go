package admin

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
)

// BackupInfo describes a backup about to be taken.
type BackupInfo struct {
	Node  string
	Taken time.Time
	// AppliedIndex is the raft index the state holds, when AppliedKnown.
	AppliedIndex uint64
	AppliedKnown bool
}

func (s *Service) cluster(op string) (Cluster, error) {
	if s.d.Cluster == nil {
		return nil, &Error{Kind: ErrUnavailable, Op: op, Err: errors.New("this node runs outside a cluster")}
	}
	return s.d.Cluster, nil
}

// ClusterStatus returns this node's view of the cluster.
func (s *Service) ClusterStatus(ctx context.Context) (cluster.Status, error) {
	c, err := s.cluster("cluster status")
	if err != nil {
		return cluster.Status{}, err
	}
	return c.Status(), nil
}

// JoinNode adds the node id, reachable for raft at addr, as a voter.
func (s *Service) JoinNode(ctx context.Context, id, addr string) (cluster.Status, error) {
	if id == "" || addr == "" {
		return cluster.Status{}, invalidf("join needs the new node's id and raft address (its --raft-advertise, or --raft)")
	}
	c, err := s.cluster("join " + id)
	if err != nil {
		return cluster.Status{}, err
	}
	if err := c.Join(ctx, id, addr); err != nil {
		return cluster.Status{}, writeError("join "+id, err)
	}
	return c.Status(), nil
}

// RemoveNode takes the node id out of the cluster.
func (s *Service) RemoveNode(ctx context.Context, id string) (cluster.Status, error) {
	if id == "" {
		return cluster.Status{}, invalidf("remove needs the node id (see mcpgw cluster status)")
	}
	c, err := s.cluster("remove " + id)
	if err != nil {
		return cluster.Status{}, err
	}
	if err := c.Remove(ctx, id); err != nil {
		return cluster.Status{}, writeError("remove "+id, err)
	}
	return c.Status(), nil
}

// BackupInfo describes the backup WriteBackup would take now.
func (s *Service) BackupInfo(ctx context.Context) BackupInfo {
	info := BackupInfo{Node: s.NodeID(), Taken: s.now().UTC()}
	if applied, err := s.d.State.AppliedIndex(); err == nil {
		info.AppliedIndex, info.AppliedKnown = applied, true
	}
	return info
}

// WriteBackup writes a consistent copy of the state database to w: routes,
// rules, limits, token metadata and credentials, the latter sealed by the
// vault (restoring needs the vault key as well).
func (s *Service) WriteBackup(ctx context.Context, w io.Writer) (int64, error) {
	n, err := s.d.State.Snapshot(w)
	if err != nil {
		s.opts.Logger.Error("backup failed", "error", err)
		return n, internal("backup", err)
	}
	return n, nil
}
