// Package oauthtest runs a small OAuth authorization server and an
// OAuth-protected go-sdk MCP server on loopback, for tests of the gateway's
// upstream OAuth across packages.
package oauthtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
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
type AS struct {
	t   testing.TB
	Srv *httptest.Server

	Mu       sync.Mutex
	Meta     oauthex.AuthServerMeta // guarded by mu; served at the well-known url
	Clients  map[string]Client      // guarded by mu; by client id
	Codes    map[string]testCode    // guarded by mu; single use
	Access   map[string]testGrant   // guarded by mu; access token -> grant
	Refresh  map[string]testGrant   // guarded by mu; live refresh tokens
	BadIss   string                 // guarded by mu; iss to send instead of the real one
	LastAuth url.Values             // guarded by mu; the last authorization request
	LastTok  url.Values             // guarded by mu; the last token request form
	Rotate   bool                   // guarded by mu; issue a new refresh token on refresh
	Hits     map[string]int         // guarded by mu; requests per path
	MetaPath string                 // guarded by mu; where the metadata is served
	// CIMDFetches lists the client id metadata document URLs the server
	// fetched, in order. Guarded by mu.
	CIMDFetches []string
	// AccessTTL is the lifetime of the access tokens it issues; default 1h.
	AccessTTL time.Duration // guarded by mu
	// TokenRequests counts token requests by grant_type, refused ones too.
	TokenRequests map[string]int // guarded by mu
	// Used holds refresh tokens that were rotated away; Reused counts
	// requests that presented one again (each refused with invalid_grant).
	Used   map[string]bool // guarded by mu
	Reused int             // guarded by mu
	// FailTokens answers this many next token requests with 503, as an
	// authorization server in trouble does.
	FailTokens int // guarded by mu
}

type Client struct {
	Secret     string
	AuthMethod string
	Redirects  []string
}

type testCode struct {
	clientID, redirect, challenge, resource, scope string
}

type testGrant struct {
	clientID, resource, scope string
	expires                   time.Time
}

func NewAS(t testing.TB) *AS {
	t.Helper()
	return NewASAt(t, "", "/.well-known/oauth-authorization-server")
}

// newTestASAt serves metadata only at metaPath, for an issuer with issuerPath.
func NewASAt(t testing.TB, issuerPath, metaPath string) *AS {
	t.Helper()
	a := &AS{t: t, Clients: map[string]Client{}, Codes: map[string]testCode{},
		Access: map[string]testGrant{}, Refresh: map[string]testGrant{}, Hits: map[string]int{}, Rotate: true,
		AccessTTL: time.Hour, TokenRequests: map[string]int{}, Used: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", a.metadata)
	mux.HandleFunc("GET /authorize", a.authorize)
	mux.HandleFunc("POST /token", a.token)
	mux.HandleFunc("POST /register", a.register)
	a.Srv = httptest.NewServer(a.Count(mux))
	t.Cleanup(a.Srv.Close)
	u := a.Srv.URL
	a.MetaPath = metaPath
	a.Meta = oauthex.AuthServerMeta{
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

func (a *AS) Count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.Mu.Lock()
		a.Hits[r.URL.Path]++
		a.Mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (a *AS) Update(f func(a *AS)) {
	a.Mu.Lock()
	defer a.Mu.Unlock()
	f(a)
}

func (a *AS) AddClient(id string, c Client) { a.Update(func(a *AS) { a.Clients[id] = c }) }

// WriteJSON answers status with v as a JSON body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func oauthErr(w http.ResponseWriter, status int, code, desc string) {
	WriteJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func (a *AS) metadata(w http.ResponseWriter, r *http.Request) {
	a.Mu.Lock()
	m, at := a.Meta, a.MetaPath
	a.Mu.Unlock()
	if r.URL.Path != at {
		http.NotFound(w, r)
		return
	}
	WriteJSON(w, 200, m)
}

func randText() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// lookupClient resolves a client id; a URL client id is a Client ID Metadata
// Document the server fetches, as a CIMD-supporting server does.
func (a *AS) lookupClient(id string) (Client, bool) {
	a.Mu.Lock()
	c, ok := a.Clients[id]
	cimd := a.Meta.ClientIDMetadataDocumentSupported
	a.Mu.Unlock()
	if ok || !cimd || !strings.HasPrefix(id, "http") {
		return c, ok
	}
	a.Update(func(a *AS) { a.CIMDFetches = append(a.CIMDFetches, id) })
	res, err := http.Get(id)
	if err != nil {
		return Client{}, false
	}
	defer res.Body.Close()
	var doc struct {
		ClientID     string   `json:"client_id"`
		RedirectURIs []string `json:"redirect_uris"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
	}
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&doc) != nil || doc.ClientID != id {
		return Client{}, false
	}
	return Client{AuthMethod: doc.AuthMethod, Redirects: doc.RedirectURIs}, true
}

func (a *AS) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.Update(func(a *AS) { a.LastAuth = q })
	c, ok := a.lookupClient(q.Get("client_id"))
	if !ok || !slices.Contains(c.Redirects, q.Get("redirect_uri")) {
		http.Error(w, "unknown client or redirect_uri", http.StatusBadRequest)
		return
	}
	redirect, _ := url.Parse(q.Get("redirect_uri"))
	back := url.Values{"state": {q.Get("state")}}
	a.Mu.Lock()
	iss := a.Meta.Issuer
	if a.BadIss != "" {
		iss = a.BadIss
	}
	a.Mu.Unlock()
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
		a.Update(func(a *AS) {
			a.Codes[code] = testCode{clientID: q.Get("client_id"), redirect: q.Get("redirect_uri"),
				challenge: q.Get("code_challenge"), resource: q.Get("resource"), scope: q.Get("scope")}
		})
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// authenticate checks the client's credentials as its auth method says.
func (a *AS) authenticate(r *http.Request) (string, bool) {
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
	switch c.AuthMethod {
	case "client_secret_basic":
		return id, basic && secret == c.Secret
	case "client_secret_post":
		return id, !basic && secret == c.Secret && r.PostForm.Has("client_secret")
	default:
		return id, !basic && !r.PostForm.Has("client_secret")
	}
}

func (a *AS) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthErr(w, 400, "invalid_request", "bad form")
		return
	}
	fail := false
	a.Update(func(a *AS) {
		a.LastTok = r.PostForm
		a.TokenRequests[r.PostForm.Get("grant_type")]++
		if a.FailTokens > 0 {
			a.FailTokens--
			fail = true
		}
	})
	if fail {
		http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	id, ok := a.authenticate(r)
	if !ok {
		oauthErr(w, 401, "invalid_client", "client authentication failed")
		return
	}
	f := r.PostForm
	a.Mu.Lock()
	defer a.Mu.Unlock()
	var g testGrant
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := a.Codes[f.Get("code")]
		delete(a.Codes, f.Get("code"))
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
		old, ok := a.Refresh[f.Get("refresh_token")]
		if a.Used[f.Get("refresh_token")] {
			a.Reused++
			oauthErr(w, 400, "invalid_grant", "refresh token already used")
			return
		}
		if !ok || old.clientID != id {
			oauthErr(w, 400, "invalid_grant", "refresh token revoked")
			return
		}
		if f.Get("resource") != old.resource {
			oauthErr(w, 400, "invalid_target", "resource mismatch")
			return
		}
		g = old
		if a.Rotate {
			delete(a.Refresh, f.Get("refresh_token"))
			a.Used[f.Get("refresh_token")] = true
		}
	default:
		oauthErr(w, 400, "unsupported_grant_type", "")
		return
	}
	g.expires = time.Now().Add(a.AccessTTL)
	at := randText()
	a.Access[at] = g
	resp := map[string]any{"access_token": at, "token_type": "bearer", "expires_in": int(a.AccessTTL / time.Second), "scope": g.scope}
	if f.Get("grant_type") == "authorization_code" || a.Rotate {
		rt := randText()
		a.Refresh[rt] = g
		resp["refresh_token"] = rt
	}
	WriteJSON(w, 200, resp)
}

func (a *AS) register(w http.ResponseWriter, r *http.Request) {
	var m oauthex.ClientRegistrationMetadata
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || len(m.RedirectURIs) == 0 {
		oauthErr(w, 400, "invalid_client_metadata", "redirect_uris required")
		return
	}
	id, secret := "dcr-"+randText(), ""
	if m.TokenEndpointAuthMethod != "none" {
		secret = randText()
	}
	a.AddClient(id, Client{Secret: secret, AuthMethod: m.TokenEndpointAuthMethod, Redirects: m.RedirectURIs})
	WriteJSON(w, 201, map[string]any{"client_id": id, "client_secret": secret,
		"redirect_uris": m.RedirectURIs, "token_endpoint_auth_method": m.TokenEndpointAuthMethod})
}

// verifier is the MCP server's token check against this server's grants.
func (a *AS) verifier(resource string) auth.TokenVerifier {
	return func(_ context.Context, tok string, _ *http.Request) (*auth.TokenInfo, error) {
		a.Mu.Lock()
		g, ok := a.Access[tok]
		a.Mu.Unlock()
		if !ok || g.resource != resource {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{Scopes: strings.Fields(g.scope), Expiration: g.expires}, nil
	}
}

// testMCP is a go-sdk MCP server behind the go-sdk's bearer middleware with
// its protected resource metadata handler.
type MCP struct {
	Srv      *httptest.Server
	Endpoint string // the MCP endpoint
	PRM      *oauthex.ProtectedResourceMetadata
}

func NewMCP(t testing.TB, as *AS, scopes []string, edit func(*oauthex.ProtectedResourceMetadata)) *MCP {
	t.Helper()
	return NewMCPWith(t, as, MCPOpts{Scopes: scopes, Edit: edit, PRMPath: "/.well-known/oauth-protected-resource/mcp", Advertise: true})
}

type MCPOpts struct {
	Scopes    []string
	Edit      func(*oauthex.ProtectedResourceMetadata)
	PRMPath   string // where the metadata is served
	Advertise bool   // name it in WWW-Authenticate
	// ToolScopes gates tools: a call of a tool named here with a token
	// lacking its scope is answered 403 insufficient_scope. Every server
	// has the tools echo and admin_echo.
	ToolScopes map[string]string
	// SSE serves the legacy HTTP+SSE transport instead of streamable HTTP.
	SSE bool
	// Stateless serves stateless streamable HTTP, the way the go-sdk
	// serves protocol 2026-07-28.
	Stateless bool
}

func NewMCPWith(t testing.TB, as *AS, o MCPOpts) *MCP {
	t.Helper()
	scopes, edit := o.Scopes, o.Edit
	m := &MCP{}
	mux := http.NewServeMux()
	m.Srv = httptest.NewServer(mux)
	t.Cleanup(m.Srv.Close)
	m.Endpoint = m.Srv.URL + "/mcp"
	m.PRM = &oauthex.ProtectedResourceMetadata{Resource: m.Endpoint, AuthorizationServers: []string{as.Srv.URL}, ScopesSupported: []string{"read", "write"}}
	if edit != nil {
		edit(m.PRM)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "admin_echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: o.Stateless})
	if o.SSE {
		h = mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return s }, nil)
	}
	prmURL := ""
	if o.Advertise {
		prmURL = m.Srv.URL + o.PRMPath
	}
	gated := as.requireToolScopes(o.ToolScopes, m.Srv.URL+o.PRMPath, h)
	mux.Handle("/mcp", auth.RequireBearerToken(as.verifier(m.Endpoint), &auth.RequireBearerTokenOptions{ResourceMetadataURL: prmURL, Scopes: scopes})(gated))
	mux.Handle(o.PRMPath, auth.ProtectedResourceMetadataHandler(m.PRM))
	return m
}

// URL is the server's base URL, also its issuer.
func (a *AS) URL() string { return a.Srv.URL }

// Grants returns how many access tokens the server has issued.
func (a *AS) Grants() int {
	a.Mu.Lock()
	defer a.Mu.Unlock()
	return len(a.Access)
}

// URL is the MCP endpoint.
func (m *MCP) URL() string { return m.Endpoint }

// RefreshGrants returns how many refresh_token grant requests it answered.
func (a *AS) RefreshGrants() int {
	a.Mu.Lock()
	defer a.Mu.Unlock()
	return a.TokenRequests["refresh_token"]
}

// ReusedRefreshTokens returns how many requests presented a refresh token
// that had been rotated away.
func (a *AS) ReusedRefreshTokens() int {
	a.Mu.Lock()
	defer a.Mu.Unlock()
	return a.Reused
}

// ExpireAccess makes every access token issued so far expired: the MCP
// server answers 401 to each from now on.
func (a *AS) ExpireAccess() {
	a.Update(func(a *AS) {
		for k, g := range a.Access {
			g.expires = time.Now().Add(-time.Minute)
			a.Access[k] = g
		}
	})
}

// RevokeRefresh revokes every refresh token issued so far, as a user
// revoking the gateway's access does.
func (a *AS) RevokeRefresh() {
	a.Update(func(a *AS) { clear(a.Refresh) })
}

// scopesOf returns the scopes of an access token, and whether it is live.
func (a *AS) scopesOf(tok string) ([]string, bool) {
	a.Mu.Lock()
	defer a.Mu.Unlock()
	g, ok := a.Access[tok]
	return strings.Fields(g.scope), ok && time.Now().Before(g.expires)
}

// requireToolScopes answers a tools/call of a tool in need with 403
// insufficient_scope unless the token grants the tool's scope, as RFC 6750
// §3.1 has a resource server ask for step-up. The go-sdk's middleware
// checks scopes for every request alike, and its 403 names no error.
func (a *AS) requireToolScopes(need map[string]string, prm string, next http.Handler) http.Handler {
	if len(need) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var call struct {
			Method string `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		json.Unmarshal(body, &call)
		scope, gated := need[call.Params.Name]
		if call.Method != "tools/call" || !gated {
			next.ServeHTTP(w, r)
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if granted, _ := a.scopesOf(tok); !slices.Contains(granted, scope) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="insufficient_scope", scope=%q, resource_metadata=%q, error_description="%s needs the %s scope"`, scope, prm, call.Params.Name, scope))
			http.Error(w, "insufficient scope", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Issued returns every access and refresh token it ever issued, for tests
// that check none leaks into logs, audit records or state.
func (a *AS) Issued() []string {
	a.Mu.Lock()
	defer a.Mu.Unlock()
	var out []string
	for _, m := range []map[string]testGrant{a.Access, a.Refresh} {
		for k := range m {
			out = append(out, k)
		}
	}
	for k := range a.Used {
		out = append(out, k)
	}
	return out
}
