package gateway

import (
	"reflect"
	"testing"

	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// TestUnsealedCredentialShared checks that sessions opened one after
// another share one unsealing of a credential, and that the sharing never
// outlives the ciphertext or the vault keys it was unsealed with.
func TestUnsealedCredentialShared(t *testing.T) {
	tg := newTestGateway(t)
	tg.addRoute(t, storage.Route{Name: "gh", URL: "https://api.example.com/mcp"})
	tg.putCredential(t, "acme", "alice", "gh", "token-a")
	spec := sessionSpec{route: storage.Route{Name: "gh", Credential: storage.CredentialRequired}, org: "acme", account: "alice"}
	header := func() (string, error) {
		t.Helper()
		h, err := tg.credentialSource(spec).header()
		return h.Get("Authorization"), err
	}

	first, err := tg.credentialSource(spec).header()
	if err != nil || first.Get("Authorization") != "Bearer token-a" {
		t.Fatalf("first session: %v %v, want Bearer token-a", first, err)
	}
	second, err := tg.credentialSource(spec).header()
	if err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(second).UnsafePointer() != reflect.ValueOf(first).UnsafePointer() {
		t.Fatalf("second session unsealed the credential again instead of sharing the first unsealing")
	}

	// Other vault keys: the cached plaintext must not stand in for an
	// unseal those keys cannot do.
	good := tg.keys
	other, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	tg.keys = vault.NewKeys(other)
	if _, err := header(); !isRefusal(err, transport.CodeCredentialBroken) {
		t.Fatalf("with keys that cannot unseal it: %v, want a credential_broken refusal", err)
	}
	tg.keys = good

	// A replaced credential is unsealed afresh.
	tg.putCredential(t, "acme", "alice", "gh", "token-b")
	if got, err := header(); err != nil || got != "Bearer token-b" {
		t.Fatalf("after the credential was replaced: %q %v, want Bearer token-b", got, err)
	}

	// A removed one is gone.
	tg.update(t, func(tx *storage.Tx) error { _, err := tx.DeleteCredential("acme", "alice", "gh"); return err })
	if _, err := header(); err == nil {
		t.Fatalf("after the credential was removed: no error, want no-credential")
	}
}

func isRefusal(err error, code int64) bool {
	ref, ok := err.(*transport.Refusal)
	return ok && ref.Code == code
}
