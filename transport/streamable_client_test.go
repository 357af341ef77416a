package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/internal/jsonrpcx"
)

// seenRequest is what an upstream received in one HTTP request.
type seenRequest struct {
	Method, SessionID, Version, MCPMethod, MCPName string
	Body                                           string
}

// recordingUpstream is a real go-sdk streamable HTTP server with an echo
// tool, recording every request it gets.
func recordingUpstream(t *testing.T, opts *mcp.StreamableHTTPOptions) (url string, seen func() []seenRequest) {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "echo", Version: "1"}, nil)
	type args struct {
		Text string `json:"text"`
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, a args) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: a.Text}}}, nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, opts)
	var mu sync.Mutex
	var reqs []seenRequest
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		mu.Lock()
		reqs = append(reqs, seenRequest{Method: r.Method, SessionID: r.Header.Get(HeaderSessionID), Version: r.Header.Get(HeaderProtocolVersion),
			MCPMethod: r.Header.Get(HeaderMethod), MCPName: r.Header.Get(HeaderName), Body: string(body)})
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL, func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), reqs...)
	}
}

// roundTrip writes the message data holds and returns the response read
// next.
func roundTrip(t *testing.T, conn mcp.Connection, data string) *jsonrpc.Response {
	t.Helper()
	msg, err := jsonrpcx.DecodeMessage([]byte(data))
	if err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := conn.Write(ctx, msg); err != nil {
		t.Fatalf("write %s: %v", data, err)
	}
	req := msg.(*jsonrpc.Request)
	if !req.IsCall() {
		return nil
	}
	got, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read the answer to %s: %v", data, err)
	}
	resp, ok := got.(*jsonrpc.Response)
	if !ok || resp.ID != req.ID {
		t.Fatalf("answer to %s: got %#v, want the response to id %v", data, got, req.ID.Raw())
	}
	if resp.Error != nil {
		t.Fatalf("answer to %s: error %v", data, resp.Error)
	}
	return resp
}

// TestStreamableClientSessionWire drives the gateway's streamable HTTP
// client against a real go-sdk server speaking 2025-11-25, answering with
// event streams and with JSON bodies: the bytes posted are the messages as
// forwarded, every request after initialize names the session and the
// negotiated version, the standalone stream is opened before initialized
// is forwarded, and Close ends the session with a DELETE.
func TestStreamableClientSessionWire(t *testing.T) {
	for _, tc := range []struct {
		name string
		json bool
	}{{"event stream answers", false}, {"json answers", true}} {
		t.Run(tc.name, func(t *testing.T) {
			url, seen := recordingUpstream(t, &mcp.StreamableHTTPOptions{JSONResponse: tc.json})
			conn, err := Dial(context.Background(), Upstream{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			const (
				initialize  = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`
				initialized = `{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}`
				call        = `{"jsonrpc":"2.0","id":"c-2","method":"tools/call","params":{"name":"echo","arguments":{"text":"héllo"}}}`
			)
			resp := roundTrip(t, conn, initialize)
			if !strings.Contains(string(resp.Result), `"protocolVersion":"2025-11-25"`) {
				t.Fatalf("initialize result %s, want protocol 2025-11-25", resp.Result)
			}
			roundTrip(t, conn, initialized)
			resp = roundTrip(t, conn, call)
			if got, want := string(resp.Result), `"text":"héllo"`; !strings.Contains(got, want) {
				t.Fatalf("tools/call result %s, want it to hold %s", got, want)
			}
			sid := conn.SessionID()
			if sid == "" {
				t.Fatal("no session id after initialize")
			}
			if err := conn.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			want := []seenRequest{
				{Method: "POST", Body: initialize},
				{Method: "GET", SessionID: sid, Version: "2025-11-25"},
				{Method: "POST", SessionID: sid, Version: "2025-11-25", Body: initialized},
				{Method: "POST", SessionID: sid, Version: "2025-11-25", Body: call},
				{Method: "DELETE", SessionID: sid, Version: "2025-11-25"},
			}
			if diff := cmp.Diff(want, seen()); diff != "" {
				t.Fatalf("requests the upstream got (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStreamableClientStatelessWire checks the 2026-07-28 form: no
// session, and every POST carries the version its body names and the
// Mcp-Method and Mcp-Name headers its body implies, which the go-sdk
// server checks against the body.
func TestStreamableClientStatelessWire(t *testing.T) {
	url, seen := recordingUpstream(t, &mcp.StreamableHTTPOptions{Stateless: true})
	conn, err := Dial(context.Background(), Upstream{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	const call = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},` + meta + `}}`
	resp := roundTrip(t, conn, call)
	if got, want := string(resp.Result), `"text":"hi"`; !strings.Contains(got, want) {
		t.Fatalf("tools/call result %s, want it to hold %s", got, want)
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want := []seenRequest{{Method: "POST", Version: "2026-07-28", MCPMethod: "tools/call", MCPName: "echo", Body: call}}
	if diff := cmp.Diff(want, seen()); diff != "" {
		t.Fatalf("requests the upstream got (-want +got):\n%s", diff)
	}
}

func TestReadRequestFields(t *testing.T) {
	const v = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	for _, tc := range []struct {
		name, method, params string
		want                 requestFields
	}{
		{name: "tools/call", method: "tools/call", params: `{"name":"echo","arguments":{"a":1},` + v + `}`,
			want: requestFields{version: "2026-07-28", name: "echo", hasName: true, args: json.RawMessage(`{"a":1}`)}},
		{name: "resources/read names its uri", method: "resources/read", params: `{"uri":"file:///x",` + v + `}`,
			want: requestFields{version: "2026-07-28", name: "file:///x", hasName: true}},
		{name: "other methods name nothing", method: "tools/list", params: `{"name":"x",` + v + `}`,
			want: requestFields{version: "2026-07-28"}},
		{name: "no params", method: "ping", want: requestFields{}},
		{name: "repeated name: nothing", method: "tools/call", params: `{"name":"a","name":"b",` + v + `}`, want: requestFields{}},
		{name: "name in another case: nothing", method: "tools/call", params: `{"Name":"a",` + v + `}`, want: requestFields{}},
		{name: "name not a string", method: "prompts/get", params: `{"name":1,` + v + `}`, want: requestFields{version: "2026-07-28"}},
		{name: "repeated version: no version", method: "tools/call",
			params: `{"name":"a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/protocolVersion":"2025-11-25"}}`,
			want:   requestFields{name: "a", hasName: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readRequestFields(tc.method, json.RawMessage(tc.params))
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(requestFields{})); diff != "" {
				t.Fatalf("readRequestFields (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStreamableClientUnexplainedRefusalNotEchoed has an upstream refuse a
// call with a status injectingTransport does not rewrite (409), its
// JSON-RPC error body echoing the credential: the call fails with the
// status alone, never with the upstream's text.
func TestStreamableClientUnexplainedRefusalNotEchoed(t *testing.T) {
	const secret = "s3cr3t-token-value"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"refused `+r.Header.Get("Authorization")+`"}}`)
	}))
	t.Cleanup(ts.Close)
	err := failedCall(t, Upstream{URL: ts.URL, Header: func() (http.Header, error) {
		return http.Header{"Authorization": {"Bearer " + secret}}, nil
	}})
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("Write error %q, want HTTP 409 without the credential", err)
	}
}

// FuzzRequestHeaders checks, for any params, that the routing headers the
// upstream client derives from a request are ones the gateway's own
// check of a POST (checkRoutingHeaders, as the go-sdk server checks them)
// accepts with that very body: they can never disagree with it.
func FuzzRequestHeaders(f *testing.F) {
	const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	for _, seed := range []struct{ method, params string }{
		{"tools/call", `{"name":"echo","arguments":{"text":"hi"},` + meta + `}`},
		{"tools/call", `{"name":"\u00e9cho\n",` + meta + `}`},
		{"tools/call", `{"name":"a","name":"b",` + meta + `}`},
		{"resources/read", `{"uri":"file:///x",` + meta + `}`},
		{"prompts/get", `{"name":" padded ",` + meta + `}`},
		{"tools/list", `{` + meta + `}`},
		{"ping", ``},
	} {
		f.Add(seed.method, []byte(seed.params))
	}
	f.Fuzz(func(t *testing.T, method string, params []byte) {
		if method == "" || !json.Valid(params) && len(params) > 0 {
			return // the strict decoder refuses such requests before any header is made
		}
		req := &jsonrpc.Request{Method: method, Params: params}
		id, _ := jsonrpc.MakeID(float64(1))
		req.ID = id
		c := &streamableConn{rt: &injectingTransport{}, u: Upstream{ParamHeaders: &ParamHeaders{}}}
		h := http.Header{}
		c.setHeaders(h, req)
		if err := checkRoutingHeaders(h, []jsonrpc.Message{req}); err != nil {
			t.Fatalf("headers %v derived from params %s refused: %v", h, params, err)
		}
	})
}

// TestStreamableClientFailedRequestHidesURL has the upstream drop the
// connection of a call whose route URL carries a key in its query: the
// call's error says the request failed, without the URL.
func TestStreamableClientFailedRequestHidesURL(t *testing.T) {
	const key = "q-key-4f2a9"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	t.Cleanup(ts.Close)
	err := failedCall(t, Upstream{URL: ts.URL + "/mcp?key=" + key})
	if strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "upstream request failed") {
		t.Fatalf("Write error %q, want the failure without the URL's key", err)
	}
}

// failedCall dials up and writes one tools/call, which must fail; it
// returns the error.
func failedCall(t *testing.T, up Upstream) error {
	t.Helper()
	conn, err := Dial(context.Background(), up)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, err := jsonrpcx.DecodeMessage([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
	if err != nil {
		t.Fatal(err)
	}
	err = conn.Write(context.Background(), msg)
	if err == nil {
		t.Fatal("Write succeeded, want it to fail")
	}
	return err
}
