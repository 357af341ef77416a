package transport

import (
	"errors"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestCheckRoutingHeaders(t *testing.T) {
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`
	tests := []struct {
		name   string
		body   string
		header map[string][]string
		code   int64  // 0: accepted
		msg    string // the whole refusal
	}{
		{name: "no headers", body: call},
		{name: "matching", body: call, header: map[string][]string{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}},
		{name: "only method", body: call, header: map[string][]string{"Mcp-Method": {"tools/call"}}},
		{name: "base64 name", body: call, header: map[string][]string{"Mcp-Name": {"=?base64?ZWNobw==?="}}},
		{name: "param header on tools/call", body: call, header: map[string][]string{"Mcp-Param-Region": {"eu"}}},
		{name: "prompt name", body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}`,
			header: map[string][]string{"Mcp-Method": {"prompts/get"}, "Mcp-Name": {"greet"}}},
		{name: "resource uri", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://greeting"}}`,
			header: map[string][]string{"Mcp-Name": {"test://greeting"}}},
		{name: "method mismatch", body: call, header: map[string][]string{"Mcp-Method": {"ping"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Method header "ping" does not match the body's method "tools/call"; send the headers the body implies, or none`},
		{name: "name mismatch", body: call, header: map[string][]string{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"delete_repo"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Name header "delete_repo" does not match the body's params.name "echo"; send the headers the body implies, or none`},
		{name: "uri mismatch", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://greeting"}}`,
			header: map[string][]string{"Mcp-Name": {"file:///etc/passwd"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Name header "file:///etc/passwd" does not match the body's params.uri "test://greeting"; send the headers the body implies, or none`},
		{name: "name twice", body: call, header: map[string][]string{"Mcp-Name": {"echo", "delete_repo"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Name header sent 2 times; send the headers the body implies, or none`},
		{name: "name on a method without one", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
			header: map[string][]string{"Mcp-Name": {"echo"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Name header sent with method "tools/list", which names nothing; send the headers the body implies, or none`},
		{name: "name but the body has none", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`,
			header: map[string][]string{"Mcp-Name": {"echo"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Name header "echo" but the body's params have no name; send the headers the body implies, or none`},
		{name: "ambiguous body name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo","Name":"echo"}}`,
			header: map[string][]string{"Mcp-Name": {"echo"}}, code: jsonrpc.CodeInvalidRequest,
			msg: `key "Name" in params of tools/call is a case variant of "name" and refused; send each key once, spelled exactly`},
		{name: "param header elsewhere", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
			header: map[string][]string{"Mcp-Param-Region": {"eu"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Param-Region header sent with method "tools/list"; only tools/call carries Mcp-Param-* headers; send the headers the body implies, or none`},
		{name: "bad base64 param", body: call, header: map[string][]string{"Mcp-Param-Region": {"=?base64?!!?="}}, code: CodeHeaderMismatch,
			msg: `Mcp-Param-Region header holds invalid Base64 inside =?base64?…?=; send the headers the body implies, or none`},
		{name: "batch", body: `[` + call + `,{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
			header: map[string][]string{"Mcp-Method": {"tools/call"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Method, Mcp-Name and Mcp-Param-* headers describe one message and this POST is a batch of 2; send the headers the body implies, or none`},
		{name: "response", body: `{"jsonrpc":"2.0","id":1,"result":{}}`,
			header: map[string][]string{"Mcp-Method": {"sampling/createMessage"}}, code: CodeHeaderMismatch,
			msg: `Mcp-Method, Mcp-Name and Mcp-Param-* headers sent with a response, which has no method; send the headers the body implies, or none`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := decodeBody([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			for k, vs := range tc.header {
				for _, v := range vs {
					h.Add(k, v)
				}
			}
			err = checkRoutingHeaders(h, msgs)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var he *HTTPError
			if !errors.As(err, &he) {
				t.Fatalf("error %v, want an *HTTPError", err)
			}
			if he.Status != http.StatusBadRequest || he.Code != tc.code || he.Message != tc.msg {
				t.Fatalf("refusal %d %d %q, want 400 %d %q", he.Status, he.Code, he.Message, tc.code, tc.msg)
			}
			if req, ok := msgs[0].(*jsonrpc.Request); ok && len(msgs) == 1 && he.ID != req.ID {
				t.Fatalf("refusal answers id %v, want %v", he.ID.Raw(), req.ID.Raw())
			}
		})
	}
}
