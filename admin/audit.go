package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/storage"
)

// AuditMaxLimit is the most records one audit query may return.
const AuditMaxLimit = 10000

// Kinds of audit tampering VerifyAudit names.
const (
	// TamperEdited: a record's bytes no longer match its hash or chain.
	TamperEdited = "edited"
	// TamperDeleted: records were removed from inside the chain, or the
	// whole log (an empty log where a checkpoint says there were records).
	TamperDeleted = "deleted"
	// TamperTruncated: the log ends before the last checkpoint: records
	// were cut from its end or an older copy of the file was put back.
	TamperTruncated = "truncated"
	// TamperReplaced: the chain holds together but is not the one the
	// node checkpointed: the file was swapped or rewritten.
	TamperReplaced = "replaced"
	// TamperBadCheckpoint: the replicated checkpoint's signature does not
	// verify against the cluster CA.
	TamperBadCheckpoint = "bad-checkpoint"
)

// AuditVerification is the outcome of checking this node's audit chain.
type AuditVerification struct {
	Node    string
	Checked int
	OK      bool
	// BrokenSeq and Problem say where and why the chain breaks when OK
	// is false; Tamper is one of the Tamper* kinds.
	BrokenSeq uint64
	Problem   string
	Tamper    string
	// CheckpointSeq is the sequence number of the replicated checkpoint
	// the chain was checked against; 0 when there is none yet.
	CheckpointSeq uint64
}

// QueryAudit returns this node's audit records that q selects.
func (s *Service) QueryAudit(ctx context.Context, q storage.AuditQuery) ([]storage.AuditRecord, error) {
	if q.Kind != "" && !q.Kind.Valid() {
		return nil, invalidf("kind %q is unknown: use session_open, session_close, tool_call, refusal, oauth_consent, oauth_refresh, oauth_step_up or upstream_reestablished", q.Kind)
	}
	if q.Limit < 1 || q.Limit > AuditMaxLimit {
		return nil, invalidf("limit %d: use a number from 1 to %d", q.Limit, AuditMaxLimit)
	}
	if s.d.Audit == nil {
		return nil, &Error{Kind: ErrUnavailable, Op: "query audit log", Err: errors.New("this node keeps no audit log")}
	}
	recs, err := s.d.Audit.Query(q)
	if err != nil {
		return nil, internal("query audit log", err)
	}
	return recs, nil
}

// VerifyAudit checks the hash chain of this node's audit log, then checks
// it against the checkpoint of this node's chain head that raft
// replicated to every node. A broken chain is a result, not an error.
func (s *Service) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	if s.d.Audit == nil {
		return AuditVerification{}, &Error{Kind: ErrUnavailable, Op: "verify audit log", Err: errors.New("this node keeps no audit log")}
	}
	checked, err := s.d.Audit.Verify()
	res := AuditVerification{Node: s.NodeID(), Checked: checked, OK: err == nil}
	var ce *storage.AuditChainError
	switch {
	case errors.As(err, &ce):
		res.BrokenSeq, res.Problem, res.Tamper = ce.Seq, ce.Error(), TamperEdited
		if strings.Contains(ce.Reason, "missing") {
			res.Tamper = TamperDeleted
		}
		if cps, err := s.d.State.AuditCheckpoints(res.Node); err == nil && len(cps) > 0 {
			res.CheckpointSeq = cps[len(cps)-1].Seq
		}
	case err != nil:
		return AuditVerification{}, internal("verify audit log", err)
	default:
		if err := s.checkCheckpoint(&res); err != nil {
			return AuditVerification{}, internal("verify audit log", err)
		}
	}
	if !res.OK {
		s.opts.Logger.Error("audit log verification failed", "seq", res.BrokenSeq, "tamper", res.Tamper, "reason", res.Problem)
	}
	return res, nil
}

// checkCheckpoint compares an intact chain with this node's replicated
// checkpoints, oldest first: the first that does not hold names the
// tampering.
func (s *Service) checkCheckpoint(res *AuditVerification) error {
	cps, err := s.d.State.AuditCheckpoints(res.Node)
	if err != nil || len(cps) == 0 {
		return err
	}
	res.CheckpointSeq = cps[len(cps)-1].Seq
	fail := func(seq uint64, tamper, problem string) {
		res.OK, res.BrokenSeq, res.Tamper, res.Problem = false, seq, tamper, problem
	}
	headSeq, _, err := s.d.Audit.AuditHead()
	if err != nil {
		return err
	}
	var good uint64 // the last checkpointed seq the chain matches
	for _, cp := range cps {
		if s.opts.CheckpointRoots != nil {
			if err := cluster.VerifyCheckpoint(cp, s.opts.CheckpointRoots); err != nil {
				fail(cp.Seq, TamperBadCheckpoint, err.Error())
				return nil
			}
		}
		hash, pruned, found, err := s.d.Audit.RecordHash(cp.Seq)
		if err != nil {
			return err
		}
		switch {
		case pruned:
			continue
		case headSeq == 0:
			fail(1, TamperDeleted, fmt.Sprintf("the audit log is empty but this node checkpointed seq %d: the file was deleted or emptied", res.CheckpointSeq))
		case found && hash != cp.Hash:
			fail(good+1, TamperReplaced, fmt.Sprintf("the chain differs from this node's signed checkpoints from a record between seq %d and seq %d: the file was replaced or its chain rewritten", good+1, cp.Seq))
		case !found:
			fail(headSeq+1, TamperTruncated, fmt.Sprintf("the audit log ends at seq %d but this node checkpointed seq %d: records were cut from its end or an older copy of the file was put back", headSeq, cp.Seq))
		default:
			good = cp.Seq
			continue
		}
		return nil
	}
	return nil
}

// auditExportBatch is how many records ExportAudit reads per transaction.
const auditExportBatch = 1000

// ExportAudit hands emit this node's audit records with a sequence number
// above since, in order, a batch at a time. With follow it then waits for
// new records until ctx ends (and returns nil); without, it returns once
// it has sent every record. Resuming from the last sequence number emit
// saw loses and repeats nothing.
func (s *Service) ExportAudit(ctx context.Context, since uint64, follow bool, emit func([]storage.AuditRecord) error) error {
	if s.d.Audit == nil {
		return &Error{Kind: ErrUnavailable, Op: "export audit log", Err: errors.New("this node keeps no audit log")}
	}
	for {
		// Taken before reading, so an append between the read and the
		// wait still wakes it.
		more := s.d.Audit.Appended()
		recs, err := s.d.Audit.After(since, auditExportBatch)
		if err != nil {
			return internal("export audit log", err)
		}
		if len(recs) > 0 {
			if err := emit(recs); err != nil {
				return err
			}
			since = recs[len(recs)-1].Seq
			continue
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-more:
		}
	}
}
