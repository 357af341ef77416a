package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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

// fakeConsent stands in for the admin use case: it counts the flows the
// gateway starts and can fail or mark flows used, which a real
// authorization server cannot be made to do on cue.
type fakeConsent struct {
	mu      sync.Mutex
	started int             // guarded by mu
	closed  map[string]bool // link URLs whose flow was used; guarded by mu
	fail    error           // guarded by mu
	expires time.Time
}

func (f *fakeConsent) StartConsent(_ context.Context, org, account, route string) (ConsentLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return ConsentLink{}, f.fail
	}
	f.started++
	return ConsentLink{URL: fmt.Sprintf("https://as.example/authorize?state=%s-%s-%s-%d", org, account, route, f.started), Expires: f.expires}, nil
}

func (f *fakeConsent) ConsentOpen(l ConsentLink) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed[l.URL]
}

// TestConsentLinkBounds: concurrent and repeated sessions of one key share
// one flow; a used flow is replaced; a failure is remembered for a while
// rather than retried per session; the number of keys held is capped.
func TestConsentLinkBounds(t *testing.T) {
	fc := &fakeConsent{closed: map[string]bool{}, expires: time.Now().Add(10 * time.Minute)}
	g := newTestGateway(t, func(o *Options) { o.Consent = fc }).Gateway
	ctx := context.Background()

	var wg sync.WaitGroup
	urls := make([]string, 50)
	for i := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := g.consentLink(ctx, "acme", "alice", "docs")
			if err != nil {
				t.Error(err)
			}
			urls[i] = l.URL
		}()
	}
	wg.Wait()
	for _, u := range urls {
		if u != urls[0] {
			t.Fatalf("links %q and %q for one account", u, urls[0])
		}
	}
	if fc.started != 1 {
		t.Fatalf("%d flows started for 50 sessions, want 1", fc.started)
	}

	fc.mu.Lock()
	fc.closed[urls[0]] = true
	fc.mu.Unlock()
	l, err := g.consentLink(ctx, "acme", "alice", "docs")
	if err != nil || l.URL == urls[0] || fc.started != 2 {
		t.Fatalf("after the flow was used: %q, %v, %d flows", l.URL, err, fc.started)
	}

	fc.mu.Lock()
	fc.fail = errors.New("no oauth here")
	fc.mu.Unlock()
	for range 5 {
		if _, err := g.consentLink(ctx, "acme", "bob", "plain"); err == nil {
			t.Fatal("a failing route gave a link")
		}
	}
	fc.mu.Lock()
	fc.fail = nil
	fc.mu.Unlock()
	if _, err := g.consentLink(ctx, "acme", "bob", "plain"); err == nil {
		t.Fatal("a failure was forgotten at once; every session would start discovery again")
	}

	for i := range maxConsentLinks {
		if _, err := g.consentLink(ctx, "acme", fmt.Sprintf("a%d", i), "docs"); err != nil && !errors.Is(err, errTooManyConsents) {
			t.Fatal(err)
		}
	}
	if _, err := g.consentLink(ctx, "acme", "one-too-many", "docs"); !errors.Is(err, errTooManyConsents) {
		t.Fatalf("past the cap: %v, want errTooManyConsents", err)
	}
	if n := len(g.consents.byKey); n > maxConsentLinks {
		t.Fatalf("%d links held, cap %d", n, maxConsentLinks)
	}
}
