package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestDecodeBody(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		methods []string // of the decoded messages; "" for a response
		errMsg  string   // part of the error
	}{
		{name: "one request", body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, methods: []string{"ping"}},
		{name: "surrounding space", body: " \n\t{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n", methods: []string{"notifications/initialized"}},
		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"result":{}}]`, methods: []string{"ping", ""}},
		{name: "empty", body: "", errMsg: "empty POST body"},
		{name: "only space", body: " \r\n", errMsg: "empty POST body"},
		{name: "malformed", body: `{"jsonrpc":"2.0",`, errMsg: "malformed JSON-RPC message"},
		{name: "not an object", body: `42`, errMsg: "malformed JSON-RPC message"},
		{name: "wrong version", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, errMsg: "malformed JSON-RPC message"},
		{name: "response without id", body: `{"jsonrpc":"2.0","result":{}}`, errMsg: "malformed JSON-RPC message"},
		{name: "object id", body: `{"jsonrpc":"2.0","id":{},"method":"ping"}`, errMsg: "malformed JSON-RPC message"},
		{name: "malformed batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}`, errMsg: "malformed JSON-RPC batch"},
		{name: "empty batch", body: `[]`, errMsg: "empty JSON-RPC batch"},
		{name: "garbage batch element", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"},"garbage"]`, errMsg: "batch element 1: malformed JSON-RPC message"},
		{name: "null batch element", body: `[null]`, errMsg: "batch element 0: malformed JSON-RPC message"},
		{name: "duplicate method", body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, errMsg: `duplicate key "method" in the JSON-RPC message refused`},
		{name: "case-variant id in a batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","ID":2,"id":3,"method":"ping"}]`,
			errMsg: `batch element 1: key "ID" in the JSON-RPC message is a case variant of "id"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := decodeBody([]byte(tc.body))
			if tc.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
					t.Fatalf("decodeBody(%q) error %v, want one containing %q", tc.body, err, tc.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeBody(%q): %v", tc.body, err)
			}
			var got []string
			for _, m := range msgs {
				switch m := m.(type) {
				case *jsonrpc.Request:
					got = append(got, m.Method)
				case *jsonrpc.Response:
					got = append(got, "")
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.methods, ",") || len(got) != len(tc.methods) {
				t.Fatalf("decodeBody(%q) methods=%q, want %q", tc.body, got, tc.methods)
			}
		})
	}
}

// FuzzDecodeBody decodes arbitrary POST bodies: decodeBody must never panic,
// and whatever it accepts must be at least one message that re-encodes.
func FuzzDecodeBody(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}`))
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]`))
	f.Add([]byte(`[{"jsonrpc":"2.0","id":1,"method":"ping"},"garbage"]`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"x","data":[1]}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[[[]]]`))
	f.Add([]byte(` `))
	f.Add([]byte(`{"jsonrpc":"2.0","id":null,"method":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, err := decodeBody(body)
		if err != nil {
			return
		}
		if len(msgs) == 0 {
			t.Fatalf("decodeBody(%q) accepted no messages", body)
		}
		for i, m := range msgs {
			if m == nil {
				t.Fatalf("decodeBody(%q) message %d is nil", body, i)
			}
			if _, err := encodeMessage(m); err != nil {
				t.Fatalf("decodeBody(%q) message %d does not re-encode: %v", body, i, err)
			}
		}
	})
}

func TestProgressToken(t *testing.T) {
	tests := []struct {
		name   string
		method string // default tools/call
		params string
		want   string
		err    string // part of the refusal
	}{
		{name: "none", params: ``, want: ""},
		{name: "no token", params: `{"name":"echo"}`, want: ""},
		{name: "request string token", params: `{"name":"slow","_meta":{"progressToken":"p1"}}`, want: `"p1"`},
		{name: "notification token", method: "notifications/progress", params: `{"progressToken":"p1","progress":1}`, want: `"p1"`},
		{name: "top-level token of a request", params: `{"progressToken":"p1"}`, want: ""},
		{name: "number token", params: `{"_meta":{"progressToken":1}}`, want: `1`},
		{name: "string of a number", params: `{"_meta":{"progressToken":"1"}}`, want: `"1"`},
		{name: "number spelled as a float", method: "notifications/progress", params: `{"progressToken":1.0,"progress":1}`, want: `1`},
		{name: "empty string token", params: `{"_meta":{"progressToken":""}}`, want: `""`},
		{name: "object token", params: `{"_meta":{"progressToken":{"a":1}}}`, want: ""},
		{name: "boolean token", params: `{"_meta":{"progressToken":true}}`, want: ""},
		{name: "malformed", params: `{"_meta":{"progressToken":`, want: ""},
		{name: "null token", params: `{"_meta":{"progressToken":null}}`, want: ""},
		{name: "mentioned but absent", params: `{"text":"progressToken"}`, want: ""},
		{name: "escaped key", params: `{"_meta":{"progress\u0054oken":"p1"}}`, err: `key "progressToken" in params._meta of tools/call is written with escape sequences`},
		{name: "duplicate token", params: `{"_meta":{"progressToken":"p1","progressToken":"p2"}}`, err: `duplicate key "progressToken" in params._meta of tools/call`},
		{name: "case-variant token", params: `{"_meta":{"ProgressToken":"p1"}}`, err: `key "ProgressToken" in params._meta of tools/call is a case variant of "progressToken"`},
		{name: "duplicate _meta", params: `{"_meta":{"progressToken":"p1"},"_meta":{"progressToken":"p2"}}`, err: `duplicate key "_meta" in params of tools/call`},
		{name: "case-variant _meta", params: `{"_Meta":{"progressToken":"p1"}}`, err: `key "_Meta" in params of tools/call is a case variant of "_meta"`},
		{name: "duplicate notification token", method: "notifications/progress", params: `{"progressToken":"p1","progressToken":"p2"}`, err: `duplicate key "progressToken" in params of notifications/progress`},
		{name: "invalid UTF-8 token", params: "{\"_meta\":{\"progressToken\":\"p\xff\"}}", err: `"progressToken" in params._meta of tools/call is not valid UTF-8`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "tools/call"
			}
			got, err := progressToken(method, json.RawMessage(tc.params))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("progressToken(%s) error %v, want one containing %q", tc.params, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("progressToken(%s)=%q, %v, want %q", tc.params, got, err, tc.want)
			}
		})
	}
}

// FuzzProgressToken reads progress tokens out of arbitrary params. It must
// never panic, and a token must give the same key whether it is read from a
// request's _meta or from the progress notification that echoes it.
func FuzzProgressToken(f *testing.F) {
	f.Add([]byte(`"p1"`))
	f.Add([]byte(`42`))
	f.Add([]byte(`{"_meta":{"progressToken":"p1"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		progressToken("tools/call", json.RawMessage(data)) // arbitrary params
		progressToken("notifications/progress", json.RawMessage(data))

		var tok any
		if json.Unmarshal(data, &tok) != nil {
			return
		}
		switch tok.(type) {
		case string, float64:
		default:
			return // the spec allows only strings and integers
		}
		req, rerr := progressToken("tools/call", json.RawMessage(`{"name":"slow","_meta":{"progressToken":`+string(data)+`}}`))
		note, nerr := progressToken("notifications/progress", json.RawMessage(`{"progress":1,"progressToken":`+string(data)+`}`))
		if (rerr == nil) != (nerr == nil) {
			t.Fatalf("token %s: request error %v, notification error %v", data, rerr, nerr)
		}
		if rerr != nil {
			return // refused alike: a string that is not valid UTF-8
		}
		if req != note {
			t.Fatalf("token %s: request key %q, notification key %q", data, req, note)
		}
		if req == "" {
			t.Fatalf("token %s has no key", data)
		}
		// A number token and a string token of the same text are different
		// tokens.
		if _, isNum := tok.(float64); isNum {
			quoted, _ := json.Marshal(strings.TrimSpace(string(data)))
			if other, _ := progressToken("tools/call", json.RawMessage(`{"_meta":{"progressToken":`+string(quoted)+`}}`)); other == req {
				t.Fatalf("number token %s and string token %s share the key %q", data, quoted, req)
			}
		}
	})
}

// TestStreamableProgressRouting checks that a progress notification goes to
// the stream of the request whose token it carries, when two requests in
// flight on one session use the string "1" and the number 1.
func TestStreamableProgressRouting(t *testing.T) {
	s := NewStreamableServer(func(*http.Request) (func(*http.Request) error, func(mcp.Connection), error) {
		return func(*http.Request) error { return nil }, func(c mcp.Connection) {
			ctx := context.Background()
			var held []*jsonrpc.Request
			for {
				msg, err := c.Read(ctx)
				if err != nil {
					return
				}
				req, ok := msg.(*jsonrpc.Request)
				if !ok || !req.IsCall() {
					continue
				}
				if req.Method == "initialize" {
					c.Write(ctx, &jsonrpc.Response{ID: req.ID, Result: []byte(`{}`)})
					continue
				}
				// Answer once both calls are in flight, progress first.
				if held = append(held, req); len(held) < 2 {
					continue
				}
				for _, r := range held {
					var p struct {
						Meta struct {
							Token json.RawMessage `json:"progressToken"`
						} `json:"_meta"`
					}
					json.Unmarshal(r.Params, &p)
					c.Write(ctx, &jsonrpc.Request{Method: "notifications/progress", Params: []byte(`{"progress":1,"progressToken":` + string(p.Meta.Token) + `}`)})
				}
				for _, r := range held {
					c.Write(ctx, &jsonrpc.Response{ID: r.ID, Result: []byte(`{}`)})
				}
				held = nil
			}
		}, nil
	}, nil)
	ts := httptest.NewServer(s)
	defer s.Close()
	defer ts.Close()

	post := func(sessionID, body string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, ts.URL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if sessionID != "" {
			req.Header.Set(HeaderSessionID, sessionID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return nil
		}
		return resp
	}
	// events returns the data of every event on a POST's stream.
	events := func(resp *http.Response) []string {
		defer resp.Body.Close()
		var out []string
		r := newSSEReader(resp.Body, 1<<20)
		for {
			ev, err := r.Next()
			if err != nil {
				return out
			}
			out = append(out, string(ev.Data))
		}
	}

	initResp := post("", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`)
	id := initResp.Header.Get(HeaderSessionID)
	events(initResp)
	if id == "" {
		t.Fatal("initialize answered without a session id")
	}
	streams := make([][]string, 2)
	var wg sync.WaitGroup
	for i, tok := range []string{`"1"`, `1`} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := post(id, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":%s}}}`, i+1, tok)); resp != nil {
				streams[i] = events(resp)
			}
		}()
	}
	wg.Wait()
	want := [][]string{
		{`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"progressToken":"1"}}`, `{"jsonrpc":"2.0","id":1,"result":{}}`},
		{`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"progressToken":1}}`, `{"jsonrpc":"2.0","id":2,"result":{}}`},
	}
	if diff := cmp.Diff(want, streams); diff != "" {
		t.Fatalf("events per stream (-want +got):\n%s", diff)
	}
}

func TestHTTPSessionExpired(t *testing.T) {
	const abandon, idle = time.Minute, 30 * time.Minute
	now := time.Now()
	tests := []struct {
		name     string
		active   int           // requests in flight
		stream   bool          // a GET stream is open
		used     time.Duration // since the last request or stream ended
		posted   time.Duration // since the last request ended
		expected string
	}{
		{name: "fresh", expected: ""},
		{name: "no stream, quiet under the abandon timeout", used: abandon - time.Second, posted: abandon - time.Second, expected: ""},
		{name: "no stream, quiet past the abandon timeout", used: abandon + time.Second, posted: abandon + time.Second, expected: "abandoned"},
		{name: "stream closed lately after long quiet", used: time.Second, posted: idle - time.Second, expected: ""},
		{name: "stream open, quiet past the abandon timeout", stream: true, used: abandon + time.Second, posted: abandon + time.Second, expected: ""},
		{name: "stream open, quiet past the idle timeout", stream: true, used: idle + time.Second, posted: idle + time.Second, expected: "idle"},
		{name: "request in flight for longer than both", active: 1, used: 2 * idle, posted: 2 * idle, expected: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHTTPSession(nil, false, slog.New(slog.DiscardHandler), nil)
			h.active = tc.active
			if tc.stream {
				h.standalone = newSSEStream(httptest.NewRecorder())
			}
			h.lastUsed, h.lastPOST = now.Add(-tc.used), now.Add(-tc.posted)
			if got := h.expired(now, abandon, idle); got != tc.expected {
				t.Errorf("expired()=%q, want %q", got, tc.expected)
			}
		})
	}
}
