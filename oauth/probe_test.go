package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpgw/mcpgw/internal/oauthtest"
	"github.com/mcpgw/mcpgw/oauth"
)

// TestProbe: the unauthenticated initialize gets a protected server's
// challenge (metadata URL and scope); a server that answers otherwise gives
// no challenge; a server that cannot be reached is an error that says so.
func TestProbe(t *testing.T) {
	as := oauthtest.NewAS(t)
	protected := oauthtest.NewMCPWith(t, as, oauthtest.MCPOpts{Scopes: []string{"write"}, PRMPath: "/custom/prm", Advertise: true})
	var method, accept atomic.Value
	open := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method.Store(r.Method)
		accept.Store(r.Header.Get("Accept"))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	}))
	down := newServer(t, http.NotFoundHandler())
	down.Close()

	c := newClient(t, nil)
	tests := []struct {
		name    string
		url     string
		want    oauth.Challenge
		wantErr string
	}{
		{name: "protected", url: protected.Endpoint, want: oauth.Challenge{ResourceMetadata: protected.Srv.URL + "/custom/prm", Scopes: []string{"write"}}},
		{name: "open", url: open.URL + "/mcp"},
		{name: "websocket", url: "ws://127.0.0.1:1/mcp"},
		{name: "down", url: down.URL + "/mcp", wantErr: "check that the route's server is up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Probe(context.Background(), tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Probe(%s) error = %v, want one containing %q", tt.url, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Probe(%s): %v", tt.url, err)
			}
			if got.ResourceMetadata != tt.want.ResourceMetadata || strings.Join(got.Scopes, " ") != strings.Join(tt.want.Scopes, " ") ||
				got.Error != tt.want.Error {
				t.Fatalf("Probe(%s) = %+v, want %+v", tt.url, got, tt.want)
			}
		})
	}
	if method.Load() != http.MethodPost || !strings.Contains(accept.Load().(string), "text/event-stream") {
		t.Fatalf("probe was %v with Accept %v; want the POST a streamable HTTP client opens with", method.Load(), accept.Load())
	}

	strict, err := oauth.New(oauth.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Probe(context.Background(), protected.Endpoint); !errors.Is(err, oauth.ErrURLNotAllowed) {
		t.Fatalf("probe of plain http loopback without the development option: %v, want ErrURLNotAllowed", err)
	}
}
