package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/mcpgw/mcpgw/internal/oauthtest"

	"github.com/mcpgw/mcpgw/oauth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// TestDiscoverMetadataLocations covers the well-known URLs the MCP
// specification lists, for protected resource metadata (path-aware, root)
// and authorization server metadata (RFC 8414 and OpenID, with path
// insertion and appending).
func TestDiscoverMetadataLocations(t *testing.T) {
	tests := []struct {
		name       string
		issuerPath string
		metaPath   string
		prmPath    string
		advertise  bool
		oidc       bool
	}{
		{"challenge names the metadata", "", "/.well-known/oauth-authorization-server", "/custom/prm", true, false},
		{"path-aware prm", "", "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp", false, false},
		{"root prm", "", "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource", false, false},
		{"rfc 8414 path insertion", "/tenant1", "/.well-known/oauth-authorization-server/tenant1", "/.well-known/oauth-protected-resource", false, false},
		{"oidc path insertion", "/tenant1", "/.well-known/openid-configuration/tenant1", "/.well-known/oauth-protected-resource", false, true},
		{"oidc path appending", "/tenant1", "/tenant1/.well-known/openid-configuration", "/.well-known/oauth-protected-resource", false, true},
		{"oidc at root", "", "/.well-known/openid-configuration", "/.well-known/oauth-protected-resource", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := oauthtest.NewASAt(t, tt.issuerPath, tt.metaPath)
			m := oauthtest.NewMCPWith(t, as, oauthtest.MCPOpts{PRMPath: tt.prmPath, Advertise: tt.advertise, Edit: func(p *oauthex.ProtectedResourceMetadata) {
				p.AuthorizationServers = []string{as.Srv.URL + tt.issuerPath}
			}})
			c := newClient(t, nil)
			d, err := c.Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if got, want := d.Issuer, as.Srv.URL+tt.issuerPath; got != want {
				t.Fatalf("issuer=%q, want %q", got, want)
			}
			if d.OIDC != tt.oidc || d.Resource != m.Endpoint {
				t.Fatalf("oidc=%v resource=%q, want %v %q", d.OIDC, d.Resource, tt.oidc, m.Endpoint)
			}
			// The flow works end to end from every location.
			reg, err := c.Register(context.Background(), d, oauth.RegisterOptions{RedirectURL: callbackURL})
			if err != nil {
				t.Fatal(err)
			}
			p, u, err := c.Begin(context.Background(), oauth.BeginRequest{Discovery: d, Registration: reg, RedirectURL: callbackURL})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Complete(context.Background(), &p, browse(t, u))
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if err := callEcho(t, m.Endpoint, tok.AccessToken); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBeginOIDCNonceAndOfflineAccess(t *testing.T) {
	as := oauthtest.NewASAt(t, "", "/.well-known/openid-configuration")
	m := oauthtest.NewMCP(t, as, nil, func(p *oauthex.ProtectedResourceMetadata) { p.ScopesSupported = []string{"openid", "read"} })
	c := newClient(t, nil)
	d, err := c.Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.Register(context.Background(), d, oauth.RegisterOptions{RedirectURL: callbackURL})
	if err != nil {
		t.Fatal(err)
	}
	p, raw, err := c.Begin(context.Background(), oauth.BeginRequest{Discovery: d, Registration: reg, RedirectURL: callbackURL, RequestRefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(raw)
	q := u.Query()
	if p.Nonce == "" || q.Get("nonce") != p.Nonce {
		t.Fatalf("nonce=%q in url, pending %q: want the same non-empty nonce", q.Get("nonce"), p.Nonce)
	}
	if got, want := q.Get("scope"), "openid read offline_access"; got != want {
		t.Fatalf("scope=%q, want %q", got, want)
	}
	if q.Get("code_challenge") == "" || q.Get("code_challenge") == p.Verifier || q.Get("state") != p.State {
		t.Fatal("authorization url lacks the S256 challenge or state, or shows the verifier")
	}
}

func TestBeginOmitsScopeWhenUndefined(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, func(p *oauthex.ProtectedResourceMetadata) { p.ScopesSupported = nil })
	c := newClient(t, nil)
	d, err := c.Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	reg := oauth.Registration{Issuer: d.Issuer, ClientID: "x", TokenEndpoint: d.AuthServer.TokenEndpoint}
	_, raw, err := c.Begin(context.Background(), oauth.BeginRequest{Discovery: d, Registration: reg, RedirectURL: callbackURL})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(raw)
	if u.Query().Has("scope") {
		t.Fatalf("scope=%q sent, want none", u.Query().Get("scope"))
	}
}

// TestDiscoverLegacyServer: a 2025-03-26 server has no protected resource
// metadata and no authorization server metadata; its origin's default
// endpoints are used.
func TestDiscoverLegacyServer(t *testing.T) {
	srv, _ := countingServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mcp" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.NotFound(w, r)
	})
	d, err := newClient(t, nil).Discover(context.Background(), srv.URL+"/mcp", oauth.Challenge{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Issuer != srv.URL || d.AuthServer.TokenEndpoint != srv.URL+"/token" || d.AuthServer.AuthorizationEndpoint != srv.URL+"/authorize" || d.Resource != srv.URL+"/mcp" || d.ResourceMetadata != nil {
		t.Fatalf("legacy discovery = %+v", d)
	}
}

func TestDiscoverRefusesPRMWithoutAuthServers(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, func(p *oauthex.ProtectedResourceMetadata) { p.AuthorizationServers = nil })
	_, err := newClient(t, nil).Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
	if !errors.Is(err, oauth.ErrDiscovery) {
		t.Fatalf("Discover: err=%v, want ErrDiscovery", err)
	}
}

func TestDiscoverRefusesMetadataAddressInPRM(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, func(p *oauthex.ProtectedResourceMetadata) {
		p.AuthorizationServers = []string{"https://169.254.169.254/"}
	})
	_, err := newClient(t, nil).Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
	if !errors.Is(err, oauth.ErrAddressNotAllowed) {
		t.Fatalf("Discover: err=%v, want ErrAddressNotAllowed", err)
	}
	// A challenge naming a metadata address is refused before any fetch.
	_, err = newClient(t, nil).Discover(context.Background(), m.Endpoint, oauth.Challenge{ResourceMetadata: "http://169.254.169.254/latest/meta-data"})
	if !errors.Is(err, oauth.ErrURLNotAllowed) {
		t.Fatalf("Discover: err=%v, want ErrURLNotAllowed", err)
	}
}

// TestDiscoverLegacyServerWithMetadata: a 2025-03-26 server with its
// authorization server metadata at the origin, naming an issuer with a path
// on the same origin (as the conformance suite's backcompat scenario does).
func TestDiscoverLegacyServerWithMetadata(t *testing.T) {
	var srv *httptest.Server
	srv, _ = countingServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/mcp":
			w.WriteHeader(http.StatusUnauthorized)
		case "/.well-known/oauth-authorization-server":
			oauthtest.WriteJSON(w, 200, oauthex.AuthServerMeta{Issuer: srv.URL + "/oauth", AuthorizationEndpoint: srv.URL + "/oauth/authorize",
				TokenEndpoint: srv.URL + "/oauth/token", CodeChallengeMethodsSupported: []string{"S256"}})
		default:
			http.NotFound(w, r)
		}
	})
	d, err := newClient(t, nil).Discover(context.Background(), srv.URL+"/mcp", oauth.Challenge{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Issuer != srv.URL+"/oauth" || d.AuthServer.TokenEndpoint != srv.URL+"/oauth/token" {
		t.Fatalf("issuer=%q token endpoint=%q", d.Issuer, d.AuthServer.TokenEndpoint)
	}
}
