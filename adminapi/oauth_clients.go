package adminapi

import (
	"context"
	"net/http"

	"github.com/mcpgw/mcpgw/admin"
)

// OAuthClientUseCases manage pre-registered OAuth clients. A UseCases that
// also implements them gets POST /v1/oauth/clients.
type OAuthClientUseCases interface {
	AddOAuthClient(ctx context.Context, in admin.OAuthClientAdd) (admin.OAuthClientAdded, error)
}

var _ OAuthClientUseCases = (*admin.Service)(nil)

// OAuthClientRequest is the body of POST /v1/oauth/clients: a client an
// operator registered at an authorization server by hand.
type OAuthClientRequest struct {
	// Issuer is the authorization server; empty: discovered from Route.
	Issuer       string `json:"issuer,omitempty"`
	Route        string `json:"route,omitempty"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"` // secret: sealed, never answered
	AuthMethod   string `json:"token_endpoint_auth_method,omitempty"`
}

// OAuthClient is a stored pre-registered client. It never holds the secret.
type OAuthClient struct {
	Issuer    string `json:"issuer"`
	ClientID  string `json:"client_id"`
	HasSecret bool   `json:"has_secret"`
}

func (s *server) mountOAuthClients(mux *http.ServeMux) {
	uc, ok := s.uc.(OAuthClientUseCases)
	if !ok {
		return
	}
	mux.HandleFunc("POST /v1/oauth/clients", func(w http.ResponseWriter, r *http.Request) {
		var req OAuthClientRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		res, err := uc.AddOAuthClient(r.Context(), admin.OAuthClientAdd{Issuer: req.Issuer, Route: req.Route,
			ClientID: req.ClientID, ClientSecret: req.ClientSecret, AuthMethod: req.AuthMethod})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, OAuthClient{Issuer: res.Issuer, ClientID: res.ClientID, HasSecret: res.HasSecret})
	})
}

// AddOAuthClient stores a pre-registered client the gateway uses at an
// authorization server ahead of other registration methods.
func (a *Client) AddOAuthClient(ctx context.Context, req OAuthClientRequest) (OAuthClient, error) {
	var out OAuthClient
	err := a.Do(ctx, http.MethodPost, "/v1/oauth/clients", req, &out)
	return out, err
}
