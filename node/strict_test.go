package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// recordingUpstream is a real go-sdk server with a tool the rules allow
// (echo), one they deny (delete_repo) and one that waits to be cancelled
// (slow). It records every tool it runs and the routing headers of every
// POST it receives.
type recordingUpstream struct {
	srv       *mcp.Server
	cancelled atomic.Int32 // slow calls that saw their cancellation

	mu      sync.Mutex
	ran     []string      // tools run, in order; guarded by mu
	headers []http.Header // routing headers of each POST; guarded by mu
}

func newRecordingUpstream() *recordingUpstream {
	u := &recordingUpstream{srv: mcp.NewServer(&mcp.Implementation{Name: "recording", Version: "1"}, nil)}
	record := func(name string) {
		u.mu.Lock()
		u.ran = append(u.ran, name)
		u.mu.Unlock()
	}
	for _, name := range []string{"echo", "delete_repo"} {
		mcp.AddTool(u.srv, &mcp.Tool{Name: name}, func(ctx context.Context, req *mcp.CallToolRequest, a upstreamtest.EchoArgs) (*mcp.CallToolResult, any, error) {
			record(name)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + ": " + a.Text}}}, nil, nil
		})
	}
	mcp.AddTool(u.srv, &mcp.Tool{Name: "slow"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		record("slow")
		select {
		case <-ctx.Done():
			u.cancelled.Add(1)
			return nil, nil, ctx.Err()
		case <-time.After(20 * time.Second):
			return &mcp.CallToolResult{}, nil, nil
		}
	})
	return u
}

// handler serves the server over streamable HTTP, recording headers.
func (u *recordingUpstream) handler(stateless bool) http.Handler {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.srv }, &mcp.StreamableHTTPOptions{Stateless: stateless})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			rh := http.Header{}
			for k, vs := range r.Header {
				if strings.HasPrefix(k, "Mcp-") {
					rh[k] = vs
				}
			}
			u.mu.Lock()
			u.headers = append(u.headers, rh)
			u.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (u *recordingUpstream) ranTools() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.ran...)
}

// gatewayWithRules starts a node with route "up" to u and rules that allow
// echo and slow and deny delete_repo.
func gatewayWithRules(t *testing.T, u *recordingUpstream, stateless bool) (*Node, storage.Route) {
	t.Helper()
	upURL := upstreamtest.StartHTTP(t, u.handler(stateless)) + "/mcp"
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "up", URL: upURL})
	for _, r := range []storage.Rule{
		{ID: "allow-echo", Service: "test-svc", Org: "*", Account: "*", Route: "up", Tool: "echo", Effect: "allow"},
		{ID: "allow-slow", Service: "test-svc", Org: "*", Account: "*", Route: "up", Tool: "slow", Effect: "allow"},
		{ID: "deny-delete", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "delete_repo", Effect: "deny"},
	} {
		if resp := adminDo(t, n, http.MethodPost, "/v1/rules", r); resp.StatusCode != http.StatusOK {
			t.Fatalf("put rule %s: HTTP %d", r.ID, resp.StatusCode)
		}
	}
	return n, route
}

// ambiguousToolCalls are tools/call params that name delete_repo to the
// go-sdk upstream and could read as echo to a lenient decoder, with the
// refusal each must get.
var ambiguousToolCalls = []struct {
	name, params, msg string
}{
	{name: "case variant", params: `{"name":"delete_repo","Name":"echo","arguments":{"text":"x"}}`,
		msg: `key "Name" in params of tools/call is a case variant of "name" and refused; send each key once, spelled exactly`},
	{name: "duplicate", params: `{"name":"echo","name":"delete_repo","arguments":{"text":"x"}}`,
		msg: `duplicate key "name" in params of tools/call refused; send each key once, spelled exactly`},
	{name: "escaped key", params: `{"name":"echo","n\u0061me":"delete_repo","arguments":{"text":"x"}}`,
		msg: `key "name" in params of tools/call is written with escape sequences and refused; send each key once, spelled exactly`},
}

// TestStrictToolNameWebSocket: a tools/call whose name a lenient decoder
// reads differently from the upstream is refused with -32600 naming the
// field, over a real WebSocket session to a real go-sdk upstream, and the
// upstream never runs the tool the rules deny.
func TestStrictToolNameWebSocket(t *testing.T) {
	u := newRecordingUpstream()
	n, route := gatewayWithRules(t, u, false)
	s := dialRaw(t, n, route.URL, nil)
	s.initialize()
	if got := s.call("tools/call", map[string]any{"name": "delete_repo"}); got.Error == nil || got.Error.Code != transport.CodeForbidden {
		t.Fatalf("plain delete_repo: %+v, want forbidden", got.Error)
	}
	for i, tc := range ambiguousToolCalls {
		t.Run(tc.name, func(t *testing.T) {
			id := 100 + i
			s.write(websocket.MessageText, []byte(`{"jsonrpc":"2.0","id":`+jsonString(id)+`,"method":"tools/call","params":`+tc.params+`}`))
			r := s.read()
			if got, want := string(r.ID), jsonString(id); got != want {
				t.Fatalf("reply id %s, want %s", got, want)
			}
			if r.Error == nil || r.Error.Code != jsonrpc.CodeInvalidRequest || r.Error.Message != tc.msg {
				t.Fatalf("reply %+v, want -32600 %q", r.Error, tc.msg)
			}
		})
	}
	// The session goes on, and the upstream ran only echo.
	if got, want := s.call("tools/call", map[string]any{"name": "echo", "arguments": map[string]any{"text": "hi"}}).text(t), "echo: hi"; got != want {
		t.Fatalf("echo=%q, want %q", got, want)
	}
	if got, want := strings.Join(u.ranTools(), ","), "echo"; got != want {
		t.Fatalf("upstream ran %q, want %q", got, want)
	}
}

// TestStrictToolNameStreamable is TestStrictToolNameWebSocket over the
// gateway's streamable HTTP endpoint.
func TestStrictToolNameStreamable(t *testing.T) {
	u := newRecordingUpstream()
	n, _ := gatewayWithRules(t, u, false)
	endpoint := streamableEndpoint(n, "up")
	sid := openStreamableSession(t, endpoint)
	for i, tc := range ambiguousToolCalls {
		t.Run(tc.name, func(t *testing.T) {
			id := 100 + i
			resp := streamableRequest(t, http.MethodPost, endpoint, "application/json", sid,
				`{"jsonrpc":"2.0","id":`+jsonString(id)+`,"method":"tools/call","params":`+tc.params+`}`)
			r := readPOSTReply(t, resp)
			if got, want := string(r.ID), jsonString(id); got != want {
				t.Fatalf("reply id %s, want %s", got, want)
			}
			if r.Error == nil || r.Error.Code != jsonrpc.CodeInvalidRequest || r.Error.Message != tc.msg {
				t.Fatalf("reply %+v, want -32600 %q", r.Error, tc.msg)
			}
		})
	}
	resp := streamableRequest(t, http.MethodPost, endpoint, "application/json", sid,
		`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`)
	if got, want := readPOSTReply(t, resp).text(t), "echo: hi"; got != want {
		t.Fatalf("echo=%q, want %q", got, want)
	}
	if got, want := strings.Join(u.ranTools(), ","), "echo"; got != want {
		t.Fatalf("upstream ran %q, want %q", got, want)
	}
}

// TestStrictCancellation: a cancellation whose requestId is spelled twice
// is refused (answered with -32600, id null) and not forwarded: the call
// stays running upstream and tracked by the gateway, and a well-formed
// cancellation still ends it.
func TestStrictCancellation(t *testing.T) {
	u := newRecordingUpstream()
	n, route := gatewayWithRules(t, u, false)
	s := dialRaw(t, n, route.URL, nil)
	s.initialize()
	s.write(websocket.MessageText, []byte(`{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"slow"}}`))
	waitFor(t, "the upstream to start slow", func() bool { return len(u.ranTools()) == 1 })

	for _, tc := range []struct{ params, msg string }{
		{`{"requestId":21,"RequestId":20}`, `key "RequestId" in params of notifications/cancelled is a case variant of "requestId" and refused; send each key once, spelled exactly`},
		{`{"requestId":20,"requestId":21}`, `duplicate key "requestId" in params of notifications/cancelled refused; send each key once, spelled exactly`},
	} {
		s.write(websocket.MessageText, []byte(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":`+tc.params+`}`))
		r := s.read()
		if got, want := string(r.ID), "null"; got != want {
			t.Fatalf("%s: reply id %s, want %s", tc.params, got, want)
		}
		if r.Error == nil || r.Error.Code != jsonrpc.CodeInvalidRequest || r.Error.Message != tc.msg {
			t.Fatalf("%s: reply %+v, want -32600 %q", tc.params, r.Error, tc.msg)
		}
	}
	// Had either been forwarded, the go-sdk upstream would have cancelled
	// call 20 (it reads requestId exactly, the last of duplicates). A ping
	// through the same session orders after the cancellations.
	if r := s.call("ping", map[string]any{}); r.Error != nil {
		t.Fatalf("ping: %v", r.Error)
	}
	if got := u.cancelled.Load(); got != 0 {
		t.Fatalf("upstream cancelled %d calls on a refused cancellation", got)
	}
	s.notify("notifications/cancelled", map[string]any{"requestId": 20})
	waitFor(t, "the upstream to see the cancellation", func() bool { return u.cancelled.Load() == 1 })
}

// headerRewriter sets headers on every POST whose body is a tools/call,
// as a caller sending routing headers of its own would.
type headerRewriter struct {
	set http.Header
}

func (h headerRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && r.Header.Get(transport.HeaderMethod) == "tools/call" {
		r = r.Clone(r.Context())
		for k, vs := range h.set {
			r.Header[k] = vs
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestRoutingHeaders: over the 2026-07-28 protocol, a caller's Mcp-Name
// that disagrees with the body is refused with -32020 naming the header
// and the body's value, and the upstream runs nothing; headers that agree
// pass, and the upstream receives routing headers derived from the body,
// never the caller's.
func TestRoutingHeaders(t *testing.T) {
	u := newRecordingUpstream()
	n, _ := gatewayWithRules(t, u, true)
	connect := func(t *testing.T, set http.Header) *mcp.ClientSession {
		t.Helper()
		ctx := testContext(t, 20*time.Second)
		c := mcp.NewClient(&mcp.Implementation{Name: "headers-test", Version: "1"}, nil)
		sess, err := c.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint:   streamableEndpoint(n, "up"),
			HTTPClient: &http.Client{Transport: headerRewriter{set: set}},
		}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { sess.Close() })
		if got, want := sess.InitializeResult().ProtocolVersion, "2026-07-28"; got != want {
			t.Fatalf("negotiated %s, want %s", got, want)
		}
		return sess
	}

	t.Run("mismatch", func(t *testing.T) {
		sess := connect(t, http.Header{"Mcp-Name": {"delete_repo"}})
		_, err := sess.CallTool(testContext(t, 20*time.Second), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
		var werr *jsonrpc.Error
		if !errors.As(err, &werr) || werr.Code != transport.CodeHeaderMismatch ||
			werr.Message != `Mcp-Name header "delete_repo" does not match the body's params.name "echo"; send the headers the body implies, or none` {
			t.Fatalf("CallTool: %v, want -32020 naming Mcp-Name", err)
		}
		if got := u.ranTools(); len(got) != 0 {
			t.Fatalf("upstream ran %q on a refused call", got)
		}
	})

	t.Run("caller headers are not forwarded", func(t *testing.T) {
		sess := connect(t, http.Header{"Mcp-Param-Repo": {"victim/repo"}})
		u.mu.Lock()
		u.headers = nil
		u.mu.Unlock()
		res, err := sess.CallTool(testContext(t, 20*time.Second), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.Content[0].(*mcp.TextContent).Text, "echo: x"; got != want {
			t.Fatalf("echo=%q, want %q", got, want)
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		var calls []http.Header
		for _, h := range u.headers {
			if h.Get(transport.HeaderMethod) == "tools/call" {
				calls = append(calls, h)
			}
		}
		if len(calls) != 1 {
			t.Fatalf("upstream got %d tools/call POSTs, want 1 (headers %v)", len(calls), u.headers)
		}
		if got, want := calls[0].Get(transport.HeaderName), "echo"; got != want {
			t.Fatalf("upstream Mcp-Name=%q, want %q", got, want)
		}
		if got := calls[0].Values("Mcp-Param-Repo"); len(got) != 0 {
			t.Fatalf("upstream received the caller's Mcp-Param-Repo %q", got)
		}
	})
}

// hostileUpstream is a streamable HTTP MCP server written by hand, so it
// can answer what no SDK server would: a tools/list whose tool has two
// spellings of "name", and a tools/call result with two of "isError".
func hostileUpstream(t *testing.T) string {
	t.Helper()
	return upstreamtest.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.ID) == 0 {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		result := `{}`
		switch req.Method {
		case "initialize":
			result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"hostile","version":"1"}}`
		case "tools/list":
			result = `{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_repo","Name":"echo","inputSchema":{"type":"object"}}]}`
		case "tools/call":
			result = `{"content":[],"isError":true,"IsError":false}`
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":` + result + `}`))
	})) + "/mcp"
}

// TestStrictUpstreamResults: a tools/list result the client would read as
// listing delete_repo, which the gateway's rules hide, fails the call
// instead of being filtered by another reading; so does a tools/call
// result whose isError the audit log could read differently from the
// client.
func TestStrictUpstreamResults(t *testing.T) {
	upURL := hostileUpstream(t)
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "up", URL: upURL})
	for _, r := range []storage.Rule{
		{ID: "allow-echo", Service: "test-svc", Org: "*", Account: "*", Route: "up", Tool: "echo", Effect: "allow"},
		{ID: "deny-delete", Service: "*", Org: "*", Account: "*", Route: "up", Tool: "delete_repo", Effect: "deny"},
	} {
		if resp := adminDo(t, n, http.MethodPost, "/v1/rules", r); resp.StatusCode != http.StatusOK {
			t.Fatalf("put rule %s: HTTP %d", r.ID, resp.StatusCode)
		}
	}
	s := dialRaw(t, n, route.URL, nil)
	s.initialize()
	r := s.call("tools/list", map[string]any{})
	if r.Error == nil || r.Error.Code != transport.CodeUpstreamError ||
		!strings.Contains(r.Error.Message, `key "Name" in tool 1 of the result of tools/list is a case variant of "name" and refused`) {
		t.Fatalf("tools/list: result %s error %+v, want the upstream error naming the tool's key", r.Result, r.Error)
	}
	r = s.call("tools/call", map[string]any{"name": "echo"})
	if r.Error == nil || r.Error.Code != transport.CodeUpstreamError ||
		!strings.Contains(r.Error.Message, `key "IsError" in the result of tools/call is a case variant of "isError" and refused`) {
		t.Fatalf("tools/call: result %s error %+v, want the upstream error naming isError", r.Result, r.Error)
	}
}

// TestStrictOpenFrameUnix: over a real Unix socket, an open frame with a
// duplicate or case-variant key is refused with -32600 naming the key,
// even when the last spelling holds a valid token.
func TestStrictOpenFrameUnix(t *testing.T) {
	n, _ := gatewayTo(t)
	tok := testToken(n)
	tests := []struct{ name, frame, msg string }{
		{name: "duplicate token", frame: `{"route":"up","org":"org1","account":"acct1","token":"forged","token":"` + tok + `"}`,
			msg: `duplicate key "token" in the open frame refused; send each key once, spelled exactly`},
		{name: "case-variant token", frame: `{"route":"up","org":"org1","account":"acct1","token":"forged","Token":"` + tok + `"}`,
			msg: `key "Token" in the open frame is a case variant of "token" and refused; send each key once, spelled exactly`},
		{name: "case-variant org", frame: `{"route":"up","org":"org1","Org":"org2","account":"acct1","token":"` + tok + `"}`,
			msg: `key "Org" in the open frame is a case variant of "org" and refused; send each key once, spelled exactly`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", n.cfg.UnixPath)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte(tc.frame + "\n")); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadBytes('\n')
			if err != nil {
				t.Fatalf("read open reply: %v", err)
			}
			var reply transport.OpenReply
			if err := json.Unmarshal(line, &reply); err != nil {
				t.Fatalf("open reply %q: %v", line, err)
			}
			if reply.OK || reply.Code != jsonrpc.CodeInvalidRequest || reply.Error != tc.msg {
				t.Fatalf("open reply %+v, want -32600 %q", reply, tc.msg)
			}
		})
	}
}
