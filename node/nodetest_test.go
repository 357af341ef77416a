package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/mcpgw/mcpgw/adminapi"
	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/cluster"
	"github.com/mcpgw/mcpgw/internal/hostileupstream"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
	"github.com/mcpgw/mcpgw/vault"
)

// This file holds what node's tests share: starting nodes and clusters,
// issuing tokens and routes through the admin API, raw WebSocket sessions,
// refusal and metric readers.

func TestMain(m *testing.M) {
	if upstreamtest.RunStdioIfAsked(os.Args) || hostileupstream.RunStdioIfAsked(os.Args) || runCrashNodeIfAsked() {
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

// viaGateway returns the client options that reach n's WebSocket endpoint
// with the token startNode issued.
func viaGateway(n *Node) []client.Option {
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
	// A node that has started but has no leader yet (its first election
	// is slow under CPU load) refuses with 503 and Retry-After: retried,
	// as a script would, within a deadline.
	deadline := time.Now().Add(20 * time.Second)
	resp := adminDo(t, n, http.MethodPost, "/v1/tokens", adminapi.IssueTokenRequest{Service: service, Orgs: orgs, TTL: ttl})
	for resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		resp = adminDo(t, n, http.MethodPost, "/v1/tokens", adminapi.IssueTokenRequest{Service: service, Orgs: orgs, TTL: ttl})
	}
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
	// A node that cannot confirm its copy is current (it knows no leader
	// for a moment, or its barrier is slow under CPU load) refuses before
	// doing anything, with 503 and Mcpgw-Consistency: unconfirmed: retried
	// within a deadline, as the admin client retries it on another node.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp := adminDoOnce(t, n, method, path, body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(adminapi.ConsistencyHeader) != adminapi.ConsistencyUnconfirmed || time.Now().After(deadline) {
			return resp
		}
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

// adminDoOnce is adminDo without the retry: for tests of the refusal.
func adminDoOnce(t testing.TB, n *Node, method, path string, body any) *http.Response {
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

// gatewayTo starts a node with one route, "up", to a stateful streamable
// HTTP test upstream.
func gatewayTo(t *testing.T, mutate ...func(*Config)) (*Node, storage.Route) {
	n, route, _ := gatewayToServer(t, mutate...)
	return n, route
}

// gatewayToServer is gatewayTo that also returns the upstream. The upstream
// starts before the node so that it stops after it: sessions the node ends
// on Close can still end their upstream sessions.
func gatewayToServer(t *testing.T, mutate ...func(*Config)) (*Node, storage.Route, *upstreamtest.Server) {
	t.Helper()
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"
	n := startNode(t, mutate...)
	route := addRoute(t, n, storage.Route{Name: "up", URL: upURL})
	return n, route, up
}

// testContext returns a context that ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rpcReply is any JSON-RPC message as a raw client sees it.
type rpcReply struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  *jsonrpc.Error  `json:"error"`
}

// text returns the first text content of a tools/call result.
func (r rpcReply) text(t *testing.T) string {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("call failed: %d %s", r.Error.Code, r.Error.Message)
	}
	var res mcp.CallToolResult
	if err := json.Unmarshal(r.Result, &res); err != nil || len(res.Content) == 0 {
		t.Fatalf("result %s is not a tool result with content: %v", r.Result, err)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("result %s has no text content", r.Result)
	}
	return tc.Text
}

// rawSession is a WebSocket session through the gateway driven frame by
// frame, so tests can send what no SDK would.
type rawSession struct {
	t      *testing.T
	c      *websocket.Conn
	nextID int
}

// dialRaw opens a WebSocket to the gateway for target, speaking "mcp".
func dialRaw(t *testing.T, n *Node, target string, header http.Header) *rawSession {
	t.Helper()
	ctx := testContext(t, 10*time.Second)
	c, _, err := websocket.Dial(ctx, sessionURL(n, "ws", target, "org1", "acct1"), &websocket.DialOptions{
		Subprotocols: []string{transport.Subprotocol},
		HTTPHeader:   header,
	})
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	if got, want := c.Subprotocol(), transport.Subprotocol; got != want {
		t.Fatalf("subprotocol=%q, want %q", got, want)
	}
	return &rawSession{t: t, c: c}
}

func (s *rawSession) write(typ websocket.MessageType, data []byte) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.c.Write(ctx, typ, data); err != nil {
		s.t.Fatalf("write frame: %v", err)
	}
}

// read returns the next message that is not a notification.
func (s *rawSession) read() rpcReply {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, data, err := s.c.Read(ctx)
		if err != nil {
			s.t.Fatalf("read frame: %v", err)
		}
		var r rpcReply
		if err := json.Unmarshal(data, &r); err != nil {
			s.t.Fatalf("gateway sent %q: %v", data, err)
		}
		if r.Method != "" && len(r.ID) == 0 {
			continue
		}
		return r
	}
}

func (s *rawSession) notify(method string, params any) {
	s.t.Helper()
	data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params})
	s.write(websocket.MessageText, data)
}

// call sends a request and returns its response, which must be the next
// message that is not a notification.
func (s *rawSession) call(method string, params any) rpcReply {
	s.t.Helper()
	s.nextID++
	data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": s.nextID, "method": method, "params": params})
	s.write(websocket.MessageText, data)
	r := s.read()
	if got, want := string(r.ID), jsonString(s.nextID); got != want {
		s.t.Fatalf("%s: got a reply with id %s (error %v), want id %s", method, got, r.Error, want)
	}
	return r
}

func (s *rawSession) initialize() {
	s.t.Helper()
	r := s.call("initialize", map[string]any{
		"protocolVersion": "2025-11-25",
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": "raw", "version": "1"},
	})
	if r.Error != nil {
		s.t.Fatalf("initialize: %d %s", r.Error.Code, r.Error.Message)
	}
	s.notify("notifications/initialized", map[string]any{})
}

func (s *rawSession) echo(text string) string {
	s.t.Helper()
	return s.call("tools/call", map[string]any{"name": "echo", "arguments": map[string]any{"text": text}}).text(s.t)
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// decodeRefusal reads the JSON-RPC error body of an HTTP refusal.
func decodeRefusal(t *testing.T, resp *http.Response) *jsonrpc.Error {
	t.Helper()
	if got, want := resp.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("refusal Content-Type=%q, want %q", got, want)
	}
	body, _ := io.ReadAll(resp.Body)
	var r rpcReply
	if err := json.Unmarshal(body, &r); err != nil || r.Error == nil {
		t.Fatalf("HTTP %d body %q is not a JSON-RPC error: %v", resp.StatusCode, body, err)
	}
	return r.Error
}

func checkMessage(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("message %q does not contain %q", msg, p)
		}
	}
}

// postJSON POSTs body to the streamable endpoint as a client would, with
// extra header name/value pairs.
func postJSON(t *testing.T, rawURL, host, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, 10*time.Second), http.MethodPost, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] != "" {
			req.Header.Set(header[i], header[i+1])
		}
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", rawURL, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// gaugeValue reads a gauge.
func gaugeValue(t testing.TB, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// metricValue returns the value of the counter or gauge name on n's
// registry (what /metrics shows) whose labels have the given name, value
// pairs; 0 when there is none.
func metricValue(t testing.TB, n *Node, name string, labels ...string) float64 {
	t.Helper()
	m, ok := seriesOf(t, n, name, labels...)
	if !ok {
		return 0
	}
	return m.GetCounter().GetValue() + m.GetGauge().GetValue()
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}
