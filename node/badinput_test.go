package node

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/tcptest"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// sessionURL is the WebSocket/streamable endpoint of n for target.
func sessionURL(n *Node, scheme, target, org, account string) string {
	q := url.Values{}
	for k, v := range map[string]string{"target": target, "org": org, "account": account, "access_token": testToken(n)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return scheme + "://" + n.HTTPAddr() + "/v1/mcp?" + q.Encode()
}

func TestWebSocketBadFrames(t *testing.T) {
	n, route := gatewayTo(t, func(c *Config) { c.MaxMessageBytes = 64 << 10 })
	tests := []struct {
		name    string
		typ     websocket.MessageType
		data    []byte
		code    int64
		message []string // parts of the error message
		id      string   // of the error reply: null unless the message could be read
	}{
		{
			name:    "malformed JSON",
			typ:     websocket.MessageText,
			data:    []byte(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{`),
			code:    jsonrpc.CodeParseError,
			message: []string{"malformed JSON-RPC message", "one JSON-RPC 2.0 object per message"},
			id:      "null",
		},
		{
			name:    "not JSON at all",
			typ:     websocket.MessageText,
			data:    []byte("\x00\xff garbage"),
			code:    jsonrpc.CodeParseError,
			message: []string{"malformed JSON-RPC message"},
			id:      "null",
		},
		{
			name:    "binary frame",
			typ:     websocket.MessageBinary,
			data:    []byte(`{"jsonrpc":"2.0","id":5,"method":"ping"}`),
			code:    jsonrpc.CodeInvalidRequest,
			message: []string{"binary WebSocket frame refused", "text frame"},
			id:      "5",
		},
		{
			name:    "over the message cap",
			typ:     websocket.MessageText,
			data:    append(append([]byte(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`), bytes.Repeat([]byte("x"), 64<<10)...), `"}}}`...),
			code:    jsonrpc.CodeInvalidRequest,
			message: []string{"message larger than 65536 bytes refused", "raise the message size limit"},
			id:      "5",
		},
		{
			name:    "over the message cap, id last",
			typ:     websocket.MessageText,
			data:    append(append([]byte(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"text":"`), bytes.Repeat([]byte("x"), 64<<10)...), `"}},"id":5}`...),
			code:    jsonrpc.CodeInvalidRequest,
			message: []string{"message larger than 65536 bytes refused", "raise the message size limit"},
			id:      "null",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := dialRaw(t, n, route.URL, nil)
			bad.initialize()
			other := dialRaw(t, n, route.URL, nil)
			other.initialize()

			bad.write(tc.typ, tc.data)
			r := bad.read()
			if got, want := string(r.ID), tc.id; got != want {
				t.Errorf("error reply id=%s, want %s", got, want)
			}
			if r.Error == nil {
				t.Fatalf("reply %+v is not an error", r)
			}
			if got, want := r.Error.Code, tc.code; got != want {
				t.Errorf("error code=%d, want %d", got, want)
			}
			for _, part := range tc.message {
				if !strings.Contains(r.Error.Message, part) {
					t.Errorf("error message %q does not contain %q", r.Error.Message, part)
				}
			}

			// The session that sent the bad frame goes on; the other never
			// hears of it (its next reply is its own).
			if got, want := bad.echo("after"), "after"; got != want {
				t.Errorf("echo on the same session=%q, want %q", got, want)
			}
			if got, want := other.echo("other"), "other"; got != want {
				t.Errorf("echo on another session=%q, want %q", got, want)
			}
		})
	}
}

// upgradeRequest sends a WebSocket handshake by hand and returns the status
// and the JSON-RPC error of a refusal.
func upgradeRequest(t *testing.T, rawURL, host string, header http.Header) (int, *jsonrpc.Error) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, 10*time.Second), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 16)
	rand.Read(key)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	req.Header.Set("Sec-WebSocket-Protocol", transport.Subprotocol)
	for k, vs := range header {
		req.Header[k] = vs
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, decodeRefusal(t, resp)
}

func TestUnknownTarget(t *testing.T) {
	n, route := gatewayTo(t)
	u, _ := url.Parse(route.URL)
	otherPort := tcptest.FreeAddr(t)
	tests := []struct {
		name    string
		target  string
		status  int
		code    int64
		message []string
	}{
		{name: "unrouted host", target: "https://unknown.example/mcp", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{`no route for target "https://unknown.example/mcp"`, "mcpgw route add"}},
		{name: "host suffix", target: "http://127.0.0.1.evil.example/mcp", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{`"http://127.0.0.1.evil.example/mcp"`, "mcpgw route add"}},
		{name: "host suffix with the port", target: "http://127.0.0.1.evil.example:" + u.Port() + "/mcp", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{"127.0.0.1.evil.example", "mcpgw route add"}},
		{name: "path traversal", target: route.URL + "/../admin", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{`"http://` + u.Host + `/admin"`, "mcpgw route add"}},
		{name: "path prefix without a slash", target: route.URL + "x", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{u.Host + `/mcpx"`, "mcpgw route add"}},
		{name: "other scheme", target: "https://" + u.Host + "/mcp", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{`"https://` + u.Host + `/mcp"`, "mcpgw route add"}},
		{name: "websocket scheme", target: "ws://" + u.Host + "/mcp", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{`"ws://` + u.Host + `/mcp"`, "mcpgw route add"}},
		{name: "other port", target: "http://" + otherPort + "/mcp", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{otherPort, "mcpgw route add"}},
		{name: "userinfo", target: "http://x@" + u.Host + "/mcp", status: http.StatusBadRequest, code: jsonrpc.CodeInvalidParams,
			message: []string{"credentials in URLs are refused", "mcpgw vault put"}},
		{name: "not a URL", target: "http://%zz/mcp", status: http.StatusBadRequest, code: jsonrpc.CodeInvalidParams,
			message: []string{"is not a URL"}},
		{name: "unknown route name", target: "", status: http.StatusNotFound, code: transport.CodeNoRoute,
			message: []string{`no route named "nope"`, "mcpgw route list"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rawURL := sessionURL(n, "http", tc.target, "org1", "acct1")
			if tc.target == "" {
				rawURL = "http://" + n.HTTPAddr() + "/v1/mcp/nope?org=org1&account=acct1&access_token=" + testToken(n)
			}
			status, rerr := upgradeRequest(t, rawURL, "", nil)
			if got, want := status, tc.status; got != want {
				t.Fatalf("HTTP status=%d, want %d (error %v)", got, want, rerr)
			}
			if got, want := rerr.Code, tc.code; got != want {
				t.Errorf("error code=%d, want %d", got, want)
			}
			checkMessage(t, rerr.Message, tc.message...)

			if tc.target == "" {
				return
			}
			_, err := client.Connect(testContext(t, 10*time.Second), tc.target, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
			if err == nil {
				t.Fatal("client.Connect succeeded")
			}
			checkMessage(t, err.Error(), tc.message...)
			var re *transport.RefusalError
			if !errors.As(err, &re) || re.Status != tc.status || re.Code != tc.code {
				t.Errorf("client.Connect error %v (%T) is not a refusal with HTTP %d and code %d", err, err, tc.status, tc.code)
			}
		})
	}
}

func TestRouteSubPathMatches(t *testing.T) {
	n, route := gatewayTo(t)
	ctx := testContext(t, 10*time.Second)
	sess, err := client.Connect(ctx, route.URL+"/sub", "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
	if err != nil {
		t.Fatalf("Connect to a sub-path of the route: %v", err)
	}
	defer sess.Close()
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "sub"}})
	if err != nil {
		t.Fatalf("CallTool: %v", err)
	}
	if got, want := res.Content[0].(*mcp.TextContent).Text, "sub"; got != want {
		t.Fatalf("echo=%q, want %q", got, want)
	}
}

func TestMissingParameters(t *testing.T) {
	n, route := gatewayTo(t)
	tests := []struct {
		name             string
		target, org, acc string
		message          []string
	}{
		{name: "no org", target: route.URL, acc: "acct1", message: []string{`org "" is invalid`, "pass ?org=<org>"}},
		{name: "no account", target: route.URL, org: "org1", message: []string{`account "" is invalid`, "pass ?account=<account>"}},
		{name: "bad org", target: route.URL, org: "a/b", acc: "acct1", message: []string{`org "a/b" is invalid`, "pass ?org=<org>"}},
		{name: "bad account", target: route.URL, org: "org1", acc: strings.Repeat("a", 200), message: []string{"account", "is invalid", "pass ?account=<account>"}},
		{name: "no target", org: "org1", acc: "acct1", message: []string{"no target", "?target=<upstream MCP URL>", "/v1/mcp/<route>"}},
	}
	for _, tc := range tests {
		for _, kind := range []string{"websocket", "streamable"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				rawURL := sessionURL(n, "http", tc.target, tc.org, tc.acc)
				var status int
				var rerr *jsonrpc.Error
				if kind == "websocket" {
					status, rerr = upgradeRequest(t, rawURL, "", nil)
				} else {
					resp := postJSON(t, rawURL, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`)
					status, rerr = resp.StatusCode, decodeRefusal(t, resp)
				}
				if got, want := status, http.StatusBadRequest; got != want {
					t.Fatalf("HTTP status=%d, want %d (error %v)", got, want, rerr)
				}
				if got, want := rerr.Code, int64(jsonrpc.CodeInvalidParams); got != want {
					t.Errorf("error code=%d, want %d", got, want)
				}
				checkMessage(t, rerr.Message, tc.message...)
			})
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	n := startNode(t, func(c *Config) { c.ConnectTimeout = 3 * time.Second })
	down := "http://" + tcptest.FreeAddr(t)
	addRoute(t, n, storage.Route{Name: "down", URL: down + "/mcp"})
	addRoute(t, n, storage.Route{Name: "sse-down", URL: down + "/sse", Transport: storage.TransportSSE})
	addRoute(t, n, storage.Route{Name: "ws-down", URL: "ws://" + tcptest.FreeAddr(t) + "/mcp", Transport: storage.TransportWebSocket})
	addRoute(t, n, storage.Route{Name: "no-such-command", Transport: storage.TransportStdio, Command: []string{"mcpgw-test-no-such-command", "--flag"}})

	t.Run("streamable", func(t *testing.T) {
		// A streamable upstream is first reached by the initialize itself,
		// so the refusal is that request's JSON-RPC error.
		ctx := testContext(t, 5*time.Second)
		_, err := client.Connect(ctx, down+"/mcp", "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
		if err == nil {
			t.Fatal("Connect to a route whose upstream is down succeeded")
		}
		if ctx.Err() != nil {
			t.Fatalf("Connect did not fail within 5s: %v", err)
		}
		var werr *jsonrpc.Error
		if !errors.As(err, &werr) {
			t.Fatalf("Connect error %v is not a JSON-RPC error", err)
		}
		if got, want := werr.Code, int64(transport.CodeUpstreamError); got != want {
			t.Errorf("error code=%d, want %d", got, want)
		}
		checkMessage(t, werr.Message, `upstream of route "down" failed`, "mcpgw route list")
	})
	for _, tc := range []struct {
		name, route string
		message     []string
	}{
		{name: "sse", route: "sse-down", message: []string{`upstream of route "sse-down" is unreachable`, "mcpgw route list"}},
		{name: "websocket", route: "ws-down", message: []string{`upstream of route "ws-down" is unreachable`, "mcpgw route list"}},
		{name: "stdio command missing", route: "no-such-command", message: []string{`upstream of route "no-such-command" is unreachable`, "mcpgw-test-no-such-command"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			status, rerr := upgradeRequest(t, "http://"+n.HTTPAddr()+"/v1/mcp/"+tc.route+"?org=org1&account=acct1&access_token="+testToken(n), "", nil)
			if got, want := status, http.StatusBadGateway; got != want {
				t.Fatalf("HTTP status=%d, want %d (error %v)", got, want, rerr)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("refusal took %v", elapsed)
			}
			if got, want := rerr.Code, int64(transport.CodeUpstreamError); got != want {
				t.Errorf("error code=%d, want %d", got, want)
			}
			checkMessage(t, rerr.Message, tc.message...)
		})
	}
}

// originHeader adds an Origin header to every request.
type originHeader struct {
	origin string
	base   http.RoundTripper
}

func (o originHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Origin", o.origin)
	return o.base.RoundTrip(r)
}

func TestOrigin(t *testing.T) {
	n, route := gatewayTo(t, func(c *Config) { c.AllowedOrigins = []string{"https://app.example.com"} })
	tests := []struct {
		name    string
		origin  string
		host    string
		status  int // 0: the session must work
		message []string
	}{
		{name: "no Origin"},
		{name: "allowed Origin", origin: "https://app.example.com"},
		{name: "allowed Origin in another case", origin: "HTTPS://APP.example.com"},
		{name: "disallowed Origin", origin: "https://evil.example", status: http.StatusForbidden,
			message: []string{`Origin "https://evil.example" is not allowed`, "allowed origins"}},
		{name: "allowed host on another port", origin: "https://app.example.com:8443", status: http.StatusForbidden,
			message: []string{`Origin "https://app.example.com:8443"`, "allowed origins"}},
		{name: "allowed host over http", origin: "http://app.example.com", status: http.StatusForbidden,
			message: []string{`Origin "http://app.example.com"`, "allowed origins"}},
		{name: "null Origin", origin: "null", status: http.StatusForbidden,
			message: []string{`Origin "null"`, "allowed origins"}},
		{name: "rebinding Host", host: "evil.example", status: http.StatusForbidden,
			message: []string{`Host "evil.example" refused on a loopback listener`, "DNS rebinding"}},
		{name: "rebinding Host with port", host: "evil.example:" + strings.Split(n.HTTPAddr(), ":")[1], status: http.StatusForbidden,
			message: []string{`Host "evil.example:`, "DNS rebinding"}},
		{name: "localhost Host", host: "localhost:" + strings.Split(n.HTTPAddr(), ":")[1]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			status, rerr := upgradeRequest(t, sessionURL(n, "http", route.URL, "org1", "acct1"), tc.host, h)
			if tc.status != 0 {
				if got, want := status, tc.status; got != want {
					t.Fatalf("HTTP status=%d, want %d", got, want)
				}
				checkMessage(t, rerr.Message, tc.message...)
				// The streamable endpoint applies the same check.
				resp := postJSON(t, sessionURL(n, "http", route.URL, "org1", "acct1"), tc.host, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, "Origin", tc.origin)
				if got, want := resp.StatusCode, tc.status; got != want {
					t.Fatalf("streamable HTTP status=%d, want %d", got, want)
				}
				checkMessage(t, decodeRefusal(t, resp).Message, tc.message...)
				return
			}
			if got, want := status, http.StatusSwitchingProtocols; got != want {
				t.Fatalf("HTTP status=%d, want %d (error %v)", got, want, rerr)
			}
			if tc.host != "" {
				return
			}
			hc := &http.Client{Transport: http.DefaultTransport}
			if tc.origin != "" {
				hc.Transport = originHeader{origin: tc.origin, base: http.DefaultTransport}
			}
			ctx := testContext(t, 10*time.Second)
			sess, err := client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)), client.WithHTTPClient(hc))
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer sess.Close()
			if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err != nil {
				t.Fatalf("CallTool: %v", err)
			}
		})
	}
}

// wsUpstream is a WebSocket MCP upstream on loopback that answers each call
// with what answer returns for it, and hangs up when answer returns nil.
func wsUpstream(t *testing.T, answer func(req *jsonrpc.Request) *jsonrpc.Response) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := transport.AcceptWebSocket(w, r, transport.WebSocketOptions{PingInterval: -1})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			req, ok := msg.(*jsonrpc.Request)
			if !ok || !req.IsCall() {
				continue
			}
			resp := answer(req)
			if resp == nil {
				return
			}
			c.Write(r.Context(), resp)
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/mcp"
}

// hangUpUpstream is a WebSocket MCP upstream that answers initialize and
// hangs up on the first tools/call.
func hangUpUpstream(t *testing.T) string {
	t.Helper()
	return wsUpstream(t, func(req *jsonrpc.Request) *jsonrpc.Response {
		if req.Method == "tools/call" {
			return nil
		}
		return &jsonrpc.Response{ID: req.ID, Result: json.RawMessage(
			`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"hangup","version":"1"}}`)}
	})
}

// TestUpstreamEndsMidCall checks that a call in flight when the upstream
// hangs up is answered with an error naming the route, not left to a
// dropped connection.
func TestUpstreamEndsMidCall(t *testing.T) {
	upURL := hangUpUpstream(t)
	n := startNode(t)
	route := addRoute(t, n, storage.Route{Name: "hangup", URL: upURL, Transport: storage.TransportWebSocket})
	for _, kind := range []string{"websocket", "streamable"} {
		t.Run(kind, func(t *testing.T) {
			ctx := testContext(t, 10*time.Second)
			var sess *mcp.ClientSession
			if kind == "websocket" {
				var err error
				if sess, err = client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n))); err != nil {
					t.Fatalf("Connect: %v", err)
				}
				defer sess.Close()
			} else {
				sess = connectStreamable(t, ctx, n, route.Name, "2025-11-25", nil)
			}
			_, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
			var werr *jsonrpc.Error
			if !errors.As(err, &werr) {
				t.Fatalf("CallTool error %v is not a JSON-RPC error", err)
			}
			if got, want := werr.Code, int64(transport.CodeUpstreamError); got != want {
				t.Errorf("error code=%d, want %d", got, want)
			}
			checkMessage(t, werr.Message, `upstream of route "hangup" closed the session before answering`)
		})
	}
}

// TestOversizedCallFailsAlone checks that a call over the message cap fails
// with an error naming the cap, in the client library, and the session
// goes on.
func TestOversizedCallFailsAlone(t *testing.T) {
	n, route := gatewayTo(t, func(c *Config) { c.MaxMessageBytes = 64 << 10 })
	ctx := testContext(t, 10*time.Second)
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer sess.Close()
	_, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": strings.Repeat("x", 100<<10)}})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("oversized CallTool error %v is not a JSON-RPC error", err)
	}
	if got, want := werr.Code, int64(jsonrpc.CodeInvalidRequest); got != want {
		t.Errorf("error code=%d, want %d", got, want)
	}
	checkMessage(t, werr.Message, "message larger than 65536 bytes refused", "raise the message size limit")
	echo(t, ctx, sess, "still here")
}

// bigUpstream is a WebSocket MCP upstream whose tools/call result is
// 100 KiB unless the tool is "small".
func bigUpstream(t *testing.T) string {
	t.Helper()
	big := strings.Repeat("x", 100<<10)
	return wsUpstream(t, func(req *jsonrpc.Request) *jsonrpc.Response {
		var res string
		switch {
		case req.Method == "initialize":
			res = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"big","version":"1"}}`
		case req.Method != "tools/call":
			return &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "method not found"}}
		case strings.Contains(string(req.Params), `"small"`):
			res = `{"content":[{"type":"text","text":"small"}]}`
		default:
			res = `{"content":[{"type":"text","text":"` + big + `"}]}`
		}
		return &jsonrpc.Response{ID: req.ID, Result: json.RawMessage(res)}
	})
}

// TestOversizedResultFailsAlone checks that a result over the message cap
// fails its call with an error naming the route and the cap instead of
// leaving the caller waiting, and the session goes on.
func TestOversizedResultFailsAlone(t *testing.T) {
	upURL := bigUpstream(t)
	n := startNode(t, func(c *Config) { c.MaxMessageBytes = 64 << 10 })
	route := addRoute(t, n, storage.Route{Name: "big", URL: upURL, Transport: storage.TransportWebSocket})
	ctx := testContext(t, 10*time.Second)
	sess, err := client.Connect(ctx, route.URL, "org1", "acct1", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(testToken(n)))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer sess.Close()
	_, err = sess.CallTool(ctx, &mcp.CallToolParams{Name: "big"})
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("CallTool error %v is not a JSON-RPC error", err)
	}
	if got, want := werr.Code, int64(transport.CodeUpstreamError); got != want {
		t.Errorf("error code=%d, want %d", got, want)
	}
	checkMessage(t, werr.Message, `upstream of route "big"`, "message larger than 65536 bytes refused", "raise the message size limit")
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "small"})
	if err != nil {
		t.Fatalf("CallTool after the oversized result: %v", err)
	}
	if got, want := res.Content[0].(*mcp.TextContent).Text, "small"; got != want {
		t.Fatalf("small=%q, want %q", got, want)
	}
}
