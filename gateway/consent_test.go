package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestDeclaresURLElicitation(t *testing.T) {
	tests := []struct {
		name, params string
		want         bool
	}{
		{"url mode", `{"capabilities":{"elicitation":{"url":{}}}}`, true},
		{"url and form", `{"capabilities":{"elicitation":{"form":{},"url":{}}}}`, true},
		{"form only", `{"capabilities":{"elicitation":{"form":{}}}}`, false},
		{"bare elicitation", `{"capabilities":{"elicitation":{}}}`, false},
		{"url null", `{"capabilities":{"elicitation":{"url":null}}}`, false},
		{"no capabilities", `{}`, false},
		{"not an object", `[1]`, false},
		{"empty", ``, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := declaresURLElicitation(json.RawMessage(tt.params)); got != tt.want {
				t.Fatalf("declaresURLElicitation(%s)=%v, want %v", tt.params, got, tt.want)
			}
		})
	}
}

func TestMetaCapabilities(t *testing.T) {
	params := `{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}}`
	if !declaresURLElicitation(metaCapabilities(json.RawMessage(params))) {
		t.Fatal("capabilities in _meta not found")
	}
	if declaresURLElicitation(metaCapabilities(json.RawMessage(`{"_meta":{}}`))) {
		t.Fatal("no capabilities read as url elicitation")
	}
}

// TestForUpstream: the retry of the gateway's input_required answer
// reaches the upstream without the gateway's requestState and input
// response; anything else, another server's requestState included, is
// forwarded as it is.
func TestForUpstream(t *testing.T) {
	const id = "abc"
	tests := []struct {
		name, method, params string
		stripped             bool
	}{
		{"gateway retry", "tools/call", `{"name":"echo","arguments":{"text":"x"},"requestState":"mcpgw-consent:abc","inputResponses":{"mcpgw-consent":{"action":"accept"}}}`, true},
		{"upstream's own state", "tools/call", `{"name":"echo","requestState":"opaque","inputResponses":{"q":{"action":"accept"}}}`, false},
		{"prefix only in arguments", "tools/call", `{"name":"echo","arguments":{"text":"mcpgw-consent:abc"}}`, false},
		{"not a multi round-trip method", "tools/list", `{"requestState":"mcpgw-consent:abc"}`, false},
		{"malformed", "tools/call", `{"requestState":`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &jsonrpc.Request{Method: tt.method, Params: json.RawMessage(tt.params)}
			got := forUpstream(req)
			if !tt.stripped {
				if got != req {
					t.Fatalf("forUpstream changed %s", tt.params)
				}
				return
			}
			if strings.Contains(string(got.Params), "mcpgw-consent") || !strings.Contains(string(got.Params), `"arguments":{"text":"x"}`) {
				t.Fatalf("forUpstream(%s) = %s", tt.params, got.Params)
			}
			if retry, accept := consentRetry(req.Params, id); !retry || !accept {
				t.Fatalf("consentRetry = %v, %v; want the accepted retry", retry, accept)
			}
		})
	}
	if retry, _ := consentRetry(json.RawMessage(`{"requestState":"mcpgw-consent:other"}`), id); retry {
		t.Fatal("another link's retry taken for this one")
	}
	if _, accept := consentRetry(json.RawMessage(`{"requestState":"mcpgw-consent:abc","inputResponses":{"mcpgw-consent":{"action":"decline"}}}`), id); accept {
		t.Fatal("a decline taken for an accept")
	}
}

// FuzzConsentParams: the decoders of a held session's untrusted params
// never panic, and forUpstream only ever removes the gateway's own keys.
func FuzzConsentParams(f *testing.F) {
	f.Add([]byte(`{"capabilities":{"elicitation":{"url":{}}}}`))
	f.Add([]byte(`{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}}`))
	f.Add([]byte(`{"name":"echo","requestState":"mcpgw-consent:abc","inputResponses":{"mcpgw-consent":{"action":"accept"}}}`))
	f.Add([]byte(`{"requestState":"mcpgw-consent:","requestState":"x"}`))
	f.Fuzz(func(t *testing.T, params []byte) {
		declaresURLElicitation(params)
		declaresURLElicitation(metaCapabilities(params))
		consentRetry(params, "abc")
		req := &jsonrpc.Request{Method: "tools/call", Params: params}
		out := forUpstream(req)
		if out == req {
			return
		}
		var before, after map[string]json.RawMessage
		if json.Unmarshal(params, &before) != nil || json.Unmarshal(out.Params, &after) != nil {
			t.Fatalf("stripped params that are not an object: %s -> %s", params, out.Params)
		}
		for k := range before {
			if _, ok := after[k]; !ok && k != "requestState" && k != "inputResponses" {
				t.Fatalf("forUpstream dropped %q", k)
			}
		}
	})
}
