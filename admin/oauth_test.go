package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/oauth"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// consent plays the browser: it opens the consent URL, which the test
// authorization server approves at once, and returns the callback query
// the server redirected to, without following it.
func consent(t *testing.T, consentURL, callback string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Get(consentURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || res.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), callback) {
		t.Fatalf("consent answered %d, location %q; want a redirect to %s", res.StatusCode, loc, callback)
	}
	return loc.Query()
}

func oauthFixture(t *testing.T) (*fixture, *oauthtest.AS, *oauthtest.MCP) {
	t.Helper()
	as := oauthtest.NewAS(t)
	mcpSrv := oauthtest.NewMCP(t, as, nil, nil)
	cfg := oauth.DefaultConfig()
	cfg.Fetch.AllowLoopback = true
	oc, err := oauth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { oc.Close() })
	f := newFixture(t, func(d *Deps, o *Options) {
		d.OAuth, d.OAuthState = oc, d.State.(*storage.Store)
		o.OAuthRedirectURL = "http://127.0.0.1:1/oauth/callback"
	})
	if _, _, err := f.svc.PutRoute(context.Background(), storage.Route{Name: "docs", URL: mcpSrv.URL()}); err != nil {
		t.Fatal(err)
	}
	return f, as, mcpSrv
}

func TestOAuthFlowStoresCredentialOnce(t *testing.T) {
	f, as, mcpSrv := oauthFixture(t)
	ctx := context.Background()
	st, err := f.svc.OAuthStatus(ctx, "acme", "alice", "docs")
	if err != nil || st.State != OAuthNeedsConsent {
		t.Fatalf("status before consent = %+v, %v", st, err)
	}
	started, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	if started.Issuer != as.URL() {
		t.Fatalf("issuer %q, want %q", started.Issuer, as.URL())
	}
	q := consent(t, started.URL, "http://127.0.0.1:1/oauth/callback")

	// The stored flow holds neither the state nor the verifier in the clear.
	pend, err := f.store.OAuthPendings()
	if err != nil || len(pend) != 1 {
		t.Fatalf("pending flows %d, %v; want 1", len(pend), err)
	}
	if pend[0].StateHash == q.Get("state") || strings.Contains(string(pend[0].Flow), q.Get("state")) {
		t.Fatal("the stored flow holds the state in the clear")
	}
	if _, err := f.store.OAuthClient(as.URL()); err != nil {
		t.Fatalf("registration not stored: %v", err)
	}

	done, err := f.svc.CompleteOAuth(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if done.Org != "acme" || done.Account != "alice" || done.Route != "docs" {
		t.Fatalf("completed %+v", done)
	}
	rec, err := f.store.Credential("acme", "alice", "docs")
	if err != nil || rec.Kind != "oauth" {
		t.Fatalf("credential %+v, %v", rec, err)
	}
	cred, err := f.keys.Load().Unseal(rec.Sealed, vault.AAD{Org: "acme", Account: "alice", Route: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	// The token is the one the protected server accepts.
	for _, tc := range []struct {
		h    http.Header
		want int
	}{{nil, http.StatusUnauthorized}, {cred.HTTPHeaders(), http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodPost, mcpSrv.URL(), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range tc.h {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Fatalf("upstream answered %d, want %d", res.StatusCode, tc.want)
		}
	}
	st, err = f.svc.OAuthStatus(ctx, "acme", "alice", "docs")
	if err != nil || st.State != OAuthConnected || !st.Refreshable || st.Expires.IsZero() {
		t.Fatalf("status after consent = %+v, %v", st, err)
	}

	// A replay finds nothing: refused, no second token exchanged.
	grants := as.Grants()
	_, err = f.svc.CompleteOAuth(ctx, q)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "already used or has expired") {
		t.Fatalf("replay = %v, want not found", err)
	}
	if as.Grants() != grants {
		t.Fatal("the replay exchanged the code again")
	}

	if err := f.svc.RevokeOAuth(ctx, "acme", "alice", "docs"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Credential("acme", "alice", "docs"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("credential after revoke: %v", err)
	}
}

func TestOAuthErrors(t *testing.T) {
	f, _, _ := oauthFixture(t)
	ctx := context.Background()
	if _, err := f.svc.CompleteOAuth(ctx, url.Values{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no state: %v", err)
	}
	if _, err := f.svc.CompleteOAuth(ctx, url.Values{"state": {"guess"}, "code": {"x"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown state: %v", err)
	}
	if _, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "nope"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown route: %v", err)
	}
	plain := newFixture(t)
	if _, err := plain.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "docs"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("without oauth: %v", err)
	}
}

// TestOAuthDiscoveryStartsFromChallenge: a server whose protected resource
// metadata is only at the URL its 401 names, and which asks for a narrower
// scope than it supports, gets a consent URL from the metadata it names,
// with the scope it asks for (the MCP specification's order: the
// challenge's scope before scopes_supported). The conformance suite's
// auth/metadata-var3 and auth/scope-from-www-authenticate scenarios.
func TestOAuthDiscoveryStartsFromChallenge(t *testing.T) {
	f, as, _ := oauthFixture(t)
	m := oauthtest.NewMCPWith(t, as, oauthtest.MCPOpts{Scopes: []string{"write"}, PRMPath: "/custom/prm", Advertise: true})
	ctx := context.Background()
	if _, _, err := f.svc.PutRoute(ctx, storage.Route{Name: "custom", URL: m.URL()}); err != nil {
		t.Fatal(err)
	}
	started, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "custom"})
	if err != nil {
		t.Fatalf("AuthorizationURL: %v", err)
	}
	u, err := url.Parse(started.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := started.Issuer, as.URL(); got != want {
		t.Fatalf("issuer %q, want %q", got, want)
	}
	// offline_access: the authorization server lists it, and the gateway
	// wants a refresh token.
	if got, want := u.Query().Get("scope"), "write offline_access"; got != want {
		t.Fatalf("consent url scope %q, want %q (the challenge's, not scopes_supported)", got, want)
	}
	if got, want := u.Query().Get("resource"), m.URL(); got != want {
		t.Fatalf("consent url resource %q, want %q", got, want)
	}
}
