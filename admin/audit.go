package admin

import (
	"context"
	"errors"

	"github.com/mcpgw/mcpgw/storage"
)

// AuditMaxLimit is the most records one audit query may return.
const AuditMaxLimit = 10000

// AuditVerification is the outcome of checking this node's audit chain.
type AuditVerification struct {
	Node    string
	Checked int
	OK      bool
	// BrokenSeq and Problem say where and why the chain breaks when OK
	// is false.
	BrokenSeq uint64
	Problem   string
}

// QueryAudit returns this node's audit records that q selects.
func (s *Service) QueryAudit(ctx context.Context, q storage.AuditQuery) ([]storage.AuditRecord, error) {
	if q.Kind != "" && !q.Kind.Valid() {
		return nil, invalidf("kind %q is unknown: use session_open, session_close, tool_call or refusal", q.Kind)
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

// VerifyAudit checks the hash chain of this node's audit log. A broken
// chain is a result, not an error.
func (s *Service) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	if s.d.Audit == nil {
		return AuditVerification{}, &Error{Kind: ErrUnavailable, Op: "verify audit log", Err: errors.New("this node keeps no audit log")}
	}
	checked, err := s.d.Audit.Verify()
	res := AuditVerification{Node: s.NodeID(), Checked: checked, OK: err == nil}
	var ce *storage.AuditChainError
	switch {
	case errors.As(err, &ce):
		res.BrokenSeq, res.Problem = ce.Seq, ce.Error()
		s.opts.Logger.Error("audit log verification failed", "seq", ce.Seq, "reason", ce.Reason)
	case err != nil:
		return AuditVerification{}, internal("verify audit log", err)
	}
	return res, nil
}
