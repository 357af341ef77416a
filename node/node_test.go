package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/hostileupstream"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/vault"
)

func TestMain(m *testing.M) {
	if upstreamtest.RunStdioIfAsked(os.Args) || hostileupstream.RunStdioIfAsked(os.Args) {
		return
	}
	// Fail the package if any test leaves a goroutine running. A server
	// connection that refused an oversized body lingers half a second
	// before closing, whoever owns it.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
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
	cfg.QUICAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	cfg.UnixPath = filepath.Join(shortTempDir(t), "gw.sock")
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
	return append([]client.Option{client.WithGateway("ws://" + n.HTTPAddr())}, tokenOpts(n)...)
}

// testToken returns the service token startNode issued for n.
func testToken(n *Node) string {
	tok, _ := testTokens.Load(n)
	s, _ := tok.(string)
	return s
}

// testVaultKeys returns fresh vault keys, not written anywhere.
func testVaultKeys(t testing.TB) *vault.Keys {
	t.Helper()
	id, err := vault.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return vault.NewKeys(id)
}

// tokenOpts returns the client option carrying the token startNode issued.
func tokenOpts(n *Node) []client.Option {
	if tok, ok := testTokens.Load(n); ok {
		return []client.Option{client.WithToken(tok.(string))}
	}
	return nil
}

// issueToken issues a service token through the admin API.
func issueToken(t testing.TB, n *Node, service string, orgs []string, ttl string) adminapi.IssuedToken {
	t.Helper()
	resp := adminDo(t, n, http.MethodPost, "/v1/tokens", adminapi.IssueTokenRequest{Service: service, Orgs: orgs, TTL: ttl})
	var tok adminapi.IssuedToken
	if resp.StatusCode != http.StatusCreated {
		var e adminapi.ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("issue token: HTTP %d: %s", resp.StatusCode, e.Error)
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	return tok
}

// shortTempDir returns a temporary directory with a short path: a Unix
// socket path must fit in about 100 bytes, which t.TempDir may exceed.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mcpgw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// adminDo calls the admin API with the node's token.
func adminDo(t testing.TB, n *Node, method, path string, body any) *http.Response {
	t.Helper()
	var buf bytes.Buffer
	if body != nil {
		json.NewEncoder(&buf).Encode(body)
	}
	req, err := http.NewRequest(method, n.AdminURL()+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	hc := http.DefaultClient
	if n.adminTLS {
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: nodeRoots(t, n)}}}
		defer hc.CloseIdleConnections()
	}
	resp, err := hc.Do(req)
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
		var e adminapi.ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("add route %q: HTTP %d: %s", r.Name, resp.StatusCode, e.Error)
	}
	var got storage.Route
	json.NewDecoder(resp.Body).Decode(&got)
	return got
}

// nodeRoots returns a pool trusting n's QUIC certificate: its cluster CA.
func nodeRoots(t testing.TB, n *Node) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.cfg.clusterTLSDir(), cluster.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatal("node certificate is not PEM")
	}
	return pool
}
