package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// finalCheckpointTimeout bounds the checkpoint Close commits: a node
// without a quorum still shuts down promptly.
const finalCheckpointTimeout = 3 * time.Second

// runAuditCheckpoints commits this node's audit chain head through raft
// every AuditCheckpointInterval until the node closes.
func (n *Node) runAuditCheckpoints() {
	log, ctx := n.audit.log, n.ctx
	n.clusterWG.Add(1)
	go func() {
		defer n.clusterWG.Done()
		t := time.NewTicker(n.cfg.AuditCheckpointInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := n.commitAuditCheckpoint(ctx, log); err != nil && ctx.Err() == nil {
					n.logger.Warn("audit checkpoint not committed; retrying at the next interval", slog.Any("error", err))
				}
			}
		}
	}()
}

// finalAuditCheckpoint commits the head the audit log has once every
// session's records are written, so a restart loses no checkpoint.
func (n *Node) finalAuditCheckpoint() {
	if n.raft == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalCheckpointTimeout)
	defer cancel()
	if err := n.commitAuditCheckpoint(ctx, n.audit.log); err != nil {
		n.logger.Warn("final audit checkpoint not committed", slog.Any("error", err))
	}
}

// commitAuditCheckpoint signs and replicates the log's head unless the
// last checkpoint holds it already.
func (n *Node) commitAuditCheckpoint(ctx context.Context, log *storage.AuditLog) error {
	n.audit.cpMu.Lock()
	defer n.audit.cpMu.Unlock()
	seq, hash, err := log.AuditHead()
	if err != nil {
		return err
	}
	if seq == 0 || seq == n.audit.committed {
		return nil
	}
	cp, err := cluster.SignCheckpoint(n.audit.cert, n.audit.node, seq, hash)
	if err != nil {
		return err
	}
	if err := n.raft.Apply(ctx, cluster.Command{Op: cluster.OpAuditCheckpoint, Checkpoint: &cp}); err != nil {
		return err
	}
	n.audit.committed = seq
	return nil
}
