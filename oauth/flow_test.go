package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/oauthtest"

	"github.com/mcpgw/mcpgw/oauth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

const callbackURL = "http://127.0.0.1:1/oauth/callback"

func newClient(t *testing.T, now func() time.Time) *oauth.Client {
	t.Helper()
	c, err := oauth.New(oauth.Config{Fetch: oauth.FetchOptions{AllowLoopback: true}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// challengeOf sends an unauthenticated MCP request and parses the 401.
func challengeOf(t *testing.T, mcpURL string) oauth.Challenge {
	t.Helper()
	res, err := http.Post(mcpURL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusUnauthorized; got != want {
		t.Fatalf("unauthenticated status=%d, want %d", got, want)
	}
	ch, err := oauth.ParseChallenge(res.Header)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// browse plays the user agent: it opens the consent URL and returns the
// query the authorization server redirects back to the callback with.
func browse(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Fatalf("authorize status=%d, want 302", res.StatusCode)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loc.Scheme+"://"+loc.Host+loc.Path, callbackURL; got != want {
		t.Fatalf("redirected to %s, want %s", got, want)
	}
	return loc.Query()
}

type bearer struct{ tok string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// callEcho calls the protected MCP server's tool with tok.
func callEcho(t *testing.T, mcpURL, tok string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := mcp.NewClient(&mcp.Implementation{Name: "gw", Version: "1"}, nil)
	sess, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: mcpURL, HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		return err
	}
	if got := res.Content[0].(*mcp.TextContent).Text; got != "hi" {
		t.Fatalf("echo=%q, want hi", got)
	}
	return nil
}

type flowEnv struct {
	as   *oauthtest.AS
	mcp  *oauthtest.MCP
	c    *oauth.Client
	d    *oauth.Discovery
	reg  oauth.Registration
	tok  oauth.Token
	pend oauth.Pending
}

// runFlow does discovery → registration → Begin → browser → Complete.
func runFlow(t *testing.T, as *oauthtest.AS, m *oauthtest.MCP, ro oauth.RegisterOptions) *flowEnv {
	t.Helper()
	ctx := context.Background()
	e := &flowEnv{as: as, mcp: m, c: newClient(t, nil)}
	var err error
	if e.d, err = e.c.Discover(ctx, m.Endpoint, challengeOf(t, m.Endpoint)); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if ro.RedirectURL == "" {
		ro.RedirectURL = callbackURL
	}
	if e.reg, err = e.c.Register(ctx, e.d, ro); err != nil {
		t.Fatalf("Register: %v", err)
	}
	bind := oauth.Binding{Org: "org_42", Account: "acct_7", Route: "linear"}
	p, authURL, err := e.c.Begin(ctx, oauth.BeginRequest{Binding: bind, Discovery: e.d, Registration: e.reg, RedirectURL: callbackURL})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	p = roundTrip(t, p)
	if p.Binding != bind {
		t.Fatalf("pending binding=%+v after a JSON round trip, want %+v", p.Binding, bind)
	}
	if e.tok, err = e.c.Complete(ctx, &p, browse(t, authURL)); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	e.pend = p
	return e
}

// roundTrip marshals and unmarshals p, as the gateway does when it
// replicates a pending flow to the node that gets the callback.
func roundTrip(t *testing.T, p oauth.Pending) oauth.Pending {
	t.Helper()
	b, err := jsonMarshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q oauth.Pending
	if err := jsonUnmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

func TestFlowDynamicRegistrationCallsProtectedServer(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, nil)
	if err := callEcho(t, m.Endpoint, "not-a-token"); err == nil {
		t.Fatal("call with a bogus token succeeded, want refusal")
	}
	e := runFlow(t, as, m, oauth.RegisterOptions{})
	if got, want := e.reg.Method, oauth.MethodDynamic; got != want {
		t.Fatalf("registration method=%q, want %q", got, want)
	}
	if got, want := e.reg.AuthMethod, oauth.AuthClientSecretBasic; got != want {
		t.Fatalf("auth method=%q, want %q", got, want)
	}
	as.Mu.Lock()
	q := as.LastAuth
	tf := as.LastTok
	as.Mu.Unlock()
	for k, want := range map[string]string{"resource": m.Endpoint, "code_challenge_method": "S256", "scope": "read write", "response_type": "code", "redirect_uri": callbackURL} {
		if got := q.Get(k); got != want {
			t.Errorf("authorization request %s=%q, want %q", k, got, want)
		}
	}
	if got := tf.Get("resource"); got != m.Endpoint {
		t.Errorf("token request resource=%q, want %q", got, m.Endpoint)
	}
	if len(e.pend.State) < 22 { // 128 bits in base64url
		t.Errorf("state %d chars, want >= 22", len(e.pend.State))
	}
	if e.tok.Issuer != as.Srv.URL || e.tok.Resource != m.Endpoint || e.tok.RefreshToken == "" || e.tok.Expiry.IsZero() || strings.Join(e.tok.Scopes, " ") != "read write" {
		t.Fatalf("token = %+v, want issuer, resource, refresh token, expiry and scopes", e.tok.LogValue())
	}
	if err := callEcho(t, m.Endpoint, e.tok.AccessToken); err != nil {
		t.Fatalf("call with the obtained token: %v", err)
	}
}

func TestRefreshRotatesAndInvalidGrantNeedsConsent(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, nil)
	e := runFlow(t, as, m, oauth.RegisterOptions{})
	ctx := context.Background()

	nt, err := e.c.Refresh(ctx, e.reg, e.tok)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if nt.RefreshToken == "" || nt.RefreshToken == e.tok.RefreshToken || nt.AccessToken == e.tok.AccessToken {
		t.Fatal("refresh did not rotate the refresh token and access token")
	}
	as.Mu.Lock()
	res := as.LastTok.Get("resource")
	as.Mu.Unlock()
	if res != m.Endpoint {
		t.Fatalf("refresh resource=%q, want %q", res, m.Endpoint)
	}
	if err := callEcho(t, m.Endpoint, nt.AccessToken); err != nil {
		t.Fatalf("call with the refreshed token: %v", err)
	}

	// The rotated-out refresh token is dead: the credential needs consent.
	_, err = e.c.Refresh(ctx, e.reg, e.tok)
	var ase *oauth.ASError
	if !errors.Is(err, oauth.ErrNeedsConsent) || !errors.As(err, &ase) || ase.Code != "invalid_grant" {
		t.Fatalf("refresh with a rotated-out token: err=%v, want ErrNeedsConsent with invalid_grant", err)
	}
	if strings.Contains(err.Error(), e.tok.RefreshToken) {
		t.Fatal("error contains the refresh token")
	}

	// Without rotation the server returns no refresh token: keep the old one.
	as.Update(func(a *oauthtest.AS) { a.Rotate = false })
	kept, err := e.c.Refresh(ctx, e.reg, nt)
	if err != nil {
		t.Fatalf("Refresh without rotation: %v", err)
	}
	if got, want := kept.RefreshToken, nt.RefreshToken; got != want {
		t.Fatal("refresh without rotation dropped the refresh token")
	}

	if _, err := e.c.Refresh(ctx, e.reg, oauth.Token{Issuer: e.tok.Issuer}); !errors.Is(err, oauth.ErrNeedsConsent) {
		t.Fatalf("refresh without refresh token: err=%v, want ErrNeedsConsent", err)
	}
	other := e.reg
	other.Issuer = "https://other.example"
	if _, err := e.c.Refresh(ctx, other, nt); !errors.Is(err, oauth.ErrIssuerMismatch) {
		t.Fatalf("refresh with another issuer's registration: err=%v, want ErrIssuerMismatch", err)
	}
}

func TestCompleteRefusals(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, nil)
	ctx := context.Background()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	c := newClient(t, func() time.Time { return time.Unix(0, now.Load()) })
	d, err := c.Discover(ctx, m.Endpoint, challengeOf(t, m.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.Register(ctx, d, oauth.RegisterOptions{RedirectURL: callbackURL})
	if err != nil {
		t.Fatal(err)
	}
	begin := func(scopes []string) (oauth.Pending, url.Values) {
		t.Helper()
		p, u, err := c.Begin(ctx, oauth.BeginRequest{Discovery: d, Registration: reg, RedirectURL: callbackURL, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return p, browse(t, u)
	}
	tests := []struct {
		name  string
		setup func()
		edit  func(p *oauth.Pending, q url.Values)
		scope []string
		want  error
	}{
		{name: "wrong iss", setup: func() { as.Update(func(a *oauthtest.AS) { a.BadIss = "https://evil.example" }) }, want: oauth.ErrIssuerMismatch},
		{name: "missing iss when advertised", edit: func(_ *oauth.Pending, q url.Values) { q.Del("iss") }, want: oauth.ErrIssuerMismatch},
		{name: "state mismatch", edit: func(_ *oauth.Pending, q url.Values) { q.Set("state", "forged") }, want: oauth.ErrStateMismatch},
		{name: "no state", edit: func(_ *oauth.Pending, q url.Values) { q.Del("state") }, want: oauth.ErrStateMismatch},
		{name: "expired", edit: func(*oauth.Pending, url.Values) { now.Add(int64(11 * time.Minute)) }, want: oauth.ErrFlowExpired},
		{name: "replayed", edit: func(p *oauth.Pending, _ url.Values) { p.Used = true }, want: oauth.ErrFlowUsed},
		{name: "user declined", scope: []string{"deny"}, want: oauth.ErrAuthorizationDenied},
		{name: "no code", edit: func(_ *oauth.Pending, q url.Values) { q.Del("code") }, want: oauth.ErrBadCallback},
		{name: "code reused at the token endpoint", edit: func(p *oauth.Pending, q url.Values) {
			cp := *p
			if _, err := c.Complete(ctx, &cp, q); err != nil {
				t.Fatalf("first Complete: %v", err)
			}
		}, want: oauth.ErrTokenEndpoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as.Update(func(a *oauthtest.AS) { a.BadIss = "" })
			now.Store(time.Now().UnixNano())
			if tt.setup != nil {
				tt.setup()
			}
			p, q := begin(tt.scope)
			if tt.edit != nil {
				tt.edit(&p, q)
			}
			_, err := c.Complete(ctx, &p, q)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Complete: err=%v, want %v", err, tt.want)
			}
			for _, secret := range []string{p.Verifier, q.Get("code"), p.State, reg.ClientSecret} {
				if secret != "" && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q contains a secret", err)
				}
			}
		})
	}
	// A replay of a completed flow is refused without reaching the server.
	p, q := begin(nil)
	if _, err := c.Complete(ctx, &p, q); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(ctx, &p, q); !errors.Is(err, oauth.ErrFlowUsed) {
		t.Fatalf("second Complete: err=%v, want ErrFlowUsed", err)
	}
}

func TestDiscoverRefusesMismatchedResource(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, func(p *oauthex.ProtectedResourceMetadata) { p.Resource = "https://other.example/mcp" })
	_, err := newClient(t, nil).Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
	if !errors.Is(err, oauth.ErrResourceMismatch) {
		t.Fatalf("Discover: err=%v, want ErrResourceMismatch", err)
	}
}

func TestDiscoverRefusesBadAuthServer(t *testing.T) {
	tests := []struct {
		name string
		edit func(*oauthex.AuthServerMeta)
		want error
	}{
		{"no s256", func(m *oauthex.AuthServerMeta) { m.CodeChallengeMethodsSupported = []string{"plain"} }, oauth.ErrPKCEUnsupported},
		{"issuer mismatch", func(m *oauthex.AuthServerMeta) { m.Issuer = "https://evil.example" }, oauth.ErrIssuerMismatch},
		{"token endpoint to metadata address", func(m *oauthex.AuthServerMeta) { m.TokenEndpoint = "https://169.254.169.254/token" }, oauth.ErrAddressNotAllowed},
		{"plain http token endpoint", func(m *oauthex.AuthServerMeta) { m.TokenEndpoint = "http://as.example/token" }, oauth.ErrURLNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := oauthtest.NewAS(t)
			as.Update(func(a *oauthtest.AS) { tt.edit(&a.Meta) })
			m := oauthtest.NewMCP(t, as, nil, nil)
			_, err := newClient(t, nil).Discover(context.Background(), m.Endpoint, challengeOf(t, m.Endpoint))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Discover: err=%v, want %v", err, tt.want)
			}
		})
	}
}

func TestDiscoverWithoutChallengeUsesWellKnown(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, nil, nil)
	d, err := newClient(t, nil).Discover(context.Background(), m.Endpoint, oauth.Challenge{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Issuer != as.Srv.URL || d.Resource != m.Endpoint {
		t.Fatalf("discovery issuer=%q resource=%q, want %q %q", d.Issuer, d.Resource, as.Srv.URL, m.Endpoint)
	}
}

func TestRegistrationOrder(t *testing.T) {
	t.Run("preregistered client_secret_post", func(t *testing.T) {
		as := oauthtest.NewAS(t)
		as.AddClient("pre", oauthtest.Client{Secret: "s3cret", AuthMethod: "client_secret_post", Redirects: []string{callbackURL}})
		m := oauthtest.NewMCP(t, as, nil, nil)
		e := runFlow(t, as, m, oauth.RegisterOptions{Preregistered: &oauth.Registration{ClientID: "pre", ClientSecret: "s3cret", AuthMethod: oauth.AuthClientSecretPost}})
		if e.reg.Method != oauth.MethodPreregistered || e.reg.ClientID != "pre" {
			t.Fatalf("registration %v, want the pre-registered client", e.reg.LogValue())
		}
		as.Mu.Lock()
		n := as.Hits["/register"]
		as.Mu.Unlock()
		if n != 0 {
			t.Fatalf("dynamic registration called %d times, want 0", n)
		}
		if err := callEcho(t, m.Endpoint, e.tok.AccessToken); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("preregistered for another issuer", func(t *testing.T) {
		as := oauthtest.NewAS(t)
		m := oauthtest.NewMCP(t, as, nil, nil)
		c := newClient(t, nil)
		d, err := c.Discover(context.Background(), m.Endpoint, oauth.Challenge{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Register(context.Background(), d, oauth.RegisterOptions{Preregistered: &oauth.Registration{Issuer: "https://other.example", ClientID: "pre"}})
		if !errors.Is(err, oauth.ErrIssuerMismatch) {
			t.Fatalf("Register: err=%v, want ErrIssuerMismatch", err)
		}
		// A registration from another issuer cannot start a flow here.
		_, _, err = c.Begin(context.Background(), oauth.BeginRequest{Discovery: d, Registration: oauth.Registration{Issuer: "https://other.example", ClientID: "x"}, RedirectURL: callbackURL})
		if !errors.Is(err, oauth.ErrIssuerMismatch) {
			t.Fatalf("Begin: err=%v, want ErrIssuerMismatch", err)
		}
	})
	t.Run("client id metadata document", func(t *testing.T) {
		as := oauthtest.NewAS(t)
		as.Update(func(a *oauthtest.AS) { a.Meta.ClientIDMetadataDocumentSupported = true })
		gw := http.NewServeMux()
		gwSrv := newServer(t, gw)
		cimdURL := gwSrv.URL + "/oauth/client-metadata.json"
		doc, err := oauth.CIMDDocument(oauth.CIMDConfig{URL: cimdURL, RedirectURLs: []string{callbackURL}, AllowLoopback: true})
		if err != nil {
			t.Fatal(err)
		}
		gw.HandleFunc("/oauth/client-metadata.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(doc)
		})
		m := oauthtest.NewMCP(t, as, nil, nil)
		e := runFlow(t, as, m, oauth.RegisterOptions{CIMDURL: cimdURL})
		if e.reg.Method != oauth.MethodCIMD || e.reg.ClientID != cimdURL || e.reg.AuthMethod != oauth.AuthNone {
			t.Fatalf("registration %v, want CIMD", e.reg.LogValue())
		}
		if err := callEcho(t, m.Endpoint, e.tok.AccessToken); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no method", func(t *testing.T) {
		as := oauthtest.NewAS(t)
		as.Update(func(a *oauthtest.AS) { a.Meta.RegistrationEndpoint = "" })
		m := oauthtest.NewMCP(t, as, nil, nil)
		c := newClient(t, nil)
		d, err := c.Discover(context.Background(), m.Endpoint, oauth.Challenge{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Register(context.Background(), d, oauth.RegisterOptions{RedirectURL: callbackURL}); !errors.Is(err, oauth.ErrNoRegistration) {
			t.Fatalf("Register: err=%v, want ErrNoRegistration", err)
		}
	})
}

func TestStepUpOnInsufficientScope(t *testing.T) {
	as := oauthtest.NewAS(t)
	m := oauthtest.NewMCP(t, as, []string{"read", "write"}, nil)
	ctx := context.Background()
	c := newClient(t, nil)
	d, err := c.Discover(ctx, m.Endpoint, challengeOf(t, m.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.Register(ctx, d, oauth.RegisterOptions{RedirectURL: callbackURL})
	if err != nil {
		t.Fatal(err)
	}
	obtain := func(scopes []string) oauth.Token {
		t.Helper()
		p, u, err := c.Begin(ctx, oauth.BeginRequest{Discovery: d, Registration: reg, RedirectURL: callbackURL, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.Complete(ctx, &p, browse(t, u))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := obtain([]string{"read"})
	req, _ := http.NewRequest(http.MethodPost, m.Endpoint, strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("status=%d, want 403", res.StatusCode)
	}
	// The go-sdk middleware names the scopes but not the RFC 6750 error; an
	// RFC 6750 server adds error="insufficient_scope".
	ch, err := oauth.ParseChallengeValues([]string{res.Header.Get("WWW-Authenticate") + `, error="insufficient_scope"`})
	if err != nil {
		t.Fatal(err)
	}
	scopes, ok := oauth.StepUpScopes(ch, tok.Scopes)
	if !ok || strings.Join(scopes, " ") != "read write" {
		t.Fatalf("StepUpScopes=%v,%v, want [read write],true", scopes, ok)
	}
	if err := callEcho(t, m.Endpoint, obtain(scopes).AccessToken); err != nil {
		t.Fatalf("call after step-up: %v", err)
	}
	if _, ok := oauth.StepUpScopes(oauth.Challenge{Error: "invalid_token"}, tok.Scopes); ok {
		t.Fatal("StepUpScopes accepted a non-step-up challenge")
	}
}
