package node

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

func TestMain(m *testing.M) {
	if upstreamtest.RunStdioIfAsked(os.Args) {
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
