package transport

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestEncodeMessage(t *testing.T) {
	id, _ := jsonrpc.MakeID("a")
	tests := []struct {
		name string
		msg  jsonrpc.Message
		want string
	}{
		{
			name: "error without id has null id",
			msg:  &jsonrpc.Response{Error: &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "bad"}},
			want: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}`,
		},
		{
			name: "plain error without id becomes an internal error",
			msg:  &jsonrpc.Response{Error: errors.New("boom")},
			want: `{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"boom"}}`,
		},
		{
			name: "error with id keeps it",
			msg:  &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{Code: -32084, Message: "down"}},
			want: `{"jsonrpc":"2.0","id":"a","error":{"code":-32084,"message":"down"}}`,
		},
		{
			name: "request",
			msg:  &jsonrpc.Request{ID: id, Method: "ping"},
			want: `{"jsonrpc":"2.0","id":"a","method":"ping"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeMessage(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("encodeMessage()=%s, want %s", got, tc.want)
			}
		})
	}
}

func TestWriteHTTPError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		status     int
		code       int64
		message    string
		retryAfter string
	}{
		{
			name:    "refusal",
			err:     &HTTPError{Status: http.StatusNotFound, Code: -32085, Message: "no route for target"},
			status:  http.StatusNotFound,
			code:    -32085,
			message: "no route for target",
		},
		{
			name:       "retry after",
			err:        &HTTPError{Status: http.StatusTooManyRequests, Code: -32083, Message: "slow down", RetryAfter: 3},
			status:     http.StatusTooManyRequests,
			code:       -32083,
			message:    "slow down",
			retryAfter: "3",
		},
		{
			name:    "internal error hides its text",
			err:     errors.New("open /secret/path: permission denied"),
			status:  http.StatusInternalServerError,
			code:    jsonrpc.CodeInternalError,
			message: "internal error; see the gateway log",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteHTTPError(rec, tc.err)
			if got, want := rec.Code, tc.status; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if got, want := rec.Header().Get("Retry-After"), tc.retryAfter; got != want {
				t.Errorf("Retry-After=%q, want %q", got, want)
			}
			if got, want := rec.Header().Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type=%q, want %q", got, want)
			}
			var body struct {
				ID    *json.RawMessage `json:"id"`
				Error jsonrpc.Error    `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if got, want := body.Error.Code, tc.code; got != want {
				t.Errorf("code=%d, want %d", got, want)
			}
			if got, want := body.Error.Message, tc.message; got != want {
				t.Errorf("message=%q, want %q", got, want)
			}
			if !strings.Contains(rec.Body.String(), `"id":null`) {
				t.Errorf("body %s has no null id", rec.Body)
			}
		})
	}
}

func TestPeekID(t *testing.T) {
	big := strings.Repeat("x", 100)
	tests := []struct {
		name     string
		head     string
		id       any // nil: no id may be reported
		response bool
	}{
		{name: "request", head: `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo"}}`, id: int64(5)},
		{name: "request cut short in params", head: `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"arguments":{"text":"` + big, id: "a"},
		{name: "response cut short in result", head: `{"jsonrpc":"2.0","id":7,"result":{"content":[{"text":"` + big, id: int64(7), response: true},
		{name: "error response", head: `{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"` + big, id: int64(7), response: true},
		{name: "id after the bulk", head: `{"jsonrpc":"2.0","method":"tools/call","params":{"text":"` + big},
		{name: "method after the bulk", head: `{"jsonrpc":"2.0","id":5,"params":{"text":"` + big},
		{name: "notification", head: `{"jsonrpc":"2.0","method":"notifications/progress","params":{}}`},
		{name: "null id", head: `{"jsonrpc":"2.0","id":null,"method":"ping"}`},
		{name: "object id", head: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`},
		{name: "id and nothing else", head: `{"jsonrpc":"2.0","id":5}`},
		{name: "method and result", head: `{"id":5,"result":{},"method":"ping"}`, id: int64(5)},
		{name: "case matters", head: `{"ID":5,"Method":"ping"}`},
		{name: "duplicate id", head: `{"jsonrpc":"2.0","id":5,"id":6,"method":"ping","params":{"text":"` + big},
		{name: "null then id", head: `{"jsonrpc":"2.0","id":null,"id":6,"method":"ping"}`},
		{name: "not an object", head: `[{"jsonrpc":"2.0","id":5,"method":"ping"}]`},
		{name: "garbage", head: "\xff\x00"},
		{name: "empty", head: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, response := peekID([]byte(tc.head))
			if tc.id == nil {
				if id.IsValid() {
					t.Fatalf("peekID=%v, want no id", id.Raw())
				}
				return
			}
			if got, want := id.Raw(), tc.id; got != want {
				t.Fatalf("peekID id=%v, want %v", got, want)
			}
			if got, want := response, tc.response; got != want {
				t.Fatalf("peekID response=%v, want %v", got, want)
			}
		})
	}
}

// FuzzPeekID checks peekID against the SDK's decoder: on any prefix of a
// message it never panics, and on a whole message what it reports agrees
// with what the message decodes to. (On a prefix it cannot: a "method"
// past the cut would make a request of what looked like a response.)
func FuzzPeekID(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo"}}`), 40)
	f.Add([]byte(`{"jsonrpc":"2.0","id":"x","result":{"content":[]}}`), 30)
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`), 100)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if cut >= 0 && cut <= len(data) {
			peekID(data[:cut])
		}
		id, response := peekID(data)
		if !id.IsValid() {
			return
		}
		msg, err := jsonrpc.DecodeMessage(data)
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *jsonrpc.Request:
			if response || m.ID != id {
				t.Fatalf("peekID(%q)=%v, response=%v; the message is a request with id %v", data, id.Raw(), response, m.ID.Raw())
			}
		case *jsonrpc.Response:
			if !response || m.ID != id {
				t.Fatalf("peekID(%q)=%v, response=%v; the message is a response with id %v", data, id.Raw(), response, m.ID.Raw())
			}
		}
	})
}
