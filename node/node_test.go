package node

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

func TestMain(m *testing.M) {
	if upstreamtest.RunStdioIfAsked(os.Args) {
		return
	}
	os.Exit(m.Run())
}

// startNode starts a node on loopback ports with its data in a temp dir.
func startNode(t testing.TB, mutate ...func(*Config)) *Node {
	if os.Getenv("NODE_DEBUG") != "" {
		mutate = append(mutate, func(c *Config) {
			c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
	}
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.VaultKeyFile = filepath.Join(t.TempDir(), "vault.key")
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if err := vault.WriteKeyFile(cfg.VaultKeyFile, id); err != nil {
		t.Fatal(err)
	}
	cfg.VaultKeys = vault.NewKeys(id)
	for _, f := range mutate {
		f(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if !cfg.InsecureDev {
		testTokens.Store(n, issueToken(t, n, "test-svc", []string{"*"}, "1h").Token)
	}
	return n
}

// testTokens holds the service token startNode issued for each node.
var testTokens sync.Map // *Node → string

// gateway returns the client options that reach n's WebSocket endpoint
// with the token startNode issued.
func gateway(n *Node) []client.Option {
	opts := []client.Option{client.WithGateway("ws://" + n.HTTPAddr())}
	if tok, ok := testTokens.Load(n); ok {
		opts = append(opts, client.WithToken(tok.(string)))
	}
	return opts
}

// issueToken issues a service token through the admin API.
func issueToken(t testing.TB, n *Node, service string, orgs []string, ttl string) IssuedToken {
	t.Helper()
	resp := adminDo(t, n, http.MethodPost, "/v1/tokens", IssueTokenRequest{Service: service, Orgs: orgs, TTL: ttl})
	var tok IssuedToken
	if resp.StatusCode != http.StatusCreated {
		var e adminError
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("issue token: HTTP %d: %s", resp.StatusCode, e.Error)
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	return tok
}

// adminDo calls the admin API with the node's token.
func adminDo(t testing.TB, n *Node, method, path string, body any) *http.Response {
	t.Helper()
	var buf bytes.Buffer
	if body != nil {
		json.NewEncoder(&buf).Encode(body)
	}
	req, err := http.NewRequest(method, "http://"+n.AdminAddr()+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// addRoute adds a route through the admin API and fails the test on error.
func addRoute(t testing.TB, n *Node, r storage.Route) storage.Route {
	t.Helper()
	resp := adminDo(t, n, http.MethodPost, "/v1/routes", r)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var e adminError
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("add route %q: HTTP %d: %s", r.Name, resp.StatusCode, e.Error)
	}
	var got storage.Route
	json.NewDecoder(resp.Body).Decode(&got)
	return got
}
