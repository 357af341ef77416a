package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestOriginOf(t *testing.T) {
	tests := []struct {
		url, want string // want "" means an error
	}{
		{"http://h", "http://h:80"},
		{"HTTPS://H.Example/x", "https://h.example:443"},
		{"ws://h:81/mcp", "http://h:81"},
		{"wss://h", "https://h:443"},
		{"http://[::1]:8080/", "http://[::1]:8080"},
		{"ftp://h", ""},
		{"http:///nohost", ""},
		{"/relative", ""},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			o, err := originOf(u)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("originOf(%s)=%s, want an error", tc.url, o)
				}
				return
			}
			if err != nil || o.String() != tc.want {
				t.Fatalf("originOf(%s)=%s, %v; want %s", tc.url, o, err, tc.want)
			}
		})
	}
}

// countingServer counts the requests it gets and those with Authorization.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	var all, auth atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		all.Add(1)
		if r.Header.Get("Authorization") != "" {
			auth.Add(1)
		}
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &all, &auth
}

// testTransport is an injectingTransport for the route at routeURL that
// injects "Authorization: Bearer secret".
func testTransport(t *testing.T, routeURL string, max int64) *injectingTransport {
	t.Helper()
	u, err := url.Parse(routeURL)
	if err != nil {
		t.Fatal(err)
	}
	o, err := originOf(u)
	if err != nil {
		t.Fatal(err)
	}
	return &injectingTransport{
		base:   http.DefaultTransport,
		header: func() (http.Header, error) { return http.Header{"Authorization": {"Bearer secret"}}, nil },
		origin: o, route: "r", max: max, logger: slog.New(slog.DiscardHandler),
	}
}

// TestInjectingTransportOrigin: a request to any origin but the route's is
// refused before anything is sent.
func TestInjectingTransportOrigin(t *testing.T) {
	route, routeHits, _ := countingServer(t, nil)
	other, otherHits, _ := countingServer(t, nil)
	rt := testTransport(t, route.URL+"/mcp", 1<<20)
	_, port, _ := strings.Cut(strings.TrimPrefix(route.URL, "http://"), ":")
	for _, tc := range []struct {
		name, url string
		allowed   bool
	}{
		{"route origin", route.URL + "/other/path", true},
		{"other port", other.URL + "/mcp", false},
		{"other host name, same port", "http://localhost:" + port + "/mcp", false},
		{"other scheme, same host and port", "https://127.0.0.1:" + port + "/mcp", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := routeHits.Load()
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			resp, err := rt.RoundTrip(req)
			if tc.allowed {
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				resp.Body.Close()
				if got := routeHits.Load() - before; got != 1 {
					t.Fatalf("route server got %d requests, want 1", got)
				}
				return
			}
			var coe *CrossOriginError
			if !errors.As(err, &coe) {
				t.Fatalf("RoundTrip err=%v, want a CrossOriginError", err)
			}
			if got := routeHits.Load() - before; got != 0 {
				t.Fatalf("route server got %d requests for another origin, want 0", got)
			}
			if !strings.Contains(err.Error(), "least of all a credential") {
				t.Fatalf("error %q does not say why", err)
			}
		})
	}
	if got := otherHits.Load(); got != 0 {
		t.Fatalf("other origin got %d requests, want 0", got)
	}
}

// TestDialWebSocketInjectsThroughTransport: the WebSocket handshake goes
// through the credential-injecting transport.
func TestDialWebSocketInjectsThroughTransport(t *testing.T) {
	var sawAuth atomic.Pointer[string]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		sawAuth.Store(&a)
		c, err := AcceptWebSocket(w, r, WebSocketOptions{PingInterval: -1})
		if err != nil {
			return
		}
		c.Close()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, Upstream{Transport: transportWebSocket, URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/mcp",
		Header: func() (http.Header, error) { return http.Header{"Authorization": {"Bearer ws-secret"}}, nil }})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	conn.Close()
	if got := sawAuth.Load(); got == nil || *got != "Bearer ws-secret" {
		t.Fatalf("upstream saw Authorization %v, want the injected one", got)
	}
}

func TestRedactor(t *testing.T) {
	r := newRedactor([]string{"Bearer tok3n/+x", "k1"})
	for _, tc := range []struct{ in, want string }{
		{"you sent Bearer tok3n/+x", "you sent [REDACTED]"},
		{"token tok3n/+x alone", "token [REDACTED] alone"},
		{"b64 " + base64.StdEncoding.EncodeToString([]byte("Bearer tok3n/+x")), "b64 [REDACTED]"},
		{"url " + url.QueryEscape("Bearer tok3n/+x"), "url [REDACTED]"},
		{"raw url b64 " + base64.RawURLEncoding.EncodeToString([]byte("tok3n/+x")), "raw url b64 [REDACTED]"},
		{"header k1 value", "header [REDACTED] value"},
		{"nothing secret", "nothing secret"},
	} {
		if got := r.redact(tc.in); got != tc.want {
			t.Errorf("redact(%q)=%q, want %q", tc.in, got, tc.want)
		}
	}
}

// roundTripBody serves body with contentType and returns what the
// transport hands on for a POST carrying call id 7.
func roundTripBody(t *testing.T, rt func(string) *injectingTransport, contentType, body string) string {
	t.Helper()
	srv, _, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, body)
	})
	tr := rt(srv.URL)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(out)
}

// TestBoundAnswers: answers within the cap pass byte for byte; anything
// over it or unusable becomes a JSON-RPC error for the call, naming the
// route, and an event stream goes on after a refused event.
func TestBoundAnswers(t *testing.T) {
	const max = 4096
	rt := func(u string) *injectingTransport { return testTransport(t, u, max) }
	good := `{"jsonrpc":"2.0","id":7,"result":{}}`
	big := `{"jsonrpc":"2.0","id":7,"result":"` + strings.Repeat("x", 2*max) + `"}`
	for _, tc := range []struct {
		name, contentType, body string
		want                    []string // substrings of the output, in order
		exact                   bool
	}{
		{name: "json within the cap", contentType: "application/json", body: good, want: []string{good}, exact: true},
		{name: "json over the cap", contentType: "application/json", body: big, want: []string{`"id":7`, `upstream of route \"r\" answered with a message larger than 4096 bytes`}},
		{name: "json not UTF-8", contentType: "application/json", body: `{"jsonrpc":"2.0","id":7,"result":"` + "\xff" + `"}`, want: []string{`"id":7`, "not valid UTF-8"}},
		{name: "json too deep", contentType: "application/json", body: `{"jsonrpc":"2.0","id":7,"result":` + strings.Repeat("[", 1001) + strings.Repeat("]", 1001) + `}`, want: []string{`"id":7`, "nested deeper than 1000 levels"}},
		{name: "json cut short", contentType: "application/json; charset=utf-8", body: `{"jsonrpc":"2.0","id":7,"res`, want: []string{`"id":7`, "not a JSON-RPC 2.0 object"}},
		{name: "event stream passes through", contentType: "text/event-stream", body: "id: 1\n\nevent: message\nid: 2\ndata: " + good + "\n\n",
			want: []string{"id: 1\n\n", "id: 2\nevent: message\ndata: " + good + "\n\n"}, exact: true},
		{name: "event over the cap, then a good one", contentType: "text/event-stream", body: "id: 1\ndata: " + big + "\n\ndata: " + good + "\n\n",
			want: []string{"id: 1\nevent: message\ndata: ", `"id":7`, "larger than 4096 bytes", "data: " + good}},
		{name: "unusable notification dropped", contentType: "text/event-stream", body: `data: {"jsonrpc":"2.0","method":"x","params":` + strings.Repeat("[", 1001) + "\n\ndata: " + good + "\n\n",
			want: []string{": refused event\n\n", "data: " + good + "\n\n"}, exact: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := roundTripBody(t, rt, tc.contentType, tc.body)
			if tc.exact {
				if want := strings.Join(tc.want, ""); got != want {
					t.Fatalf("body=%q, want %q", got, want)
				}
				return
			}
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("body %q lacks %q (in order)", got, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// TestSSEEndpointOtherOrigin: a legacy SSE endpoint event naming another
// origin ends the stream with a CrossOriginError, recorded for Dial.
func TestSSEEndpointOtherOrigin(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"/messages?session=1", true},
		{"http://elsewhere.example/messages", false},
		{"//elsewhere.example/messages", false},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			srv, _, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "event: endpoint\ndata: "+tc.endpoint+"\n\n")
			})
			rt := testTransport(t, srv.URL+"/sse", 1<<20)
			rt.legacySSE = true
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/sse", nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out, err := io.ReadAll(resp.Body)
			if tc.ok {
				if err != nil || !bytes.Contains(out, []byte("data: "+tc.endpoint)) {
					t.Fatalf("body %q, err %v; want the endpoint event passed on", out, err)
				}
				return
			}
			var coe *CrossOriginError
			if !errors.As(err, &coe) || !coe.Endpoint || rt.endpointErr.Load() == nil {
				t.Fatalf("read err=%v (recorded %v), want an endpoint CrossOriginError", err, rt.endpointErr.Load())
			}
		})
	}
}

// TestSSEReaderReadsOnAfterOversized: an oversized event costs only
// itself, and its head keeps the id of the message it carried.
func TestSSEReaderReadsOnAfterOversized(t *testing.T) {
	r := newSSEReader(strings.NewReader("id: 9\ndata: {\"id\":3,\"result\":\""+strings.Repeat("x", 100)+"\"}\n\ndata: ok\n\n"), 32)
	ev, err := r.Next()
	var big *sseTooLarge
	if !errors.As(err, &big) || ev.ID != "9" {
		t.Fatalf("Next()=%+v, %v; want the oversized event's id and an sseTooLarge", ev, err)
	}
	if id, isResp := peekID(big.head); !isResp || id.Raw() != int64(3) {
		t.Fatalf("peekID(head)=%v, %v; want 3, true", id, isResp)
	}
	if ev, err := r.Next(); err != nil || string(ev.Data) != "ok" {
		t.Fatalf("Next after the oversized event=%+v, %v; want data ok", ev, err)
	}
}

// FuzzSSEFilter: whatever an upstream streams, the filter hands on only
// events whose messages decode, each within the cap (or an error in their
// place), and never panics.
func FuzzSSEFilter(f *testing.F) {
	const limit = 64
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"))
	f.Add([]byte("id: 1\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"" + strings.Repeat("x", limit) + "\"}\n\n"))
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":\"\xff\"}\n\ndata: [[[[\n\n"))
	f.Add([]byte("event: endpoint\ndata: //elsewhere/x\n\nretry: 10\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rt := &injectingTransport{route: "r", max: limit, logger: slog.New(slog.DiscardHandler), legacySSE: true}
		req, _ := http.NewRequest(http.MethodGet, "http://upstream.example/sse", nil)
		rt.origin = origin{"http", "upstream.example", "80"}
		fl := newSSEFilter(rt, req, io.NopCloser(bytes.NewReader(data)))
		out, _ := io.ReadAll(io.LimitReader(fl, int64(4*len(data)+1<<16)))
		r := newSSEReader(bytes.NewReader(out), 1<<20)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if ev.Name != "" && ev.Name != "message" {
				continue
			}
			if reason, ok := checkUpstreamMessage(ev.Data); !ok {
				t.Fatalf("filter passed on %q: %s", ev.Data, reason)
			}
			if len(ev.Data) > limit && !bytes.Contains(ev.Data, []byte(`"error"`)) {
				t.Fatalf("filter passed on %d bytes over a %d-byte cap", len(ev.Data), limit)
			}
		}
	})
}

// FuzzCheckUpstreamMessage: what the check accepts, the SDK decodes.
func FuzzCheckUpstreamMessage(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","method":"x"}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":"` + "\xff" + `"}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":"[[[["}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, ok := checkUpstreamMessage(data); ok {
			if _, err := jsonrpc.DecodeMessage(data); err != nil {
				t.Fatalf("accepted %q, which the SDK refuses: %v", data, err)
			}
		}
		if _, err := decodeUpstream(data); err != nil {
			if _, ok := AsMessageError(err); !ok {
				t.Fatalf("decodeUpstream(%q) error %v is not a MessageError", data, err)
			}
		}
	})
}

// FuzzPlainMessage: what the fast path accepts, the SDK's decoder accepts
// as a message with a method or an id.
func FuzzPlainMessage(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`))
	f.Add([]byte(`{"id":"a","jsonrpc":"2.0","method":"m","params":{"x":[1,"]}"]}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","method":"notifications/x","error":null}`))
	f.Add([]byte(` { "jsonrpc" : "2.0" , "id" : -12 , "result" : null } `))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"id":2,"result":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) || jsonDepth(data) > maxJSONDepth || !json.Valid(data) || !plainMessage(data) {
			return
		}
		msg, err := jsonrpc.DecodeMessage(data)
		if err != nil {
			t.Fatalf("fast path accepted %q, which the SDK refuses: %v", data, err)
		}
		if req, ok := msg.(*jsonrpc.Request); ok && req.Method == "" {
			t.Fatalf("fast path accepted %q, a request with an empty method", data)
		}
	})
}

func TestPlainMessage(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\"}b"}]}}`, true},
		{`{"jsonrpc":"2.0","method":"notifications/progress","params":{}}`, true},
		{`{"jsonrpc":"2.0","id":"x","method":"sampling/createMessage"}`, true},
		{`{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}`, false}, // left to the SDK
		{`{"jsonrpc":"2.0","result":{}}`, false},
		{`{"jsonrpc":"1.0","id":1,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1.5,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":true,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1,"method":""}`, false},
		{`{"jsonrp\u0063":"2.0","id":1,"result":{}}`, false},
		{`{"jsonrpc":"2.0","id":1,"id":2,"result":{}}`, false},
		{`[{"jsonrpc":"2.0","id":1,"result":{}}]`, false},
	} {
		if got := plainMessage([]byte(tc.msg)); got != tc.want {
			t.Errorf("plainMessage(%s)=%v, want %v", tc.msg, got, tc.want)
		}
	}
}
