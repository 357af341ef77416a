package admin

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/clocktest"
	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// consented runs a consent for acme/alice on docs and returns the stored
// credential.
func consented(t *testing.T, f *fixture) storage.Credential {
	t.Helper()
	ctx := context.Background()
	started, err := f.svc.AuthorizationURL(ctx, OAuthStart{Org: "acme", Account: "alice", Route: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CompleteOAuth(ctx, consent(t, started.URL, "http://127.0.0.1:1/oauth/callback")); err != nil {
		t.Fatal(err)
	}
	rec, err := f.store.Credential("acme", "alice", "docs")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRefreshOAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before runs after the consent, before the refresh.
		before func(t *testing.T, f *fixture, as *oauthtest.AS)
		// grants is how many refresh requests reach the server.
		grants  int
		wantErr bool
		// state is the status afterwards; reason a part of its reason.
		state, reason string
		refreshed     bool
	}{
		{name: "ok", grants: 1, state: OAuthConnected, refreshed: true},
		{name: "revoked", before: func(_ *testing.T, _ *fixture, as *oauthtest.AS) { as.RevokeRefresh() },
			grants: 1, state: OAuthNeedsConsent, reason: `(invalid_grant: refresh token revoked)`},
		{name: "transient failures retried", before: func(_ *testing.T, _ *fixture, as *oauthtest.AS) {
			as.Update(func(a *oauthtest.AS) { a.FailTokens = 2 })
		},
			grants: 3, state: OAuthConnected, refreshed: true},
		{name: "down: error, nothing marked", before: func(_ *testing.T, _ *fixture, as *oauthtest.AS) {
			as.Update(func(a *oauthtest.AS) { a.FailTokens = refreshAttempts })
		}, grants: refreshAttempts, wantErr: true, state: OAuthConnected},
		{name: "vault put meanwhile wins", before: func(t *testing.T, f *fixture, _ *oauthtest.AS) {
			if _, _, err := f.svc.PutCredential(context.Background(), CredentialInput{Org: "acme", Account: "alice", Route: "docs", Kind: "oauth", Secret: `{"access_token":"by-hand"}`}); err != nil {
				t.Fatal(err)
			}
		}, grants: 0, state: OAuthConnected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, as, _ := oauthFixture(t)
			rec := consented(t, f)
			if tc.before != nil {
				tc.before(t, f, as)
			}
			err := f.svc.RefreshOAuth(context.Background(), RefreshRequest{Org: "acme", Account: "alice", Route: "docs", Sealed: rec.Sealed, Trigger: RefreshOnUnauthorized})
			if (err != nil) != tc.wantErr {
				t.Fatalf("RefreshOAuth = %v, want error %v", err, tc.wantErr)
			}
			if got := as.RefreshGrants(); got != tc.grants {
				t.Fatalf("refresh requests = %d, want %d", got, tc.grants)
			}
			st, err := f.svc.OAuthStatus(context.Background(), "acme", "alice", "docs")
			if err != nil || st.State != tc.state || !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("status = %+v, %v; want %q with %q", st, err, tc.state, tc.reason)
			}
			now, _ := f.store.Credential("acme", "alice", "docs")
			if got := string(now.Sealed) != string(rec.Sealed) && now.OAuth != nil && now.OAuth.Consent == nil && now.Kind == "oauth" && now.OAuth.Issuer == as.URL(); got != tc.refreshed {
				t.Fatalf("refreshed = %v, want %v (record %+v)", got, tc.refreshed, now.OAuth)
			}
		})
	}
}

// TestRefreshOAuthWithoutRefreshToken: an expired token the server gave no
// refresh token for needs consent, found by the leader's refresher; no
// token request is made.
func TestRefreshOAuthWithoutRefreshToken(t *testing.T) {
	f, as, _ := oauthFixture(t)
	rec := consented(t, f)
	cred, err := f.keys.Load().Unseal(rec.Sealed, vault.AAD{Org: "acme", Account: "alice", Route: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	cred.OAuth.RefreshToken = ""
	cred.OAuth.Expiry = f.now.Add(-time.Minute)
	meta := *rec.OAuth
	meta.Refreshable, meta.Expires = false, cred.OAuth.Expiry
	if err := f.svc.storeCredential(context.Background(), "acme", "alice", "docs", cred, &meta); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.svc.RunOAuthRefresher(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := f.svc.OAuthStatus(context.Background(), "acme", "alice", "docs")
		if err != nil {
			t.Fatal(err)
		}
		if st.State == OAuthNeedsConsent && strings.Contains(st.Reason, "issued no refresh token") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status = %+v, want needs consent for want of a refresh token", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := as.RefreshGrants(); got != 0 {
		t.Fatalf("refresh requests = %d, want 0", got)
	}
	now, _ := f.store.Credential("acme", "alice", "docs")
	if c := now.OAuth.Consent; c == nil || c.Reason != storage.ConsentNoRefreshToken {
		t.Fatalf("consent mark = %+v", c)
	}
	if err := f.svc.RefreshOAuth(context.Background(), RefreshRequest{Org: "acme", Account: "alice", Route: "docs", Sealed: now.Sealed}); err != nil || as.RefreshGrants() != 0 {
		t.Fatalf("refresh of a marked credential = %v, %d requests; want nil at once", err, as.RefreshGrants())
	}
}

// countingState counts the refresher's reads of the state.
type countingState struct {
	State
	generations, reads atomic.Int32
}

func (c *countingState) Generation() uint64 {
	c.generations.Add(1)
	return c.State.Generation()
}

func (c *countingState) Credentials() ([]storage.Credential, error) {
	c.reads.Add(1)
	return c.State.Credentials()
}

// TestRefresherReadsCredentialsOnChange: the refresher reads the stored
// credentials again only when the state changed, not every tick (with
// 10,000 stored, each read cost tens of milliseconds).
func TestRefresherReadsCredentialsOnChange(t *testing.T) {
	f, _, _ := oauthFixture(t)
	consented(t, f)
	cs := &countingState{State: f.svc.d.State}
	f.svc.d.State = cs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.svc.RunOAuthRefresher(ctx, time.Millisecond) }()
	defer func() { cancel(); <-done }()
	clocktest.Poll(t, 20*time.Second, "20 refresher ticks", func() bool { return cs.generations.Load() >= 20 })
	if got := cs.reads.Load(); got != 1 {
		t.Fatalf("%d reads of the credentials in %d ticks with nothing written, want 1", got, cs.generations.Load())
	}
	if _, _, err := f.svc.PutRoute(context.Background(), storage.Route{Name: "other", URL: "http://127.0.0.1:1/mcp"}); err != nil {
		t.Fatal(err)
	}
	clocktest.Poll(t, 20*time.Second, "a read after a write", func() bool { return cs.reads.Load() == 2 })
}
