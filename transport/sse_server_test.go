package transport

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/clocktest"
)

// connTransport hands an open connection to an mcp.Server or mcp.Client.
type connTransport struct{ conn mcp.Connection }

func (c connTransport) Connect(context.Context) (mcp.Connection, error) { return c.conn, nil }

// bearer is the token the test SSE server accepts.
const bearer = "Bearer good"

// startSSEServer serves a go-sdk server with an echo tool over an
// SSEServer that opens sessions for the bearer token only and lets POSTs
// carry it in the header or as access_token.
func startSSEServer(t *testing.T, opts *SSEServerOptions) (*SSEServer, string) {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "sse-test", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo"}, func(ctx context.Context, req *mcp.CallToolRequest, a struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	token := func(r *http.Request) string {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			return "Bearer " + tok
		}
		return r.Header.Get("Authorization")
	}
	authorize := func(r *http.Request) error {
		if token(r) != bearer {
			return &Refusal{Code: CodeForbidden, Message: "this token could not have opened the session"}
		}
		return nil
	}
	s := NewSSEServer(func(r *http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
		if token(r) != bearer {
			return nil, nil, &Refusal{Code: CodeUnauthorized, Message: "no valid token"}
		}
		return authorize, func(c mcp.Connection) {
			ss, err := srv.Connect(context.Background(), connTransport{c}, nil)
			if err != nil {
				return
			}
			ss.Wait()
		}, nil
	}, opts)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close()
		ts.Close()
	})
	return s, ts.URL + "/v1/sse"
}

// headerClient adds an Authorization header to every request.
type headerClient struct{ auth string }

func (h headerClient) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", h.auth)
	return http.DefaultTransport.RoundTrip(r)
}

func TestSSEServerClient(t *testing.T) {
	tests := []struct {
		name     string
		endpoint func(base string) string
		hc       *http.Client
	}{
		{"header token", func(base string) string { return base }, &http.Client{Transport: headerClient{bearer}}},
		{"query token", func(base string) string { return base + "?access_token=good" }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, base := startSSEServer(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "1"}, nil)
			sess, err := c.Connect(ctx, &mcp.SSEClientTransport{Endpoint: tc.endpoint(base), HTTPClient: tc.hc}, &mcp.ClientSessionOptions{ProtocolVersion: "2024-11-05"})
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "legacy"}})
			if err != nil {
				t.Fatalf("CallTool: %v", err)
			}
			if got, want := res.Content[0].(*mcp.TextContent).Text, "legacy"; got != want {
				t.Fatalf("echo=%q, want %q", got, want)
			}
			if got, want := s.Sessions(), 1; got != want {
				t.Fatalf("Sessions()=%d, want %d", got, want)
			}
			sess.Close()
			waitUntil(t, "the session to end with its stream", func() bool { return s.Sessions() == 0 })
		})
	}
}

// openRawSSE opens an event stream and returns its POST URL, read from the
// endpoint event, and a func that ends the stream.
func openRawSSE(t *testing.T, base string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base, nil)
	req.Header.Set("Authorization", bearer)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := func() { cancel(); resp.Body.Close() }
	if resp.StatusCode != http.StatusOK {
		stop()
		t.Fatalf("GET: HTTP %d", resp.StatusCode)
	}
	ev, err := newSSEReader(resp.Body, 1<<16).Next()
	if err != nil || ev.Name != "endpoint" {
		stop()
		t.Fatalf("first event %+v (%v), want endpoint", ev, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	post, err := u.Parse(string(ev.Data))
	if err != nil {
		stop()
		t.Fatalf("endpoint %q: %v", ev.Data, err)
	}
	return post.String(), stop
}

func TestSSEServerRefusals(t *testing.T) {
	s, base := startSSEServer(t, &SSEServerOptions{MaxMessageBytes: 64})
	post, stop := openRawSSE(t, base)
	defer stop()
	pu, _ := url.Parse(post)
	id := pu.Query().Get(SSEParamSession)
	if len(id) < 26 {
		t.Fatalf("session id %q is shorter than 128 random bits", id)
	}
	ended, stopEnded := openRawSSE(t, base)
	stopEnded()
	waitUntil(t, "the hung-up stream's session to end", func() bool { return s.Sessions() == 1 })

	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	tests := []struct {
		name, method, url, contentType, auth, body string
		status                                     int
		code                                       int64
		message                                    string
	}{
		{"no token on GET", http.MethodGet, base, "", "", "", http.StatusUnauthorized, CodeUnauthorized, "no valid token"},
		{"GET on a session URL", http.MethodGet, post, "", bearer, "", http.StatusMethodNotAllowed, jsonrpc.CodeInvalidRequest, "takes POST"},
		{"PUT", http.MethodPut, base, "", bearer, "", http.StatusMethodNotAllowed, jsonrpc.CodeInvalidRequest, "not allowed"},
		{"POST without session", http.MethodPost, base, "application/json", bearer, ping, http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "open a session with GET first"},
		{"unknown session", http.MethodPost, base + "?sessionid=nope", "application/json", bearer, ping, http.StatusNotFound, jsonrpc.CodeInvalidRequest, "unknown or ended session"},
		{"session whose stream ended", http.MethodPost, ended, "application/json", bearer, ping, http.StatusNotFound, jsonrpc.CodeInvalidRequest, "ends with its event stream"},
		{"wrong token", http.MethodPost, post, "application/json", "Bearer other", ping, http.StatusForbidden, CodeForbidden, "could not have opened"},
		{"no token", http.MethodPost, post, "application/json", "", ping, http.StatusForbidden, CodeForbidden, "could not have opened"},
		{"wrong content type", http.MethodPost, post, "text/plain", bearer, ping, http.StatusUnsupportedMediaType, jsonrpc.CodeInvalidRequest, "Content-Type: application/json"},
		{"too large", http.MethodPost, post, "application/json", bearer, `{"jsonrpc":"2.0","id":7,"method":"ping","params":{"pad":"` + strings.Repeat("x", 100) + `"}}`, http.StatusRequestEntityTooLarge, jsonrpc.CodeInvalidRequest, "larger than 64 bytes"},
		{"malformed", http.MethodPost, post, "application/json", bearer, `{"jsonrpc":`, http.StatusBadRequest, jsonrpc.CodeParseError, "malformed JSON-RPC"},
		{"batch", http.MethodPost, post, "application/json", bearer, `[` + ping + `]`, http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "batches are not supported"},
		{"duplicate key", http.MethodPost, post, "application/json", bearer, `{"jsonrpc":"2.0","id":1,"method":"ping","method":"x"}`, http.StatusBadRequest, jsonrpc.CodeInvalidRequest, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			req.Header.Set("Accept", "text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			var body struct {
				Error jsonrpc.Error `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("error body: %v", err)
			}
			if body.Error.Code != tc.code || !strings.Contains(body.Error.Message, tc.message) {
				t.Fatalf("error %d %q, want %d containing %q", body.Error.Code, body.Error.Message, tc.code, tc.message)
			}
		})
	}
	// None of the refusals disturbed the open session.
	req, _ := http.NewRequest(http.MethodPost, post, strings.NewReader(ping))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST after refusals: HTTP %d, want 202", resp.StatusCode)
	}
}

// TestSSEServerClose checks Close ends the open streams and refuses new
// ones.
func TestSSEServerClose(t *testing.T) {
	s, base := startSSEServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "1"}, nil)
	sess, err := c.Connect(ctx, &mcp.SSEClientTransport{Endpoint: base + "?access_token=good"}, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer sess.Close()
	s.Close()
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the client session did not end when the server closed")
	}
	_, err = c.Connect(ctx, &mcp.SSEClientTransport{Endpoint: base + "?access_token=good"}, nil)
	if err == nil || !strings.Contains(err.Error(), "Service Unavailable") {
		t.Fatalf("Connect after Close: %v, want a refusal", err)
	}
}

// waitUntil polls cond until it holds or 15s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	clocktest.Poll(t, 15*time.Second, what, cond)
}
