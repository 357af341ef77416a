package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// modernUpstream is a go-sdk server over stateless streamable HTTP (the one
// way the go-sdk serves 2026-07-28) and over stateful streamable HTTP,
// whose results carry cache hints, with a tool that asks for input through
// a multi-round-trip input_required result.
type modernUpstream struct {
	srv       *mcp.Server
	stateless string // URL of the stateless handler
	stateful  string // URL of the stateful handler

	toolsLists atomic.Int32 // tools/list requests that reached the server

	mu    sync.Mutex
	calls []string // "ask" calls as "first" (no inputResponses) or "retry:<name>"; guarded by mu
}

func newModernUpstream(t *testing.T) *modernUpstream {
	t.Helper()
	m := &modernUpstream{}
	m.srv = mcp.NewServer(&mcp.Implementation{Name: "modern", Version: "1"}, &mcp.ServerOptions{
		SetCacheable: func(ctx context.Context, req mcp.Request, c *mcp.Cacheable) {
			// Tool lists here depend on the caller; discovery does not.
			c.TTLMs, c.CacheScope = 60000, "private"
			if _, ok := req.(*mcp.DiscoverRequest); ok {
				c.TTLMs, c.CacheScope = 300000, "public"
			}
			if _, ok := req.(*mcp.ListToolsRequest); ok {
				m.toolsLists.Add(1)
			}
		},
	})
	mcp.AddTool(m.srv, &mcp.Tool{Name: "ask", Description: "asks the caller's name through input_required, then greets"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if r, ok := req.Params.InputResponses["name"].(*mcp.ElicitResult); ok {
			name := fmt.Sprint(r.Content["name"])
			m.record("retry:" + name)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello " + name}}}, nil, nil
		}
		m.record("first")
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"name": &mcp.ElicitParams{
			Mode:    "form",
			Message: "Your name?",
			RequestedSchema: map[string]any{
				"type":       "object",
				"properties": map[string]any{"name": map[string]any{"type": "string"}},
				"required":   []string{"name"},
			},
		}}}, nil, nil
	})
	mcp.AddTool(m.srv, &mcp.Tool{Name: "add_tool", Description: "adds a tool, so the server announces tools/list_changed"}, func(ctx context.Context, req *mcp.CallToolRequest, a upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
		mcp.AddTool(m.srv, &mcp.Tool{Name: a.Text}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "added"}}}, nil, nil
	})
	m.stateless = upstreamtest.StartHTTP(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return m.srv }, &mcp.StreamableHTTPOptions{Stateless: true})) + "/mcp"
	m.stateful = upstreamtest.StartHTTP(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return m.srv }, nil)) + "/mcp"
	return m
}

func (m *modernUpstream) record(s string) {
	m.mu.Lock()
	m.calls = append(m.calls, s)
	m.mu.Unlock()
}

func (m *modernUpstream) askCalls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.calls...)
}

// modernPOST sends one stateless 2026-07-28 request to endpoint and returns
// the JSON-RPC result it gets, from a JSON or an event-stream body.
func modernPOST(t *testing.T, endpoint, method, params string) json.RawMessage {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":%s}`, method, params)
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	var named struct {
		Name string `json:"name"`
	}
	if json.Unmarshal([]byte(params), &named) == nil && named.Name != "" {
		req.Header.Set("Mcp-Name", named.Name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", method, resp.StatusCode, data)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for _, line := range strings.Split(string(data), "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(d, `"id":1`) {
				data = []byte(d)
			}
		}
	}
	var msg struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(data, &msg); err != nil || msg.Result == nil {
		t.Fatalf("%s: no result in %s (%v)", method, data, err)
	}
	return msg.Result
}

const modernMeta = `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}`

// TestModernResultsUnchanged: server/discover and a list result, with the
// upstream's ttlMs and cacheScope, reach a 2026-07-28 caller through the
// gateway byte for byte as the upstream sent them; and the gateway caches
// nothing, so a private result is never served to another caller.
func TestModernResultsUnchanged(t *testing.T) {
	up := newModernUpstream(t)
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "modern", URL: up.stateless})
	via := streamableEndpoint(n, "modern")
	for _, method := range []string{"server/discover", "tools/list"} {
		t.Run(method, func(t *testing.T) {
			direct := modernPOST(t, up.stateless, method, modernMeta)
			got := modernPOST(t, via, method, modernMeta)
			if !bytes.Equal(direct, got) {
				t.Fatalf("through the gateway:\n%s\ndirect:\n%s", got, direct)
			}
			var c mcp.Cacheable
			if err := json.Unmarshal(got, &c); err != nil || c.TTLMs == 0 || c.CacheScope == "" {
				t.Fatalf("result %s lacks the upstream's ttlMs/cacheScope (%v)", got, err)
			}
		})
	}
	// A second service asks for the private tool list: the upstream
	// answers it, not a cache.
	other := issueToken(t, n, "other-svc", []string{"*"}, "1h").Token
	before := up.toolsLists.Load()
	res := modernPOST(t, "http://"+n.HTTPAddr()+"/v1/mcp/modern?org=org2&account=acct2&access_token="+url.QueryEscape(other), "tools/list", modernMeta)
	if got, want := up.toolsLists.Load()-before, int32(1); got != want {
		t.Fatalf("upstream answered %d tools/list for the second caller, want %d (nothing served from a cache)", got, want)
	}
	if !strings.Contains(string(res), `"cacheScope":"private"`) {
		t.Fatalf("tools/list result %s lost its private scope", res)
	}
}

// TestModernMultiRoundTrip: a 2026-07-28 tool that needs input answers
// input_required with inputRequests; the go-sdk client fulfils them and
// retries with inputResponses, through the gateway, on each downstream.
// A 2025-11-25 or 2024-11-05 client reaches the same tool on a stateful
// upstream, whose SDK turns the input request into an elicitation/create
// sent to the client. (A legacy client of a stateless upstream cannot: a
// stateless legacy session has no way to send the client a request; see
// TestModernLegacyClientStatelessUpstream.)
func TestModernMultiRoundTrip(t *testing.T) {
	tests := []struct {
		down, protocol string
		stateful       bool
	}{
		{"streamable", "2026-07-28", false},
		{"websocket", "2026-07-28", false},
		{"quic", "2026-07-28", false},
		{"unix", "2026-07-28", false},
		{"sse", "2026-07-28", false},
		{"streamable", "2025-11-25", true},
		{"websocket", "2025-11-25", true},
		{"sse", "2024-11-05", true},
	}
	for _, tc := range tests {
		t.Run(tc.down+"/"+tc.protocol, func(t *testing.T) {
			up := newModernUpstream(t)
			n := startNode(t)
			u := up.stateless
			if tc.stateful {
				u = up.stateful
			}
			route := addRoute(t, n, storage.Route{Name: "modern", URL: u})
			ctx := testContext(t, 20*time.Second)
			var elicited atomic.Int32
			sess := connectVia(t, ctx, n, tc.down, route, tc.protocol, &mcp.ClientOptions{
				ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
					elicited.Add(1)
					return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
				},
			})
			if got := sess.InitializeResult().ProtocolVersion; got != tc.protocol {
				t.Fatalf("negotiated %s, want %s", got, tc.protocol)
			}
			if got, want := toolText(t, ctx, sess, "ask", nil), "hello Ada"; got != want {
				t.Fatalf("ask=%q, want %q", got, want)
			}
			if got, want := elicited.Load(), int32(1); got != want {
				t.Fatalf("client fulfilled %d input requests, want %d", got, want)
			}
			// Modern: input_required, then the client's retry with
			// inputResponses. Legacy: the server SDK sends elicitation/create
			// and runs the handler again with the answer.
			want := "[first retry:Ada]"
			if got := fmt.Sprint(up.askCalls()); got != want {
				t.Fatalf("upstream saw calls %s, want %s", got, want)
			}
		})
	}
}

// TestModernRawInputRequired: the input_required result and the retry
// carrying inputResponses pass the gateway unchanged, as a client that runs
// the multi-round-trip loop itself sees them.
func TestModernRawInputRequired(t *testing.T) {
	up := newModernUpstream(t)
	n := startNode(t)
	addRoute(t, n, storage.Route{Name: "modern", URL: up.stateless})
	via := streamableEndpoint(n, "modern")
	params := strings.TrimSuffix(modernMeta, "}") + `,"name":"ask","arguments":{}}`
	direct := modernPOST(t, up.stateless, "tools/call", params)
	got := modernPOST(t, via, "tools/call", params)
	if !bytes.Equal(direct, got) {
		t.Fatalf("input_required through the gateway:\n%s\ndirect:\n%s", got, direct)
	}
	var res struct {
		ResultType    string                     `json:"resultType"`
		InputRequests map[string]json.RawMessage `json:"inputRequests"`
	}
	if err := json.Unmarshal(got, &res); err != nil || res.ResultType != "input_required" || res.InputRequests["name"] == nil {
		t.Fatalf("result %s is not input_required with inputRequests.name (%v)", got, err)
	}
	retry := strings.TrimSuffix(modernMeta, "}") + `,"name":"ask","arguments":{},"inputResponses":{"name":{"action":"accept","content":{"name":"Grace"}}}}`
	final := modernPOST(t, via, "tools/call", retry)
	if !strings.Contains(string(final), `"text":"hello Grace"`) || !strings.Contains(string(final), `"resultType":"complete"`) {
		t.Fatalf("retry with inputResponses answered %s, want a complete greeting", final)
	}
}

// TestModernSubscriptionsListen: a 2026-07-28 client that wants
// tools/list_changed opens subscriptions/listen while connecting; the
// notification the upstream sends on it reaches the client through the
// gateway.
func TestModernSubscriptionsListen(t *testing.T) {
	for _, down := range []string{"streamable", "websocket", "sse"} {
		t.Run(down, func(t *testing.T) {
			up := newModernUpstream(t)
			n := startNode(t)
			route := addRoute(t, n, storage.Route{Name: "modern", URL: up.stateless})
			ctx := testContext(t, 20*time.Second)
			changed := make(chan struct{}, 1)
			acked := make(chan struct{}, 1)
			c := mcp.NewClient(&mcp.Implementation{Name: "listen-test", Version: "1"}, &mcp.ClientOptions{
				ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
					select {
					case changed <- struct{}{}:
					default:
					}
				},
			})
			// The client opens the stream without waiting for it; the
			// upstream's acknowledgement says it is listening.
			c.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
				return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
					if method == "notifications/subscriptions/acknowledged" {
						select {
						case acked <- struct{}{}:
						default:
						}
					}
					return next(ctx, method, req)
				}
			})
			sess := connectWith(t, ctx, n, down, route, "2026-07-28", c)
			if got := sess.InitializeResult().ProtocolVersion; got != "2026-07-28" {
				t.Fatalf("negotiated %s, want 2026-07-28", got)
			}
			receive(t, ctx, acked, "notifications/subscriptions/acknowledged")
			toolText(t, ctx, sess, "add_tool", map[string]any{"text": "late"})
			receive(t, ctx, changed, "tools/list_changed on the subscriptions/listen stream")
		})
	}
}

// TestModernLegacyClientStatelessUpstream pins down the one combination the
// go-sdk does not carry: a legacy (2025-11-25) client calling a tool that
// needs input on a stateless upstream gets an error result, through the
// gateway as without it, since a stateless legacy session cannot send the
// client an elicitation request.
func TestModernLegacyClientStatelessUpstream(t *testing.T) {
	up := newModernUpstream(t)
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "modern", URL: up.stateless})
	ctx := testContext(t, 20*time.Second)
	elicit := func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
	}
	outcome := func(sess *mcp.ClientSession) string {
		res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "ask", Arguments: map[string]any{}})
		switch {
		case err != nil:
			return "error"
		case res.IsError:
			return "error result"
		default:
			return "ok"
		}
	}
	direct, err := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, &mcp.ClientOptions{ElicitationHandler: elicit}).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: up.stateless}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	want := outcome(direct)
	if want == "ok" {
		t.Fatal("the direct call succeeded; the go-sdk now carries this combination, update the README matrix")
	}
	t.Logf("direct: %s", want)
	via := connectVia(t, ctx, n, "streamable", route, "2025-11-25", &mcp.ClientOptions{ElicitationHandler: elicit})
	if got := outcome(via); got != want {
		t.Fatalf("through the gateway: %s, direct: %s", got, want)
	}
}
