package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/node"
)

// TestVaultKeyCommands: rotate-key --wait-reseal returns once every record is
// resealed and the old data key retired; status shows the keys, what each
// seals and the progress, as a table and as JSON.
func TestVaultKeyCommands(t *testing.T) {
	n := startTestNode(t)
	admin := []string{"--admin", n.AdminAddr(), "--admin-token", n.AdminToken()}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(words []string, rest ...string) string {
		t.Helper()
		out, _, err := runCLI(t, append(append(words, admin...), rest...)...)
		if err != nil {
			t.Fatalf("%v: %v", words, err)
		}
		return out
	}
	run([]string{"route", "add"}, "echo", "http://127.0.0.1:9/mcp")
	run([]string{"vault", "put"}, "--org", "acme", "--account", "alice", "--route", "echo", "--file", secret)
	out := run([]string{"vault", "rotate-key"}, "--wait-reseal")
	for _, want := range []string{"vault data key is now ", "2 records to reseal", "all 2 records sealed with "} {
		if !strings.Contains(out, want) {
			t.Fatalf("rotate-key --wait-reseal printed %q, want %q in it", out, want)
		}
	}
	out = run([]string{"vault", "status"})
	for _, want := range []string{"KEY", "STATE", "active", "all 2 records sealed with the active data key"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status printed %q, want %q in it", out, want)
		}
	}
	var st adminapi.VaultStatus
	if err := json.Unmarshal([]byte(run([]string{"vault", "status"}, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Keys) != 1 || st.Keys[0].State != "active" || st.Keys[0].Credentials != 1 || st.Keys[0].SigningKeys != 1 || st.Rotating {
		t.Fatalf("status --json = %+v, want one active key sealing 1 credential and 1 signing key", st)
	}
}

// stateSealedBy leaves a data dir holding state a node sealed, and
// returns it with the id of the vault key that opens it.
func stateSealedBy(t *testing.T) (dataDir, keyID string) {
	t.Helper()
	dataDir = t.TempDir()
	n := startTestNode(t, func(c *node.Config) { c.DataDir, keyID = dataDir, c.VaultKeys.Current().ID() })
	n.Close()
	return dataDir, keyID
}

// TestInitRefusesToMintKeyOverState: init on a data dir that holds state
// and has no key file refuses, names the key that sealed the data and
// where to restore it, and writes no key.
func TestInitRefusesToMintKeyOverState(t *testing.T) {
	dataDir, keyID := stateSealedBy(t)
	keyFile := filepath.Join(t.TempDir(), "vault.key")
	app := &cli.App{Name: "mcpgw", Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*cli.Context, error) {}, Commands: []*cli.Command{initCommand()}}
	err := app.Run([]string{"mcpgw", "init", "--data-dir", dataDir, "--vault-key", keyFile})
	if err == nil || !strings.Contains(err.Error(), "the data in "+dataDir+" is sealed with vault key "+keyID) ||
		!strings.Contains(err.Error(), "restore the key file holding key "+keyID) || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("init over existing state: %v, want a refusal naming key %s and %s", err, keyID, keyFile)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Fatalf("init wrote a key file over existing state: %v", err)
	}
}

// TestServeMissingKeySaysWhichKey: serve with the key file gone names the
// key id that sealed the data, the file to restore and warns off init.
func TestServeMissingKeySaysWhichKey(t *testing.T) {
	dataDir, keyID := stateSealedBy(t)
	keyFile := filepath.Join(t.TempDir(), "vault.key")
	_, _, err := loadVaultKeys(io.Discard, keyFile, dataDir, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "sealed with vault key "+keyID) || !strings.Contains(err.Error(), "# key id: "+keyID) ||
		!strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "do not run `mcpgw init`") {
		t.Fatalf("serve without the key file: %v, want the key id %s, the file and a warning against init", err, keyID)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Fatalf("serve wrote a new key file over existing state: %v", err)
	}
}
