package gateway

import (
	"bufio"
	"context"
	"encoding/json"
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

// sseGET opens a legacy event stream on the gateway and returns the
// response; the stream ends with the test.
func sseGET(t *testing.T, rawURL string, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp
}

// refusalOf reads the JSON-RPC error of a refused request.
func refusalOf(t *testing.T, resp *http.Response) *jsonrpc.Error {
	t.Helper()
	var body struct {
		Error *jsonrpc.Error `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error == nil {
		t.Fatalf("HTTP %d with no JSON-RPC error body: %v", resp.StatusCode, err)
	}
	return body.Error
}

// endpointOf reads the endpoint event that starts a legacy event stream
// and resolves it against base.
func endpointOf(t *testing.T, base string, resp *http.Response) string {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: HTTP %d: %s", resp.StatusCode, refusalOf(t, resp).Message)
	}
	br := bufio.NewReader(resp.Body)
	var event, data string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the endpoint event: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "":
			if event != "endpoint" {
				t.Fatalf("first event %q, want endpoint", event)
			}
			u, _ := url.Parse(base)
			ep, err := u.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			return ep.String()
		}
	}
}

// TestSSEAdmission: the legacy HTTP+SSE endpoint admits sessions as every
// other transport does (token, Origin and Host, route, session cap), and a
// POST to a session needs a token that could have opened it.
func TestSSEAdmission(t *testing.T) {
	tg := newTestGateway(t, func(o *Options) { o.MaxSessions = 1 })
	up := upstreamtest.New()
	tg.addRoute(t, storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"})
	tok := tg.issueToken(t, "svc", "acme")
	base := tg.url + "/v1/sse/up?org=acme&account=alice"
	auth := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	refusals := []struct {
		name    string
		url     string
		header  http.Header
		status  int
		code    int64
		message string
	}{
		{"no token", base, nil, http.StatusUnauthorized, transport.CodeUnauthorized, "token"},
		{"foreign origin", base, http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://evil.example"}}, http.StatusForbidden, jsonrpc.CodeInvalidRequest, "allowed origins"},
		{"org not allowed", tg.url + "/v1/sse/up?org=other&account=alice", auth(tok), http.StatusForbidden, transport.CodeForbidden, `allows org "other"`},
		{"unknown route", tg.url + "/v1/sse/nope?org=acme&account=alice", auth(tok), transport.HTTPStatus(transport.CodeNoRoute), transport.CodeNoRoute, "nope"},
		{"no target", tg.url + "/v1/sse?org=acme&account=alice", auth(tok), http.StatusBadRequest, jsonrpc.CodeInvalidParams, "no target"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			resp := sseGET(t, tc.url, tc.header)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			if e := refusalOf(t, resp); e.Code != tc.code || !strings.Contains(e.Message, tc.message) {
				t.Fatalf("refusal %d %q, want %d containing %q", e.Code, e.Message, tc.code, tc.message)
			}
		})
	}

	resp := sseGET(t, base, auth(tok))
	post := endpointOf(t, tg.url, resp)
	if strings.Contains(post, tok) {
		t.Fatal("the endpoint event echoes a header token into the stream")
	}
	if got, want := tg.Sessions(), 1; got != want {
		t.Fatalf("Sessions()=%d, want %d", got, want)
	}
	// The node is full: the next session is refused as overloaded.
	full := sseGET(t, base, auth(tok))
	if got, want := full.StatusCode, http.StatusServiceUnavailable; got != want {
		t.Fatalf("second session: HTTP %d, want %d", got, want)
	}
	if e := refusalOf(t, full); e.Code != transport.CodeOverloaded {
		t.Fatalf("second session refused with %d %q, want overloaded", e.Code, e.Message)
	}

	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	posts := []struct {
		name   string
		token  string
		status int
		code   int64
	}{
		{"another service's token", tg.issueToken(t, "other-svc", "acme"), http.StatusForbidden, transport.CodeForbidden},
		{"a token for another org", tg.issueToken(t, "svc", "other"), http.StatusForbidden, transport.CodeForbidden},
		{"no token", "", http.StatusUnauthorized, transport.CodeUnauthorized},
		{"a fresh token of the same service", tg.issueToken(t, "svc", "acme"), http.StatusAccepted, 0},
	}
	for _, tc := range posts {
		t.Run("POST with "+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, post, strings.NewReader(ping))
			req.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.code != 0 {
				if e := refusalOf(t, resp); e.Code != tc.code {
					t.Fatalf("refusal %d %q, want code %d", e.Code, e.Message, tc.code)
				}
			}
		})
	}
}

// TestSSEQueryToken: a client that can only put the token in the URL
// (access_token) gets an endpoint that keeps it, and its session works.
func TestSSEQueryToken(t *testing.T) {
	tg := newTestGateway(t)
	up := upstreamtest.New()
	tg.addRoute(t, storage.Route{Name: "up", URL: upstreamtest.StartHTTP(t, up.StreamableHandler()) + "/mcp"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	endpoint := tg.url + "/v1/sse/up?org=acme&account=alice&access_token=" + url.QueryEscape(tg.issueToken(t, "svc", "acme"))
	sess, err := mcp.NewClient(&mcp.Implementation{Name: "legacy", Version: "1"}, nil).Connect(ctx, &mcp.SSEClientTransport{Endpoint: endpoint}, &mcp.ClientSessionOptions{ProtocolVersion: "2024-11-05"})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "via sse"}})
	if err != nil {
		t.Fatalf("CallTool: %v", err)
	}
	if got, want := res.Content[0].(*mcp.TextContent).Text, "via sse"; got != want {
		t.Fatalf("echo=%q, want %q", got, want)
	}
	sess.Close()
	deadline := time.Now().Add(15 * time.Second)
	for tg.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Sessions()=%d after the client hung up, want 0", tg.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
