package admin

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/internal/oauthtest"
)

// TestAddOAuthClient: an operator's client, found by the route's
// authorization server, is what the sign-in link uses at a server with
// neither dynamic registration nor client metadata documents; its secret
// authenticates the code exchange and is stored only sealed. The
// conformance suite's auth/pre-registration scenario.
func TestAddOAuthClient(t *testing.T) {
	f, as, _ := oauthFixture(t)
	as.Update(func(a *oauthtest.AS) {
		a.Meta.RegistrationEndpoint = ""
		a.Meta.TokenEndpointAuthMethodsSupported = []string{"client_secret_basic"}
	})
	as.AddClient("pre-1", oauthtest.Client{Secret: "pre-secret-value", AuthMethod: "client_secret_basic", Redirects: []string{"http://127.0.0.1:1/oauth/callback"}})
	ctx := context.Background()
	if _, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "docs"}); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "configure a pre-registered client") {
		t.Fatalf("sign-in link without a client: %v, want a refusal naming pre-registration", err)
	}

	added, err := f.svc.AddOAuthClient(ctx, OAuthClientAdd{Route: "docs", ClientID: "pre-1", ClientSecret: "pre-secret-value"})
	if err != nil {
		t.Fatal(err)
	}
	if added.Issuer != as.URL() || added.ClientID != "pre-1" || !added.HasSecret {
		t.Fatalf("added %+v, want pre-1 at %s with a secret", added, as.URL())
	}
	rec, err := f.store.OAuthClient(as.URL())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rec.Registration), "pre-secret-value") || len(rec.Sealed) == 0 {
		t.Fatalf("stored client holds the secret in the clear or not at all: %s", rec.Registration)
	}

	started, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(started.URL)
	if got := u.Query().Get("client_id"); got != "pre-1" {
		t.Fatalf("consent url client_id %q, want pre-1", got)
	}
	if _, err := f.svc.CompleteOAuth(ctx, consent(t, started.URL, "http://127.0.0.1:1/oauth/callback")); err != nil {
		t.Fatalf("complete with the pre-registered client: %v", err)
	}
	if _, err := f.store.Credential("acme", "alice", "docs"); err != nil {
		t.Fatalf("credential not stored: %v", err)
	}
}

func TestAddOAuthClientRefusals(t *testing.T) {
	f, _, _ := oauthFixture(t)
	plain := newFixture(t)
	tests := []struct {
		name string
		svc  *Service
		in   OAuthClientAdd
		kind error
		want string
	}{
		{"oauth off", plain.svc, OAuthClientAdd{Route: "docs", ClientID: "c"}, ErrUnavailable, "--public-url"},
		{"no client id", f.svc, OAuthClientAdd{Route: "docs"}, ErrInvalid, "--client-id"},
		{"control character in id", f.svc, OAuthClientAdd{Route: "docs", ClientID: "a\nb"}, ErrInvalid, "printable"},
		{"unknown auth method", f.svc, OAuthClientAdd{Route: "docs", ClientID: "c", AuthMethod: "private_key_jwt"}, ErrInvalid, "is not one of"},
		{"public client with a secret", f.svc, OAuthClientAdd{Route: "docs", ClientID: "c", ClientSecret: "s", AuthMethod: "none"}, ErrInvalid, "has no secret"},
		{"secret method without a secret", f.svc, OAuthClientAdd{Route: "docs", ClientID: "c", AuthMethod: "client_secret_post"}, ErrInvalid, "--client-secret-stdin"},
		{"neither route nor issuer", f.svc, OAuthClientAdd{ClientID: "c"}, ErrInvalid, "--issuer, or --route"},
		{"unknown route", f.svc, OAuthClientAdd{Route: "nope", ClientID: "c"}, ErrInvalid, "no route named"},
		{"issuer not a url", f.svc, OAuthClientAdd{Issuer: "auth.example.com", ClientID: "c"}, ErrInvalid, "not an https URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.svc.AddOAuthClient(context.Background(), tt.in)
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("AddOAuthClient(%+v) = %v, want %v containing %q", tt.in, err, tt.kind, tt.want)
			}
		})
	}
}

// TestOAuthCIMDURLChange: a gateway whose client metadata document moved
// (or is no longer offered) registers again instead of sending the old URL
// as its client id.
func TestOAuthCIMDURLChange(t *testing.T) {
	f, as, _ := oauthFixture(t)
	as.Update(func(a *oauthtest.AS) { a.Meta.ClientIDMetadataDocumentSupported = true })
	ctx := context.Background()
	clientID := func() string {
		t.Helper()
		started, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "docs"})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(started.URL)
		return u.Query().Get("client_id")
	}
	for _, tc := range []struct{ cimd, want string }{
		{"https://gw.example/oauth/client-metadata.json", "https://gw.example/oauth/client-metadata.json"},
		{"https://static.example/mcpgw.json", "https://static.example/mcpgw.json"},
		{"", "dcr-"},
	} {
		f.svc.opts.OAuthCIMDURL = tc.cimd
		if got := clientID(); !strings.HasPrefix(got, tc.want) {
			t.Fatalf("with the document at %q the client id is %q, want %q", tc.cimd, got, tc.want)
		}
	}
}
