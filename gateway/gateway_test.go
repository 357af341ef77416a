package gateway

import (
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

// TestNewAndClose: New touches no file and Close, called twice, stops
// every goroutine New started (the audit writer, the token watch, the
// streamable HTTP janitor).
func TestNewAndClose(t *testing.T) {
	dir := t.TempDir()
	store, err := storage.Open(filepath.Join(dir, storage.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	audit, err := storage.OpenAudit(filepath.Join(dir, storage.AuditFile), storage.AuditOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer audit.Close()
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	keys := vault.NewKeys(id)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	for _, opts := range []*Options{nil, {AuditLog: audit, NodeID: "n1"}} {
		g := New(store, func() *vault.Keys { return keys }, opts)
		if got := g.Sessions(); got != 0 {
			t.Fatalf("Sessions() = %d on a new gateway, want 0", got)
		}
		for range 2 {
			if err := g.Close(); err != nil {
				t.Fatalf("Close() = %v", err)
			}
		}
	}
}
