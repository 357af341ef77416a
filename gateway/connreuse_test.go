package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// countingUpstream serves h on loopback and counts the TCP connections
// made to it.
func countingUpstream(t *testing.T, h http.Handler) (string, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.URL, &conns
}

// TestUpstreamConnectionsReused checks that calls through the gateway reuse
// warm upstream connections: a series of calls, one after another, must
// not cost a TCP connection each, for a stateful upstream and for the
// stateless 2026-07-28 protocol (each call its own POST, and over
// streamable HTTP its own gateway session).
func TestUpstreamConnectionsReused(t *testing.T) {
	const calls = 100
	up := upstreamtest.New()
	tests := []struct {
		name       string
		handler    http.Handler
		protocol   string
		streamable bool // the caller speaks streamable HTTP rather than WebSocket
	}{
		{"websocket 2025-11-25", up.StreamableHandler(), "2025-11-25", false},
		{"websocket 2026-07-28", up.StatelessHandler(), "2026-07-28", false},
		{"streamable 2026-07-28", up.StatelessHandler(), "2026-07-28", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upURL, conns := countingUpstream(t, tt.handler)
			tg := newTestGateway(t)
			route := tg.addRoute(t, storage.Route{Name: "up", URL: upURL + "/mcp"})
			token := tg.issueToken(t, "svc", "*")
			ctx := context.Background()
			var sess *mcp.ClientSession
			var err error
			if tt.streamable {
				c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
				sess, err = c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: tg.url + "/v1/mcp/up?org=org1&account=acct1&access_token=" + url.QueryEscape(token)},
					&mcp.ClientSessionOptions{ProtocolVersion: tt.protocol})
			} else {
				sess, err = client.Connect(ctx, route.URL, "org1", "acct1",
					client.WithGateway(tg.wsURL()), client.WithToken(token), client.WithProtocolVersion(tt.protocol))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if got := sess.InitializeResult().ProtocolVersion; got != tt.protocol {
				t.Fatalf("negotiated %s, want %s", got, tt.protocol)
			}
			before := conns.Load()
			for i := 0; i < calls; i++ {
				if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			// Reuse bounds the connections by how many requests are open at
			// once, not by the number of calls; without it every call costs
			// a connection. One call at a time is not one request at a
			// time, though: the SDK hands a POST's result on before it reads
			// the end of that POST's event stream, so the next POST can find
			// the connection still busy and net/http dials another (which
			// then stays pooled), and net/http retires a connection whose
			// request write it did not see complete within 50ms. Both
			// happen under CPU load; neither grows with the number of calls.
			t.Logf("%d calls, %d new upstream connections (%d before)", calls, conns.Load()-before, before)
			if n, most := conns.Load()-before, int64(calls/10); n > most {
				t.Fatalf("%d calls opened %d upstream connections, want at most %d (connections are not reused)", calls, n, most)
			}
		})
	}
}

// TestStatelessRequestAudit checks that a stateless 2026-07-28 request over
// streamable HTTP, served as a one-request gateway session, leaves its
// tools/call record and no session open and close records of its own.
func TestStatelessRequestAudit(t *testing.T) {
	up := upstreamtest.New()
	upURL := upstreamtest.StartHTTP(t, up.StatelessHandler())
	tg := newTestGateway(t)
	tg.addRoute(t, storage.Route{Name: "up", URL: upURL + "/mcp"})
	token := tg.issueToken(t, "svc", "*")
	ctx := context.Background()
	c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	sess, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: tg.url + "/v1/mcp/up?org=org1&account=acct1&access_token=" + url.QueryEscape(token)},
		&mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	const calls = 3
	for i := 0; i < calls; i++ {
		if _, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	sess.Close()
	tg.Close() // flushes the audit queue
	recs, err := tg.audit.Query(storage.AuditQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []storage.AuditKind
	for _, r := range recs {
		kinds = append(kinds, r.Kind)
	}
	want := []storage.AuditKind{storage.AuditToolCall, storage.AuditToolCall, storage.AuditToolCall}
	if !slices.Equal(kinds, want) {
		t.Fatalf("audit records %v, want %v (one tools/call record per request)", kinds, want)
	}
}
