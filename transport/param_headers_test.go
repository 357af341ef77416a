package transport

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParamHeaders(t *testing.T) {
	var p ParamHeaders
	p.learn([]byte(`{"tools":[
		{"name":"deploy","inputSchema":{"type":"object","properties":{
			"region":{"type":"string","x-mcp-header":"Region"},
			"dry":{"type":"boolean","x-mcp-header":"Dry-Run"},
			"count":{"type":"integer","x-mcp-header":"Count"},
			"target":{"type":"object","properties":{"env":{"type":"string","x-mcp-header":"Env"}}},
			"bad":{"type":"string","x-mcp-header":"no spaces"}}}},
		{"name":"plain","inputSchema":{"type":"object"}}]}`))
	call := func(params string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":` + params + `}`
	}
	tests := []struct {
		name string
		body string
		want http.Header
	}{
		{name: "all kinds", body: call(`{"name":"deploy","arguments":{"region":"eu-west","dry":true,"count":3,"target":{"env":"prod"},"bad":"x"}}`),
			want: http.Header{"Mcp-Param-Region": {"eu-west"}, "Mcp-Param-Dry-Run": {"true"}, "Mcp-Param-Count": {"3"}, "Mcp-Param-Env": {"prod"}}},
		{name: "non-ASCII and padded strings in Base64", body: call(`{"name":"deploy","arguments":{"region":"zürich","target":{"env":" prod"}}}`),
			want: http.Header{"Mcp-Param-Region": {"=?base64?esO8cmljaA==?="}, "Mcp-Param-Env": {"=?base64?IHByb2Q=?="}}},
		{name: "absent, null and non-integer values", body: call(`{"name":"deploy","arguments":{"region":null,"count":1.5}}`), want: http.Header{}},
		{name: "ambiguous argument", body: call(`{"name":"deploy","arguments":{"region":"eu","Region":"us"}}`), want: http.Header{}},
		{name: "ambiguous tool name", body: call(`{"name":"deploy","Name":"plain","arguments":{"region":"eu"}}`), want: http.Header{}},
		{name: "tool without bindings", body: call(`{"name":"plain","arguments":{"region":"eu"}}`), want: http.Header{}},
		{name: "unknown tool", body: call(`{"name":"other","arguments":{"region":"eu"}}`), want: http.Header{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// What came before, a caller's or a stale header, never survives.
			h := http.Header{"Mcp-Param-Region": {"forged"}, "Mcp-Param-Other": {"x"}}
			p.set(h, []byte(tc.body))
			if diff := cmp.Diff(tc.want, h); diff != "" {
				t.Fatalf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParamHeaders learns from arbitrary tools/list results (upstream
// bytes) and sets headers from arbitrary bodies: it must never panic, and
// every header it sets must be a valid Mcp-Param-* header.
func FuzzParamHeaders(f *testing.F) {
	f.Add([]byte(`{"tools":[{"name":"t","inputSchema":{"properties":{"a":{"x-mcp-header":"A","properties":{"b":{"x-mcp-header":"B"}}}}}}]}`),
		[]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":{"b":"x"}}}}`))
	f.Fuzz(func(t *testing.T, result, body []byte) {
		var p ParamHeaders
		p.learn(result)
		h := http.Header{}
		p.set(h, body)
		for k, vs := range h {
			if !strings.HasPrefix(k, HeaderParamPrefix) || len(vs) != 1 || !validHeaderToken(strings.TrimPrefix(k, HeaderParamPrefix)) {
				t.Fatalf("set %s: %q", k, vs)
			}
			for _, c := range vs[0] {
				if c < 0x20 || c > 0x7e {
					t.Fatalf("header %s value %q is not printable ASCII", k, vs[0])
				}
			}
		}
	})
}
