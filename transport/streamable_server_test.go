package transport

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
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
		params string
		want   string
	}{
		{name: "none", params: ``, want: ""},
		{name: "no token", params: `{"name":"echo"}`, want: ""},
		{name: "request string token", params: `{"name":"slow","_meta":{"progressToken":"p1"}}`, want: "p1"},
		{name: "notification token", params: `{"progressToken":"p1","progress":1}`, want: "p1"},
		{name: "malformed", params: `{"_meta":{"progressToken":`, want: ""},
		{name: "null token", params: `{"_meta":{"progressToken":null}}`, want: ""},
		{name: "mentioned but absent", params: `{"text":"progressToken"}`, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := progressToken(json.RawMessage(tc.params)); got != tc.want {
				t.Fatalf("progressToken(%s)=%q, want %q", tc.params, got, tc.want)
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
		progressToken(json.RawMessage(data)) // arbitrary params

		var tok any
		if json.Unmarshal(data, &tok) != nil {
			return
		}
		switch tok.(type) {
		case string, float64:
		default:
			return // the spec allows only strings and integers
		}
		req := progressToken(json.RawMessage(`{"name":"slow","_meta":{"progressToken":` + string(data) + `}}`))
		note := progressToken(json.RawMessage(`{"progress":1,"progressToken":` + string(data) + `}`))
		if req != note {
			t.Fatalf("token %s: request key %q, notification key %q", data, req, note)
		}
	})
}
