package admin

import (
	"context"
	"net/url"
	"slices"
	"strings"

	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
)

// OAuthClientAdd is a client an operator registered for the gateway at an
// authorization server by hand: the server cannot fetch the gateway's
// client metadata document (air-gapped) and offers no dynamic
// registration, or policy wants a known client.
type OAuthClientAdd struct {
	// Issuer is the authorization server's issuer. Empty: discovered from
	// Route's server.
	Issuer string
	// Route names the route whose server the client is for; used to find
	// the issuer when Issuer is empty.
	Route    string
	ClientID string
	// ClientSecret is the client's secret (sealed in the vault); empty for
	// a public client.
	ClientSecret string
	// AuthMethod is the token endpoint auth method: client_secret_basic,
	// client_secret_post or none. Empty: chosen from what the server
	// supports when the client is used.
	AuthMethod string
}

// OAuthClientAdded says where a pre-registered client is used.
type OAuthClientAdded struct {
	Issuer    string
	ClientID  string
	HasSecret bool
}

// AddOAuthClient stores a pre-registered client for an authorization
// server (replicated, the secret sealed). Every sign-in link for a route
// whose server names that issuer then uses it, ahead of a client id
// metadata document or dynamic registration.
func (s *Service) AddOAuthClient(ctx context.Context, in OAuthClientAdd) (OAuthClientAdded, error) {
	if err := s.oauthReady(); err != nil {
		return OAuthClientAdded{}, err
	}
	if in.ClientID == "" || len(in.ClientID) > 1024 || strings.ContainsFunc(in.ClientID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return OAuthClientAdded{}, invalidf("client id must be 1 to 1024 printable characters: give the id the authorization server issued (--client-id)")
	}
	if len(in.ClientSecret) > 4096 {
		return OAuthClientAdded{}, invalidf("client secret is over 4096 bytes; give the secret the authorization server issued")
	}
	if in.AuthMethod != "" && !slices.Contains([]string{oauth.AuthNone, oauth.AuthClientSecretBasic, oauth.AuthClientSecretPost}, in.AuthMethod) {
		return OAuthClientAdded{}, invalidf("token endpoint auth method %q is not one of none, client_secret_basic, client_secret_post", in.AuthMethod)
	}
	if in.AuthMethod == oauth.AuthNone && in.ClientSecret != "" {
		return OAuthClientAdded{}, invalidf("a client with auth method none has no secret: drop the secret or choose client_secret_basic or client_secret_post")
	}
	if in.AuthMethod != "" && in.AuthMethod != oauth.AuthNone && in.ClientSecret == "" {
		return OAuthClientAdded{}, invalidf("auth method %s needs the client secret: pass it on standard input (--client-secret-stdin)", in.AuthMethod)
	}
	issuer := in.Issuer
	switch {
	case issuer != "":
		u, err := url.Parse(issuer)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return OAuthClientAdded{}, invalidf("issuer %q is not an https URL such as https://auth.example.com: give the authorization server's issuer, or --route to discover it", issuer)
		}
	case in.Route != "":
		route, err := s.d.State.Route(in.Route)
		found, err := exists(err)
		if err != nil {
			return OAuthClientAdded{}, internal("read route", err)
		}
		if !found {
			return OAuthClientAdded{}, invalidf("no route named %q; add the route first with `mcpgw route add`, or give --issuer", in.Route)
		}
		if route.Transport == storage.TransportStdio {
			return OAuthClientAdded{}, invalidf("route %q runs a local command; oauth is for network upstreams", in.Route)
		}
		d, err := s.discoverRoute(ctx, in.Route, route.URL)
		if err != nil {
			return OAuthClientAdded{}, err
		}
		issuer = d.Issuer
	default:
		return OAuthClientAdded{}, invalidf("say which authorization server the client is for: --issuer, or --route to discover it")
	}
	reg := oauth.Registration{Issuer: issuer, ClientID: in.ClientID, ClientSecret: in.ClientSecret, Method: oauth.MethodPreregistered, AuthMethod: in.AuthMethod}
	if err := s.putOAuthClient(ctx, reg); err != nil {
		return OAuthClientAdded{}, err
	}
	s.opts.Logger.Info("oauth client pre-registered", "issuer", issuer, "client_id", in.ClientID, "has_secret", in.ClientSecret != "")
	return OAuthClientAdded{Issuer: issuer, ClientID: in.ClientID, HasSecret: in.ClientSecret != ""}, nil
}
