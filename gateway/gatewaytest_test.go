package gateway

import (
	"encoding/base64"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/policy"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// testGateway is a Gateway over a bbolt store and an audit log in a temp
// dir, its Handler served on a loopback test server: the whole data path,
// with no raft and none of node's listeners. Writes go straight to the
// store, as the raft FSM would apply them.
type testGateway struct {
	*Gateway
	store *storage.Store
	keys  *vault.Keys
	audit *storage.AuditLog
	url   string // base URL of Handler
}

// newTestGateway starts a gateway with a signing key in its store. mutate
// adjusts its options before New.
func newTestGateway(t testing.TB, mutate ...func(*Options)) *testGateway {
	t.Helper()
	dir := t.TempDir()
	store, err := storage.Open(filepath.Join(dir, storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	audit, err := storage.OpenAudit(filepath.Join(dir, storage.AuditFile), storage.AuditOptions{})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	tg := &testGateway{store: store, keys: vault.NewKeys(id), audit: audit}
	tg.putSigningKey(t)
	opts := &Options{AuditLog: audit, NodeID: "test-node"}
	for _, m := range mutate {
		m(opts)
	}
	tg.Gateway = New(store, func() *vault.Keys { return tg.keys }, opts)
	ts := httptest.NewServer(tg.Handler())
	tg.url = ts.URL
	t.Cleanup(func() {
		tg.Close() // ends the sessions, so that their handlers return
		ts.Close()
		audit.Close()
		store.Close()
	})
	return tg
}

// putSigningKey stores a service-token signing key, sealed as node seals it.
func (tg *testGateway) putSigningKey(t testing.TB) {
	t.Helper()
	now := time.Now().UTC()
	k, err := policy.NewSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := tg.keys.Seal(vault.Credential{Kind: vault.KindBearer, Token: base64.StdEncoding.EncodeToString(k.Private.Seed())}, SigningKeyAAD(k.ID))
	if err != nil {
		t.Fatal(err)
	}
	tg.update(t, func(tx *storage.Tx) error {
		return tx.PutTokenKey(storage.TokenKey{ID: k.ID, Public: k.Public, Sealed: sealed, Created: now})
	})
}

func (tg *testGateway) update(t testing.TB, fn func(*storage.Tx) error) {
	t.Helper()
	if err := tg.store.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// addRoute validates and stores r, returning it as stored.
func (tg *testGateway) addRoute(t testing.TB, r storage.Route) storage.Route {
	t.Helper()
	if err := ValidateRoute(&r); err != nil {
		t.Fatal(err)
	}
	tg.update(t, func(tx *storage.Tx) error { return tx.PutRoute(r) })
	return r
}

// putCredential seals and stores a bearer credential for (org, account,
// route).
func (tg *testGateway) putCredential(t testing.TB, org, account, route, token string) {
	t.Helper()
	aad := vault.AAD{Org: org, Account: account, Route: route}
	sealed, err := tg.keys.Seal(vault.Credential{Kind: vault.KindBearer, Token: token}, aad)
	if err != nil {
		t.Fatal(err)
	}
	tg.update(t, func(tx *storage.Tx) error {
		return tx.PutCredential(storage.Credential{Org: org, Account: account, Route: route, Sealed: sealed, KeyID: tg.keys.Current().ID()})
	})
}

// issueToken returns a service token for service, valid for orgs for an
// hour.
func (tg *testGateway) issueToken(t testing.TB, service string, orgs ...string) string {
	t.Helper()
	return tg.issueTokenFor(t, service, time.Hour, orgs...)
}

// issueTokenFor returns a service token for service, valid for orgs for
// ttl from the gateway's clock.
func (tg *testGateway) issueTokenFor(t testing.TB, service string, ttl time.Duration, orgs ...string) string {
	t.Helper()
	kr, err := tg.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	id, err := policy.NewTokenID()
	if err != nil {
		t.Fatal(err)
	}
	now := tg.now()
	tok, err := kr.Issue(policy.Claims{ID: id, Service: service, Orgs: orgs, ExpiresAt: now.Add(ttl)}, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// wsURL returns the WebSocket base URL of the gateway's handler.
func (tg *testGateway) wsURL() string { return "ws" + strings.TrimPrefix(tg.url, "http") }
