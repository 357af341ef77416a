package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
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
	cfg.QUICAddr = "127.0.0.1:0"
	cfg.UnixPath = filepath.Join(shortTempDir(t), "gw.sock")
	cfg.ShutdownTimeout = 2 * time.Second
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
	return n
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

// nodeRoots returns a pool trusting n's QUIC certificate.
func nodeRoots(t testing.TB, n *Node) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.cfg.DataDir, TLSDir, TLSCertName))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatal("node certificate is not PEM")
	}
	return pool
}
