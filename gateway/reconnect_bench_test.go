package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/mcpgw/mcpgw/client"
	"github.com/mcpgw/mcpgw/internal/upstreamtest"
	"github.com/mcpgw/mcpgw/storage"
)

// BenchmarkProxyWebSocketUpstream measures a tools/call round trip to a
// WebSocket upstream through the gateway on a route without a credential,
// whose connection is used as it is, and on one with a credential, whose
// connection checks at every call whether the credential changed (and
// would be re-established on the new one).
func BenchmarkProxyWebSocketUpstream(b *testing.B) {
	up := upstreamtest.New()
	upURL := "ws" + strings.TrimPrefix(upstreamtest.StartHTTP(b, upstreamtest.WebSocketHandler(up.MCP)), "http")
	tg := newTestGateway(b)
	token := tg.issueToken(b, "bench", "*")
	plain := tg.addRoute(b, storage.Route{Name: "plain", URL: upURL + "/plain", Transport: storage.TransportWebSocket, Credential: storage.CredentialNone})
	withCred := tg.addRoute(b, storage.Route{Name: "cred", URL: upURL + "/cred", Transport: storage.TransportWebSocket, Credential: storage.CredentialRequired})
	tg.putCredential(b, "org1", "acct1", "cred", "bench-token")
	for _, tc := range []struct {
		name  string
		route storage.Route
	}{{"no-credential", plain}, {"credential", withCred}} {
		b.Run(tc.name, func(b *testing.B) {
			sess, err := client.Connect(context.Background(), tc.route.URL, "org1", "acct1",
				client.WithGateway(tg.wsURL()), client.WithToken(token), client.WithProtocolVersion(benchProtocol))
			if err != nil {
				b.Fatal(err)
			}
			benchCalls(b, sess)
		})
	}
}
