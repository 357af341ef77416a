package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/mcpgw/mcpgw/admin"
	"github.com/mcpgw/mcpgw/storage"
)

func (s *server) listRoutes(w http.ResponseWriter, r *http.Request) {
	routes, err := s.uc.Routes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, convert(routes, routeFrom))
}

func (s *server) putRoute(w http.ResponseWriter, r *http.Request) {
	var route Route
	if err := decodeBody(r, &route); err != nil {
		writeError(w, http.StatusBadRequest, "route: %v", err)
		return
	}
	got, created, err := s.uc.PutRoute(r.Context(), route.record())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, createdOrOK(created), routeFrom(got))
}

func createdOrOK(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (s *server) deleteRoute(w http.ResponseWriter, r *http.Request) {
	s.noContent(w, r, s.uc.DeleteRoute(r.Context(), r.PathValue("name")))
}

// noContent answers a change with no body to return.
func (s *server) noContent(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) listCredentials(w http.ResponseWriter, r *http.Request) {
	creds, err := s.uc.Credentials(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, convert(creds, credentialInfo))
}

func (s *server) putCredential(w http.ResponseWriter, r *http.Request) {
	var req PutCredentialRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	rec, created, err := s.uc.PutCredential(r.Context(), admin.CredentialInput{Org: req.Org, Account: req.Account, Route: req.Route, Kind: req.Kind, Secret: req.Secret})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, createdOrOK(created), credentialInfo(rec))
}

func (s *server) deleteCredential(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.noContent(w, r, s.uc.DeleteCredential(r.Context(), q.Get("org"), q.Get("account"), q.Get("route")))
}

func (s *server) rotateVault(w http.ResponseWriter, r *http.Request) {
	res, err := s.uc.RotateVaultKey(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RotateResult{KeyID: res.KeyID, DecryptOnly: orEmpty(res.DecryptOnly), Pending: res.Pending})
}

func (s *server) rotateKEK(w http.ResponseWriter, r *http.Request) {
	res, err := s.uc.RotateKEK(r.Context(), r.URL.Query().Get("finish") == "true")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, KEKRotateResult{KEKID: res.KEKID, WrappedTo: orEmpty(res.Wrapped), Finished: res.Finished})
}

func (s *server) vaultStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.uc.VaultStatus(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := VaultStatus{NodeKEKs: orEmpty(st.NodeKEKs), KeyFileError: st.KeyFileError, WrappedTo: orEmpty(st.WrappedTo), Keys: []VaultKey{},
		Records: st.Records, Pending: st.Pending, Rotating: st.Rotating}
	for _, k := range st.Keys {
		out.Keys = append(out.Keys, VaultKey{ID: k.ID, State: k.State, Created: k.Created, WrappedTo: orEmpty(k.WrappedTo),
			Unwrapped: k.Unwrapped, Credentials: k.Credentials, SigningKeys: k.SigningKeys, OAuthFlows: k.OAuthFlows, OAuthClients: k.OAuthClients})
	}
	writeJSON(w, http.StatusOK, out)
}

// orEmpty makes a nil list encode as [] rather than null.
func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *server) issueToken(w http.ResponseWriter, r *http.Request) {
	var req IssueTokenRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		writeError(w, http.StatusBadRequest, "ttl %q is not a duration like 24h or 30m", req.TTL)
		return
	}
	tr := admin.TokenRequest{Service: req.Service, Orgs: req.Orgs, TTL: ttl}
	tok, err := s.uc.IssueToken(r.Context(), tr)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, IssuedToken{Token: tok.Token, ID: tok.Meta.ID, Service: tok.Meta.Service, Orgs: tok.Meta.Orgs, ExpiresAt: tok.Meta.ExpiresAt})
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.uc.Tokens(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, convert(toks, tokenInfo))
}

func (s *server) revokeToken(w http.ResponseWriter, r *http.Request) {
	s.noContent(w, r, s.uc.RevokeToken(r.Context(), r.PathValue("id")))
}

func (s *server) rotateTokenKey(w http.ResponseWriter, r *http.Request) {
	id, err := s.uc.RotateTokenKey(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenKeyRotated{KeyID: id})
}

func (s *server) listRules(w http.ResponseWriter, r *http.Request) {
	rules, err := s.uc.Rules(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, convert(rules, ruleFrom))
}

func (s *server) putRule(w http.ResponseWriter, r *http.Request) {
	var rule Rule
	if err := decodeBody(r, &rule); err != nil {
		writeError(w, http.StatusBadRequest, "rule: %v", err)
		return
	}
	got, err := s.uc.PutRule(r.Context(), rule.record())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ruleFrom(got))
}

func (s *server) deleteRule(w http.ResponseWriter, r *http.Request) {
	s.noContent(w, r, s.uc.DeleteRule(r.Context(), r.PathValue("id")))
}

func (s *server) listLimits(w http.ResponseWriter, r *http.Request) {
	limits, err := s.uc.Limits(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, convert(limits, limitFrom))
}

func (s *server) putLimit(w http.ResponseWriter, r *http.Request) {
	var l Limit
	if err := decodeBody(r, &l); err != nil {
		writeError(w, http.StatusBadRequest, "limit: %v", err)
		return
	}
	got, err := s.uc.PutLimit(r.Context(), l.record())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, limitFrom(got))
}

func (s *server) deleteLimit(w http.ResponseWriter, r *http.Request) {
	s.noContent(w, r, s.uc.DeleteLimit(r.Context(), r.PathValue("id")))
}

// queryAudit answers GET /v1/audit?since=&until=&org=&account=&route=
// &service=&tool=&session=&kind=&outcome=&limit=&order=, newest first
// unless order=oldest.
func (s *server) queryAudit(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r, s.opts.Clock())
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	recs, err := s.uc.QueryAudit(r.Context(), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, convert(recs, auditRecord))
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
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 || q.Limit > admin.AuditMaxLimit {
			return q, fmt.Errorf("limit %q: use a number from 1 to %d", s, admin.AuditMaxLimit)
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

func (s *server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	res, err := s.uc.VerifyAudit(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AuditVerifyResult{Node: res.Node, Checked: res.Checked, OK: res.OK, BrokenSeq: res.BrokenSeq, Error: res.Problem,
		Tamper: res.Tamper, CheckpointSeq: res.CheckpointSeq})
}

// exportAudit answers GET /v1/audit/export?since=SEQ&follow=true with this
// node's records after SEQ as JSON lines, in sequence order; with follow
// the stream stays open and carries new records as they are written.
func (s *server) exportAudit(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	var since uint64
	if str := v.Get("since"); str != "" {
		var err error
		if since, err = strconv.ParseUint(str, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "since %q: use the sequence number of the last record received (0 for all)", str)
			return
		}
	}
	follow := false
	switch v.Get("follow") {
	case "", "false":
	case "true":
		follow = true
	default:
		writeError(w, http.StatusBadRequest, "follow %q: use true or false", v.Get("follow"))
		return
	}
	started := false
	enc := json.NewEncoder(w)
	// Through the middleware's writers, which unwrap to the connection's.
	rc := http.NewResponseController(w)
	start := func() {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			rc.Flush()
		}
	}
	if follow {
		start() // the client sees the stream open before the first record
	}
	err := s.uc.ExportAudit(r.Context(), since, follow, func(recs []storage.AuditRecord) error {
		start()
		for _, rec := range recs {
			if err := enc.Encode(auditRecord(rec)); err != nil {
				return err
			}
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		return nil
	})
	switch {
	case err != nil && !started:
		s.fail(w, r, err)
	case err != nil:
		s.logger.Warn("audit export ended early", "error", err)
	case !started:
		start()
	}
}

func (s *server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.uc.ClusterStatus(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clusterStatus(st))
}

func (s *server) clusterJoin(w http.ResponseWriter, r *http.Request) {
	var req ClusterJoinRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	st, err := s.uc.JoinNode(r.Context(), req.ID, req.Addr)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clusterStatus(st))
}

func (s *server) clusterRemove(w http.ResponseWriter, r *http.Request) {
	var req ClusterRemoveRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	st, err := s.uc.RemoveNode(r.Context(), req.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clusterStatus(st))
}

// backup streams a consistent copy of the state database.
func (s *server) backup(w http.ResponseWriter, r *http.Request) {
	info := s.uc.BackupInfo(r.Context())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=mcpgw-%s-%s.db", info.Node, info.Taken.Format("20060102T150405Z")))
	if info.AppliedKnown {
		w.Header().Set("X-Mcpgw-Applied-Index", strconv.FormatUint(info.AppliedIndex, 10))
	}
	if _, err := s.uc.WriteBackup(r.Context(), w); err != nil {
		// Headers are gone: cut the stream so the client sees a failure
		// rather than a short file.
		panic(http.ErrAbortHandler)
	}
}
