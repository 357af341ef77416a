package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpgw/mcpgw/storage"
)

func dataKey(id, kek string) *storage.DataKey {
	return &storage.DataKey{ID: id, Created: time.Unix(0, 0).UTC(), Wraps: map[string][]byte{kek: []byte("wrapped-" + id)}}
}

func cred(account, keyID, sealed string) *storage.Credential {
	return &storage.Credential{Org: "acme", Account: account, Route: "gh", Kind: "bearer", KeyID: keyID, Sealed: []byte(sealed)}
}

func mustApply(t *testing.T, s *storage.Store, cmds ...Command) {
	t.Helper()
	for _, c := range cmds {
		if err := Apply(s, 0, c); err != nil {
			t.Fatalf("apply %s: %v", c.Op, err)
		}
	}
}

func keyStates(t *testing.T, s *storage.Store) map[string]storage.DataKeyState {
	t.Helper()
	dks, err := s.DataKeys()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]storage.DataKeyState{}
	for _, k := range dks {
		m[k.ID] = k.State
	}
	return m
}

// TestResealIsCompareAndSet: a reseal prepared from a record's old bytes
// is skipped when a put or delete landed after it was prepared, so the
// later write wins; a reseal of an unchanged record applies.
func TestResealIsCompareAndSet(t *testing.T) {
	s := openStore(t)
	mustApply(t, s,
		Command{Op: OpInitKeyring, DataKey: dataKey("dek1", "kek")},
		Command{Op: OpPutCredential, Credential: cred("put", "dek1", "v1")},
		Command{Op: OpPutCredential, Credential: cred("rm", "dek1", "v1")},
		Command{Op: OpPutCredential, Credential: cred("same", "dek1", "v1")},
		Command{Op: OpRotateDataKey, DataKey: dataKey("dek2", "kek")},
	)
	// The resealer read all three at v1; then an operator writes.
	mustApply(t, s,
		Command{Op: OpPutCredential, Credential: cred("put", "dek2", "v2-by-operator")},
		Command{Op: OpDeleteCredential, Org: "acme", Account: "rm", RouteName: "gh"},
	)
	var batch []Command
	for _, a := range []string{"put", "rm", "same"} {
		batch = append(batch, Command{Op: OpResealCredential, Credential: cred(a, "dek2", "v1-resealed"), Expect: []byte("v1")})
	}
	mustApply(t, s, Command{Op: OpBatch, Batch: batch})
	for account, want := range map[string]string{"put": "v2-by-operator", "same": "v1-resealed"} {
		c, err := s.Credential("acme", account, "gh")
		if err != nil || string(c.Sealed) != want {
			t.Fatalf("%s holds %q (%v), want %q", account, c.Sealed, err, want)
		}
	}
	if _, err := s.Credential("acme", "rm", "gh"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the deleted credential came back: %v", err)
	}
}

// TestDataKeyLifecycle: a rotation demotes the active key in the same
// command; a decrypt-only key is retired only once nothing references it;
// a record sealed with a retired key is refused; the first data key is
// created once however many nodes try.
func TestDataKeyLifecycle(t *testing.T) {
	s := openStore(t)
	mustApply(t, s,
		Command{Op: OpInitKeyring, DataKey: dataKey("dek1", "kek")},
		Command{Op: OpInitKeyring, DataKey: dataKey("dek-racing-node", "kek")},
		Command{Op: OpPutCredential, Credential: cred("a", "dek1", "v1")},
		Command{Op: OpPutTokenKey, TokenKey: &storage.TokenKey{ID: "tk", Sealed: []byte("t1"), KeyID: "dek1"}},
		Command{Op: OpRotateDataKey, DataKey: dataKey("dek2", "kek")},
	)
	if diff := cmp.Diff(map[string]storage.DataKeyState{"dek1": storage.DataKeyDecryptOnly, "dek2": storage.DataKeyActive}, keyStates(t, s)); diff != "" {
		t.Fatalf("after rotation (-want +got):\n%s", diff)
	}
	retire := Command{Op: OpRetireDataKey, Name: "dek1"}
	mustApply(t, s, retire, Command{Op: OpResealCredential, Credential: cred("a", "dek2", "v1-resealed"), Expect: []byte("v1")}, retire)
	if _, ok := keyStates(t, s)["dek1"]; !ok {
		t.Fatal("dek1 retired while the signing key still references it")
	}
	mustApply(t, s, Command{Op: OpResealTokenKey, TokenKey: &storage.TokenKey{ID: "tk", Sealed: []byte("t1-resealed"), KeyID: "dek2"}, Expect: []byte("t1")}, retire,
		Command{Op: OpRetireDataKey, Name: "dek2"}) // the active key is never retired
	if diff := cmp.Diff(map[string]storage.DataKeyState{"dek2": storage.DataKeyActive}, keyStates(t, s)); diff != "" {
		t.Fatalf("after retiring (-want +got):\n%s", diff)
	}
	// A node that had not seen the rotation seals with dek1: refused.
	err := Apply(s, 0, Command{Op: OpPutCredential, Credential: cred("late", "dek1", "x")})
	if !errors.Is(err, ErrRetiredKey) {
		t.Fatalf("put sealed with a retired key: %v, want ErrRetiredKey", err)
	}
	// The key-encryption key id stays valid for records from before the keyring.
	mustApply(t, s, Command{Op: OpPutCredential, Credential: cred("legacy", "kek", "x")})
}

// TestKEKWraps: a second wrap is added for a new key-encryption key, and
// dropping the old one leaves only the new; the last wrap cannot be dropped.
func TestKEKWraps(t *testing.T) {
	s := openStore(t)
	mustApply(t, s,
		Command{Op: OpInitKeyring, DataKey: dataKey("dek1", "kek1")},
		Command{Op: OpWrapDataKeys, Wraps: []KeyWrap{{DataKey: "dek1", KEK: "kek2", Sealed: []byte("w2")}, {DataKey: "gone", KEK: "kek2", Sealed: []byte("w")}}},
		Command{Op: OpDropKEK, Name: "kek1"},
	)
	dks, _ := s.DataKeys()
	if len(dks) != 1 || len(dks[0].Wraps) != 1 || string(dks[0].Wraps["kek2"]) != "w2" {
		t.Fatalf("keyring %+v, want dek1 wrapped to kek2 only", dks)
	}
	if err := Apply(s, 0, Command{Op: OpDropKEK, Name: "kek2"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("dropping the last wrap: %v, want ErrInvalidCommand", err)
	}
}

// TestRetirementWaitsForOAuthRecords: a decrypt-only key that still seals
// an OAuth pending flow or an OAuth client secret is not retired; once the
// client is resealed (compare-and-set, as credentials are) and the flow is
// gone, it is.
func TestRetirementWaitsForOAuthRecords(t *testing.T) {
	s := openStore(t)
	expires := time.Unix(600, 0).UTC()
	client := func(keyID, sealed string) *storage.OAuthClient {
		return &storage.OAuthClient{Issuer: "https://as.example", KeyID: keyID, Sealed: []byte(sealed), Registration: []byte(`{}`)}
	}
	mustApply(t, s,
		Command{Op: OpInitKeyring, DataKey: dataKey("dek1", "kek")},
		Command{Op: OpPutOAuthPending, OAuthPending: &storage.OAuthPending{StateHash: "h", Org: "acme", Account: "a", Route: "gh",
			Issuer: "https://as.example", Expires: expires, KeyID: "dek1", Sealed: []byte("verifier"), Flow: []byte(`{}`)}},
		Command{Op: OpPutOAuthClient, OAuthClient: client("dek1", "secret-v1")},
		Command{Op: OpRotateDataKey, DataKey: dataKey("dek2", "kek")},
	)
	retire := Command{Op: OpRetireDataKey, Name: "dek1"}
	mustApply(t, s, retire)
	if _, ok := keyStates(t, s)["dek1"]; !ok {
		t.Fatal("dek1 retired while it seals an oauth flow and an oauth client secret")
	}
	// A reseal prepared from old bytes is skipped; one from the current
	// bytes applies.
	mustApply(t, s,
		Command{Op: OpResealOAuthClient, OAuthClient: client("dek2", "stale"), Expect: []byte("other")},
		Command{Op: OpResealOAuthClient, OAuthClient: client("dek2", "secret-v1-resealed"), Expect: []byte("secret-v1")},
		retire)
	if c, err := s.OAuthClient("https://as.example"); err != nil || c.KeyID != "dek2" || string(c.Sealed) != "secret-v1-resealed" {
		t.Fatalf("client after reseal: %+v, %v", c, err)
	}
	if _, ok := keyStates(t, s)["dek1"]; !ok {
		t.Fatal("dek1 retired while it seals an oauth flow")
	}
	mustApply(t, s, Command{Op: OpExpireOAuthPending, At: expires}, retire)
	if diff := cmp.Diff(map[string]storage.DataKeyState{"dek2": storage.DataKeyActive}, keyStates(t, s)); diff != "" {
		t.Fatalf("after the flow expired (-want +got):\n%s", diff)
	}
	if err := Apply(s, 0, Command{Op: OpResealOAuthClient, OAuthClient: client("dek1", "x"), Expect: []byte("secret-v1-resealed")}); !errors.Is(err, ErrRetiredKey) {
		t.Fatalf("reseal with a retired key: %v, want ErrRetiredKey", err)
	}
}
