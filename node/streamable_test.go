package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// streamableEndpoint is the gateway's streamable HTTP endpoint for a route.
func streamableEndpoint(n *Node, route string) string {
	return "http://" + n.HTTPAddr() + "/v1/mcp/" + route + "?org=org1&account=acct1&access_token=" + url.QueryEscape(testToken(n))
}

// connectStreamable opens a go-sdk client session through the gateway's
// streamable HTTP endpoint.
func connectStreamable(t *testing.T, ctx context.Context, n *Node, route, protocol string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "streamable-test", Version: "1"}, opts)
	var sopts *mcp.ClientSessionOptions
	if protocol != "" {
		sopts = &mcp.ClientSessionOptions{ProtocolVersion: protocol}
	}
	sess, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: streamableEndpoint(n, route)}, sopts)
	if err != nil {
		t.Fatalf("Connect over streamable HTTP: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

func echo(t *testing.T, ctx context.Context, sess *mcp.ClientSession, text string) {
	t.Helper()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		t.Fatalf("CallTool echo: %v", err)
	}
	if got, want := res.Content[0].(*mcp.TextContent).Text, text; got != want {
		t.Fatalf("echo=%q, want %q", got, want)
	}
}

func TestStreamableDownstream(t *testing.T) {
	n, _ := gatewayTo(t)
	ctx := testContext(t, 20*time.Second)
	listChanged := make(chan struct{}, 1)
	sess := connectStreamable(t, ctx, n, "up", "2025-11-25", &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		},
	})
	if got, want := sess.InitializeResult().ProtocolVersion, "2025-11-25"; got != want {
		t.Fatalf("negotiated %s, want %s", got, want)
	}
	echo(t, ctx, sess, "over streamable")
	if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "add_tool", Arguments: map[string]any{"text": "late_tool"}}); err != nil {
		t.Fatalf("CallTool add_tool: %v", err)
	}
	select {
	case <-listChanged:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed notification arrived over streamable HTTP")
	}
	tools, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("ListTools: %v", err)
	}
	found := false
	for _, tool := range tools.Tools {
		found = found || tool.Name == "late_tool"
	}
	if !found {
		t.Fatal("ListTools after list_changed does not list late_tool")
	}
}

// TestStreamableModernProtocol runs a client asking for the stateless
// 2026-07-28 protocol through the streamable endpoint: a stateless upstream
// speaks it; a stateful one makes the client fall back to initialize.
func TestStreamableModernProtocol(t *testing.T) {
	tests := []struct {
		name    string
		handler func(*upstreamtest.Server) http.Handler
		want    string
	}{
		{name: "stateless upstream", handler: (*upstreamtest.Server).StatelessHandler, want: "2026-07-28"},
		{name: "stateful upstream", handler: (*upstreamtest.Server).StreamableHandler, want: "2025-11-25"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := upstreamtest.New()
			upURL := upstreamtest.StartHTTP(t, tc.handler(up)) + "/mcp"
			n := startNode(t)
			addRoute(t, n, storage.Route{Name: "up", URL: upURL})
			ctx := testContext(t, 20*time.Second)
			sess := connectStreamable(t, ctx, n, "up", "2026-07-28", nil)
			if got, want := sess.InitializeResult().ProtocolVersion, tc.want; got != want {
				t.Fatalf("negotiated %s, want %s", got, want)
			}
			echo(t, ctx, sess, "first")
			echo(t, ctx, sess, "second")
			tools, err := sess.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("ListTools: %v", err)
			}
			if got, want := len(tools.Tools), 9; got != want {
				t.Fatalf("ListTools returned %d tools, want %d", got, want)
			}
		})
	}
}

// streamableRequest sends one raw request to the streamable endpoint.
func streamableRequest(t *testing.T, method, rawURL, contentType, sessionID, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, 10*time.Second), method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sessionID != "" {
		req.Header.Set(transport.HeaderSessionID, sessionID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readPOSTReply reads the JSON-RPC message a POST was answered with: its
// JSON body (a lone call answered at once) or the first event of its event
// stream.
func readPOSTReply(t *testing.T, resp *http.Response) rpcReply {
	t.Helper()
	switch ct := resp.Header.Get("Content-Type"); ct {
	case "application/json":
		var r rpcReply
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatalf("JSON answer: %v", err)
		}
		return r
	case "text/event-stream":
	default:
		t.Fatalf("Content-Type=%q, want application/json or text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var r rpcReply
			if err := json.Unmarshal([]byte(data), &r); err != nil {
				t.Fatalf("event data %q: %v", data, err)
			}
			return r
		}
	}
	t.Fatalf("event stream ended without a message: %v", sc.Err())
	return rpcReply{}
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// openStreamableSession initializes a session by hand and returns its id.
func openStreamableSession(t *testing.T, endpoint string) string {
	t.Helper()
	resp := streamableRequest(t, http.MethodPost, endpoint, "application/json", "", initializeBody)
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("initialize: HTTP %d, want %d", got, want)
	}
	id := resp.Header.Get(transport.HeaderSessionID)
	if id == "" {
		t.Fatal("initialize answered without a session id")
	}
	if r := readPOSTReply(t, resp); r.Error != nil {
		t.Fatalf("initialize: %v", r.Error.Message)
	}
	resp = streamableRequest(t, http.MethodPost, endpoint, "application/json", id, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if got, want := resp.StatusCode, http.StatusAccepted; got != want {
		t.Fatalf("notifications/initialized: HTTP %d, want %d", got, want)
	}
	return id
}

func TestStreamableBadRequests(t *testing.T) {
	n, _ := gatewayTo(t, func(c *Config) { c.MaxMessageBytes = 64 << 10 })
	endpoint := streamableEndpoint(n, "up")
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", 64<<10) + `"}}}`
	tests := []struct {
		name        string
		method      string
		contentType string
		sessionID   string
		body        string
		status      int
		code        int64
		message     []string
	}{
		{name: "text/plain body", method: http.MethodPost, contentType: "text/plain", body: initializeBody,
			status: http.StatusUnsupportedMediaType, code: jsonrpc.CodeInvalidRequest, message: []string{"Content-Type: application/json"}},
		{name: "no Content-Type", method: http.MethodPost, body: initializeBody,
			status: http.StatusUnsupportedMediaType, code: jsonrpc.CodeInvalidRequest, message: []string{"Content-Type: application/json"}},
		{name: "unknown session", method: http.MethodPost, contentType: "application/json", sessionID: "no-such-session", body: `{"jsonrpc":"2.0","id":2,"method":"ping"}`,
			status: http.StatusNotFound, code: jsonrpc.CodeInvalidRequest, message: []string{"unknown or expired session", "send initialize"}},
		{name: "DELETE unknown session", method: http.MethodDelete, sessionID: "no-such-session",
			status: http.StatusNotFound, code: jsonrpc.CodeInvalidRequest, message: []string{"unknown or expired session"}},
		{name: "DELETE without a session", method: http.MethodDelete,
			status: http.StatusBadRequest, code: jsonrpc.CodeInvalidRequest, message: []string{"missing Mcp-Session-Id header"}},
		{name: "malformed body", method: http.MethodPost, contentType: "application/json", body: `{"jsonrpc":"2.0","id":1,`,
			status: http.StatusBadRequest, code: jsonrpc.CodeParseError, message: []string{"malformed JSON-RPC message"}},
		{name: "empty body", method: http.MethodPost, contentType: "application/json",
			status: http.StatusBadRequest, code: jsonrpc.CodeParseError, message: []string{"empty POST body"}},
		{name: "batch with a garbage element", method: http.MethodPost, contentType: "application/json",
			body:   `[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"ping"},{"garbage":true}]`,
			status: http.StatusBadRequest, code: jsonrpc.CodeParseError, message: []string{"batch element 2", "malformed JSON-RPC message"}},
		{name: "body over the cap", method: http.MethodPost, contentType: "application/json", body: big,
			status: http.StatusRequestEntityTooLarge, code: jsonrpc.CodeInvalidRequest, message: []string{"message larger than 65536 bytes refused", "raise the message size limit"}},
		{name: "PUT", method: http.MethodPut, contentType: "application/json", body: initializeBody,
			status: http.StatusMethodNotAllowed, code: jsonrpc.CodeInvalidRequest, message: []string{"method PUT not allowed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := streamableRequest(t, tc.method, endpoint, tc.contentType, tc.sessionID, tc.body)
			if got, want := resp.StatusCode, tc.status; got != want {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("HTTP %d (%s), want %d", got, body, want)
			}
			rerr := decodeRefusal(t, resp)
			if got, want := rerr.Code, tc.code; got != want {
				t.Errorf("error code=%d, want %d", got, want)
			}
			checkMessage(t, rerr.Message, tc.message...)
		})
	}
	if got := n.gw.StreamableSessions(); got != 0 {
		t.Errorf("bad requests left %d sessions open", got)
	}
}

func TestStreamableDelete(t *testing.T) {
	n, _ := gatewayTo(t)
	endpoint := streamableEndpoint(n, "up")
	id := openStreamableSession(t, endpoint)

	resp := streamableRequest(t, http.MethodPost, endpoint, "application/json", id,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"alive"}}}`)
	if got := readPOSTReply(t, resp).text(t); got != "alive" {
		t.Fatalf("echo=%q, want %q", got, "alive")
	}

	resp = streamableRequest(t, http.MethodDelete, endpoint, "", id, "")
	if got, want := resp.StatusCode, http.StatusNoContent; got != want {
		t.Fatalf("DELETE: HTTP %d, want %d", got, want)
	}
	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		resp = streamableRequest(t, method, endpoint, "application/json", id, `{"jsonrpc":"2.0","id":3,"method":"ping"}`)
		if got, want := resp.StatusCode, http.StatusNotFound; got != want {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s after DELETE: HTTP %d (%s), want %d", method, got, bytes.TrimSpace(body), want)
		}
		checkMessage(t, decodeRefusal(t, resp).Message, "unknown or expired session")
	}
	waitFor(t, "the deleted session to end", func() bool { return n.gw.StreamableSessions() == 0 })
}
