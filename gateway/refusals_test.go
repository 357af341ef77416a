package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/storage"
	"github.com/mcpgw/mcpgw/transport"
)

// TestRefusalsNameNoFlags: a session the gateway refuses gets the code and
// HTTP status of transport's one table and a message that says what to do
// without naming command-line flags, which the caller cannot set.
func TestRefusalsNameNoFlags(t *testing.T) {
	tg := newTestGateway(t)
	route := tg.addRoute(t, storage.Route{Name: "ext", URL: "https://mcp.example.com/mcp", Kind: storage.KindExternal})
	tests := []struct {
		name    string
		target  string
		org     string
		token   string
		code    int64
		message string
	}{
		{name: "no credential", target: route.URL, org: "acme", token: tg.issueToken(t, "svc", "acme"), code: transport.CodeNoCredential, message: "ask the operator to store one"},
		{name: "org not allowed", target: route.URL, org: "other", token: tg.issueToken(t, "svc", "acme"), code: transport.CodeForbidden, message: `issue it a token that allows org "other"`},
		{name: "no route", target: "https://elsewhere.example/mcp", org: "acme", token: tg.issueToken(t, "svc", "acme"), code: transport.CodeNoRoute, message: "no route"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sess, err := client.Connect(ctx, tc.target, tc.org, "alice", client.WithGateway(tg.wsURL()), client.WithToken(tc.token))
			if err == nil {
				sess.Close()
				t.Fatal("Connect succeeded, want a refusal")
			}
			var re *transport.RefusalError
			if !errors.As(err, &re) {
				t.Fatalf("Connect error %v (%T), want a *transport.RefusalError", err, err)
			}
			if got, want := re.Code, tc.code; got != want {
				t.Errorf("code = %d, want %d", got, want)
			}
			if got, want := re.Status, transport.HTTPStatus(tc.code); got != want {
				t.Errorf("HTTP status = %d, want %d (%s)", got, want, http.StatusText(want))
			}
			if !strings.Contains(re.Message, tc.message) || strings.Contains(re.Message, "--") {
				t.Errorf("message %q: want it to contain %q and name no flag", re.Message, tc.message)
			}
		})
	}
}
