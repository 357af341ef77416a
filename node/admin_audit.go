package node

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mcpgw/mcpgw/storage"
)

// Audit query limits: the default, and the most one request may return.
const (
	auditDefaultLimit = 100
	auditMaxLimit     = 10000
)

// AuditVerifyResult is the answer to GET /v1/audit/verify.
type AuditVerifyResult struct {
	Node    string `json:"node"`
	Checked int    `json:"checked"`
	OK      bool   `json:"ok"`
	// BrokenSeq is the first record at fault when OK is false.
	BrokenSeq uint64 `json:"broken_seq,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (n *Node) registerAuditAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit", n.queryAudit)
	mux.HandleFunc("GET /v1/audit/verify", n.verifyAudit)
}

// queryAudit answers GET /v1/audit?since=&until=&org=&account=&route=
// &service=&tool=&session=&kind=&outcome=&limit=&order=, newest first
// unless order=oldest.
func (n *Node) queryAudit(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r, time.Now())
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	recs, err := n.audit.log.Query(q)
	if err != nil {
		n.writeInternalError(w, r, "query audit log", err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(recs))
}

func parseAuditQuery(r *http.Request, now time.Time) (storage.AuditQuery, error) {
	v := r.URL.Query()
	q := storage.AuditQuery{
		Kind: storage.AuditKind(v.Get("kind")), Service: v.Get("service"), Org: v.Get("org"), Account: v.Get("account"),
		Route: v.Get("route"), Tool: v.Get("tool"), Session: v.Get("session"), Outcome: v.Get("outcome"), Limit: auditDefaultLimit,
	}
	var err error
	if q.Since, err = parseAuditTime("since", v.Get("since"), now); err != nil {
		return q, err
	}
	if q.Until, err = parseAuditTime("until", v.Get("until"), now); err != nil {
		return q, err
	}
	if q.Kind != "" && !q.Kind.Valid() {
		return q, fmt.Errorf("kind %q is unknown: use session_open, session_close, tool_call or refusal", q.Kind)
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 || q.Limit > auditMaxLimit {
			return q, fmt.Errorf("limit %q: use a number from 1 to %d", s, auditMaxLimit)
		}
	}
	switch v.Get("order") {
	case "", "newest":
	case "oldest":
		q.OldestFirst = true
	default:
		return q, fmt.Errorf("order %q: use newest or oldest", v.Get("order"))
	}
	return q, nil
}

// parseAuditTime reads an RFC 3339 time, or a duration meaning that long
// before now.
func parseAuditTime(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: use an RFC 3339 time like 2026-03-01T12:00:00Z or a duration like 1h (meaning 1h ago)", name, s)
}

func (n *Node) verifyAudit(w http.ResponseWriter, r *http.Request) {
	checked, err := n.audit.log.Verify()
	res := AuditVerifyResult{Node: n.audit.node, Checked: checked, OK: err == nil}
	var ce *storage.AuditChainError
	switch {
	case errors.As(err, &ce):
		res.BrokenSeq, res.Error = ce.Seq, ce.Error()
		n.logger.Error("audit log verification failed", "seq", ce.Seq, "reason", ce.Reason)
	case err != nil:
		n.writeInternalError(w, r, "verify audit log", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
