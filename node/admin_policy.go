package node

import (
	"net/http"
	"slices"
	"time"

	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
)

// IssueTokenRequest is the body of POST /v1/tokens.
type IssueTokenRequest struct {
	Service string   `json:"service"`
	Orgs    []string `json:"orgs"`
	TTL     string   `json:"ttl"` // Go duration, e.g. "24h"
}

// IssuedToken is the answer to POST /v1/tokens: the only time the token
// itself is shown.
type IssuedToken struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Orgs      []string  `json:"orgs"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TokenInfo is what listing shows of an issued token.
type TokenInfo struct {
	storage.Token
	Revoked bool `json:"revoked"`
}

func (n *Node) registerPolicyAdmin(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/tokens", n.issueToken)
	mux.HandleFunc("GET /v1/tokens", n.listTokens)
	mux.HandleFunc("POST /v1/tokens/{id}/revoke", n.revokeToken)
	mux.HandleFunc("POST /v1/token-keys/rotate", n.rotateTokenKey)
	mux.HandleFunc("GET /v1/rules", n.listRules)
	mux.HandleFunc("POST /v1/rules", n.putRule)
	mux.HandleFunc("DELETE /v1/rules/{id}", n.deleteRule)
	mux.HandleFunc("GET /v1/limits", n.listLimits)
	mux.HandleFunc("POST /v1/limits", n.putLimit)
	mux.HandleFunc("DELETE /v1/limits/{id}", n.deleteLimit)
}

func (n *Node) issueToken(w http.ResponseWriter, r *http.Request) {
	var req IssueTokenRequest
	if err := decodeAdminBody(r, &req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := validName("service", req.Service); err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	for _, o := range req.Orgs {
		if o != "*" {
			if err := validName("org", o); err != nil {
				writeAdminError(w, http.StatusBadRequest, "%v", err)
				return
			}
		}
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "ttl %q is not a duration like 24h or 30m", req.TTL)
		return
	}
	// A node that joined a moment ago may not hold the signing key yet.
	var kr *policy.Keyring
	if _, err := n.found(r.Context(), func() (bool, error) {
		var err error
		kr, err = n.gw.Keyring()
		return err == nil && kr.ActiveKeyID() != "", err
	}); err != nil {
		n.writeInternalError(w, r, "read signing keys", err)
		return
	}
	now := n.now().UTC()
	id, err := policy.NewTokenID()
	if err != nil {
		n.writeInternalError(w, r, "create token id", err)
		return
	}
	claims := policy.Claims{ID: id, Service: req.Service, Orgs: req.Orgs, ExpiresAt: now.Add(ttl)}
	tok, err := kr.Issue(claims, now)
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	meta := storage.Token{ID: id, Service: req.Service, Orgs: req.Orgs, KeyID: kr.ActiveKeyID(), IssuedAt: now.Truncate(time.Second), ExpiresAt: claims.ExpiresAt.Truncate(time.Second)}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpPutToken, Token: &meta}); err != nil {
		writeApplyError(w, err, "record token")
		return
	}
	n.logger.Info("service token issued", "token_id", id, "service", req.Service, "orgs", req.Orgs, "expires_at", claims.ExpiresAt)
	writeJSON(w, http.StatusCreated, IssuedToken{Token: tok, ID: id, Service: req.Service, Orgs: req.Orgs, ExpiresAt: claims.ExpiresAt})
}

func (n *Node) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := n.store.Tokens()
	if err != nil {
		n.writeInternalError(w, r, "read tokens", err)
		return
	}
	revs, err := n.store.Revocations()
	if err != nil {
		n.writeInternalError(w, r, "read revocations", err)
		return
	}
	out := make([]TokenInfo, 0, len(toks))
	for _, t := range toks {
		out = append(out, TokenInfo{Token: t, Revoked: slices.ContainsFunc(revs, func(r storage.Revocation) bool { return r.ID == t.ID })})
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var toks []storage.Token
	i := -1
	if _, err := n.found(r.Context(), func() (bool, error) {
		var err error
		toks, err = n.store.Tokens()
		i = slices.IndexFunc(toks, func(t storage.Token) bool { return t.ID == id })
		return i >= 0, err
	}); err != nil {
		n.writeInternalError(w, r, "read tokens", err)
		return
	}
	if i < 0 {
		writeAdminError(w, http.StatusNotFound, "no token with id %q; list them with `mcpgw token list`", id)
		return
	}
	rev := storage.Revocation{ID: id, Expires: toks[i].ExpiresAt}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpRevokeToken, Revocation: &rev}); err != nil {
		writeApplyError(w, err, "revoke")
		return
	}
	n.logger.Info("service token revoked", "token_id", id, "service", toks[i].Service)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) rotateTokenKey(w http.ResponseWriter, r *http.Request) {
	keys, err := n.store.TokenKeys()
	if err != nil {
		n.writeInternalError(w, r, "read signing keys", err)
		return
	}
	var active []storage.TokenKey
	for _, k := range keys {
		if k.Retired.IsZero() {
			active = append(active, k)
		}
	}
	if err := n.addSigningKey(r.Context(), active); err != nil {
		writeApplyError(w, err, "rotate signing key")
		return
	}
	kr, err := n.gw.Keyring()
	if err != nil {
		n.writeInternalError(w, r, "read signing keys", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"key_id": kr.ActiveKeyID()})
}

func (n *Node) listRules(w http.ResponseWriter, r *http.Request) {
	rules, err := n.store.Rules()
	if err != nil {
		n.writeInternalError(w, r, "read rules", err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(rules))
}

func (n *Node) putRule(w http.ResponseWriter, r *http.Request) {
	var rule storage.Rule
	if err := decodeAdminBody(r, &rule); err != nil {
		writeAdminError(w, http.StatusBadRequest, "rule: %v", err)
		return
	}
	pr := policy.Rule{ID: rule.ID, Service: rule.Service, Org: rule.Org, Account: rule.Account, Route: rule.Route, Tool: rule.Tool, Effect: policy.Effect(rule.Effect)}
	if err := pr.Validate(); err != nil {
		writeAdminError(w, http.StatusBadRequest, "rule: %v", err)
		return
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpPutRule, Rule: &rule}); err != nil {
		writeApplyError(w, err, "write rule")
		return
	}
	writeJSON(w, http.StatusOK, rule)
}

func (n *Node) deleteRule(w http.ResponseWriter, r *http.Request) {
	n.deleteByID(w, r, "rule", func(id string) (bool, error) {
		rules, err := n.store.Rules()
		return slices.ContainsFunc(rules, func(x storage.Rule) bool { return x.ID == id }), err
	}, cluster.OpDeleteRule)
}

func (n *Node) listLimits(w http.ResponseWriter, r *http.Request) {
	limits, err := n.store.Limits()
	if err != nil {
		n.writeInternalError(w, r, "read limits", err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(limits))
}

func (n *Node) putLimit(w http.ResponseWriter, r *http.Request) {
	var l storage.Limit
	if err := decodeAdminBody(r, &l); err != nil {
		writeAdminError(w, http.StatusBadRequest, "limit: %v", err)
		return
	}
	pl, err := toPolicyLimit(l)
	if err == nil {
		err = pl.Validate()
	}
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "limit: %v", err)
		return
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: cluster.OpPutLimit, Limit: &l}); err != nil {
		writeApplyError(w, err, "write limit")
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (n *Node) deleteLimit(w http.ResponseWriter, r *http.Request) {
	n.deleteByID(w, r, "limit", func(id string) (bool, error) {
		limits, err := n.store.Limits()
		return slices.ContainsFunc(limits, func(x storage.Limit) bool { return x.ID == id }), err
	}, cluster.OpDeleteLimit)
}

// deleteByID removes a rule or limit, answering 404 for an unknown id.
func (n *Node) deleteByID(w http.ResponseWriter, r *http.Request, what string, exists func(string) (bool, error), op cluster.Op) {
	id := r.PathValue("id")
	ok, err := n.found(r.Context(), func() (bool, error) { return exists(id) })
	if err != nil {
		n.writeInternalError(w, r, "read "+what+"s", err)
		return
	}
	if !ok {
		writeAdminError(w, http.StatusNotFound, "no %s with id %q; list them with `mcpgw %s list`", what, id, what)
		return
	}
	if err := n.writes.Apply(r.Context(), cluster.Command{Op: op, Name: id}); err != nil {
		writeApplyError(w, err, "delete "+what)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
