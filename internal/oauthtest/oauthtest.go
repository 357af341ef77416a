// Package oauthtest runs a small OAuth authorization server and an
// OAuth-protected go-sdk MCP server on loopback, for tests of the gateway's
// upstream OAuth across packages.
package oauthtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// testAS is a small authorization server on loopback that enforces what the
// client must do: PKCE S256, the resource indicator, redirect_uri binding,
// client authentication, single-use codes and refresh-token rotation. No
// maintained Go OAuth server library is in this module's dependencies and the
// go-sdk's oauthtest is internal, so it is written here.
type testAS struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	meta     oauthex.AuthServerMeta // guarded by mu; served at the well-known url
	clients  map[string]testClient  // guarded by mu; by client id
	codes    map[string]testCode    // guarded by mu; single use
	access   map[string]testGrant   // guarded by mu; access token -> grant
	refresh  map[string]testGrant   // guarded by mu; live refresh tokens
	badIss   string                 // guarded by mu; iss to send instead of the real one
	lastAuth url.Values             // guarded by mu; the last authorization request
	lastTok  url.Values             // guarded by mu; the last token request form
	rotate   bool                   // guarded by mu; issue a new refresh token on refresh
	hits     map[string]int         // guarded by mu; requests per path
	metaPath string                 // guarded by mu; where the metadata is served
}

type testClient struct {
	secret     string
	authMethod string
	redirects  []string
}

type testCode struct {
	clientID, redirect, challenge, resource, scope string
}

type testGrant struct {
	clientID, resource, scope string
	expires                   time.Time
}

func newTestAS(t testing.TB) *testAS {
	t.Helper()
	return newTestASAt(t, "", "/.well-known/oauth-authorization-server")
}

// newTestASAt serves metadata only at metaPath, for an issuer with issuerPath.
func newTestASAt(t testing.TB, issuerPath, metaPath string) *testAS {
	t.Helper()
	a := &testAS{t: t, clients: map[string]testClient{}, codes: map[string]testCode{},
		access: map[string]testGrant{}, refresh: map[string]testGrant{}, hits: map[string]int{}, rotate: true}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", a.metadata)
	mux.HandleFunc("GET /authorize", a.authorize)
	mux.HandleFunc("POST /token", a.token)
	mux.HandleFunc("POST /register", a.register)
	a.srv = httptest.NewServer(a.count(mux))
	t.Cleanup(a.srv.Close)
	u := a.srv.URL
	a.metaPath = metaPath
	a.meta = oauthex.AuthServerMeta{
		Issuer:                                     u + issuerPath,
		AuthorizationEndpoint:                      u + "/authorize",
		TokenEndpoint:                              u + "/token",
		RegistrationEndpoint:                       u + "/register",
		ResponseTypesSupported:                     []string{"code"},
		CodeChallengeMethodsSupported:              []string{"S256"},
		TokenEndpointAuthMethodsSupported:          []string{"client_secret_basic", "client_secret_post", "none"},
		ScopesSupported:                            []string{"read", "write", "offline_access"},
		AuthorizationResponseIssParameterSupported: true,
		ClientIDMetadataDocumentSupported:          false,
	}
	return a
}

func (a *testAS) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.hits[r.URL.Path]++
		a.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (a *testAS) update(f func(a *testAS)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *testAS) addClient(id string, c testClient) { a.update(func(a *testAS) { a.clients[id] = c }) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func oauthErr(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func (a *testAS) metadata(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	m, at := a.meta, a.metaPath
	a.mu.Unlock()
	if r.URL.Path != at {
		http.NotFound(w, r)
		return
	}
	writeJSON(w, 200, m)
}

func randText() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// lookupClient resolves a client id; a URL client id is a Client ID Metadata
// Document the server fetches, as a CIMD-supporting server does.
func (a *testAS) lookupClient(id string) (testClient, bool) {
	a.mu.Lock()
	c, ok := a.clients[id]
	cimd := a.meta.ClientIDMetadataDocumentSupported
	a.mu.Unlock()
	if ok || !cimd || !strings.HasPrefix(id, "http") {
		return c, ok
	}
	res, err := http.Get(id)
	if err != nil {
		return testClient{}, false
	}
	defer res.Body.Close()
	var doc struct {
		ClientID     string   `json:"client_id"`
		RedirectURIs []string `json:"redirect_uris"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
	}
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&doc) != nil || doc.ClientID != id {
		return testClient{}, false
	}
	return testClient{authMethod: doc.AuthMethod, redirects: doc.RedirectURIs}, true
}

func (a *testAS) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.update(func(a *testAS) { a.lastAuth = q })
	c, ok := a.lookupClient(q.Get("client_id"))
	if !ok || !slices.Contains(c.redirects, q.Get("redirect_uri")) {
		http.Error(w, "unknown client or redirect_uri", http.StatusBadRequest)
		return
	}
	redirect, _ := url.Parse(q.Get("redirect_uri"))
	back := url.Values{"state": {q.Get("state")}}
	a.mu.Lock()
	iss := a.meta.Issuer
	if a.badIss != "" {
		iss = a.badIss
	}
	a.mu.Unlock()
	back.Set("iss", iss)
	switch {
	case q.Get("response_type") != "code":
		back.Set("error", "unsupported_response_type")
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		back.Set("error", "invalid_request")
		back.Set("error_description", "pkce s256 required")
	case q.Get("resource") == "":
		back.Set("error", "invalid_target")
	case q.Get("scope") == "deny":
		back.Set("error", "access_denied")
		back.Set("error_description", "the user declined")
	default:
		code := randText()
		a.update(func(a *testAS) {
			a.codes[code] = testCode{clientID: q.Get("client_id"), redirect: q.Get("redirect_uri"),
				challenge: q.Get("code_challenge"), resource: q.Get("resource"), scope: q.Get("scope")}
		})
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// authenticate checks the client's credentials as its auth method says.
func (a *testAS) authenticate(r *http.Request) (string, bool) {
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	c, ok := a.lookupClient(id)
	if !ok {
		return "", false
	}
	switch c.authMethod {
	case "client_secret_basic":
		return id, basic && secret == c.secret
	case "client_secret_post":
		return id, !basic && secret == c.secret && r.PostForm.Has("client_secret")
	default:
		return id, !basic && !r.PostForm.Has("client_secret")
	}
}

func (a *testAS) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthErr(w, 400, "invalid_request", "bad form")
		return
	}
	a.update(func(a *testAS) { a.lastTok = r.PostForm })
	id, ok := a.authenticate(r)
	if !ok {
		oauthErr(w, 401, "invalid_client", "client authentication failed")
		return
	}
	f := r.PostForm
	a.mu.Lock()
	defer a.mu.Unlock()
	var g testGrant
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := a.codes[f.Get("code")]
		delete(a.codes, f.Get("code"))
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !ok || c.clientID != id:
			oauthErr(w, 400, "invalid_grant", "unknown code")
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			oauthErr(w, 400, "invalid_grant", "pkce verifier mismatch")
			return
		case f.Get("redirect_uri") != c.redirect || f.Get("resource") != c.resource:
			oauthErr(w, 400, "invalid_grant", "redirect_uri or resource mismatch")
			return
		}
		g = testGrant{clientID: id, resource: c.resource, scope: c.scope}
	case "refresh_token":
		old, ok := a.refresh[f.Get("refresh_token")]
		if !ok || old.clientID != id {
			oauthErr(w, 400, "invalid_grant", "refresh token revoked")
			return
		}
		if f.Get("resource") != old.resource {
			oauthErr(w, 400, "invalid_target", "resource mismatch")
			return
		}
		g = old
		if a.rotate {
			delete(a.refresh, f.Get("refresh_token"))
		}
	default:
		oauthErr(w, 400, "unsupported_grant_type", "")
		return
	}
	g.expires = time.Now().Add(time.Hour)
	at := randText()
	a.access[at] = g
	resp := map[string]any{"access_token": at, "token_type": "bearer", "expires_in": 3600, "scope": g.scope}
	if f.Get("grant_type") == "authorization_code" || a.rotate {
		rt := randText()
		a.refresh[rt] = g
		resp["refresh_token"] = rt
	}
	writeJSON(w, 200, resp)
}

func (a *testAS) register(w http.ResponseWriter, r *http.Request) {
	var m oauthex.ClientRegistrationMetadata
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || len(m.RedirectURIs) == 0 {
		oauthErr(w, 400, "invalid_client_metadata", "redirect_uris required")
		return
	}
	id, secret := "dcr-"+randText(), ""
	if m.TokenEndpointAuthMethod != "none" {
		secret = randText()
	}
	a.addClient(id, testClient{secret: secret, authMethod: m.TokenEndpointAuthMethod, redirects: m.RedirectURIs})
	writeJSON(w, 201, map[string]any{"client_id": id, "client_secret": secret,
		"redirect_uris": m.RedirectURIs, "token_endpoint_auth_method": m.TokenEndpointAuthMethod})
}

// verifier is the MCP server's token check against this server's grants.
func (a *testAS) verifier(resource string) auth.TokenVerifier {
	return func(_ context.Context, tok string, _ *http.Request) (*auth.TokenInfo, error) {
		a.mu.Lock()
		g, ok := a.access[tok]
		a.mu.Unlock()
		if !ok || g.resource != resource {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{Scopes: strings.Fields(g.scope), Expiration: g.expires}, nil
	}
}

// testMCP is a go-sdk MCP server behind the go-sdk's bearer middleware with
// its protected resource metadata handler.
type testMCP struct {
	srv *httptest.Server
	url string // the MCP endpoint
	prm *oauthex.ProtectedResourceMetadata
}

func newTestMCP(t testing.TB, as *testAS, scopes []string, edit func(*oauthex.ProtectedResourceMetadata)) *testMCP {
	t.Helper()
	return newTestMCPWith(t, as, mcpOpts{scopes: scopes, edit: edit, prmPath: "/.well-known/oauth-protected-resource/mcp", advertise: true})
}

type mcpOpts struct {
	scopes    []string
	edit      func(*oauthex.ProtectedResourceMetadata)
	prmPath   string // where the metadata is served
	advertise bool   // name it in WWW-Authenticate
}

func newTestMCPWith(t testing.TB, as *testAS, o mcpOpts) *testMCP {
	t.Helper()
	scopes, edit := o.scopes, o.edit
	m := &testMCP{}
	mux := http.NewServeMux()
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	m.url = m.srv.URL + "/mcp"
	m.prm = &oauthex.ProtectedResourceMetadata{Resource: m.url, AuthorizationServers: []string{as.srv.URL}, ScopesSupported: []string{"read", "write"}}
	if edit != nil {
		edit(m.prm)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	prmURL := ""
	if o.advertise {
		prmURL = m.srv.URL + o.prmPath
	}
	mux.Handle("/mcp", auth.RequireBearerToken(as.verifier(m.url), &auth.RequireBearerTokenOptions{ResourceMetadataURL: prmURL, Scopes: scopes})(h))
	mux.Handle(o.prmPath, auth.ProtectedResourceMetadataHandler(m.prm))
	return m
}

// AS is an authorization server on loopback that auto-approves every
// authorization request (a browser that follows its redirect lands on the
// redirect_uri with a code) and registers clients dynamically.
type AS struct{ a *testAS }

// NewAS starts an authorization server; it stops when the test ends.
func NewAS(t testing.TB) *AS { return &AS{a: newTestAS(t)} }

// URL is the server's base URL, also its issuer.
func (s *AS) URL() string { return s.a.srv.URL }

// Grants returns how many access tokens the server has issued.
func (s *AS) Grants() int {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return len(s.a.access)
}

// MCP is a go-sdk MCP server with an "echo" tool behind bearer tokens of an AS.
type MCP struct{ m *testMCP }

// NewMCP starts an MCP server protected by as; it stops when the test ends.
func NewMCP(t testing.TB, as *AS) *MCP { return &MCP{m: newTestMCP(t, as.a, nil, nil)} }

// URL is the MCP endpoint.
func (m *MCP) URL() string { return m.m.url }
