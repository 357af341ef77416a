package jsonrpcx

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestToolCallName(t *testing.T) {
	tests := []struct {
		name   string
		params string
		want   string
		ok     bool
		err    string // the whole refusal
	}{
		{name: "plain", params: `{"name":"echo","arguments":{}}`, want: "echo", ok: true},
		{name: "space around", params: " {\n\"name\" : \"echo\" }\n", want: "echo", ok: true},
		{name: "name in arguments is not the name", params: `{"name":"echo","arguments":{"name":"x","Name":"y","name":"z"}}`, want: "echo", ok: true},
		{name: "other keys with escapes", params: `{"n\u0061mes":1,"name":"echo"}`, want: "echo", ok: true},
		{name: "absent", params: `{"arguments":{}}`},
		{name: "not a string", params: `{"name":7}`},
		{name: "not an object", params: `["name","echo"]`},
		{name: "empty", params: ``},
		{name: "malformed", params: `{"name":"echo"`},
		{name: "case variant after", params: `{"name":"delete_repo","Name":"echo"}`,
			err: `key "Name" in params of tools/call is a case variant of "name" and refused; send each key once, spelled exactly`},
		{name: "case variant before", params: `{"NAME":"echo","name":"delete_repo"}`,
			err: `key "NAME" in params of tools/call is a case variant of "name" and refused; send each key once, spelled exactly`},
		{name: "case variant alone", params: `{"Name":"echo"}`,
			err: `key "Name" in params of tools/call is a case variant of "name" and refused; send each key once, spelled exactly`},
		{name: "duplicate", params: `{"name":"echo","name":"delete_repo"}`,
			err: `duplicate key "name" in params of tools/call refused; send each key once, spelled exactly`},
		{name: "escaped duplicate", params: `{"name":"echo","n\u0061me":"delete_repo"}`,
			err: `key "name" in params of tools/call is written with escape sequences and refused; send each key once, spelled exactly`},
		{name: "escaped alone", params: `{"n\u0061me":"delete_repo"}`,
			err: `key "name" in params of tools/call is written with escape sequences and refused; send each key once, spelled exactly`},
		{name: "escaped case variant", params: `{"name":"delete_repo","nam\u0045":"echo"}`,
			err: `key "namE" in params of tools/call is a case variant of "name" and refused; send each key once, spelled exactly`},
		{name: "invalid UTF-8 value", params: "{\"name\":\"delete\xffrepo\"}",
			err: `"name" in params of tools/call is not valid UTF-8 or holds U+FFFD and is refused; send it as valid UTF-8`},
		{name: "lone surrogate value", params: `{"name":"delete\ud800repo"}`,
			err: `"name" in params of tools/call is not valid UTF-8 or holds U+FFFD and is refused; send it as valid UTF-8`},
		{name: "invalid UTF-8 key", params: "{\"nam\xff\":\"x\",\"name\":\"echo\"}",
			err: `a key in params of tools/call is not valid UTF-8 and refused; send keys as valid UTF-8, spelled exactly`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := ToolCallName(json.RawMessage(tc.params))
			if tc.err != "" {
				var e *Error
				if !errors.As(err, &e) || err.Error() != tc.err {
					t.Fatalf("ToolCallName(%s) error %v, want %q", tc.params, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || ok != tc.ok {
				t.Fatalf("ToolCallName(%s)=%q,%v,%v, want %q,%v", tc.params, got, ok, err, tc.want, tc.ok)
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		method string // of an accepted request
		err    string // part of the refusal
		strict bool   // the refusal is an *Error
		id     any    // the id the refusal answers, nil for none
	}{
		{name: "request", data: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, method: "ping"},
		{name: "response", data: `{"jsonrpc":"2.0","id":1,"result":{}}`},
		{name: "duplicate method", data: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`,
			err: `duplicate key "method" in the JSON-RPC message refused`, strict: true, id: int64(1)},
		{name: "case-variant method", data: `{"jsonrpc":"2.0","id":"a","Method":"tools/call","method":"ping"}`,
			err: `key "Method" in the JSON-RPC message is a case variant of "method"`, strict: true, id: "a"},
		{name: "duplicate id", data: `{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`,
			err: `duplicate key "id" in the JSON-RPC message refused`, strict: true},
		{name: "case-variant id", data: `{"jsonrpc":"2.0","ID":1,"id":2,"method":"ping"}`,
			err: `key "ID" in the JSON-RPC message is a case variant of "id"`, strict: true},
		{name: "duplicate params", data: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"},"params":{"name":"delete_repo"}}`,
			err: `duplicate key "params" in the JSON-RPC message refused`, strict: true, id: int64(3)},
		{name: "escaped method key", data: `{"jsonrpc":"2.0","id":1,"m\u0065thod":"ping"}`,
			err: `key "method" in the JSON-RPC message is written with escape sequences`, strict: true, id: int64(1)},
		{name: "duplicate result", data: `{"jsonrpc":"2.0","id":4,"result":{},"result":{"x":1}}`,
			err: `duplicate key "result" in the JSON-RPC message refused`, strict: true, id: int64(4)},
		{name: "invalid UTF-8 method", data: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"pi\xffng\"}",
			err: `"method" in the JSON-RPC message is not valid UTF-8`, strict: true, id: int64(1)},
		{name: "lone surrogate id", data: `{"jsonrpc":"2.0","id":"a\udc00","method":"ping"}`,
			err: `"id" in the JSON-RPC message is not valid UTF-8`, strict: true},
		{name: "trailing message", data: `{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"ping"}`,
			err: "data after the JSON-RPC message"},
		{name: "malformed", data: `{"jsonrpc":"2.0",`, err: "unmarshaling jsonrpc message"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := DecodeMessage([]byte(tc.data))
			if tc.err == "" {
				if err != nil {
					t.Fatalf("DecodeMessage(%s): %v", tc.data, err)
				}
				if req, ok := msg.(*jsonrpc.Request); ok && req.Method != tc.method {
					t.Fatalf("method=%q, want %q", req.Method, tc.method)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("DecodeMessage(%s) error %v, want one containing %q", tc.data, err, tc.err)
			}
			var e *Error
			if got := errors.As(err, &e); got != tc.strict {
				t.Fatalf("error %v is *Error: %v, want %v", err, got, tc.strict)
			}
			if e != nil && e.ID.Raw() != tc.id {
				t.Fatalf("refusal answers id %v, want %v", e.ID.Raw(), tc.id)
			}
		})
	}
}

func TestCancelledRequestID(t *testing.T) {
	tests := []struct {
		name   string
		params string
		want   any // the id's Raw(); nil for none
		err    string
	}{
		{name: "number", params: `{"requestId":7,"reason":"x"}`, want: int64(7)},
		{name: "truncated like the SDK", params: `{"requestId":7.9}`, want: int64(7)},
		{name: "string", params: `{"requestId":"7"}`, want: "7"},
		{name: "absent", params: `{"reason":"x"}`},
		{name: "object", params: `{"requestId":{}}`},
		{name: "duplicate", params: `{"requestId":1,"requestId":2}`, err: `duplicate key "requestId" in params of notifications/cancelled refused`},
		{name: "case variant", params: `{"requestId":1,"RequestId":2}`, err: `key "RequestId" in params of notifications/cancelled is a case variant of "requestId"`},
		{name: "lone surrogate", params: `{"requestId":"\ud800"}`, err: `"requestId" in params of notifications/cancelled is not valid UTF-8`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, ok, err := CancelledRequestID(json.RawMessage(tc.params))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("CancelledRequestID(%s) error %v, want one containing %q", tc.params, err, tc.err)
				}
				return
			}
			if err != nil || id.Raw() != tc.want || ok != (tc.want != nil) {
				t.Fatalf("CancelledRequestID(%s)=%v,%v,%v, want %v", tc.params, id.Raw(), ok, err, tc.want)
			}
		})
	}
}

func TestListedTools(t *testing.T) {
	tests := []struct {
		name   string
		result string
		names  string // comma-separated
		keep   []bool
		kept   string // the result after Keep
		err    string
	}{
		{name: "filter", result: `{"tools":[{"name":"a","x":1},{"name":"b"} , {"name":"c"}],"nextCursor":"n"}`, names: "a,b,c",
			keep: []bool{true, false, true}, kept: `{"tools":[{"name":"a","x":1},{"name":"c"}],"nextCursor":"n"}`},
		{name: "none kept", result: `{"tools":[{"name":"a"}]}`, names: "a", keep: []bool{false}, kept: `{"tools":[]}`},
		{name: "no tools", result: `{"nextCursor":"n"}`, names: ""},
		{name: "nameless tool", result: `{"tools":[{"title":"t"}]}`, names: ""},
		{name: "case-variant name", result: `{"tools":[{"name":"allowed","Name":"delete_repo"}]}`,
			err: `key "Name" in tool 0 of the result of tools/list is a case variant of "name"`},
		{name: "duplicate name", result: `{"tools":[{"name":"a"},{"name":"allowed","name":"delete_repo"}]}`,
			err: `duplicate key "name" in tool 1 of the result of tools/list refused`},
		{name: "duplicate tools", result: `{"tools":[],"tools":[{"name":"delete_repo"}]}`,
			err: `duplicate key "tools" in the result of tools/list refused`},
		{name: "case-variant tools", result: `{"tools":[],"Tools":[{"name":"delete_repo"}]}`,
			err: `key "Tools" in the result of tools/list is a case variant of "tools"`},
		{name: "tool not an object", result: `{"tools":["a"]}`, err: "not a JSON object"},
		{name: "name not a string", result: `{"tools":[{"name":1}]}`, err: "name is not a string"},
		{name: "tools not an array", result: `{"tools":{}}`, err: "not a JSON array"},
		{name: "malformed", result: `{"tools":[`, err: "not valid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl, err := ListedTools(json.RawMessage(tc.result))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ListedTools(%s) error %v, want one containing %q", tc.result, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ListedTools(%s): %v", tc.result, err)
			}
			if got := strings.Join(tl.Names, ","); got != tc.names {
				t.Fatalf("names=%q, want %q", got, tc.names)
			}
			if tc.keep != nil {
				if got := string(tl.Keep(tc.keep)); got != tc.kept {
					t.Fatalf("Keep=%s, want %s", got, tc.kept)
				}
			}
		})
	}
}

func TestIsToolError(t *testing.T) {
	tests := []struct {
		result string
		want   bool
		err    bool
	}{
		{result: `{"content":[],"isError":true}`, want: true},
		{result: `{"content":[],"isError":false}`},
		{result: `{"content":[{"isError":true}]}`},
		{result: `{"isError":false,"IsError":true}`, err: true},
		{result: `{"isError":false,"isError":true}`, err: true},
	}
	for _, tc := range tests {
		got, err := IsToolError(json.RawMessage(tc.result))
		if (err != nil) != tc.err || got != tc.want {
			t.Fatalf("IsToolError(%s)=%v,%v, want %v (error %v)", tc.result, got, err, tc.want, tc.err)
		}
	}
}

// FuzzListedTools reads arbitrary tools/list results: it must never panic,
// and keeping a subset of what it accepts must give valid JSON that reads
// back as exactly that subset.
func FuzzListedTools(f *testing.F) {
	f.Add([]byte(`{"tools":[{"name":"a"},{"name":"b","inputSchema":{"type":"object"}}],"nextCursor":"c"}`), uint64(1))
	f.Add([]byte(`{"tools":[{"name":"a","Name":"b"}]}`), uint64(0))
	f.Add([]byte(` {"tools" : [ ] } `), uint64(0))
	f.Fuzz(func(t *testing.T, result []byte, mask uint64) {
		tl, err := ListedTools(result)
		if err != nil {
			return
		}
		keep := make([]bool, len(tl.Tools))
		var want []string
		for i := range keep {
			keep[i] = mask&(1<<(i%64)) != 0
			if keep[i] {
				want = append(want, tl.Names[i])
			}
		}
		out := tl.Keep(keep)
		again, err := ListedTools(out)
		if err != nil {
			t.Fatalf("Keep(%s) gave %s, which does not read back: %v", result, out, err)
		}
		if vals, _ := Members(result, "", "tools"); vals[0] == nil {
			return // nothing was spliced
		}
		if got := strings.Join(again.Names, "\x00"); got != strings.Join(want, "\x00") {
			t.Fatalf("Keep(%s) gave %s with tools %q, want %q", result, out, again.Names, want)
		}
	})
}

// BenchmarkDecodeMessage compares the strict decoder with the SDK's, on a
// typical tools/call.
func BenchmarkDecodeMessage(b *testing.B) {
	data := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"list_issues","arguments":{"team":"eng","state":"open","limit":50},"_meta":{"progressToken":"p-42"}}}`)
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jsonrpc.DecodeMessage(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msg, err := DecodeMessage(data)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := ToolCallName(msg.(*jsonrpc.Request).Params); err != nil {
				b.Fatal(err)
			}
		}
	})
}
