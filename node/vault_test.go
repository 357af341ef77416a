package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// putCredential stores a credential through the admin API.
func putCredential(t testing.TB, n *Node, org, account, route, kind, secret string) adminapi.CredentialInfo {
	t.Helper()
	resp := adminDo(t, n, http.MethodPut, "/v1/credentials", adminapi.PutCredentialRequest{Org: org, Account: account, Route: route, Kind: kind, Secret: secret})
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var e adminapi.ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("put credential: HTTP %d: %s", resp.StatusCode, e.Error)
	}
	var info adminapi.CredentialInfo
	json.NewDecoder(resp.Body).Decode(&info)
	return info
}

// callText calls a tool and returns its first text content.
func callText(t testing.TB, ctx context.Context, sess *mcp.ClientSession, tool, text string) string {
	t.Helper()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": text}})
	if err != nil {
		t.Fatalf("CallTool %s: %v", tool, err)
	}
	if res.IsError {
		t.Fatalf("CallTool %s: tool error %v", tool, res.Content)
	}
	return res.Content[0].(*mcp.TextContent).Text
}

func connect(t testing.TB, ctx context.Context, n *Node, target, org, account string, opts ...client.Option) (*mcp.ClientSession, error) {
	t.Helper()
	sess, err := client.Connect(ctx, target, org, account, append(viaGateway(n), opts...)...)
	if err == nil {
		t.Cleanup(func() { sess.Close() })
	}
	return sess, err
}

// TestCredentialInjection: an upstream that requires a bearer token accepts
// calls for the account that has it, the wrong account is refused, and the
// caller's own Authorization header never reaches the upstream.
func TestCredentialInjection(t *testing.T) {
	up := upstreamtest.New()
	secret := "s3cr3t-upstream-token"
	up.RequireBearer.Store(&secret)
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp" // before the node, so it stops after it
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "gh", URL: url, Credential: storage.CredentialRequired})
	putCredential(t, n, "acme", "alice", "gh", "bearer", secret+"\n")
	putCredential(t, n, "acme", "mallory", "gh", "bearer", "wrong-token")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
	if err != nil {
		t.Fatalf("Connect alice: %v", err)
	}
	if got, want := callText(t, ctx, sess, "whoami", ""), "Bearer "+secret; got != want {
		t.Fatalf("upstream saw Authorization %q, want %q", got, want)
	}

	// No credential at all: refused before the session starts.
	_, err = connect(t, ctx, n, route.URL, "acme", "bob")
	var re *transport.RefusalError
	if !errors.As(err, &re) || re.Status != http.StatusForbidden || re.Code != transport.CodeNoCredential ||
		!strings.Contains(re.Message, `account "bob"`) || !strings.Contains(re.Message, "mcpgw vault put") {
		t.Fatalf("Connect bob: err = %v, want 403 no-credential naming the account and `mcpgw vault put`", err)
	}

	// A wrong credential: the upstream's 401 comes back as a clear error.
	_, err = connect(t, ctx, n, route.URL, "acme", "mallory")
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "refused the credential") {
		t.Fatalf("Connect mallory: err = %v, want upstream 401 explained", err)
	}
}

// TestCredentialRotationLiveSession: replacing a credential while a session
// is open makes the next upstream request carry the new one.
func TestCredentialRotationLiveSession(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp" // before the node, so it stops after it
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "gh", URL: url})
	putCredential(t, n, "acme", "alice", "gh", "bearer", "token-one")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := callText(t, ctx, sess, "whoami", ""), "Bearer token-one"; got != want {
		t.Fatalf("before rotation: %q, want %q", got, want)
	}
	putCredential(t, n, "acme", "alice", "gh", "bearer", "token-two")
	if got, want := callText(t, ctx, sess, "whoami", ""), "Bearer token-two"; got != want {
		t.Fatalf("after rotation: %q, want %q", got, want)
	}
	// Header credentials work the same way.
	putCredential(t, n, "acme", "alice", "gh", "headers", "Authorization: Token abc\nX-Api-Key: k1\n")
	if got, want := callText(t, ctx, sess, "whoami", ""), "Token abc"; got != want {
		t.Fatalf("after switching to headers: %q, want %q", got, want)
	}
}

// TestStdioCredentialEnv: a stdio upstream gets the credential as
// environment variables, and nothing else of the gateway's environment.
func TestStdioCredentialEnv(t *testing.T) {
	t.Setenv("MCPGW_VAULT_PASSPHRASE", "must-not-leak")
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "files", Transport: storage.TransportStdio, Command: []string{os.Args[0], upstreamtest.StdioArg}})
	putCredential(t, n, "acme", "alice", "files", "env", "FILES_TOKEN=tok-123\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := callText(t, ctx, sess, "getenv", "FILES_TOKEN"), "tok-123"; got != want {
		t.Fatalf("FILES_TOKEN = %q, want %q", got, want)
	}
	if got := callText(t, ctx, sess, "getenv", "MCPGW_VAULT_PASSPHRASE"); got != "" {
		t.Fatalf("stdio upstream inherited MCPGW_VAULT_PASSPHRASE = %q", got)
	}
}

// TestCorruptCredentialFailsOnlyItsSessions: a ciphertext that cannot be
// unsealed refuses the sessions that need it, with a clear error, and no one
// else's.
func TestCorruptCredentialFailsOnlyItsSessions(t *testing.T) {
	up := upstreamtest.New()
	url := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp" // before the node, so it stops after it
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "gh", URL: url})
	putCredential(t, n, "acme", "alice", "gh", "bearer", "good")
	bad := storage.Credential{Org: "acme", Account: "eve", Route: "gh", Kind: "bearer", Sealed: []byte("MGVE garbage")}
	if err := n.writes.Apply(context.Background(), cluster.Command{Op: cluster.OpPutCredential, Credential: &bad}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := connect(t, ctx, n, route.URL, "acme", "eve")
	var re *transport.RefusalError
	if !errors.As(err, &re) || re.Code != transport.CodeCredentialBroken || !strings.Contains(re.Message, "cannot be unsealed") || !strings.Contains(re.Message, "mcpgw vault put") {
		t.Fatalf("Connect eve: err = %v, want credential-broken refusal", err)
	}
	sess, err := connect(t, ctx, n, route.URL, "acme", "alice")
	if err != nil {
		t.Fatalf("Connect alice after eve's failure: %v", err)
	}
	if got := callText(t, ctx, sess, "whoami", ""); got != "Bearer good" {
		t.Fatalf("alice: %q", got)
	}
}

// TestNoPlaintextAtRest writes known secrets, takes a backup snapshot into
// the data dir, rotates the vault key, and scans every file for the
// plaintext bytes.
func TestNoPlaintextAtRest(t *testing.T) {
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "gh", URL: "https://api.example.com/mcp"})
	secrets := []string{"plaintext-bearer-9f3a1c", "plaintext-header-77b2", "plaintext-oauth-access-1e4", "plaintext-oauth-refresh-5d6"}
	putCredential(t, n, "acme", "a1", "gh", "bearer", secrets[0])
	putCredential(t, n, "acme", "a2", "gh", "headers", "X-Api-Key: "+secrets[1])
	putCredential(t, n, "acme", "a3", "gh", "oauth", `{"access_token":"`+secrets[2]+`","refresh_token":"`+secrets[3]+`","token_type":"Bearer","expiry":"2030-01-01T00:00:00Z"}`)

	scan := func(stage string) {
		t.Helper()
		t.Run(stage, func(t *testing.T) {
			if files := scanForSecrets(t, n.cfg.DataDir, secrets...); files < 2 {
				t.Fatalf("scanned %d files, want the state db and more", files)
			}
		})
	}
	backup := func(name string) {
		f, err := os.Create(filepath.Join(n.cfg.DataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := n.store.Snapshot(f); err != nil {
			t.Fatal(err)
		}
	}
	backup("backup-1.db")
	scan("after put")

	resp := adminDo(t, n, http.MethodPost, "/v1/vault/rotate", nil)
	var res adminapi.RotateResult
	json.NewDecoder(resp.Body).Decode(&res)
	if resp.StatusCode != http.StatusOK || res.Pending != 4 || len(res.DecryptOnly) != 1 {
		t.Fatalf("rotate: HTTP %d %+v, want 200 with 3 credentials and the signing key to reseal and 1 decrypt-only key", resp.StatusCode, res)
	}
	waitResealed(t, n, res.KeyID)
	backup("backup-2.db")
	scan("after rotate")

	// Every credential is now sealed with the new key and still opens.
	creds, err := n.store.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range creds {
		if c.KeyID != res.KeyID {
			t.Errorf("credential %s/%s sealed with %s, want %s", c.Org, c.Account, c.KeyID, res.KeyID)
		}
	}
	rec, err := n.store.Credential("acme", "a1", "gh")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := n.vaultKeys().Unseal(rec.Sealed, vault.AAD{Org: "acme", Account: "a1", Route: "gh"})
	if h := cred.HTTPHeaders(); err != nil || h.Get("Authorization") != "Bearer "+secrets[0] {
		t.Fatalf("after rotation the credential unseals to %v, %v", h.Get("Authorization") != "", err)
	}
	// The listing shows metadata only.
	resp = adminDo(t, n, http.MethodGet, "/v1/credentials", nil)
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	for _, s := range secrets {
		if strings.Contains(buf.String(), s) {
			t.Fatalf("credential listing contains %q", s)
		}
	}
}

// TestWrongVaultKeyRefusesStart: a node restarted with another vault key
// refuses to start and says which key sealed its data.
func TestWrongVaultKeyRefusesStart(t *testing.T) {
	n := startNode(t)
	dataDir := n.cfg.DataDir
	sealedWith := n.ring.KEK().Current().ID()
	n.Close()

	cfg := n.cfg
	cfg.VaultKeys = testVaultKeys(t)
	other, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	err = other.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "the data in "+dataDir+" is sealed with vault key "+sealedWith) ||
		!strings.Contains(err.Error(), "restore the key file holding key "+sealedWith+" to "+cfg.VaultKeyFile) || !strings.Contains(err.Error(), "--vault-key") {
		t.Fatalf("Start with the wrong vault key: %v, want a refusal naming key %s and --vault-key", err, sealedWith)
	}
}
