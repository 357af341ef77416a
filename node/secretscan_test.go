package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/logtest"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// secretForms returns the ways a secret could show up in text: as it is,
// base64 (standard and URL alphabets, padded or not), URL-escaped and
// JSON-escaped.
func secretForms(secret string) []string {
	b := []byte(secret)
	forms := []string{secret,
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		url.QueryEscape(secret), url.PathEscape(secret)}
	if q := strconv.Quote(secret); len(q) > 2 {
		forms = append(forms, q[1:len(q)-1])
	}
	if j, err := json.Marshal(secret); err == nil {
		forms = append(forms, string(j[1:len(j)-1]))
	}
	return forms
}

// TestNoSecretInTelemetry runs a full flow — sessions over WebSocket and
// streamable HTTP (service token in the header and in the query), routes
// with a bearer, a header and an OAuth credential, calls answered and
// refused, a session refused for a bad token — with tracing on and debug
// logs, then checks that no credential or token, in any of the forms a
// secret is commonly re-encoded in, appears in a span, on /metrics, in a
// log line or in the audit export.
func TestNoSecretInTelemetry(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	var logs logtest.Buffer
	n := startNode(t, func(c *Config) {
		c.TracerProvider = tp
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})

	const (
		bearerSecret  = "Bq7+bearer/secret.value-9f3a="
		headerSecret  = "Hx2+header/secret.value-51c0="
		oauthAccess   = "Oa4+oauth/access.token-77de="
		oauthRefresh  = "Or8+oauth/refresh.token-0b1e="
		badTokenValue = "bogus.service+token/secret-3c9d"
	)
	bearerUp := upstreamtest.New()
	bearerUp.RequireBearer.Store(func() *string { s := bearerSecret; return &s }())
	oauthUp := upstreamtest.New()
	oauthUp.RequireBearer.Store(func() *string { s := oauthAccess; return &s }())
	headerUp := upstreamtest.New()
	routes := []struct {
		name, kind, secret string
		up                 *upstreamtest.Server
	}{
		{"bear", "bearer", bearerSecret, bearerUp},
		{"hdrs", "headers", "X-Api-Key: " + headerSecret, headerUp},
		{"oa", "oauth", fmt.Sprintf(`{"access_token":%q,"refresh_token":%q}`, oauthAccess, oauthRefresh), oauthUp},
	}
	tok := issueToken(t, n, "scanner", []string{"acme"}, "1h")
	ctx := testContext(t, 30*time.Second)
	calls := 0
	var firstURL string
	for _, r := range routes {
		route := addRoute(t, n, storage.Route{Name: r.name, URL: upstreamtest.StartHTTP(t, r.up.StreamableHandler()) + "/mcp", Credential: storage.CredentialRequired})
		putCredential(t, n, "acme", "alice", r.name, r.kind, r.secret)
		if firstURL == "" {
			firstURL = route.URL
		}
		// WebSocket, token in the Authorization header.
		sess, err := client.Connect(ctx, route.URL, "acme", "alice", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(tok.Token))
		if err != nil {
			t.Fatalf("route %s over WebSocket: %v", r.name, err)
		}
		if got := callText(t, ctx, sess, "echo", "plain"); got != "plain" {
			t.Fatalf("echo = %q", got)
		}
		if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "fail", Arguments: map[string]any{"text": "x"}}); err != nil {
			t.Fatal(err)
		}
		sess.Close()
		// Streamable HTTP, token in the query as clients that cannot set
		// headers send it.
		sdk := mcp.NewClient(&mcp.Implementation{Name: "scanner", Version: "1"}, nil)
		endpoint := "http://" + n.HTTPAddr() + "/v1/mcp/" + r.name + "?org=acme&account=alice&access_token=" + url.QueryEscape(tok.Token)
		ss, err := sdk.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
		if err != nil {
			t.Fatalf("route %s over streamable HTTP: %v", r.name, err)
		}
		if got := callText(t, ctx, ss, "echo", "plain"); got != "plain" {
			t.Fatalf("echo = %q", got)
		}
		ss.Close()
		calls += 3
	}
	// A session refused for a token that is not one.
	if s, err := client.Connect(ctx, firstURL, "acme", "alice", client.WithGateway("ws://"+n.HTTPAddr()), client.WithToken(badTokenValue)); err == nil {
		s.Close()
		t.Fatal("a session with a bogus token opened")
	}

	// Every record is in the audit export once the writer has caught up.
	var export []byte
	waitFor(t, "the audit records of every call", func() bool {
		resp := adminDo(t, n, http.MethodGet, "/v1/audit/export?since=0", nil)
		export, _ = io.ReadAll(resp.Body)
		got := 0
		sc := bufio.NewScanner(bytes.NewReader(export))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r storage.AuditRecord
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.Kind == storage.AuditToolCall {
				got++
			}
		}
		return got >= calls
	})
	resp, err := http.Get(n.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	spans := exp.GetSpans()
	if len(spans) == 0 {
		t.Fatal("no spans recorded")
	}
	var spanText strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&spanText, "%+v\n", s)
		if b, err := json.Marshal(s); err == nil {
			spanText.Write(b)
		}
	}
	if !strings.Contains(logs.String(), `"route":"oa"`) || !strings.Contains(string(metricsText), `route="oa"`) {
		t.Fatal("the logs or metrics do not show the flow at all: the scan would prove nothing")
	}

	secrets := map[string]string{
		"bearer credential": bearerSecret, "header credential": headerSecret,
		"OAuth access token": oauthAccess, "OAuth refresh token": oauthRefresh,
		"service token": tok.Token, "bogus token": badTokenValue, "admin token": n.AdminToken(),
	}
	// A token's signature alone is as secret as the token.
	for i, part := range strings.Split(tok.Token, ".") {
		if len(part) >= 16 {
			secrets[fmt.Sprintf("service token part %d", i)] = part
		}
	}
	sinks := map[string]string{
		"spans": spanText.String(), "/metrics": string(metricsText), "logs": logs.String(), "audit export": string(export),
	}
	for sink, text := range sinks {
		for what, secret := range secrets {
			for _, form := range secretForms(secret) {
				if strings.Contains(text, form) {
					t.Errorf("%s hold the %s (as %q)", sink, what, form)
				}
			}
		}
	}
}
