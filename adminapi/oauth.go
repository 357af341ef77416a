package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/mcpgw/mcpgw/admin"
)

// OAuthUseCases are the upstream OAuth use cases. A UseCases that also
// implements them gets the /v1/oauth/ endpoints.
type OAuthUseCases interface {
	AuthorizationURL(ctx context.Context, in admin.OAuthStart) (admin.OAuthStarted, error)
	CompleteOAuth(ctx context.Context, q url.Values) (admin.OAuthCompleted, error)
	OAuthStatus(ctx context.Context, org, account, route string) (admin.OAuthStatus, error)
	RevokeOAuth(ctx context.Context, org, account, route string) error
}

var _ OAuthUseCases = (*admin.Service)(nil)

// OAuthURLRequest is the body of POST /v1/oauth/url.
type OAuthURLRequest struct {
	Org     string   `json:"org"`
	Account string   `json:"account"`
	Route   string   `json:"route"`
	Scopes  []string `json:"scopes,omitempty"`
}

// OAuthURL is a consent URL to open in a browser, valid until Expires.
type OAuthURL struct {
	URL     string    `json:"url"`
	Issuer  string    `json:"issuer"`
	Expires time.Time `json:"expires"`
}

// OAuthCompleteRequest is the body of POST /v1/oauth/complete: the query
// the authorization server redirected the browser to, or its state and code.
type OAuthCompleteRequest struct {
	State string `json:"state,omitempty"`
	Code  string `json:"code,omitempty"`
	// Query is the callback URL's whole query string (with iss, error...);
	// State and Code, when set, override its parameters.
	Query string `json:"query,omitempty"`
}

// OAuthCompleted says which account a completed flow connected.
type OAuthCompleted struct {
	Org     string    `json:"org"`
	Account string    `json:"account"`
	Route   string    `json:"route"`
	Issuer  string    `json:"issuer"`
	Scopes  []string  `json:"scopes"`
	Expires time.Time `json:"expires,omitzero"`
}

// OAuthStatus is GET /v1/oauth/status: whether an account is connected. It
// never holds a token.
type OAuthStatus struct {
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
	Scopes      []string  `json:"scopes"`
	Refreshable bool      `json:"refreshable"`
	LastConsent time.Time `json:"last_consent,omitzero"`
	// Kind is the stored credential's kind when it is not oauth.
	Kind string `json:"kind,omitempty"`
	// Issuer is the authorization server that issued the token.
	Issuer string `json:"issuer,omitempty"`
}

func (s *server) mountOAuth(mux *http.ServeMux) {
	s.mountOAuthClients(mux)
	uc, ok := s.uc.(OAuthUseCases)
	if !ok {
		return
	}
	mux.HandleFunc("POST /v1/oauth/url", func(w http.ResponseWriter, r *http.Request) {
		var req OAuthURLRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		res, err := uc.AuthorizationURL(r.Context(), admin.OAuthStart{Org: req.Org, Account: req.Account, Route: req.Route, Scopes: req.Scopes})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, OAuthURL{URL: res.URL, Issuer: res.Issuer, Expires: res.Expires})
	})
	mux.HandleFunc("POST /v1/oauth/complete", func(w http.ResponseWriter, r *http.Request) {
		var req OAuthCompleteRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		q, err := url.ParseQuery(req.Query)
		if err != nil {
			writeError(w, http.StatusBadRequest, "query is not a URL query string: %v", err)
			return
		}
		if req.State != "" {
			q.Set("state", req.State)
		}
		if req.Code != "" {
			q.Set("code", req.Code)
		}
		res, err := uc.CompleteOAuth(r.Context(), q)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, oauthCompleted(res))
	})
	mux.HandleFunc("GET /v1/oauth/status", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		st, err := uc.OAuthStatus(r.Context(), q.Get("org"), q.Get("account"), q.Get("route"))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, OAuthStatus{State: st.State, Reason: st.Reason, Expires: st.Expires, Scopes: orEmpty(st.Scopes),
			Refreshable: st.Refreshable, LastConsent: st.LastConsent, Kind: st.CredentialOf, Issuer: st.Issuer})
	})
	mux.HandleFunc("DELETE /v1/oauth/credential", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		s.noContent(w, r, uc.RevokeOAuth(r.Context(), q.Get("org"), q.Get("account"), q.Get("route")))
	})
}

func oauthCompleted(c admin.OAuthCompleted) OAuthCompleted {
	return OAuthCompleted{Org: c.Org, Account: c.Account, Route: c.Route, Issuer: c.Issuer, Scopes: orEmpty(c.Scopes), Expires: c.Expires}
}

// AuthorizationURL asks for a consent URL connecting an org's account to a route.
func (a *Client) AuthorizationURL(ctx context.Context, req OAuthURLRequest) (OAuthURL, error) {
	var out OAuthURL
	err := a.Do(ctx, http.MethodPost, "/v1/oauth/url", req, &out)
	return out, err
}

// CompleteOAuth finishes a flow with the state and code of its callback,
// for a browser that could not reach the gateway's own callback.
func (a *Client) CompleteOAuth(ctx context.Context, req OAuthCompleteRequest) (OAuthCompleted, error) {
	var out OAuthCompleted
	err := a.Do(ctx, http.MethodPost, "/v1/oauth/complete", req, &out)
	return out, err
}

// OAuthStatus reports whether an org's account is connected to a route.
func (a *Client) OAuthStatus(ctx context.Context, org, account, route string) (OAuthStatus, error) {
	var out OAuthStatus
	err := a.Do(ctx, http.MethodGet, "/v1/oauth/status?"+oauthTarget(org, account, route), nil, &out)
	return out, err
}

// RevokeOAuth deletes an account's oauth credential for a route.
func (a *Client) RevokeOAuth(ctx context.Context, org, account, route string) error {
	return a.Do(ctx, http.MethodDelete, "/v1/oauth/credential?"+oauthTarget(org, account, route), nil, nil)
}

func oauthTarget(org, account, route string) string {
	return url.Values{"org": {org}, "account": {account}, "route": {route}}.Encode()
}
